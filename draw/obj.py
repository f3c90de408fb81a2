"""Wavefront OBJ writing: one mesh, placed in the camera frame, in the axes 3D tools expect."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, cam_t: Optional[np.ndarray] = None) -> None:
    """A Wavefront OBJ of one mesh. Vertices are placed by cam_t (camera frame, metres) and written in the
    axes 3D tools expect (x right, y up, z towards the viewer: the camera frame turned 180 degrees about x,
    which keeps the triangles' winding)."""
    v = np.asarray(vertices, np.float64) + (0.0 if cam_t is None else np.asarray(cam_t, np.float64).reshape(1, 3))
    v = v * np.array([1.0, -1.0, -1.0])
    f = np.asarray(faces, np.int64) + 1
    with open(path, "w") as fh:
        fh.write("# fastmetro-stream mesh: metres, x right, y up, z towards the viewer (camera at the origin)\n")
        fh.write("".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in v.tolist()))
        fh.write("".join(f"f {a} {b} {c}\n" for a, b, c in f.tolist()))
