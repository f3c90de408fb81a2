"""The smooth stage's hands: one set of filters per track and side, reset when the hand disappears.

A hand (pipeline.messages.HandMesh) is filtered in three groups, with the noise settings of the body's
groups of the same units: `hand` (vertices and joints3d, hand-relative metres: smooth.body), `translation`
(cam_t: smooth.translation) and `cam` (the hand crop's s, tx, ty: smooth.cam). A side seen in a frame
updates its filters (or starts them); a side not seen, or a coasting body, drops them, so a hand that comes
back starts afresh (as does one whose arrays change shape). Offline, each filter's life (consecutive frames
with the hand, from a start of its filters) gets its own RTS backward pass.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from pipeline.messages import HandMesh, PersonMesh

from .smooth_filters import Step, rts_backward

SIDES = ("left", "right")
NOISE_OF = {"hand": "body", "translation": "translation", "cam": "cam"}  # group -> SmoothConfig noise field


def measure_hand(h: HandMesh) -> dict[str, np.ndarray]:
    z = {
        "hand": np.concatenate([np.asarray(h.vertices, np.float64).ravel(), np.asarray(h.joints3d, np.float64).ravel()]),
        "translation": np.asarray(h.cam_t, np.float64).ravel(),
        "cam": np.asarray(h.cam, np.float64).ravel(),
    }
    for name, v in z.items():
        if not np.all(np.isfinite(v)):
            raise ValueError(f"smooth: a {h.side} hand has NaN or infinite {name} values; the infer stage must "
                             f"not emit them")
    return z


def _shapes(h: HandMesh) -> tuple:
    """What a hand's filters are sized by: a change restarts them."""
    return tuple(np.shape(getattr(h, f)) for f in ("vertices", "joints3d", "cam_t", "cam"))


def compose_hand(template: HandMesh, v: dict[str, np.ndarray]) -> HandMesh:
    """Filtered group values -> a HandMesh shaped and typed like the template (crop square kept)."""
    nv = np.asarray(template.vertices).size
    hand = v["hand"]
    return dataclasses.replace(
        template,
        vertices=hand[:nv].reshape(np.shape(template.vertices)).astype(np.float32),
        joints3d=hand[nv:].reshape(np.shape(template.joints3d)).astype(np.float32),
        cam_t=np.asarray(v["translation"]).reshape(3).astype(np.float32),
        cam=np.asarray(v["cam"]).reshape(3).astype(np.float32),
    )


class HandFilters:
    """The hand filters of one body track. make_bank(noise field name, first measurement) -> a filter bank."""

    def __init__(self, make_bank: Callable[[str, np.ndarray], Any]) -> None:
        self.make_bank = make_bank
        self.banks: dict[str, dict[str, Any]] = {}
        self.templates: dict[str, HandMesh] = {}

    def predict(self, dt: float) -> None:
        for banks in self.banks.values():
            for bank in banks.values():
                bank.predict(dt)

    def update(self, pm: PersonMesh) -> None:
        """This frame's hands: a seen side updates (or starts) its filters, an unseen one drops them, one
        shaped otherwise than its filters (vertices, joints, cameras) starts them afresh."""
        for side in SIDES:
            h = pm.hands.get(side)
            old = self.templates.get(side)
            if h is None or old is None or _shapes(h) != _shapes(old):
                self.banks.pop(side, None)
                self.templates.pop(side, None)
            if h is None:
                continue
            z = measure_hand(h)
            if side in self.banks:
                for name, values in z.items():
                    self.banks[side][name].update(values)
            else:
                self.banks[side] = {name: self.make_bank(NOISE_OF[name], values) for name, values in z.items()}
            self.templates[side] = h

    def drop(self) -> None:
        self.banks.clear()
        self.templates.clear()

    def compose(self) -> dict[str, HandMesh]:
        """The hands as filtered now (online)."""
        return {side: compose_hand(self.templates[side], {n: b.value for n, b in banks.items()})
                for side, banks in self.banks.items()}

    def record(self) -> dict[str, tuple[HandMesh, dict[str, Step]]]:
        """This frame's forward steps per side, for the backward pass (offline)."""
        return {side: (self.templates[side], {n: b.step_record() for n, b in banks.items()})
                for side, banks in self.banks.items()}


def _born(steps: dict[str, Step]) -> bool:
    """Whether these are the first steps of new filters (no transition led to them)."""
    return any(step.F is None for step in steps.values())


def smooth_hand_runs(records: list[dict[str, tuple[HandMesh, dict[str, Step]]]]) -> list[dict[str, HandMesh]]:
    """Backward passes over a track's window of recorded frames (HandFilters.record() each): every run of
    consecutive frames holding a side from one start of its filters is one filter's life and is smoothed
    on its own."""
    out: list[dict[str, HandMesh]] = [{} for _ in records]
    for side in SIDES:
        i = 0
        while i < len(records):
            if side not in records[i]:
                i += 1
                continue
            j = i + 1  # the run ends where the side is missing, or where its filters started afresh
            while j < len(records) and side in records[j] and not _born(records[j][side][1]):
                j += 1
            run = [records[k][side] for k in range(i, j)]
            names = list(run[0][1])
            smoothed = {n: rts_backward([steps[n] for _, steps in run]) for n in names}
            for k, (template, _) in enumerate(run):
                out[i + k][side] = compose_hand(template, {n: smoothed[n][k][0] for n in names})
            i = j
    return out
