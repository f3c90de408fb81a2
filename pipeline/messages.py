"""Messages that travel between the stages.

Every message is a small dataclass. Pixels never travel in a message: a `Frame` names the
shared-memory slot that holds its RGB pixels (and, after detection, the person crops) and the
stages read them through `pipeline.shm.FrameStore`. Mesh arrays are small enough (83 KB per
person) to travel pickled.

Flow:  decode --Frame--> detect --Detections--> infer --MeshFrame--> smooth --MeshFrame--> publish
Every stage forwards `EndOfStream` once, after its last real message. A run of several sources also sends
a `SourceEnd` when one of them ends while the others go on; every stage forwards it after what it held of
that source.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np

from fastmetro import CROP_SIZE as _CROP_SIZE

TrackState = Literal["new", "tracked", "coasting", "lost"]

CROP_SIZE = _CROP_SIZE  # the network's input side (the crop contract: fastmetro/crops.py)


def now() -> float:
    """Wall-clock time used for every per-stage timestamp (seconds since the epoch)."""
    return time.time()


@dataclass
class Frame:
    """One decoded frame. decode -> detect (and carried along by every later message)."""

    source: str  # stream id (from the config), names the stream on the wire
    index: int  # 0-based index of the frame in its source, in decode order
    pts: Optional[float]  # presentation time in seconds from the container, None if unknown
    slot: int  # FrameStore slot holding the RGB uint8 pixels; -1 once the slot is released
    height: int
    width: int
    times: dict[str, float] = field(default_factory=dict)  # stage name -> wall time it emitted
    dropped: int = 0  # frames dropped upstream (live mode) since the previous delivered frame
    # frames taken from the source before this one (delivered or dropped), -1 if unknown: the publisher
    # counts the frames dropped since its previous frame message of the source from it, in order
    position: int = -1


@dataclass
class Person:
    """One detected (and tracked) person in a frame, with the square crop fed to the network.

    The crop is the square of side `size` frame pixels centred on `center`, resampled to the network's
    input (the crop contract: fastmetro/crops.py, docs/crops.md).
    """

    track_id: int
    state: TrackState
    box: tuple[float, float, float, float]  # tight detection box x1, y1, x2, y2 (frame pixels)
    score: float
    center: tuple[float, float]  # crop square centre (frame pixels)
    size: float  # crop square side (frame pixels)
    crop_index: int = -1  # index of this person's crop in FrameStore.crops(slot); -1 = no crop


@dataclass
class Detections:
    """detect -> infer: the persons of one frame; their crops sit in the frame's slot."""

    frame: Frame
    persons: list[Person]
    lost: list[int] = field(default_factory=list)  # track ids that ended at this frame


@dataclass
class HandMesh:
    """One hand of a person: the hand network's result, mirrored back for a left hand and placed in the
    body's camera frame (fastmetro.hand_crops)."""

    side: Literal["left", "right"]  # the person's own side
    cam: np.ndarray  # (3,) weak-perspective camera of the (plain, un-mirrored) hand crop: s, tx, ty
    cam_t: np.ndarray  # (3,) hand translation in the camera frame, the camera of the body's cam_t
    joints3d: np.ndarray  # (21, 3) hand joints, metres, hand-relative (fastmetro.HAND_JOINT_NAMES)
    vertices: np.ndarray  # (778, 3) MANO-topology hand mesh, metres, hand-relative
    center: tuple[float, float]  # hand crop square centre (frame pixels)
    size: float  # hand crop square side (frame pixels)


@dataclass
class PersonMesh:
    """One person's network result, mapped to the frame. infer -> smooth -> publish."""

    person: Person
    cam: np.ndarray  # (3,) weak-perspective camera of the crop: s, tx, ty
    cam_t: np.ndarray  # (3,) camera-space translation for the full frame (see fastmetro.camera)
    joints3d: np.ndarray  # (14, 3) network joints, metres, root-relative model space
    joints_h36m: np.ndarray  # (17, 3) Human3.6M joints regressed from the fine mesh
    joints2d: np.ndarray  # (14, 2) network joints projected to frame pixels
    vertices: np.ndarray  # (6890, 3) fine mesh
    rotmat: Optional[np.ndarray] = None  # (24, 3, 3) with the SMPL head
    betas: Optional[np.ndarray] = None  # (10,) with the SMPL head
    predicted: bool = False  # True when the smoother coasted (no measurement this frame)
    hands: dict[str, HandMesh] = field(default_factory=dict)  # "left"/"right" -> hand, those seen this frame
    hand_skips: dict[str, str] = field(default_factory=dict)  # side -> why it has no hand (HandSkip value)
    foot_contact: Optional[np.ndarray] = None  # (2,) bool: left, right foot planted on the floor; None = unknown


@dataclass
class WorldInfo:
    """Where the camera is over the floor (docs/world.md), as the run knows it at this frame."""

    state: str  # calibrating | calibrated | fixed
    world_from_camera: Optional[np.ndarray] = None  # (4, 4) X_world = T @ [X_cam, 1]; None while calibrating
    focal_estimated: bool = False  # the frame's focal was calibrated (else configured or the frame diagonal)


@dataclass
class MeshFrame:
    """All persons of one frame. infer -> smooth -> publish."""

    frame: Frame
    persons: list[PersonMesh]
    lost: list[int] = field(default_factory=list)
    focal: Optional[float] = None  # focal length (frame pixels) of the camera that cam_t is in; set by infer
    world: Optional[WorldInfo] = None  # the camera's pose over the floor (world.mode not off)


@dataclass
class EndOfStream:
    """Sent once by each stage after its last message; the run ends when publish receives it."""

    source: str  # the stream id; "*" in a run of several sources (each ended before by its SourceEnd)
    frames: int  # frames the source delivered
    reason: str = "end of stream"  # or "stopped", "error: ..."


ALL_SOURCES = "*"  # EndOfStream.source of a run of several sources


@dataclass
class SourceEnd:
    """One source of a run of several has ended (its file ended, it failed, or the run is stopping); the
    others go on. Sent after that source's last Frame; every stage forwards it after what it still held of
    that source (detect its tracker, smooth its tracks). The runtime never drops it."""

    source: str  # the stream id that ended
    frames: int  # frames that source delivered
    reason: str = "end of stream"  # or "stopped", "error: ..."


CONTROL = (EndOfStream, SourceEnd)  # messages that carry no frame and are never dropped
