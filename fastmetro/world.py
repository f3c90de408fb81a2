"""The world frame: a static camera's pose over the floor (focal, up direction, height) and the map from the
camera frame to the world frame (docs/world.md). Numpy only, usable by stages and tools.

Camera frame (the wire's): x right, y down, z forward, metres. World frame: right-handed, +Y up, metres, the
floor at y = 0, the camera at (0, height, 0), -Z the camera's viewing direction projected onto the floor,
+X = Y x Z (the camera's right when it has no roll).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

CAMERA_FILE_VERSION = 1
STATES = ("calibrating", "calibrated", "fixed")


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(3)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"up must be a non-zero finite 3-vector, got {v.tolist()}")
    return v / n


def world_rotation(up) -> np.ndarray:
    """(3, 3) rotation R with X_world_axes = R @ X_cam: rows are the world's X, Y, Z axes in camera coordinates."""
    y = _unit(up)
    forward = np.array([0.0, 0.0, 1.0])
    f = forward - y * float(forward @ y)
    if np.linalg.norm(f) < 1e-6:  # looking straight down (or up): use the image's up instead of its forward
        img_up = np.array([0.0, -1.0, 0.0])
        f = img_up - y * float(img_up @ y)
    f = f / np.linalg.norm(f)
    z = -f
    x = np.cross(y, z)
    return np.stack([x, y, z])


def world_from_camera(up, height: float) -> np.ndarray:
    """(4, 4): X_world = T @ [X_cam, 1] for a camera `height` metres above the floor whose world up is `up`."""
    t = np.eye(4)
    t[:3, :3] = world_rotation(up)
    t[1, 3] = float(height)
    return t


def pitch_roll_deg(up) -> tuple[float, float]:
    """(pitch, roll) in degrees of a camera whose world up is `up` (camera frame). Pitch > 0: looking down
    (the optical axis below the horizon); roll > 0: the image turned clockwise, i.e. the world's up leans
    to the image's right."""
    u = _unit(up)
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, -u[2]))))
    roll = math.degrees(math.atan2(u[0], -u[1]))
    return pitch, roll


def up_from_pitch_roll(pitch_deg: float, roll_deg: float) -> np.ndarray:
    """The inverse of pitch_roll_deg: the world's up in the camera frame."""
    p, r = math.radians(pitch_deg), math.radians(roll_deg)
    c = math.cos(p)
    return np.array([c * math.sin(r), -c * math.cos(r), -math.sin(p)])


@dataclass(frozen=True)
class CameraModel:
    """A static camera over a floor. `up` and `height` place it; `focal` (frame pixels, principal point at
    the frame centre) is the focal the pipeline places persons with."""

    focal: float  # frame pixels
    up: np.ndarray  # (3,) unit: the world's up in the camera frame (x right, y down, z forward)
    height: float  # metres above the floor
    width: int  # frame size the focal refers to
    height_px: int
    focal_estimated: bool  # False when kept (configured / diagonal) because it is not observable
    persons: int = 0  # persons (tracks) the estimate used
    frames: int = 0  # frames the estimate used
    residual: float = float("nan")  # robust RMS of the fit, in units of box height
    state: str = "calibrated"  # calibrating | calibrated | fixed
    extra: dict = field(default_factory=dict, compare=False)  # diagnostics kept in camera.json

    def __post_init__(self):
        object.__setattr__(self, "up", _unit(self.up))
        if not (np.isfinite(self.focal) and self.focal > 0):
            raise ValueError(f"focal must be a positive number of pixels, got {self.focal}")
        if not np.isfinite(self.height):
            raise ValueError(f"height must be finite, got {self.height}")
        if self.state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {self.state!r}")

    @property
    def pitch_deg(self) -> float:
        return pitch_roll_deg(self.up)[0]

    @property
    def roll_deg(self) -> float:
        return pitch_roll_deg(self.up)[1]

    def world_from_camera(self) -> np.ndarray:
        return world_from_camera(self.up, self.height)

    def camera_from_world(self) -> np.ndarray:
        return np.linalg.inv(self.world_from_camera())

    def position(self) -> np.ndarray:
        """The camera's centre in the world frame: (0, height, 0)."""
        return np.array([0.0, self.height, 0.0])

    def focal_for(self, width: int, height_px: int) -> float:
        """This focal for a frame of another size (the same field of view, scaled by the width)."""
        return self.focal * (width / self.width) if self.width else self.focal

    def with_state(self, state: str) -> "CameraModel":
        return replace(self, state=state)

    def to_dict(self) -> dict:
        d = {
            "version": CAMERA_FILE_VERSION,
            "focal": float(self.focal),
            "focal_estimated": bool(self.focal_estimated),
            "up": [float(v) for v in self.up],
            "height": float(self.height),
            "pitch_deg": float(self.pitch_deg),
            "roll_deg": float(self.roll_deg),
            "width": int(self.width),
            "height_px": int(self.height_px),
            "persons": int(self.persons),
            "frames": int(self.frames),
            "residual": None if not np.isfinite(self.residual) else float(self.residual),
            "state": self.state,
            "world_from_camera": self.world_from_camera().tolist(),
        }
        if self.extra:
            d["extra"] = self.extra
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CameraModel":
        if not isinstance(d, dict):
            raise ValueError("a camera file holds a JSON object")
        missing = [k for k in ("focal", "up", "height", "width", "height_px") if k not in d]
        if missing:
            raise ValueError(f"camera file lacks {', '.join(missing)}")
        v = d.get("version", CAMERA_FILE_VERSION)
        if v != CAMERA_FILE_VERSION:
            raise ValueError(f"camera file version {v} is not {CAMERA_FILE_VERSION}")
        res = d.get("residual")
        return cls(
            focal=float(d["focal"]), up=np.asarray(d["up"], dtype=np.float64), height=float(d["height"]),
            width=int(d["width"]), height_px=int(d["height_px"]),
            focal_estimated=bool(d.get("focal_estimated", True)), persons=int(d.get("persons", 0)),
            frames=int(d.get("frames", 0)), residual=float("nan") if res is None else float(res),
            state=str(d.get("state", "calibrated")), extra=dict(d.get("extra", {})),
        )

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> "CameraModel":
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise ValueError(f"camera file {p} does not exist") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"camera file {p} is not JSON: {e}") from None
        try:
            return cls.from_dict(d)
        except (ValueError, TypeError) as e:
            raise ValueError(f"camera file {p}: {e}") from None


def camera_to_world(points_cam, model: CameraModel) -> np.ndarray:
    """Points (..., 3) in the camera frame -> the world frame."""
    p = np.asarray(points_cam, dtype=np.float64)
    t = model.world_from_camera()
    return p @ t[:3, :3].T + t[:3, 3]


def world_to_camera(points_world, model: CameraModel) -> np.ndarray:
    """Points (..., 3) in the world frame -> the camera frame."""
    p = np.asarray(points_world, dtype=np.float64)
    t = model.world_from_camera()
    return (p - t[:3, 3]) @ t[:3, :3]
