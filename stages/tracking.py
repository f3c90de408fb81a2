"""Tracking for the detect stage: Ultralytics' trackers (ByteTrack, BoT-SORT, OC-SORT) behind one adapter,
and `PersonTracker`, the per-frame core of the stage (detector, tracker, crop squares) without the runtime.

Every use of Ultralytics' tracker internals is in `UltralyticsTracker` (what `update` returns, the lists of
tracked and removed tracks, the Kalman predict of a carried frame, the tracker registry): they moved
between releases, so pyproject pins the tested range and tests/test_tracking.py checks the adapter.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from fastmetro.crops import crop_square
from pipeline.messages import Person

from .detectors import Dets, build_detector


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



class UltralyticsTracker:
    """One Ultralytics tracker as arrays in, arrays out: boxes (N, 4) x1, y1, x2, y2, ids (N,), scores (N,)
    of the live tracks, and the ids of tracks that ended at this frame."""

    def __init__(self, tracker: str) -> None:
        self.tracker = load_tracker(tracker)

    def reset(self) -> None:
        self.tracker.reset()

    def live_scores(self) -> list[float]:
        """Last detection scores of the activated live tracks."""
        return [float(t.score) for t in self.tracker.tracked_stracks if t.is_activated]

    def update(self, xyxy: np.ndarray, conf: np.ndarray, rgb: np.ndarray,
               size: Optional[tuple[int, int]] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """Associate this frame's detections (rgb: the frame, for camera-motion compensation, resized to
        `size` (w, h), the size the boxes are given in, when it differs)."""
        tr = self.tracker
        # the frame (BGR) only matters to trackers with camera-motion compensation (BoT-SORT's GMC), which
        # compares it with the previous one: it must keep one size
        img = None
        if getattr(tr, "gmc", None) is not None:
            if size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(size):
                import cv2

                rgb = cv2.resize(rgb, tuple(size), interpolation=cv2.INTER_AREA)
            img = np.ascontiguousarray(rgb[..., ::-1])
        rows = tr.update(_Boxes(xyxy, conf), img)
        rows = np.asarray(rows, np.float32).reshape(-1, 8)
        ended = [t.track_id for t in getattr(tr, "removed_stracks_frame", [])]
        return rows[:, :4], rows[:, 4].astype(int), rows[:, 5], ended

    def predict(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """A frame without detection: what update() does before association (Kalman predict of every live
        track); the live tracks' predicted boxes."""
        from ultralytics.trackers.utils.stracks import joint_stracks

        tr = self.tracker
        tr.frame_id += 1
        pool = joint_stracks(tr.tracked_stracks, tr.lost_stracks)
        tr.multi_predict(pool)
        live = [t for t in tr.tracked_stracks if t.is_activated]
        boxes = np.asarray([t.xyxy for t in live], np.float32).reshape(-1, 4)
        ids = np.asarray([t.track_id for t in live], int)
        scores = np.asarray([t.score for t in live], np.float32)
        return boxes, ids, scores, []


class PersonTracker:
    """Detection + tracking + crop squares for one source, without the runtime.

    `update(rgb)` takes one RGB frame (H, W, 3) uint8 and returns `(persons, lost)`: the frame's persons
    (track ids, lifecycle state, tight box, score, crop square; `crop_index` i in order) and the ids that
    ended at this frame. `update_batch(frames)` does the same for consecutive frames with one detector call
    for all of them; the results are the same as calling `update` frame by frame.
    """

    def __init__(self, config: Any, detector: Any = None) -> None:
        self.cfg = config  # a stages.detect.DetectConfig (passed in: this module sits below stages/detect.py)
        self.detector = detector if detector is not None else build_detector(self.cfg)
        self.tracker = UltralyticsTracker(self.cfg.tracker)
        self.frames = 0  # frames seen
        self._reported: set[int] = set()  # ids ever sent downstream
        self.detector_runs = 0
        self.too_small = 0  # frames too small to hold a person: not given to the detector
        # (w, h) of the first frame: the tracker works in its pixels, so that a source that changes resolution
        # mid-stream (adaptive streaming, a camera switching mode) keeps its tracks; each frame's boxes are
        # scaled into it and back
        self.track_size: Optional[tuple[int, int]] = None

    def holds_person(self, rgb: np.ndarray) -> bool:
        """Whether a frame is large enough to hold a person the filter would keep (min_box_size tall)."""
        h, w = rgb.shape[:2]
        return h >= max(self.cfg.min_box_size, 16.0) and w >= 8

    def reset(self) -> None:
        self.tracker.reset()
        self.frames = 0
        self._reported.clear()
        self.track_size = None

    def _scheduled(self, i: int) -> bool:
        return i % self.cfg.detect_every == 0

    def _carry(self) -> bool:
        """Whether the tracker can carry the next frame without the detector."""
        live = self.tracker.live_scores()
        return bool(live) and min(live) >= self.cfg.redetect_below

    def update(self, rgb: np.ndarray) -> tuple[list[Person], list[int]]:
        return self.update_batch([rgb])[0]

    def update_batch(self, frames: Sequence[np.ndarray]) -> list[tuple[list[Person], list[int]]]:
        first = self.frames
        small = {k for k, rgb in enumerate(frames) if not self.holds_person(rgb)}
        self.too_small += len(small)
        planned = [k for k in range(len(frames)) if self._scheduled(first + k) and k not in small]
        dets = dict(zip(planned, self.detector.detect([frames[k] for k in planned]))) if planned else {}
        dets.update({k: Dets.empty() for k in small})  # skipped: no detection, tracks age as usual
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
        if self.track_size is None:
            self.track_size = (w, h)
        tw, th = self.track_size
        to_track = np.array([tw / w, th / h, tw / w, th / h], np.float32)  # 1 unless the size changed
        if d is not None:
            d = self._filter(d)
            boxes, ids, scores, ended = self.tracker.update(d.xyxy * to_track, d.conf, rgb, self.track_size)
        else:  # carried frame: the tracker's motion model alone
            boxes, ids, scores, ended = self.tracker.predict()
        boxes = boxes / to_track if len(boxes) else boxes
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

