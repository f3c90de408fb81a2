"""World-grounded export: the recording's camera over the floor (a camera file, the recording's own fixed camera,
or calibrated offline from the persons' boxes, fastmetro.world_calib), each track placed in the world frame,
its feet's contacts found and its feet locked (fastmetro.feet) before its files are written (docs/export.md).

    world = WorldExport.prepare(recording, stream, want=None, camera_file=None)   # None: no world
    world.finish_track(track, humanoid)              # at a track's end, before its files are written

What a track gets: `world_joints_h36m` (F, 17, 3), `world_root` (F, 3), `foot_contact` (F, 2) and
`world_from_camera` (4, 4) in its npz (`track.extra`); its skeleton (`humanoid_rotations`, `humanoid_root`
of the scratch store, which the npz, BVH and glTF files are written from) turned into the world frame and
foot-locked, with the track's one skeleton (the bone lengths the files hold).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from fastmetro import feet
from fastmetro.world import CameraModel, camera_to_world

from .tracks import DEFAULT_FPS, Track, TrackStore, read_frames
from .writers import skeleton_offsets

MIN_PERSON_FRAMES = 30  # below this a recording is not calibrated (fastmetro.world_calib's own floor)


class WorldError(ValueError):
    """The world was asked for and cannot be had (one line)."""


@dataclass
class WorldExport:
    camera: CameraModel
    source: str  # "file", "recording" (its frames' fixed or calibrated camera), "calibrated" (from its boxes)
    frame_wh: tuple[int, int]  # the recording's frame size
    lock: bool = True
    stats: dict = field(default_factory=dict)

    @property
    def focal(self) -> float:
        """The camera's focal for the recording's frames."""
        return self.camera.focal_for(*self.frame_wh)

    # ------------------------------------------------------------------------------------ which camera
    @classmethod
    def prepare(cls, recording: Union[str, Path], stream: Optional[str] = None, want: Optional[bool] = None,
                camera_file: Optional[Union[str, Path]] = None, lock: bool = True) -> Optional["WorldExport"]:
        """The world for an export. want False: None. A camera file: that camera. Otherwise one pass over the
        recording: a camera the run was given (state fixed) if its frames carry one, else the offline
        calibration of the persons' boxes, else the run's own online calibration; None when none of them can
        be had and want is None (auto), a `WorldError` when want is True."""
        if want is False:
            return None
        if camera_file is not None:
            camera = CameraModel.load(camera_file)  # ValueError: one line naming the file
            wh = _frame_size(recording, stream) or (camera.width, camera.height_px)
            return cls(camera, "file", wh, lock)
        from fastmetro.world_calib import calibrate, observations_from_boxes

        boxes, tracks, frames = [], [], []
        wh = fixed = online = None
        focal = None
        for frame in read_frames(recording, stream):
            wh = wh or (int(frame.width), int(frame.height))
            focal = focal or frame.focal
            world = getattr(frame, "world", None)
            if world is not None and world.world_from_camera is not None:
                if world.state == "fixed":
                    fixed = (world, frame.focal)
                elif world.state == "calibrated":
                    online = (world, frame.focal)
            for p in frame.persons:
                if not p.predicted and p.state != "coasting":
                    boxes.append(np.asarray(p.box, np.float64))
                    tracks.append(p.track_id)
                    frames.append(frame.index)
        if wh is None:  # no frames: the export's own reading says why
            return None
        if fixed is not None:
            return cls(_from_world(fixed, wh, "fixed"), "recording", wh, lock)
        focal = float(focal) if focal else math.hypot(*wh)
        model = None
        if len(boxes) >= MIN_PERSON_FRAMES:
            obs = observations_from_boxes(np.array(boxes), np.array(tracks), np.array(frames), wh)
            model = calibrate(obs, wh, focal)
        if model is not None:
            return cls(model, "calibrated", wh, lock)
        if online is not None:
            return cls(_from_world(online, wh, "calibrated"), "recording", wh, lock)
        if want:
            raise WorldError(f"the recording cannot be calibrated ({len(boxes)} person-frames of "
                             f"{len(set(tracks))} tracks seen; a calibration needs persons walking in view): "
                             f"give the camera with --camera FILE (fastmetro-stream calibrate)")
        return None

    def to_json(self) -> dict:
        d = self.camera.to_dict()
        d["source"] = self.source
        d["feet_locked"] = self.lock
        return d

    def save(self, directory: Path) -> Path:
        path = Path(directory) / "camera.json"
        self.camera.save(path)
        return path

    # --------------------------------------------------------------------------------------- one track
    def depth_factor(self, focal: np.ndarray) -> np.ndarray:
        """(n,) how each row's depth scales from the focal it was placed at to the camera's."""
        f = np.asarray(focal, np.float64)
        f = np.where(np.isfinite(f) & (f > 0), f, math.hypot(*self.frame_wh))
        return self.focal / f

    def finish_track(self, track: Track, humanoid) -> dict:
        """Place the track in the world, find its feet's contacts and lock them (module docstring). Returns
        what tracks.json says of it."""
        store = track.store
        n = store.counts.get("frame_index", 0)
        if n == 0:
            return {}
        index = np.asarray(store.array("frame_index"))
        k = self.depth_factor(store.array("focal"))
        cam_t = np.asarray(store.array("cam_t"), np.float64) * np.stack([np.ones(n), np.ones(n), k], 1)
        joints = camera_to_world(np.asarray(store.array("joints_h36m"), np.float64) + cam_t[:, None], self.camera)
        times = _times(np.asarray(store.array("timestamp")), index, track.fps(None))
        ankles = joints[:, list(feet.H36M_ANKLES)]
        contact = feet.contact_flags(ankles, times, root=joints[:, 0]) if n > 1 else np.zeros((n, 2), bool)
        world_root = joints[:, 0].copy()
        info = {"foot_contact": [round(float(x), 3) for x in contact.mean(0)]}
        if self.lock and n > 1:
            locked, _ = feet.lock_joints(joints, contact)
            info["slide_m_per_s"] = [round(feet.slide_speed(ankles, contact, times), 4),
                                     round(feet.slide_speed(locked[:, list(feet.H36M_ANKLES)], contact, times), 4)]
            joints = locked
            world_root = joints[:, 0].copy()
        if humanoid is not None and "humanoid_rotations" in store:
            offsets = skeleton_offsets(store)  # the track's one skeleton, as the files hold it
            hf = np.asarray(store.array("humanoid_frame"))
            rows = np.searchsorted(index, hf)
            root_c = np.asarray(store.array("humanoid_root"), np.float64) * [1.0, -1.0, -1.0]  # y-up -> camera
            root_c[:, 2] += (k[rows] - 1.0) * np.asarray(store.array("cam_t"), np.float64)[rows, 2]
            pose = humanoid.HumanoidPose(np.asarray(store.array("humanoid_rotations"), np.float64),
                                         np.asarray(offsets, np.float64), root_c * [1.0, -1.0, -1.0])
            pose = feet.pose_to_world(pose, self.camera.world_from_camera())
            if self.lock and len(hf) > 1:
                pose = feet.lock_feet(pose, contact[rows]).pose
            _overwrite(store, "humanoid_rotations", pose.rotations)
            _overwrite(store, "humanoid_root", pose.root)
            world_root[rows] = pose.root
        track.extra.update(world_joints_h36m=joints.astype(np.float32), world_root=world_root.astype(np.float32),
                           foot_contact=contact, world_from_camera=self.camera.world_from_camera())
        return info


def _from_world(seen, wh: tuple[int, int], state: str) -> CameraModel:
    """A CameraModel from a frame's `world` (its world_from_camera) and the frame's focal."""
    world, focal = seen
    t = np.asarray(world.world_from_camera, np.float64)
    return CameraModel(focal=float(focal) if focal else math.hypot(*wh), up=t[1, :3], height=float(t[1, 3]),
                       width=wh[0], height_px=wh[1], focal_estimated=bool(world.focal_estimated), state=state)


def _frame_size(recording, stream) -> Optional[tuple[int, int]]:
    for frame in read_frames(recording, stream):
        return int(frame.width), int(frame.height)
    return None


def _times(ts: np.ndarray, index: np.ndarray, fps: float) -> np.ndarray:
    """Seconds of each row: the timestamps where they are usable (finite, increasing), else frame / fps."""
    if len(ts) and np.all(np.isfinite(ts)) and np.all(np.diff(ts) > 0):
        return ts.astype(np.float64)
    return index.astype(np.float64) / (fps or DEFAULT_FPS)


def _overwrite(store: TrackStore, name: str, values: np.ndarray) -> None:
    """Replace a field's values in the scratch store (same shape and dtype), in its file."""
    old = store.array(name)  # writes out anything buffered
    if old.shape != values.shape:
        raise ValueError(f"{name}: {values.shape} does not replace {old.shape}")
    m = np.memmap(store.dir / f"{name}.raw", dtype=old.dtype, mode="r+", shape=old.shape)
    m[:] = values
    m.flush()
    del m
