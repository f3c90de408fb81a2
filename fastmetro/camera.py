"""From the crop's weak-perspective camera to a perspective camera of the full frame.

Coordinates: frame positions are continuous image coordinates (the frame spans [0, W] x [0, H]; pixel
(i, j) covers [i, i+1) x [j, j+1)), the convention of detector boxes and of `Person.center`.

The network predicts, for its crop, a weak-perspective camera (s, tx, ty): a 3D point X projects to
    ndc = s * (X[:2] + (tx, ty))            in the crop's [-1, 1] square,
and the crop is the square of side b frame pixels centred on (cx, cy), so in the frame
    x = cx + ndc_x * b / 2,   y = cy + ndc_y * b / 2.

We replace it with the perspective camera that agrees with it: focal length f (frame pixels),
principal point at the frame centre (W/2, H/2), and the body translated by
    tz = 2 f / (s b),   Tx = tx + 2 (cx - W/2) / (s b),   Ty = ty + 2 (cy - H/2) / (s b),
so that  x = f (X + Tx) / (Z + tz) + W/2  equals the weak-perspective position for points at Z = 0
(and is close for a body, whose depth extent is small against tz). This is the conversion used by
HMR-style tools (CLIFF, PARE). Default focal: the frame diagonal, sqrt(W^2 + H^2) (about a 53 degree
diagonal field of view, CLIFF's estimate for an unknown camera); set it when you know your camera.
"""
from __future__ import annotations

import math

import numpy as np


def default_focal(frame_wh: tuple[int, int]) -> float:
    w, h = frame_wh
    return float(math.hypot(w, h))


def crop_to_frame_translation(
    cam: np.ndarray, center: np.ndarray, size: np.ndarray, frame_wh: tuple[int, int], focal: float
) -> np.ndarray:
    """cam (N, 3) = s, tx, ty; center (N, 2); size (N,) -> camera translation (N, 3), in model units."""
    cam = np.asarray(cam, dtype=np.float64).reshape(-1, 3)
    center = np.asarray(center, dtype=np.float64).reshape(-1, 2)
    size = np.asarray(size, dtype=np.float64).reshape(-1)
    w, h = frame_wh
    # A scale at or below zero has no camera in front of the body: clamp to keep tz finite.
    sb = np.maximum(cam[:, 0], 1e-6) * size
    tz = 2.0 * focal / sb
    tx = cam[:, 1] + 2.0 * (center[:, 0] - w / 2.0) / sb
    ty = cam[:, 2] + 2.0 * (center[:, 1] - h / 2.0) / sb
    return np.stack([tx, ty, tz], axis=1)


# Points nearer than this (metres, in front of the camera), or behind it, have no image position; they are
# projected as if at this depth: finite, far outside the frame (a coasting track extrapolated behind the
# camera gave joints2d of ~1e10 px with a depth floor of 1e-6).
NEAR_M = 0.1


def project(points: np.ndarray, cam_t: np.ndarray, focal: float, frame_wh: tuple[int, int]) -> np.ndarray:
    """Perspective projection of points (N, J, 3) translated by cam_t (N, 3) -> (N, J, 2) frame coords.
    A point less than NEAR_M in front of the camera (or behind it) is projected at depth NEAR_M."""
    p = np.asarray(points, dtype=np.float64) + np.asarray(cam_t, dtype=np.float64)[:, None, :]
    w, h = frame_wh
    z = np.maximum(p[..., 2:3], NEAR_M)
    return focal * p[..., :2] / z + np.array([w / 2.0, h / 2.0])


def weak_perspective_to_frame(
    points: np.ndarray, cam: np.ndarray, center: np.ndarray, size: np.ndarray
) -> np.ndarray:
    """The network's own 2D projection of points (N, J, 3), mapped from its crop to frame coords."""
    cam = np.asarray(cam, dtype=np.float64).reshape(-1, 3)
    ndc = cam[:, None, :1] * (np.asarray(points, dtype=np.float64)[..., :2] + cam[:, None, 1:])
    return np.asarray(center, dtype=np.float64)[:, None, :] + ndc * np.asarray(size)[:, None, None] / 2.0
