"""The detect stage: person detection, tracking and square crops (docs/crops.md).

decode --Frame--> detect --Detections--> infer. For every frame:

    detector    Ultralytics YOLO (person class) or OpenCV's HOG people detector (the offline fallback),
                run every `detect_every`-th frame of a source
    tracker     Ultralytics' own trackers (ByteTrack, BoT-SORT, OC-SORT; their YAML settings), one state per
                source; on frames without detection the tracker's motion model carries the boxes
    crops       a square of side `crop_scale` x the box's longer side around each person, resampled to
                224 x 224 uint8 RGB by one affine warp per crop, written into the frame's slot

The per-frame core needs no runtime: `PersonTracker(config).update(rgb) -> (persons, lost)` and
`make_crops(rgb, persons) -> (N, 224, 224, 3)`; `DetectStage` wraps them for the pipeline.

Lifecycle reported downstream: a person's `state` is "new" on the first frame its id is reported and
"tracked" after; ids whose tracks the tracker gave up (missing for longer than its `track_buffer`) go
once into `Detections.lost`. A person hidden for fewer frames keeps its id.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Sequence, Union

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.messages import CROP_SIZE, Detections, EndOfStream, Frame, Person
from pipeline.stage import Stage, StageError, config_section

__all__ = [
    "DetectConfig", "DetectStage", "PersonTracker", "Dets", "HogDetector", "YoloDetector", "DetectorUnavailable",
    "build_detector", "load_tracker", "crop_square", "crop_matrix", "make_crops", "make_crops_roi_align",
    "crop_to_frame", "frame_to_crop",
]

log = logging.getLogger(__name__)

YOLO_WEIGHTS_URL = "https://github.com/ultralytics/assets/releases"


# ------------------------------------------------------------------------------------------- settings
class DetectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # auto: YOLO when its weights load, else the HOG detector (logged); hog never downloads anything
    detector: Literal["auto", "yolo", "hog"] = "auto"
    # the smallest current YOLO (2.6 M parameters): person boxes at CPU speed; Ultralytics downloads it on
    # first use, or give a path to a .pt/.onnx file
    yolo_model: str = "yolo11n.pt"
    # YOLO input size (pixels, long side): Ultralytics' default, what the model was trained at
    yolo_imgsz: int = Field(640, ge=32)
    # lowest detection confidence kept: 0.1 is what Ultralytics' track mode uses, so the tracker's second
    # (low-score) association stage still sees weak boxes; new tracks need the tracker's own higher threshold
    confidence: float = Field(0.1, ge=0.0, le=1.0)
    # smallest box height kept (frame pixels): a person under ~40 px tall upsampled to 224 gives the
    # network nothing to work with
    min_box_size: float = Field(40.0, ge=0.0)
    # at most this many persons per frame: the FrameStore crop area holds 8 crops per frame
    max_persons: int = Field(8, ge=1)
    # which persons win when there are more: the largest (closest) boxes, or the most confident
    keep: Literal["largest", "confident"] = "largest"
    # Ultralytics tracker: a name of its cfg/trackers/*.yaml (bytetrack, botsort, ocsort) or a path to
    # such a YAML; ByteTrack: motion + IoU only, no appearance model, the fastest
    tracker: str = "bytetrack"
    # run the detector on every k-th frame of a source and let the tracker's Kalman filter carry the boxes
    # in between (also whenever no track is live, see redetect_below); 1 = every frame, the most accurate
    detect_every: int = Field(1, ge=1)
    # with detect_every > 1, also detect on the next frame when a live track's last detection scored below
    # this (a weak match drifts when carried); ByteTrack/BoT-SORT's own high-score threshold by default
    redetect_below: float = Field(0.25, ge=0.0, le=1.0)
    # crop side = this x the longer side of the tight box: METRO/FastMETRO training crops are the person's
    # box scaled by 1.2-1.3 (scale 1.25 x the 200 px box convention)
    crop_scale: float = Field(1.25, gt=0.0)
    # "auto": CUDA when present (YOLO only; HOG and the trackers run on the CPU)
    device: str = "auto"
    # frames detected in one detector call (offline mode only; live mode always sends each frame at
    # once): 1 = no waiting; YOLO on a GPU gains from 4-8. The tracker's results do not depend on it
    batch_frames: int = Field(1, ge=1)
    # the longest a frame waits for its batch to fill (ms), so a slow source is not held up
    batch_wait_ms: float = Field(50.0, ge=0.0)
    # HOG: the frame is shrunk to this long side first: the detector's 64x128 window then covers people
    # from about a third of the frame height up, and a 1080p frame costs ~0.15 s instead of ~0.4 s
    hog_max_side: int = Field(400, ge=128)
    # HOG: window step (pixels of the shrunk frame): 8 is OpenCV's default, 4x cheaper than 4
    hog_stride: int = Field(8, ge=1)
    # HOG: black rows added below the frame, as a fraction of its height: people cut by the bottom edge
    # (upper bodies, close-ups) still fit the full-body window
    hog_pad_bottom: float = Field(0.5, ge=0.0)
    # HOG: SVM margin a window needs; OpenCV's default 0 misses half the people in Ultralytics' sample
    # images at an 8-pixel window stride, -0.3 finds them (tests/test_detect.py) with a few more false boxes
    hog_hit_threshold: float = -0.3

    @field_validator("tracker")
    @classmethod
    def _tracker_known(cls, v: str) -> str:
        _tracker_yaml(v)  # raises a clear error for unknown names / missing files
        return v


# ------------------------------------------------------------------------------------------- detectors
class DetectorUnavailable(StageError):
    """A detector that cannot be loaded (weights missing, no network)."""


@dataclass
class Dets:
    """Detections of one frame: tight boxes x1, y1, x2, y2 (frame pixels, continuous coordinates) and scores."""

    xyxy: np.ndarray  # (N, 4) float32
    conf: np.ndarray  # (N,) float32 in [0, 1]

    @staticmethod
    def empty() -> "Dets":
        return Dets(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.conf)


class HogDetector:
    """OpenCV's HOG + linear SVM pedestrian detector (Dalal & Triggs, trained on INRIA).

    The lower-quality offline fallback: it needs no download, but it is made for upright, mostly whole
    people seen from the side or front; it misses bent, sitting or strongly cut-off people and gives looser
    boxes than YOLO. Windows are shrunk to the person inside them (OpenCV's peopledetect sample: 15 % of the
    width, 5 % of the height on each side) and overlapping windows are merged by NMS.
    """

    name = "hog"
    SHRINK_X, SHRINK_Y = 0.15, 0.05
    NMS_IOU = 0.3

    def __init__(self, max_side: int = 400, pad_bottom: float = 0.5, hit_threshold: float = -0.3,
                 stride: int = 8) -> None:
        self.max_side, self.pad_bottom, self.hit_threshold, self.stride = max_side, pad_bottom, hit_threshold, stride
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(self, frames: Sequence[np.ndarray]) -> list[Dets]:
        return [self._detect_one(f) for f in frames]

    def _detect_one(self, rgb: np.ndarray) -> Dets:
        import torch
        import torchvision

        h, w = rgb.shape[:2]
        f = min(1.0, self.max_side / max(h, w))
        img = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1.0 else rgb
        pad = int(round(self.pad_bottom * img.shape[0]))
        if pad:
            img = cv2.copyMakeBorder(img, 0, pad, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        rects, weights = self.hog.detectMultiScale(img, hitThreshold=self.hit_threshold, winStride=(self.stride, self.stride),
                                                   padding=(16, 16), scale=1.05, groupThreshold=0)
        if len(rects) == 0:
            return Dets.empty()
        r = np.asarray(rects, np.float32).reshape(-1, 4)
        margin = np.float32(np.ravel(weights))
        x1 = (r[:, 0] + self.SHRINK_X * r[:, 2]) / f
        y1 = (r[:, 1] + self.SHRINK_Y * r[:, 3]) / f
        x2 = (r[:, 0] + (1 - self.SHRINK_X) * r[:, 2]) / f
        y2 = (r[:, 1] + (1 - self.SHRINK_Y) * r[:, 3]) / f
        xyxy = np.stack([x1.clip(0, w), y1.clip(0, h), x2.clip(0, w), y2.clip(0, h)], 1).astype(np.float32)
        keep = torchvision.ops.nms(torch.from_numpy(xyxy), torch.from_numpy(margin), self.NMS_IOU).numpy()
        # SVM margin -> (0, 1): a fixed logistic map so the tracker's thresholds (0.1 / 0.25) mean something;
        # margin 0 (OpenCV's acceptance threshold) -> 0.5
        conf = 1.0 / (1.0 + np.exp(-2.0 * margin[keep]))
        return Dets(xyxy[keep], conf.astype(np.float32))


class YoloDetector:
    """Ultralytics YOLO, person class only; frames go through in one batch per call."""

    name = "yolo"

    def __init__(self, model: str = "yolo11n.pt", imgsz: int = 640, confidence: float = 0.1,
                 device: str = "cpu") -> None:
        from ultralytics import YOLO

        self.imgsz, self.confidence, self.device = imgsz, confidence, device
        try:
            self.model = YOLO(model)
        except Exception as e:  # Ultralytics raises ConnectionError/FileNotFoundError/... offline
            raise DetectorUnavailable(
                f"detect.yolo_model: the YOLO weights '{model}' could not be loaded ({type(e).__name__}: {e}). "
                f"Ultralytics downloads them on first use when there is internet; offline, download "
                f"'{Path(model).name}' from {YOLO_WEIGHTS_URL} on a connected machine, copy it here and set "
                f"detect.yolo_model to its path, or set detect.detector: hog (lower quality, no download)."
            ) from e
        names = getattr(self.model, "names", {}) or {}
        self.person = next((int(k) for k, v in dict(names).items() if str(v) == "person"), 0)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Dets]:
        if not frames:
            return []
        bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]  # Ultralytics takes numpy frames as BGR
        results = self.model.predict(bgr, classes=[self.person], conf=self.confidence, imgsz=self.imgsz,
                                     device=self.device, verbose=False)
        out = []
        for r in results:
            b = r.boxes.cpu().numpy()
            out.append(Dets(np.asarray(b.xyxy, np.float32).reshape(-1, 4), np.asarray(b.conf, np.float32)))
        return out


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def build_detector(cfg: DetectConfig) -> Union[HogDetector, YoloDetector]:
    """The configured detector; `auto` tries YOLO and falls back to HOG, logging which one it picked."""
    hog = lambda: HogDetector(cfg.hog_max_side, cfg.hog_pad_bottom, cfg.hog_hit_threshold, cfg.hog_stride)  # noqa: E731
    if cfg.detector == "hog":
        log.info("detect: using the HOG people detector (detector: hog)")
        return hog()
    device = _resolve_device(cfg.device)
    try:
        det = YoloDetector(cfg.yolo_model, cfg.yolo_imgsz, cfg.confidence, device)
    except DetectorUnavailable as e:
        if cfg.detector == "yolo":
            raise
        log.warning("detect: YOLO unavailable, falling back to the HOG people detector (lower quality): %s", e)
        return hog()
    log.info("detect: using YOLO %s on %s", cfg.yolo_model, device)
    return det


# ------------------------------------------------------------------------------------------- tracking
def _tracker_yaml(tracker: str) -> Path:
    import ultralytics

    p = Path(tracker)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ValueError(f"detect.tracker: tracker settings file '{tracker}' not found")
        return p
    shipped = Path(ultralytics.__file__).parent / "cfg" / "trackers"
    p = shipped / f"{tracker}.yaml"
    if not p.is_file():
        names = sorted(x.stem for x in shipped.glob("*.yaml"))
        raise ValueError(f"detect.tracker: unknown tracker '{tracker}'; use one of {names} or a path to a YAML")
    return p


def load_tracker(tracker: str) -> Any:
    """A fresh Ultralytics tracker from a shipped name ("bytetrack", "botsort", ...) or a YAML path."""
    import yaml
    from ultralytics.trackers.track import TRACKER_MAP
    from ultralytics.utils import IterableSimpleNamespace

    path = _tracker_yaml(tracker)
    cfg = IterableSimpleNamespace(**(yaml.safe_load(path.read_text()) or {}))
    cls = TRACKER_MAP.get(getattr(cfg, "tracker_type", None))
    if cls is None:
        raise ValueError(f"detect.tracker: {path} has tracker_type {getattr(cfg, 'tracker_type', None)!r}; "
                         f"expected one of {sorted(TRACKER_MAP)}")
    if hasattr(cls, "setup_predictor") or hasattr(cls, "compute_frame_extras"):
        raise ValueError(f"detect.tracker: '{cfg.tracker_type}' needs the YOLO predictor's internals; use "
                         f"bytetrack, botsort or ocsort")
    if getattr(cfg, "with_reid", False) and getattr(cfg, "model", "auto") == "auto":
        raise ValueError(f"detect.tracker: {path} sets with_reid with model: auto (YOLO's own features), which "
                         f"this stage does not pass; set model to a ReID/classification weights file or "
                         f"with_reid: False")
    cfg.device = "cpu"
    return cls(args=cfg)


class _Boxes:
    """The Boxes-like object Ultralytics' trackers take: conf, cls, xywh, xyxy and boolean indexing."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray) -> None:
        self.xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        self.conf = np.asarray(conf, np.float32).reshape(-1)
        self.cls = np.zeros_like(self.conf)

    @property
    def xywh(self) -> np.ndarray:
        b = self.xyxy
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, idx: Any) -> "_Boxes":
        return _Boxes(self.xyxy[idx], self.conf[idx])


