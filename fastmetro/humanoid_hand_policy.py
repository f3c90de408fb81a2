"""What the Hand and finger bones do over time, per person and side: driven by the hand mesh while the hand
is seen (blended in when it comes back), held and then eased to a relaxed hand when it is not.

    policy = HandPolicy()                                     # one per consumer (VMC sender, export)
    pose52, seen = policy.apply(pose, keys, hands, t)         # body pose (N, 22) -> (N, 52); seen (N, 2)

The policy (times on the stream's clock, seconds; `HandTiming`):
- **seen** (the person's `hands` holds that side, with vertices): the Hand bone's orientation is the hand
  mesh's (palm plane and finger direction, `humanoid_hands.solve_hand`), its local rotation relative to
  the body solve's LowerArm; the fingers are the solved ones. When the hand comes back after frames
  without it, Hand and fingers blend from what was last output to the mesh's over `blend` (0.15 s), so the
  switch from the body mesh's Hand never jumps. A person's first frame with a hand takes it at once
  (nothing was output before).
- **not seen**: Hand and fingers hold their last output for `hold` (0.5 s: a hand missed for a few frames
  keeps its shape), then ease over `ease` (0.5 s) to the body mesh's Hand and a relaxed hand
  (`humanoid_hands.relaxed_fingers`), and follow the body mesh's Hand from then on.
- a side never seen for that person: the body mesh's Hand and relaxed fingers.
Finger offsets (bone lengths) are the hand's own while seen, then the last seen; a side never seen takes
the other side's, mirrored, or a standard hand's (`humanoid_hands.default_offsets`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Optional, Sequence, Union

import numpy as np

from . import humanoid as hu
from . import humanoid_hands as hh
from .rotations import quat_from_matrix, quat_slerp, quat_to_matrix

__all__ = ["HandTiming", "HandPolicy"]

_MIRROR = np.array([-1.0, 1.0, 1.0])


@dataclass(frozen=True)
class HandTiming:
    blend: float = 0.15  # seconds to blend into a hand that comes back
    hold: float = 0.5  # seconds a hand that disappears keeps its last shape
    ease: float = 0.5  # seconds it then takes to ease to the body's Hand and a relaxed hand


@dataclass
class _Side:
    seen: bool = False
    appeared: float = 0.0  # when it was last (re)appeared
    last_seen: float = 0.0
    from_hand: Optional[np.ndarray] = None  # what was output at the last change (blend / ease from here)
    from_fingers: Optional[np.ndarray] = None
    out_hand: Optional[np.ndarray] = None  # what was output last
    out_fingers: Optional[np.ndarray] = None
    offsets: Optional[np.ndarray] = None  # the last seen finger offsets


@dataclass
class _Person:
    sides: dict = field(default_factory=lambda: {s: _Side() for s in hh.SIDES})
    ever: bool = False  # a hand of this person has been seen


def _chain(bone: int) -> list[int]:
    out = []
    while bone >= 0:
        out.append(bone)
        bone = int(hu.PARENTS[bone])
    return out[::-1]


_LOWER_ARM_CHAIN = {s: _chain(hh.LOWER_ARM[s]) for s in hh.SIDES}
_TRUNK = [b for b in _LOWER_ARM_CHAIN["left"] if b in _LOWER_ARM_CHAIN["right"]]  # Hips .. UpperChest
_CHAIN_BONES = sorted(set(_LOWER_ARM_CHAIN["left"]) | set(_LOWER_ARM_CHAIN["right"]))
_RELAXED = {s: hh.relaxed_fingers(s) for s in hh.SIDES}
_DEFAULT_OFFSETS = {s: hh.default_offsets(s) for s in hh.SIDES}


def _ramp(x: float, span: float) -> float:
    return 1.0 if span <= 0 else float(min(max(x / span, 0.0), 1.0))


class HandPolicy:
    """The Hand and finger bones of tracked persons over time (see the module docstring). Persons are
    keyed by any hashable (a track id, (stream, track)); `forget` one when its track ends."""

    def __init__(self, timing: Optional[HandTiming] = None) -> None:
        self.timing = timing or HandTiming()
        self.persons: dict[Hashable, _Person] = {}

    def has_hands(self, key: Hashable) -> bool:
        """Whether this person has been seen with a hand (from then on its pose carries finger bones)."""
        p = self.persons.get(key)
        return p is not None and p.ever

    def forget(self, key: Hashable) -> None:
        self.persons.pop(key, None)

    def apply(self, pose: hu.HumanoidPose, keys: Sequence[Hashable], hands: Sequence[dict],
              t: Union[float, Sequence[float]]) -> tuple[hu.HumanoidPose, np.ndarray]:
        """pose: the body solve of N persons (22 bones); keys: one per person; hands: per person the
        subscriber's `hands` map (side -> HandData: joints3d (21, 3), vertices (778, 3) or None), or {};
        t: the frame's time per person (or one for all), seconds. Returns the 52-bone pose (`ALL_BONES`) and
        seen (N, 2) bool, (left, right): that hand's mesh was measured this frame."""
        n = len(pose)
        times = np.broadcast_to(np.asarray(t, dtype=np.float64), (n,))
        rotations = np.concatenate([pose.rotations, np.zeros((n, 30, 4))], axis=1)
        offsets = np.concatenate([pose.offsets, np.zeros((n, 30, 3))], axis=1)
        seen = np.zeros((n, 2), bool)
        people = [self.persons.setdefault(k, _Person()) for k in keys]
        mesh: dict[str, dict[int, tuple]] = {s: {} for s in hh.SIDES}
        found = [(i, side) for side in hh.SIDES for i, h in enumerate(hands) if _usable(h.get(side) if h else None)]
        if found:  # every seen hand of the frame in one solve
            solved = hh.solve_hand(np.stack([hands[i][s].joints3d for i, s in found]),
                                   np.stack([hands[i][s].vertices for i, s in found]), [s for _, s in found])
            if pose.world is not None:  # the body solve's own world rotations
                arm = pose.world[[i for i, _ in found], [hh.LOWER_ARM[s] for _, s in found]]
            else:
                arms = self._lower_arms(pose.rotations)
                arm = np.stack([arms[s][i] for i, s in found])
            hand_local = quat_from_matrix(np.swapaxes(arm, -1, -2) @ solved.hand_world)
            for k, (i, side) in enumerate(found):
                mesh[side][i] = (hand_local[k], solved.local[k], solved.offsets[k])
        for i, person in enumerate(people):
            for s, side in enumerate(hh.SIDES):
                got = mesh[side].get(i)
                seen[i, s] = got is not None
                person.ever = person.ever or got is not None
                hand, fingers = self._step(person.sides[side], got, pose.rotations[i, hh.HAND_BONE[side]],
                                           _RELAXED[side], float(times[i]))
                first = hh.FIRST[side]
                rotations[i, hh.HAND_BONE[side]] = hand
                rotations[i, first:first + 15] = fingers
            for s, side in enumerate(hh.SIDES):
                first = hh.FIRST[side]
                other = person.sides[hh.SIDES[1 - s]].offsets
                own = person.sides[side].offsets
                offsets[i, first:first + 15] = (own if own is not None else
                                                other * _MIRROR if other is not None else _DEFAULT_OFFSETS[side])
        return hu.HumanoidPose(rotations, offsets, pose.root), seen

    @staticmethod
    def _lower_arms(rotations: np.ndarray) -> dict:
        """side -> (n, 3, 3) world rotation of its LowerArm, from body locals (n, 22, 4): its chain only."""
        m = quat_to_matrix(rotations[:, _CHAIN_BONES])
        at = {b: k for k, b in enumerate(_CHAIN_BONES)}
        out = {}
        trunk = m[:, at[_TRUNK[0]]]
        for b in _TRUNK[1:]:
            trunk = trunk @ m[:, at[b]]
        for side in hh.SIDES:
            w = trunk
            for b in _LOWER_ARM_CHAIN[side][len(_TRUNK):]:
                w = w @ m[:, at[b]]
            out[side] = w
        return out

    def _step(self, st: _Side, got: Optional[tuple], body_hand: np.ndarray, relaxed: np.ndarray,
              t: float) -> tuple[np.ndarray, np.ndarray]:
        tm = self.timing
        if got is not None:
            hand, fingers, offsets = got
            st.offsets, st.last_seen = offsets, t
            if not st.seen:
                st.seen, st.appeared = True, t
                st.from_hand, st.from_fingers = st.out_hand, st.out_fingers
            w = _ramp(t - st.appeared, tm.blend)
            if st.from_hand is not None and w < 1.0:
                hand = quat_slerp(st.from_hand, hand, w)
                fingers = quat_slerp(st.from_fingers, fingers, w)
        elif st.out_hand is None or st.offsets is None:  # never seen: the body's Hand, relaxed
            hand, fingers = body_hand, relaxed
        else:
            if st.seen:
                st.seen = False
                st.from_hand, st.from_fingers = st.out_hand, st.out_fingers
            e = _ramp(t - st.last_seen - tm.hold, tm.ease)
            hand = quat_slerp(st.from_hand, body_hand, e)
            fingers = quat_slerp(st.from_fingers, relaxed, e)
        st.out_hand, st.out_fingers = np.asarray(hand, np.float64), np.asarray(fingers, np.float64)
        return st.out_hand, st.out_fingers


def _usable(h) -> bool:
    return h is not None and getattr(h, "vertices", None) is not None and getattr(h, "joints3d", None) is not None
