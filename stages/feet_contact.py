"""Per person and frame, whether each foot is planted: the wire's optional `foot_contact` (left, right), from the
published joints placed in the frame's world (its calibrated or fixed camera) by fastmetro.feet's causal
ContactDetector (height above the person's floor level and speed, with hysteresis; docs/world.md). Frames
without a world carry none. The smooth stage marks its output frames with it."""
from __future__ import annotations

import dataclasses

import numpy as np

from fastmetro.feet import H36M_ANKLES, ContactDetector
from pipeline.messages import MeshFrame


class FootContactMarker:
    """Keeps each person's recent ankles (per source and track) and sets `foot_contact` on the persons of
    frames whose camera over the floor is known."""

    def __init__(self) -> None:
        self.detector = ContactDetector()

    def apply(self, mf: MeshFrame) -> MeshFrame:
        world = getattr(mf, "world", None)
        if world is None or world.world_from_camera is None or not mf.persons:
            return mf
        t_wc = np.asarray(world.world_from_camera, np.float64)
        f = mf.frame
        t = float(f.pts) if f.pts is not None else f.index / 30.0
        out = []
        for p in mf.persons:
            joints = np.asarray(p.joints_h36m, np.float64)[[0, *H36M_ANKLES]] + np.asarray(p.cam_t, np.float64)
            joints = joints @ t_wc[:3, :3].T + t_wc[:3, 3]
            flags = self.detector.update((f.source, p.person.track_id), t, joints[1:], root=joints[0])
            out.append(dataclasses.replace(p, foot_contact=flags))
        mf.persons = out
        return mf