class PersonTracker:
    """Detection + tracking + crop squares for one source, without the runtime.

    `update(rgb)` takes one RGB frame (H, W, 3) uint8 and returns `(persons, lost)`: the frame's persons
    (track ids, lifecycle state, tight box, score, crop square; `crop_index` i in order) and the ids that
    ended at this frame. `update_batch(frames)` does the same for consecutive frames with one detector call
    for all of them; the results are the same as calling `update` frame by frame.
    """

    def __init__(self, config: Optional[DetectConfig] = None, detector: Any = None) -> None:
        self.cfg = config or DetectConfig()
        self.detector = detector if detector is not None else build_detector(self.cfg)
        self.tracker = load_tracker(self.cfg.tracker)
        self.frames = 0  # frames seen
        self._reported: set[int] = set()  # ids ever sent downstream
        self.detector_runs = 0

    def reset(self) -> None:
        self.tracker.reset()
        self.frames = 0
        self._reported.clear()

    def _scheduled(self, i: int) -> bool:
        return i % self.cfg.detect_every == 0

    def _carry(self) -> bool:
        """Whether the tracker can carry the next frame without the detector."""
        live = [t for t in self.tracker.tracked_stracks if t.is_activated]
        return bool(live) and min(float(t.score) for t in live) >= self.cfg.redetect_below

    def update(self, rgb: np.ndarray) -> tuple[list[Person], list[int]]:
        return self.update_batch([rgb])[0]

    def update_batch(self, frames: Sequence[np.ndarray]) -> list[tuple[list[Person], list[int]]]:
        first = self.frames
        planned = [k for k in range(len(frames)) if self._scheduled(first + k)]
        dets = dict(zip(planned, self.detector.detect([frames[k] for k in planned]))) if planned else {}
        self.detector_runs += len(planned)
        out = []
        for k, rgb in enumerate(frames):
            d = dets.get(k)
            if d is None and not self._carry():  # nothing (solid) to carry: detect now, same rule frame by frame
                d = self.detector.detect([rgb])[0]
                self.detector_runs += 1
            out.append(self._step(rgb, d))
        return out

    def _filter(self, d: Dets) -> Dets:
        keep = (d.conf >= self.cfg.confidence) & ((d.xyxy[:, 3] - d.xyxy[:, 1]) >= self.cfg.min_box_size)
        return Dets(d.xyxy[keep], d.conf[keep])

    def _step(self, rgb: np.ndarray, d: Optional[Dets]) -> tuple[list[Person], list[int]]:
        self.frames += 1
        h, w = rgb.shape[:2]
        tr = self.tracker
        if d is not None:
            d = self._filter(d)
            # the frame (BGR) only matters to trackers with camera-motion compensation (BoT-SORT's GMC)
            img = np.ascontiguousarray(rgb[..., ::-1]) if getattr(tr, "gmc", None) is not None else None
            rows = tr.update(_Boxes(d.xyxy, d.conf), img)
            rows = np.asarray(rows, np.float32).reshape(-1, 8)
            boxes, ids, scores = rows[:, :4], rows[:, 4].astype(int), rows[:, 5]
            ended = [t.track_id for t in getattr(tr, "removed_stracks_frame", [])]
        else:  # carried frame: what update() does before association (Kalman predict of every live track)
            from ultralytics.trackers.utils.stracks import joint_stracks

            tr.frame_id += 1
            pool = joint_stracks(tr.tracked_stracks, tr.lost_stracks)
            tr.multi_predict(pool)
            live = [t for t in tr.tracked_stracks if t.is_activated]
            boxes = np.asarray([t.xyxy for t in live], np.float32).reshape(-1, 4)
            ids = np.asarray([t.track_id for t in live], int)
            scores = np.asarray([t.score for t in live], np.float32)
            ended = []
        lost = sorted(i for i in set(ended) if i in self._reported)
        self._reported.difference_update(lost)
        boxes = np.stack([boxes[:, 0].clip(0, w), boxes[:, 1].clip(0, h),
                          boxes[:, 2].clip(0, w), boxes[:, 3].clip(0, h)], 1) if len(boxes) else boxes
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) if len(boxes) else np.zeros(0, bool)
        boxes, ids, scores = boxes[valid], ids[valid], scores[valid]
        if self.cfg.keep == "largest":
            order = np.argsort(-((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])), kind="stable")
        else:
            order = np.argsort(-scores, kind="stable")
        persons = []
        for i in order[: self.cfg.max_persons]:
            box = tuple(float(v) for v in boxes[i])
            center, size = crop_square(box, self.cfg.crop_scale)
            tid = int(ids[i])
            state = "tracked" if tid in self._reported else "new"
            self._reported.add(tid)
            persons.append(Person(track_id=tid, state=state, box=box, score=float(scores[i]), center=center,
                                  size=size, crop_index=len(persons)))
        return persons, lost


