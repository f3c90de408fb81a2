"""What a source string names, and the helpers every source backend shares (docs/sources.md).

    None                    the sample video that ships with the project (samples/sample.mp4, package data)
    a video file            any container/codec FFmpeg reads
    a directory of images   files matching `decode.image_glob`, in name order
    /dev/videoN or "N"      a camera (V4L2 through PyAV when its FFmpeg has the device, else OpenCV)
    rtsp://, http(s)://...  network streams

`source_kind(source)` says which; the decode stage (stages/decode.py) reads each kind.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from pipeline.stage import StageError

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = PACKAGE_ROOT / "samples" / "sample.mp4"
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
_URL_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class SourceError(StageError):
    """A source that cannot be opened or read at all; the message names it and what to check."""


def is_live_source(source: Optional[str]) -> bool:
    """True for cameras (/dev/videoN, an integer index) and network URLs; False for files and folders."""
    if source is None:
        return False
    s = str(source).strip()
    if s.isdigit() or s.startswith("/dev/video"):
        return True
    m = _URL_RE.match(s)
    return bool(m) and m.group(1).lower() in URL_SCHEMES


def sample_path() -> Path:
    """The shipped sample video (the default source)."""
    return SAMPLE


def fit_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """(w, h) scaled down, aspect kept, so that w * h <= max_pixels; unchanged when it already fits."""
    if width * height <= max_pixels:
        return width, height
    s = math.sqrt(max_pixels / (width * height))
    w, h = max(1, int(width * s)), max(1, int(height * s))
    while w * h > max_pixels:  # float rounding
        if w >= h:
            w -= 1
        else:
            h -= 1
    return w, h


def source_kind(source: str) -> str:
    if is_live_source(source):
        return "camera" if (source.isdigit() or source.startswith("/dev/video")) else "url"
    p = Path(source)
    if p.is_dir():
        return "images"
    return "file"


def _camera_device(src: str) -> tuple[str, str]:
    """(device name, FFmpeg input format) of a camera source."""
    if sys.platform == "darwin":
        return (src if src.isdigit() else src.rsplit("video", 1)[-1]), "avfoundation"
    if sys.platform.startswith("win"):
        return f"video={src}", "dshow"
    return (f"/dev/video{src}" if src.isdigit() else src), "v4l2"


def _to_rgb(vf, max_pixels: int) -> np.ndarray:
    """An av.VideoFrame as (H, W, 3) uint8 RGB, downscaled (one swscale pass) to fit max_pixels."""
    w, h = fit_size(vf.width, vf.height, max_pixels)
    if (w, h) != (vf.width, vf.height):
        return vf.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")
    return vf.to_ndarray(format="rgb24")
