"""VMC in the world frame: when the camera over the floor is known (the stream's calibrated or fixed `world`, or
a camera.json given with `vmc --camera FILE`), every person's skeleton is placed in the world (floor y = 0, +Y
up, metres, docs/world.md) and the feet in contact are kept on the floor live, so the avatar stands upright on
the engine's floor and walks across it in metres, whatever the camera's tilt (docs/engines.md).

    placement = WorldPlacement(camera=None)                  # None: the stream's own camera when it has one
    pose = placement.apply(frame, keys, pose, cam_t, t)      # a humanoid pose (camera's y-up frame) -> world

Live, only the height is corrected: per person a running offset of its contact feet from the floor
(fastmetro.feet.FloorOffset over fastmetro.feet.ContactDetector's flags) comes off the root; holding a foot
in place horizontally needs the whole contact span, which the export's foot locking has and a live stream
does not.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from fastmetro import feet
from fastmetro import humanoid as hu
from fastmetro.world import CameraModel

log = logging.getLogger("fastmetro-stream.vmc")

USABLE_STATES = ("calibrated", "fixed")


class WorldPlacement:
    """Per frame: which camera places the persons (a given camera.json first, else the frame's own `world`
    when calibrated or fixed, else none), and the placing itself, with the live floor correction."""

    def __init__(self, camera: Optional[CameraModel] = None, ground: bool = True) -> None:
        self.camera = camera
        self.ground = ground
        self.contact = feet.ContactDetector()
        self.floor = feet.FloorOffset()
        self.source: Optional[str] = None  # what placed the last frame: "file", "stream" or None
        self.stats = dict(world_frames=0, camera_frames=0)

    def transform(self, frame) -> Optional[tuple[np.ndarray, float, str]]:
        """(world_from_camera (4, 4), depth factor, source) for this frame, or None (the camera frame it is)."""
        if self.camera is not None:
            wh = (int(frame.width), int(frame.height))
            focal = getattr(frame, "focal", None)
            k = self.camera.focal_for(*wh) / float(focal) if focal else 1.0
            return self.camera.world_from_camera(), k, "file"
        world = getattr(frame, "world", None)
        if world is not None and world.state in USABLE_STATES and world.world_from_camera is not None:
            return np.asarray(world.world_from_camera, np.float64), 1.0, "stream"
        return None

    def apply(self, frame, keys: Sequence, pose: hu.HumanoidPose, cam_t: np.ndarray, t: float,
              scale: float = 1.0) -> tuple[hu.HumanoidPose, bool]:
        """The persons of `pose` (solved with scale 1, the camera's y-up frame) in the world when this frame
        has a camera, lengths then multiplied by `scale` (about the world's origin on the floor: the floor
        stays at y = 0). keys: one per person (stream, track id) for the live floor correction; cam_t (N, 3)
        the persons' published translations. Returns the pose and whether it is in the world."""
        placed = self.transform(frame)
        if placed is None:
            self._switch(None)
            self.stats["camera_frames"] += 1
            return _scaled(pose, scale), False
        t_wc, k, source = placed
        self._switch(source)
        self.stats["world_frames"] += 1
        root = np.array(pose.root, np.float64, copy=True)
        if abs(k - 1.0) > 1e-9:  # cam_t placed at another focal: depth scales with the focal
            root[:, 2] -= (k - 1.0) * np.asarray(cam_t, np.float64).reshape(-1, 3)[:, 2]  # y-up: z = -camera z
        pose = feet.pose_to_world(hu.HumanoidPose(pose.rotations, pose.offsets, root), t_wc)
        if self.ground and len(keys):
            pos = feet._world(pose)[0]
            ankles, toes = pos[:, list(feet.FOOT_BONES)], pos[:, list(feet.TOES_BONES)]
            sole = feet.sole_height(ankles, toes)
            shift = np.zeros(len(keys))
            for i, key in enumerate(keys):
                contact = self.contact.update(key, t, ankles[i], toes[i])
                shift[i] = self.floor.update(key, t, sole[i], contact)
            pose = hu.HumanoidPose(pose.rotations, pose.offsets, pose.root - shift[:, None] * [0.0, 1.0, 0.0])
        return _scaled(pose, scale), True

    def forget(self, key) -> None:
        self.contact.forget(key)
        self.floor.forget(key)

    def _switch(self, source: Optional[str]) -> None:
        if source != self.source:
            what = {"file": "the camera file", "stream": "the stream's calibrated camera", None: "none known"}
            log.info("vmc: %s frame (%s)", "world" if source else "camera", what[source])
            self.source = source


def _scaled(pose: hu.HumanoidPose, scale: float) -> hu.HumanoidPose:
    if scale == 1.0:
        return pose
    return hu.HumanoidPose(pose.rotations, np.asarray(pose.offsets) * scale, np.asarray(pose.root) * scale)