# ------------------------------------------------------------------------------------------- crops
def crop_square(box: Sequence[float], scale: float = 1.25) -> tuple[tuple[float, float], float]:
    """Centre and side (frame pixels) of the crop square of a tight box x1, y1, x2, y2."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * scale
    return ((x1 + x2) / 2.0, (y1 + y2) / 2.0), side


def crop_matrix(center: Sequence[float], size: float, crop_size: int = CROP_SIZE) -> np.ndarray:
    """(2, 3) affine matrix taking frame pixel indices to crop pixel indices (the crop contract, inverted):
    u = (x + 0.5 - cx) * crop_size / size + crop_size / 2 - 0.5."""
    k = crop_size / float(size)
    h = crop_size / 2.0 - 0.5
    return np.array([[k, 0.0, (0.5 - center[0]) * k + h], [0.0, k, (0.5 - center[1]) * k + h]], np.float64)


def crop_to_frame(points: np.ndarray, center: Sequence[float], size: float, crop_size: int = CROP_SIZE) -> np.ndarray:
    """Crop pixel coordinates (..., 2) -> frame pixel coordinates (pixel centres at integers)."""
    p = np.asarray(points, np.float64)
    c = np.asarray(center, np.float64)
    return c + (p + 0.5 - crop_size / 2.0) * (float(size) / crop_size) - 0.5


def frame_to_crop(points: np.ndarray, center: Sequence[float], size: float, crop_size: int = CROP_SIZE) -> np.ndarray:
    """Frame pixel coordinates (..., 2) -> crop pixel coordinates; the inverse of `crop_to_frame`."""
    p = np.asarray(points, np.float64)
    c = np.asarray(center, np.float64)
    return (p + 0.5 - c) * (crop_size / float(size)) + crop_size / 2.0 - 0.5


def _squares(persons: Iterable[Any]) -> list[tuple[tuple[float, float], float]]:
    out = []
    for p in persons:
        if isinstance(p, Person):
            out.append((tuple(p.center), float(p.size)))
        else:
            c, s = p
            out.append((tuple(c), float(s)))
    return out


def make_crops(rgb: np.ndarray, persons: Iterable[Any], out: Optional[np.ndarray] = None,
               crop_size: int = CROP_SIZE) -> np.ndarray:
    """The crops of a frame: one `cv2.warpAffine` per person, written straight into `out` (N, S, S, 3).

    `persons`: `Person`s or (center, size) pairs. Parts of the square outside the frame are black. Squares
    more than twice the crop size are sampled from a Gaussian pyramid level of the frame (cv2.pyrDown,
    shared by all persons) so that shrinking does not alias; the mapping to frame pixels is unchanged.
    """
    sq = _squares(persons)
    if out is None:
        out = np.empty((len(sq), crop_size, crop_size, 3), np.uint8)
    elif len(out) < len(sq):
        raise ValueError(f"crop buffer holds {len(out)} crops, {len(sq)} persons given (detect.max_persons)")
    pyramid = [rgb]
    for i, (center, size) in enumerate(sq):
        m = crop_matrix(center, size, crop_size)
        level = min(int(math.floor(math.log2(max(size / crop_size, 1.0)))), 4)  # each level halves the frame
        while len(pyramid) <= level:
            pyramid.append(cv2.pyrDown(pyramid[-1]))
        src = pyramid[level]
        if level:  # pyrDown keeps every other pixel: level pixel j sits at frame pixel 2^level * j
            m = m.copy()
            m[:, :2] *= 2 ** level
        cv2.warpAffine(src, m, (crop_size, crop_size), dst=out[i], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return out


def make_crops_roi_align(rgb: Any, persons: Iterable[Any], crop_size: int = CROP_SIZE, device: str = "cpu") -> Any:
    """All crops of a frame in one `torchvision.ops.roi_align` call (the batched way for a GPU).

    Same crop contract as `make_crops`; returns a (N, S, S, 3) uint8 torch tensor on `device`. roi_align
    averages ceil(size / S)^2 samples per output pixel, its own anti-aliasing.
    """
    import torch
    from torchvision.ops import roi_align

    sq = _squares(persons)
    img = torch.as_tensor(rgb, device=device)
    if not sq:
        return torch.empty((0, crop_size, crop_size, 3), dtype=torch.uint8, device=device)
    x = img.permute(2, 0, 1).unsqueeze(0).float()
    boxes = torch.tensor([[0.0, c[0] - s / 2, c[1] - s / 2, c[0] + s / 2, c[1] + s / 2] for c, s in sq],
                         dtype=torch.float32, device=device)
    y = roi_align(x, boxes, (crop_size, crop_size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


# ------------------------------------------------------------------------------------------- the stage
class DetectStage(Stage):
    """Frame -> Detections. `DetectStage(config)` with the root Config (section `config.detect`, and its
    `mode`: "live" or "offline") or a `DetectConfig` (offline). Pixels are read with
    `self.store.frame(frame)`; crop i of a frame goes to `self.store.crops(frame)[i]`. A frame without
    persons gives Detections with an empty list.

    Offline with `batch_frames` > 1 the stage holds frames until a batch is full, `batch_wait_ms` has passed
    (`next_deadline`/`tick`), or the stream ends, then detects them in one call; messages leave in arrival
    order either way.
    """

    name = "detect"

    def __init__(self, config: Any = None, mode: Optional[str] = None) -> None:
        super().__init__()
        self.cfg = config_section(config, "detect", DetectConfig)
        self.mode = mode or getattr(config, "mode", "offline")
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
        if isinstance(msg, EndOfStream):
            out = self._flush()
            self.trackers.pop(msg.source, None)
            return out + [msg]
        if not isinstance(msg, Frame):
            raise TypeError(f"detect stage got {type(msg).__name__}; expected Frame or EndOfStream")
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
            before = tracker.detector_runs
            outs = tracker.update_batch([self.store.frame(f) for _, f in mine])
            self.count("detector_runs", tracker.detector_runs - before)
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
