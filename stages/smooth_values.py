"""What the smooth stage filters of a person: the value groups measured from a PersonMesh (body relative to
its root, root, translation, cam, joints2d, rotations as 6D, betas) and the PersonMesh composed back from
the filtered values, shaped and typed like the measured one (stages/smooth.py, docs/smoothing.md).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from pipeline.messages import Person, PersonMesh


# ---------------------------------------------------------------------------------- rotation helpers
def rotmat_to_6d(rotmat: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 6): the first two columns (Zhou et al., CVPR 2019)."""
    r = np.asarray(rotmat)
    return r[..., :, :2].swapaxes(-1, -2).reshape(*r.shape[:-2], 6)


def rot6d_to_rotmat(r6: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3) proper rotations by Gram-Schmidt on the two columns."""
    r6 = np.asarray(r6, dtype=np.float64)
    a1, a2 = r6[..., :3], r6[..., 3:]
    b1 = a1 / np.maximum(np.linalg.norm(a1, axis=-1, keepdims=True), 1e-12)
    a2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = a2 / np.maximum(np.linalg.norm(a2, axis=-1, keepdims=True), 1e-12)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-1)


# ------------------------------------------------------------------------------------- value groups
_BODY_FIELDS = ("vertices", "joints3d", "joints_h36m")


def signature(pm: PersonMesh) -> tuple:
    """Shapes of what a track filters; a change (e.g. another model) restarts the track."""
    return tuple(None if getattr(pm, f) is None else np.shape(getattr(pm, f))
                 for f in ("cam", "cam_t", "joints3d", "joints_h36m", "joints2d", "vertices", "rotmat", "betas"))


def _root(pm: PersonMesh, kind: str) -> np.ndarray:
    if kind == "pelvis" and pm.joints_h36m is not None and len(pm.joints_h36m):
        return np.asarray(pm.joints_h36m[0], dtype=np.float64)
    return np.asarray(pm.joints3d, dtype=np.float64).mean(axis=0)


def measure(pm: PersonMesh, root_kind: str) -> dict[str, np.ndarray]:
    """PersonMesh -> flat float64 measurement per group."""
    root = _root(pm, root_kind)
    body = np.concatenate([(np.asarray(getattr(pm, f), dtype=np.float64) - root).ravel() for f in _BODY_FIELDS])
    z = {
        "body": body,
        "root": root,
        "translation": np.asarray(pm.cam_t, dtype=np.float64).ravel(),
        "cam": np.asarray(pm.cam, dtype=np.float64).ravel(),
        "joints2d": np.asarray(pm.joints2d, dtype=np.float64).ravel(),
    }
    if pm.rotmat is not None:
        z["rotation"] = rotmat_to_6d(pm.rotmat).ravel().astype(np.float64)
    if pm.betas is not None:
        z["betas"] = np.asarray(pm.betas, dtype=np.float64).ravel()
    for name, v in z.items():
        if not np.all(np.isfinite(v)):
            raise ValueError(f"smooth: track {pm.person.track_id} has NaN or infinite values in its "
                             f"{name} values; the infer stage must not emit them")
    return z


def _like(a: np.ndarray, template: np.ndarray) -> np.ndarray:
    t = np.asarray(template)
    dtype = t.dtype if np.issubdtype(t.dtype, np.floating) else np.float32
    return np.asarray(a).reshape(t.shape).astype(dtype, copy=False)


def compose(template: PersonMesh, v: dict[str, np.ndarray], person: Person, predicted: bool,
             hands: Optional[dict] = None) -> PersonMesh:
    """Filtered group values (and filtered hands) -> a PersonMesh shaped (and typed) like the template."""
    root = v["root"]
    body = v["body"]
    out: dict[str, Any] = {}
    start = 0
    for f in _BODY_FIELDS:
        t = np.asarray(getattr(template, f))
        part = body[start:start + t.size].reshape(t.shape) + root
        start += t.size
        out[f] = _like(part, t)
    out["cam_t"] = _like(v["translation"], template.cam_t)
    out["cam"] = _like(v["cam"], template.cam)
    out["joints2d"] = _like(v["joints2d"], template.joints2d)
    if template.rotmat is not None:
        n = np.asarray(template.rotmat).shape[0]
        out["rotmat"] = _like(rot6d_to_rotmat(v["rotation"].reshape(n, 6)), template.rotmat)
    if template.betas is not None:
        out["betas"] = _like(v["betas"], template.betas)
    out["hands"] = dict(hands or {})
    out["hand_skips"] = dict(template.hand_skips)
    if predicted and (template.hands or template.hand_skips):  # a coasting body has no hands
        out["hand_skips"] = {"left": "body_coasting", "right": "body_coasting"}
    return dataclasses.replace(template, person=person, predicted=predicted, **out)
