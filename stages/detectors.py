"""Person detectors: Ultralytics YOLO (person class) and OpenCV's HOG people detector (the offline
fallback), behind one small interface: `detect(frames) -> [Dets]`, boxes in frame pixels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import cv2
import numpy as np

from pipeline.stage import StageError

log = logging.getLogger(__name__)

YOLO_WEIGHTS_URL = "https://github.com/ultralytics/assets/releases"


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
        win_w, win_h = self.hog.winSize
        if img.shape[1] < win_w or img.shape[0] < win_h:
            # smaller than the detection window (64 x 128): nothing to find, and OpenCV's HOG reads out of
            # bounds on such images (tiny frames crashed it)
            return Dets.empty()
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


def build_detector(cfg: Any) -> Union[HogDetector, YoloDetector]:
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

