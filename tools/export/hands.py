"""The finger bones in the exported files: per frame, the 52-bone pose of the persons whose hands the
recording shows (`fastmetro.humanoid_hand_policy`: the hand mesh while seen, held, then relaxed), kept in
the track's scratch store; per track, those rows laid out on the skeleton's frames for npz, BVH and glTF,
and the frames where a hand was not seen for tracks.json.
"""
from __future__ import annotations

import numpy as np

from .tracks import TrackStore

CHUNK = 2048


def frame_hands(policy, humanoid_module, pose, persons, rows: dict, frame) -> dict:
    """Row of `pose` -> (52-bone rotations, offsets, seen (2,)) for the persons that have shown a hand
    (`rows`: person index -> row of `pose`, the body solve, finite rows only). The clock: the source's pts,
    else 30 frames a second."""
    if not rows:
        return {}
    order = sorted(rows, key=rows.get)
    keys = [persons[i].track_id for i in order]
    if not any(persons[i].hands for i in order) and not any(policy.has_hands(k) for k in keys):
        return {}
    sel = [rows[i] for i in order]
    sub = humanoid_module.HumanoidPose(pose.rotations[sel], pose.offsets[sel], pose.root[sel],
                                       None if pose.world is None else pose.world[sel])
    t = frame.pts if frame.pts is not None else frame.index / 30.0
    full, seen = policy.apply(sub, keys, [persons[i].hands for i in order], t)
    return {rows[i]: (full.rotations[k], full.offsets[k], seen[k])
            for k, i in enumerate(order) if policy.has_hands(keys[k])}


def append_hands(store: TrackStore, frame_index: int, fingers: tuple, first: int) -> None:
    """One person-frame's finger bones into its track's scratch store (from the track's first hand on)."""
    rotations, offsets, seen = fingers
    store.append("hand_frame", np.int64(frame_index))
    store.append("hand_rotations", np.asarray(rotations[first:], np.float32))
    store.append("hand_offsets", np.asarray(offsets[first:], np.float32))
    store.append("hand_seen", np.asarray(seen, np.bool_))


def _laid_out(store: TrackStore, name: str, frames: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """The per-hand-row field on the skeleton's frames (`frames`): rows before the track's first hand get
    `fill` (what the policy outputs for a hand never seen). A scratch file, chunk by chunk."""
    src, at = store.array(name), np.searchsorted(frames, np.asarray(store.array("hand_frame")))
    out = np.memmap(store.dir / f"{name}.laid.raw", dtype=src.dtype, mode="w+", shape=(len(frames), *src.shape[1:]))
    out[: at[0] if len(at) else len(frames)] = fill
    for start in range(0, len(src), CHUNK):
        out[at[start:start + CHUNK]] = src[start:start + CHUNK]
    return out  # read back through this mapping: no flush to disk needed


def hand_fields(store: TrackStore, humanoid_hands) -> dict:
    """The npz fields of the finger bones, on the skeleton's frames (`humanoid_frame`)."""
    hh = humanoid_hands
    frames = np.asarray(store.array("humanoid_frame"))
    relaxed = np.concatenate([hh.relaxed_fingers(s) for s in hh.SIDES]).astype(np.float32)
    default = np.concatenate([hh.default_offsets(s) for s in hh.SIDES]).astype(np.float32)
    seen = _laid_out(store, "hand_seen", frames, np.zeros(2, np.bool_))
    offsets = _laid_out(store, "hand_offsets", frames, default)
    return {"hand_rotations": _laid_out(store, "hand_rotations", frames, relaxed), "hand_offsets": offsets,
            "hand_seen": seen, "finger_bones": np.asarray(hh.FINGER_BONES),
            "finger_parents": np.asarray(hh.ALL_PARENTS[len(hh.ALL_PARENTS) - 30:], np.int64),
            "skeleton_finger_offsets": finger_skeleton(offsets, seen, hh)}


def finger_skeleton(offsets: np.ndarray, seen: np.ndarray, hh) -> np.ndarray:
    """The track's one hand skeleton: each side's finger offsets averaged over the frames it was seen (a
    side never seen: the other side's, mirrored; neither: a standard hand)."""
    out = np.concatenate([hh.default_offsets(s) for s in hh.SIDES])
    total, count = np.zeros((30, 3)), np.zeros(2)
    for start in range(0, len(offsets), CHUNK):
        o, s = np.asarray(offsets[start:start + CHUNK], np.float64), np.asarray(seen[start:start + CHUNK])
        for k in range(2):
            total[15 * k:15 * k + 15] += o[s[:, k], 15 * k:15 * k + 15].sum(0)
            count[k] += s[:, k].sum()
    mirror = np.array([-1.0, 1.0, 1.0])
    for k in range(2):
        if count[k]:
            out[15 * k:15 * k + 15] = total[15 * k:15 * k + 15] / count[k]
    for k in range(2):
        if not count[k] and count[1 - k]:
            out[15 * k:15 * k + 15] = out[15 * (1 - k):15 * (1 - k) + 15] * mirror
    return out.astype(np.float32)


def unseen_ranges(frames: np.ndarray, seen: np.ndarray) -> dict:
    """tracks.json's `hands_unseen`: per side, [first, last] frame index pairs of the runs of skeleton
    frames without that hand (where it is held, then relaxed)."""
    out = {}
    for k, side in enumerate(("left", "right")):
        miss = ~np.asarray(seen[:, k], bool)
        edges = np.flatnonzero(np.diff(np.r_[0, miss.astype(np.int8), 0]))
        out[side] = [[int(frames[a]), int(frames[b - 1])] for a, b in zip(edges[::2], edges[1::2])]
    return out
