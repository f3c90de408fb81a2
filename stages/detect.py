"""The detect stage: person detection, tracking and square crops (docs/crops.md).

decode --Frame--> detect --Detections--> infer. For every frame:

    detector    Ultralytics YOLO (person class) or OpenCV's HOG people detector (the offline fallback),
                run every `detect_every`-th frame of a source (stages/detectors.py)
    tracker     Ultralytics' own trackers (ByteTrack, BoT-SORT, OC-SORT; their YAML settings), one state per
                source; on frames without detection the tracker's motion model carries the boxes
                (stages/tracking.py)
    crops       a square of side `crop_scale` x the box's longer side around each person, resampled to
                224 x 224 uint8 RGB by one affine warp per crop, written into the frame's slot (fastmetro/crops.py)

The per-frame core needs no runtime: `PersonTracker(config).update(rgb) -> (persons, lost)` and
`make_crops(rgb, persons) -> (N, 224, 224, 3)`; `DetectStage` wraps them for the pipeline.

Lifecycle reported downstream: a person's `state` is "new" on the first frame its id is reported and
"tracked" after; ids whose tracks the tracker gave up (missing for longer than its `track_buffer`) go
once into `Detections.lost`. A person hidden for fewer frames keeps its id.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fastmetro.crops import make_crops
from pipeline.messages import Detections, EndOfStream, Frame, Person, SourceEnd
from pipeline.stage import Stage, StageContext, config_section

from .detectors import DetectorUnavailable, HogDetector, YoloDetector, build_detector
from .tracking import PersonTracker, _tracker_yaml, load_tracker

__all__ = ["DetectConfig", "DetectStage", "PersonTracker", "HogDetector", "YoloDetector", "DetectorUnavailable",
           "build_detector", "load_tracker"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- settings
class DetectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # auto: YOLO when its weights load, else the HOG detector (logged); hog never downloads anything
    detector: Literal["auto", "yolo", "hog"] = "auto"
    # the smallest current YOLO (2.6 M parameters): person boxes at CPU speed; Ultralytics downloads it on
    # first use, or give a path to a .pt/.onnx file
    yolo_model: str = "yolo11n.pt"
    # YOLO input size (pixels, long side): Ultralytics' default, what the model was trained at
    yolo_imgsz: int = Field(640, ge=32, le=4096)
    # lowest detection confidence kept: 0.1 is what Ultralytics' track mode uses, so the tracker's second
    # (low-score) association stage still sees weak boxes; new tracks need the tracker's own higher threshold
    confidence: float = Field(0.1, ge=0.0, le=1.0)
    # smallest box height kept (frame pixels): a person under ~40 px tall upsampled to 224 gives the
    # network nothing to work with
    min_box_size: float = Field(40.0, ge=0.0, le=100000.0)
    # at most this many persons per frame: the FrameStore crop area holds 8 crops per frame
    max_persons: int = Field(8, ge=1, le=128)
    # which persons win when there are more: the largest (closest) boxes, or the most confident
    keep: Literal["largest", "confident"] = "largest"
    # Ultralytics tracker: a name of its cfg/trackers/*.yaml (bytetrack, botsort, ocsort) or a path to
    # such a YAML; ByteTrack: motion + IoU only, no appearance model, the fastest
    tracker: str = "bytetrack"
    # run the detector on every k-th frame of a source and let the tracker's Kalman filter carry the boxes
    # in between (also whenever no track is live, see redetect_below); 1 = every frame, the most accurate
    detect_every: int = Field(1, ge=1, le=100000)
    # with detect_every > 1, also detect on the next frame when a live track's last detection scored below
    # this (a weak match drifts when carried); ByteTrack/BoT-SORT's own high-score threshold by default
    redetect_below: float = Field(0.25, ge=0.0, le=1.0)
    # crop side = this x the longer side of the tight box: METRO/FastMETRO training crops are the person's
    # box scaled by 1.2-1.3 (scale 1.25 x the 200 px box convention)
    crop_scale: float = Field(1.25, gt=0.0, le=10.0)
    # "auto": CUDA when present (YOLO only; HOG and the trackers run on the CPU)
    device: str = "auto"
    # frames detected in one detector call (offline mode only; live mode always sends each frame at
    # once): 1 = no waiting; YOLO on a GPU gains from 4-8. The tracker's results do not depend on it
    batch_frames: int = Field(1, ge=1, le=256)
    # the longest a frame waits for its batch to fill (ms), so a slow source is not held up
    batch_wait_ms: float = Field(50.0, ge=0.0, le=60000.0)
    # HOG: the frame is shrunk to this long side first: the detector's 64x128 window then covers people
    # from about a third of the frame height up, and a 1080p frame costs ~0.15 s instead of ~0.4 s
    hog_max_side: int = Field(400, ge=128, le=4096)
    # HOG: window step (pixels of the shrunk frame): 8 is OpenCV's default, 4x cheaper than 4
    hog_stride: int = Field(8, ge=1, le=64)
    # HOG: black rows added below the frame, as a fraction of its height: people cut by the bottom edge
    # (upper bodies, close-ups) still fit the full-body window
    hog_pad_bottom: float = Field(0.5, ge=0.0, le=4.0)
    # HOG: SVM margin a window needs; OpenCV's default 0 misses half the people in Ultralytics' sample
    # images at an 8-pixel window stride, -0.3 finds them (tests/test_detect.py) with a few more false boxes
    hog_hit_threshold: float = Field(-0.3, ge=-100.0, le=100.0)

    @field_validator("tracker")
    @classmethod
    def _tracker_known(cls, v: str) -> str:
        _tracker_yaml(v)  # raises a clear error for unknown names / missing files
        return v


# ------------------------------------------------------------------------------------------- the stage
class DetectStage(Stage):
    """Frame -> Detections. `DetectStage(config)` with the root Config (section `config.detect`, and its
    `mode`: "live" or "offline") or a `DetectConfig` (offline), and the run's StageContext. Pixels are read with
    `self.store.frame(frame)`; crop i of a frame goes to `self.store.crops(frame)[i]`. A frame without
    persons gives Detections with an empty list.

    Offline with `batch_frames` > 1 the stage holds frames until a batch is full, `batch_wait_ms` has passed
    (`next_deadline`/`tick`), or the stream ends, then detects them in one call; messages leave in arrival
    order either way.
    """

    name = "detect"

    needs_pixels = True

    def __init__(self, config: Any = None, context: Optional[StageContext] = None, mode: Optional[str] = None) -> None:
        super().__init__()
        self.cfg = config_section(config, "detect", DetectConfig)
        self.context = context or StageContext.of(config)
        self.mode = mode or self.context.mode
        self.batch = 1 if self.mode == "live" else self.cfg.batch_frames
        self.store: Any = None  # set by the runtime before setup()
        self.detector: Any = None
        self.trackers: dict[str, PersonTracker] = {}
        self._pending: list[Frame] = []
        self._since: Optional[float] = None

    def setup(self) -> None:
        self.detector = build_detector(self.cfg)
        self.counters["detector_" + self.detector.name] = 1
        load_tracker(self.cfg.tracker)  # fail at start, not on the first frame

    def tracker_for(self, source: str) -> PersonTracker:
        t = self.trackers.get(source)
        if t is None:
            t = self.trackers[source] = PersonTracker(self.cfg, detector=self.detector)
        return t

    def process(self, msg: Any) -> list:
        if isinstance(msg, (EndOfStream, SourceEnd)):  # that source's tracker ends (SourceEnd: the others go on)
            out = self._flush()
            self.trackers.pop(msg.source, None)
            return out + [msg]
        if not isinstance(msg, Frame):
            raise TypeError(f"detect stage got {type(msg).__name__}; expected Frame, SourceEnd or EndOfStream")
        if not self._pending:
            self._since = time.monotonic()
        self._pending.append(msg)
        return self._flush() if len(self._pending) >= self.batch else []

    def next_deadline(self) -> Optional[float]:
        if not self._pending or self._since is None:
            return None
        return self._since + self.cfg.batch_wait_ms / 1000.0

    def tick(self) -> list:
        return self._flush()

    def finish(self) -> list:
        return self._flush()

    def _flush(self) -> list:
        frames, self._pending, self._since = self._pending, [], None
        if not frames:
            return []
        results: dict[int, tuple[list[Person], list[int]]] = {}
        for source in dict.fromkeys(f.source for f in frames):  # per source, in arrival order
            mine = [(i, f) for i, f in enumerate(frames) if f.source == source]
            tracker = self.tracker_for(source)
            before, small = tracker.detector_runs, tracker.too_small
            outs = tracker.update_batch([self.store.frame(f) for _, f in mine])
            self.count("detector_runs", tracker.detector_runs - before)
            if tracker.too_small > small:
                self.count("too_small", tracker.too_small - small)
            for (i, _), r in zip(mine, outs):
                results[i] = r
        out = []
        for i, f in enumerate(frames):
            persons, lost = results[i]
            if persons:
                make_crops(self.store.frame(f), persons, out=self.store.crops(f))
            self.count("persons", len(persons))
            out.append(Detections(frame=f, persons=persons, lost=lost))
        return out

    def close(self) -> None:
        self.trackers.clear()
        self._pending = []
        self.detector = None

