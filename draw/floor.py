"""The floor in pictures (docs/world.md): the world's floor grid drawn over a camera's frame, so a glance tells
whether a calibration fits the video, and the bird's-eye floor plan of the persons' paths in metres, with the
camera's place and the floor it sees. OpenCV draws; numpy places.

    rgb = draw_floor_grid(rgb, world_from_camera, focal)                    # metre lines on the floor y = 0
    png = floor_plan({track_id: xz_path}, world_from_camera, focal, (w, h)) # (H, W, 3) uint8 RGB

World frame: right-handed, +Y up, metres, the floor at y = 0, the camera at (0, height, 0), -Z its viewing
direction on the floor. The plan looks down from above: +X to the right, -Z (away from the camera) up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import cv2
import numpy as np

from .colours import track_colour

_SHIFT = 4  # fractional bits for OpenCV's anti-aliased lines
GRID_COLOUR = (255, 255, 255)
AXIS_COLOUR = (255, 210, 60)


def _rays(px: np.ndarray, focal: float, wh: tuple[int, int]) -> np.ndarray:
    """Camera-frame directions (N, 3) through frame pixels (N, 2) (principal point at the frame centre)."""
    w, h = wh
    return np.stack([(px[:, 0] - w / 2) / focal, (px[:, 1] - h / 2) / focal, np.ones(len(px))], 1)


def visible_floor(world_from_camera: np.ndarray, focal: float, wh: tuple[int, int],
                  max_distance: float = 30.0, samples: int = 64) -> np.ndarray:
    """(K, 2) the floor the frame sees, as a polygon of world (x, z) points: the frame's border cast onto the
    floor, cut at `max_distance` (horizontal, from the point under the camera) where it runs to the horizon."""
    t = np.asarray(world_from_camera, np.float64)
    w, h = wh
    s = np.linspace(0, 1, samples, endpoint=False)
    border = np.concatenate([np.stack([s * w, 0 * s], 1), np.stack([w + 0 * s, s * h], 1),
                             np.stack([w - s * w, h + 0 * s], 1), np.stack([0 * s, h - s * h], 1)])
    d = _rays(border, focal, wh) @ t[:3, :3].T  # world directions
    c = t[:3, 3]
    horiz = np.linalg.norm(d[:, [0, 2]], axis=1)
    down = d[:, 1] < -1e-9
    reach = np.where(down, -c[1] / np.where(down, d[:, 1], -1.0), np.inf)  # along the ray to the floor
    flat = np.minimum(reach * horiz, max_distance)  # horizontal distance, cut
    unit = d[:, [0, 2]] / np.maximum(horiz, 1e-12)[:, None]
    return c[[0, 2]] + unit * flat[:, None]


def _clip_near(a: np.ndarray, b: np.ndarray, near: float) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The part of the camera-frame segment a-b in front of the plane z = near, or None."""
    if a[2] < near and b[2] < near:
        return None
    if a[2] < near:
        a = a + (b - a) * (near - a[2]) / (b[2] - a[2])
    elif b[2] < near:
        b = b + (a - b) * (near - b[2]) / (a[2] - b[2])
    return a, b


def draw_floor_grid(rgb: np.ndarray, world_from_camera: np.ndarray, focal: float, spacing: float = 1.0,
                    max_distance: float = 30.0, alpha: float = 0.45, colour=GRID_COLOUR) -> np.ndarray:
    """The frame with the floor's grid drawn over it: a line every `spacing` metres across the floor the frame
    sees (up to `max_distance` from the point under the camera), every fifth brighter, and the X and Z axes
    through the point under the camera in another colour. Returns a new (H, W, 3) uint8 array."""
    img = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = img.shape[:2]
    t = np.asarray(world_from_camera, np.float64)
    if not (np.all(np.isfinite(t)) and focal and focal > 0):
        return img.copy()
    poly = visible_floor(t, focal, (w, h), max_distance)
    lo = np.floor(poly.min(0) / spacing).astype(int)
    hi = np.ceil(poly.max(0) / spacing).astype(int)
    r, c = t[:3, :3], t[:3, 3]
    layer = img.copy()
    thick = max(1, round(min(w, h) / 500))
    for axis in (0, 1):  # lines of constant x (running along z), then of constant z
        other = 1 - axis
        for k in range(lo[axis], hi[axis] + 1):
            a = np.zeros(3)
            b = np.zeros(3)
            a[[0, 2][axis]] = b[[0, 2][axis]] = k * spacing
            a[[0, 2][other]], b[[0, 2][other]] = lo[other] * spacing, hi[other] * spacing
            seg = _clip_near((a - c) @ r, (b - c) @ r, 0.1)  # world -> camera frame
            if seg is None:
                continue
            p = np.array([focal * s[:2] / s[2] + [w / 2, h / 2] for s in seg])
            if not np.all(np.abs(p) < 1e6):
                continue
            if k == 0:
                col, th = AXIS_COLOUR, thick + 1
            else:
                col, th = (colour, thick + 1) if k % 5 == 0 else (tuple(int(v * 0.7) for v in colour), thick)
            q = np.rint((p - 0.5) * (1 << _SHIFT)).astype(np.int64)
            cv2.line(layer, tuple(map(int, q[0])), tuple(map(int, q[1])), col, th, cv2.LINE_AA, _SHIFT)
    return cv2.addWeighted(layer, alpha, img, 1.0 - alpha, 0.0)


