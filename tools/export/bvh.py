"""BVH writer: a skeleton (names, parents, rest offsets) and per-frame local rotations + root position
to a Biovision Hierarchy file, at a fixed frame rate.

Conventions of the file: metres, +Y up (the humanoid frame of `fastmetro.humanoid`), every rest rotation
identity; the root has position and rotation channels, every other joint rotation channels, all in
Z, X, Y order (a joint's rotation is Rz @ Rx @ Ry, angles in degrees). A joint without children ends in an
``End Site``. Motion lines are written in chunks, so the memory used does not grow with the frame count.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from scipy.spatial.transform import Rotation

EULER_ORDER = "ZXY"  # BVH channel order; scipy's upper case = intrinsic, i.e. R = Rz @ Rx @ Ry
CHUNK = 1024


def depth_first(parents: Sequence[int]) -> list[int]:
    """Bone indices in the order a BVH hierarchy lists them (depth first, children in index order)."""
    parents = [int(p) for p in parents]
    children: dict[int, list[int]] = {i: [] for i in range(-1, len(parents))}
    for i, p in enumerate(parents):
        children[p].append(i)
    if len(children[-1]) != 1:
        raise ValueError(f"a BVH skeleton has exactly one root, got {len(children[-1])}")
    order, stack = [], [children[-1][0]]
    while stack:
        i = stack.pop()
        order.append(i)
        stack.extend(reversed(children[i]))
    return order


def _end_site(offset: np.ndarray) -> np.ndarray:
    """Where a leaf bone's End Site sits: half its own bone further on (a fixed 5 cm up when it has none)."""
    n = float(np.linalg.norm(offset))
    return offset * 0.5 if n > 1e-6 else np.array([0.0, 0.05, 0.0])


def hierarchy_text(names: Sequence[str], parents: Sequence[int], offsets: np.ndarray) -> str:
    """The HIERARCHY section."""
    offsets = np.asarray(offsets, np.float64)
    parents = [int(p) for p in parents]
    children: dict[int, list[int]] = {i: [] for i in range(len(parents))}
    for i, p in enumerate(parents):
        if p >= 0:
            children[p].append(i)
    lines = ["HIERARCHY"]

    def emit(i: int, depth: int) -> None:
        pad = "  " * depth
        head = "ROOT" if parents[i] < 0 else "JOINT"
        o = offsets[i] if parents[i] >= 0 else np.zeros(3)
        lines.append(f"{pad}{head} {names[i]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {o[0]:.6f} {o[1]:.6f} {o[2]:.6f}")
        if parents[i] < 0:
            lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation")
        else:
            lines.append(f"{pad}  CHANNELS 3 Zrotation Xrotation Yrotation")
        for c in children[i]:
            emit(c, depth + 1)
        if not children[i]:
            e = _end_site(offsets[i])
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET {e[0]:.6f} {e[1]:.6f} {e[2]:.6f}",
                          f"{pad}  }}"])
        lines.append(f"{pad}}}")

    emit(depth_first(parents)[0], 0)
    return "\n".join(lines) + "\n"


def motion_rows(rotations: np.ndarray, root: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """(T, 3 + 3B) channel values: root position, then each bone's Z, X, Y angles in hierarchy order."""
    rotations = np.asarray(rotations, np.float64)
    t, b = rotations.shape[:2]
    euler = Rotation.from_quat(rotations.reshape(-1, 4)).as_euler(EULER_ORDER, degrees=True).reshape(t, b, 3)
    return np.concatenate([np.asarray(root, np.float64).reshape(t, 3), euler[:, list(order)].reshape(t, -1)], 1)


def write_bvh(path: Union[str, os.PathLike], names: Sequence[str], parents: Sequence[int], offsets: np.ndarray,
              rotations: np.ndarray, root: np.ndarray, fps: float, chunk: int = CHUNK) -> Path:
    """Write a BVH file.

    names (B,), parents (B,) with -1 for the root; offsets (B, 3) rest offset of each bone from its parent
    (the root's is ignored: its place is the root channel); rotations (T, B, 4) local unit quaternions
    (x, y, z, w), any array-like that slices (a numpy memmap streams); root (T, 3) root position per frame;
    fps frames per second (> 0).
    """
    rotations_shape = np.shape(rotations)
    if len(rotations_shape) != 3 or rotations_shape[1:] != (len(names), 4):
        raise ValueError(f"rotations must be (T, {len(names)}, 4), got {rotations_shape}")
    if np.shape(root) != (rotations_shape[0], 3):
        raise ValueError(f"root must be ({rotations_shape[0]}, 3), got {np.shape(root)}")
    if not (fps > 0 and round(1.0 / fps, 8) > 0):  # the header's Frame Time is never 0.00000000
        raise ValueError(f"fps must be positive and below 2e8, got {fps}")
    order = depth_first(parents)
    path = Path(path)
    n = rotations_shape[0]
    with open(path, "w") as f:
        f.write(hierarchy_text(names, parents, offsets))
        f.write(f"MOTION\nFrames: {n}\nFrame Time: {1.0 / fps:.8f}\n")
        for start in range(0, n, chunk):
            rows = motion_rows(rotations[start:start + chunk], root[start:start + chunk], order)
            f.write("\n".join(" ".join(f"{v:.6f}" for v in row) for row in rows.tolist()) + "\n")
    return path


def held_frames(frames: np.ndarray, first: Optional[int] = None, last: Optional[int] = None) -> np.ndarray:
    """For every frame index from first to last, the position in `frames` (sorted, seen frames) of the
    latest seen frame at or before it: how a fixed-rate file fills the frames a track was not seen in."""
    frames = np.asarray(frames, np.int64)
    first = int(frames[0]) if first is None else first
    last = int(frames[-1]) if last is None else last
    return np.searchsorted(frames, np.arange(first, last + 1), side="right") - 1
