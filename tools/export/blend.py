"""`--format blend`: one Blender file for the whole recording. The scene's frame rate and frame range are
the recording's (Blender's frame number = the source frame index), each track a character named by its
track name: its armature (drawn as sticks, in front) and its skinned body (tools/export/skin.py), in the
overlay's colour; the camera at the origin with the recording's focal length and frame size, and the source
video (`--video`) as the camera's background (and under the render, through the compositor). Written by
Blender itself (tools/export/blender.py); tracks are collected as they end and the file is written last.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .blender import run_build
from .fbx import linear_colour, track_npz
from .skin import SkinnedBody


class BlendScene:
    def __init__(self, work: Path) -> None:
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.tracks: list[dict] = []
        self.first: Optional[int] = None
        self.last: Optional[int] = None

    def add(self, name: str, track_id: int, names, parents, offsets, frames: np.ndarray, rotations, root,
            body: Optional[SkinnedBody]) -> None:
        npz = track_npz(self.work, name, names, parents, offsets, frames, rotations, root, body)
        self.tracks.append({"npz": str(npz.resolve()), "name": name, "color": linear_colour(track_id)})
        self.first = int(frames[0]) if self.first is None else min(self.first, int(frames[0]))
        self.last = int(frames[-1]) if self.last is None else max(self.last, int(frames[-1]))

    def write(self, path: Path, fps: float, camera: Optional[dict], video: Optional[str],
              render: Optional[dict] = None) -> Optional[Path]:
        """camera: {"focal": px, "width": px, "height": px} or None. render: {"png", "frame"} renders one
        frame with Workbench after saving. None when no track has a skeleton."""
        if not self.tracks:
            return None
        job = {"format": "blend", "output": str(Path(path).resolve()), "fps": float(fps),
               "frame_start": self.first, "frame_end": self.last, "tracks": self.tracks, "camera": camera,
               "video": str(Path(video).resolve()) if video else None, "video_frame_start": 0, "render": render}
        run_build(job, self.work / "blend.json")
        return Path(path)