# ----------------------------------------------------------------------------------------------- the plan
def _nice_step(span: float, lines: int = 12) -> float:
    raw = span / lines
    for step in (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0):
        if step >= raw:
            return step
    return 10.0 ** np.ceil(np.log10(raw))


@dataclass(frozen=True)
class PlanView:
    """Where the plan puts the floor: pixel = margin + (x - lo_x, z - lo_z) * scale (x right, z down: the
    camera at the bottom looking up the image)."""

    lo: tuple[float, float]
    scale: float  # pixels per metre
    margin: int
    size: int

    def pixels(self, xz) -> np.ndarray:
        xz = np.asarray(xz, np.float64).reshape(-1, 2)
        return self.margin + (xz - np.asarray(self.lo)) * self.scale


def plan_view(paths: Mapping[int, Sequence[np.ndarray]], world_from_camera: np.ndarray, focal: float,
              frame_wh: tuple[int, int], size: int = 1000, max_distance: float = 40.0) -> PlanView:
    """The view that fits the camera, the paths and the near floor it sees (within 12 m) in a size x size plan."""
    fov = visible_floor(world_from_camera, focal, frame_wh, max_distance)
    pts = [np.zeros((1, 2)), fov[np.linalg.norm(fov, axis=1) < 12.0]]
    pts += [np.asarray(p, np.float64).reshape(-1, 2) for ps in paths.values() for p in ps]
    allp = np.concatenate(pts)
    allp = allp[np.all(np.isfinite(allp), axis=1)]
    lo, hi = allp.min(0) - 1.0, allp.max(0) + 1.0
    span = float(max(hi - lo))
    mid = (lo + hi) / 2
    margin = int(size * 0.08)
    return PlanView((float(mid[0] - span / 2), float(mid[1] - span / 2)), (size - 2 * margin) / span, margin, size)


