"""FBX per track, written by Blender's own FBX exporter (Blender as a Python module, the `blender` extra;
tools/export/blender.py runs it): the skeleton with the track's bone lengths, its animation keyed on whole
frames at the track's rate, and with a body (`--body`, or always where the track has vertices when asked)
the skinned mesh of tools/export/skin.py. Units: Blender's exporter writes centimetres (UnitScaleFactor 1,
the armature scaled by 100), +Y up, -Z forward, which Maya, MotionBuilder, Unity and Unreal read as is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .blender import run_build, track_job
from .skin import SkinnedBody, rest_pose


def linear_colour(track_id: int) -> list:
    """The overlay's colour of a track (draw.colours), as Blender's linear RGB."""
    from draw.colours import track_colour

    srgb = np.asarray(track_colour(track_id), np.float64) / 255.0
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4).tolist()


def track_npz(work: Path, name: str, names, parents, offsets, frames, rotations, root,
              body: Optional[SkinnedBody]) -> Path:
    """One track's arrays for Blender's side: rest pose where the track starts (as the .glb has it)."""
    rest = rest_pose(parents, offsets, np.asarray(root[0]))
    return track_job(work / f"{name}.npz", names, parents, rest, offsets, frames, rotations, root, body)


def write_fbx(path: Path, name: str, track_id: int, names, parents, offsets, frames: np.ndarray, rotations,
              root, fps: float, body: Optional[SkinnedBody], work: Path) -> Path:
    """frames: the source frame index of each key (Blender's frame numbers: whole frames at `fps`)."""
    npz = track_npz(work, name, names, parents, offsets, frames, rotations, root, body)
    run_build({"format": "fbx", "output": str(Path(path).resolve()), "fps": float(fps),
               "frame_start": int(frames[0]), "frame_end": int(frames[-1]),
               "tracks": [{"npz": str(npz.resolve()), "name": name, "color": linear_colour(track_id)}]},
              work / f"{name}.fbx.json")
    return Path(path)