def floor_plan(paths: Mapping[int, Sequence[np.ndarray]], world_from_camera: np.ndarray, focal: float,
               frame_wh: tuple[int, int], size: int = 1000, title: Optional[str] = None,
               max_distance: float = 40.0) -> np.ndarray:
    """A bird's-eye plan (size x size RGB) of the floor in metres: a grid with its distances, the floor the
    camera sees (shaded) and its field of view, the camera (a triangle at (0, 0), looking up the image), and
    every track's path in its colour (`paths`: track id -> pieces of (N, 2) world x, z points), from a dot
    at its start to an arrow at its end with the track id. `plan_view` says where each point lands."""
    t = np.asarray(world_from_camera, np.float64)
    fov = visible_floor(t, focal, frame_wh, max_distance)
    pieces = [(tid, np.asarray(p, np.float64)) for tid, ps in paths.items() for p in ps if len(p)]
    view = plan_view(paths, t, focal, frame_wh, size, max_distance)
    margin, scale = view.margin, view.scale
    lo = np.asarray(view.lo)
    hi = lo + (size - 2 * margin) / scale
    span = float(hi[0] - lo[0])
    px = view.pixels

    def ipt(p) -> tuple[int, int]:
        return int(round(p[0] * (1 << _SHIFT))), int(round(p[1] * (1 << _SHIFT)))

    img = np.full((size, size, 3), 250, np.uint8)
    # the floor in view
    poly = np.rint(px(fov) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(img, [poly], (222, 232, 245), cv2.LINE_AA, _SHIFT)
    # the grid, labelled in metres
    step = _nice_step(span)
    font, fs = cv2.FONT_HERSHEY_SIMPLEX, size / 2200
    for axis in (0, 1):
        for v in np.arange(np.ceil(lo[axis] / step) * step, hi[axis] + 1e-9, step):
            a = np.array([lo[0], lo[1]])
            b = np.array([hi[0], hi[1]])
            a[axis] = b[axis] = v
            p = px(np.stack([a, b]))
            col = (150, 150, 150) if abs(v) < 1e-9 else (205, 205, 205)
            cv2.line(img, ipt(p[0]), ipt(p[1]), col, 1, cv2.LINE_AA, _SHIFT)
            label = f"{v:g}"
            if axis == 0:
                cv2.putText(img, label, (int(p[1][0]) - 10, size - margin + int(22 * fs * 2)), font, fs, (90, 90, 90),
                            1, cv2.LINE_AA)
            else:
                cv2.putText(img, label, (6, int(p[0][1]) + 5), font, fs, (90, 90, 90), 1, cv2.LINE_AA)
    cv2.putText(img, "x (m)", (size - margin - 40, size - 8), font, fs * 1.1, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(img, "z (m)", (6, margin - 12), font, fs * 1.1, (60, 60, 60), 1, cv2.LINE_AA)
    # the field of view's edges and the camera
    cam = px(np.zeros(2))[0]
    left, right = _fov_edges(t, focal, frame_wh, max_distance)
    for e in (left, right):
        cv2.line(img, ipt(cam), ipt(px(e)[0]), (120, 140, 190), 1, cv2.LINE_AA, _SHIFT)
    fwd = t[:3, :3] @ np.array([0.0, 0.0, 1.0])
    fwd = fwd[[0, 2]] / max(np.linalg.norm(fwd[[0, 2]]), 1e-9)
    side = np.array([-fwd[1], fwd[0]])
    r = 0.018 * size / scale  # the camera's triangle, in metres
    tri = px(np.stack([fwd * r * 1.6, -fwd * r + side * r, -fwd * r - side * r]))
    cv2.fillPoly(img, [np.rint(tri * (1 << _SHIFT)).astype(np.int32)], (40, 40, 40), cv2.LINE_AA, _SHIFT)
    # the paths
    for tid, p in pieces:
        col = tuple(int(v * 0.8) for v in track_colour(tid))
        q = px(p)
        cv2.polylines(img, [np.rint(q * (1 << _SHIFT)).astype(np.int32)], False, col, 2, cv2.LINE_AA, _SHIFT)
        cv2.circle(img, ipt(q[0]), 4 << _SHIFT, col, -1, cv2.LINE_AA, _SHIFT)
        if len(q) > 1:
            back = q[max(0, len(q) - 6)]
            if np.linalg.norm(q[-1] - back) > 1:
                cv2.arrowedLine(img, ipt(back), ipt(q[-1]), col, 2, cv2.LINE_AA, _SHIFT, tipLength=0.6)
        cv2.putText(img, str(tid), (int(q[-1][0]) + 6, int(q[-1][1]) - 6), font, fs * 1.2, col, 1, cv2.LINE_AA)
    if title:
        cv2.putText(img, title, (margin, int(margin * 0.45)), font, fs * 1.25, (30, 30, 30), 1, cv2.LINE_AA)
    return img


def _fov_edges(world_from_camera: np.ndarray, focal: float, wh: tuple[int, int],
               max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """World (x, z) of the left and right edges of the field of view along the frame's middle row, on the
    floor or at max_distance."""
    w, h = wh
    rays = _rays(np.array([[0.0, h / 2], [float(w), h / 2]]), focal, wh) @ np.asarray(world_from_camera)[:3, :3].T
    c = np.asarray(world_from_camera)[:3, 3]
    out = []
    for d in rays:
        horiz = np.linalg.norm(d[[0, 2]])
        reach = -c[1] / d[1] * horiz if d[1] < -1e-9 else np.inf
        out.append(c[[0, 2]] + d[[0, 2]] / max(horiz, 1e-12) * min(reach, max_distance))
    return out[0], out[1]


def write_png(path, rgb: np.ndarray) -> None:
    """Write an RGB image as PNG (OpenCV); an OSError with the reason when it cannot."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {path} as PNG")
    with open(path, "wb") as f:
        f.write(data.tobytes())
