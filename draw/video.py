"""MP4 writing frame by frame (PyAV): the overlay video and the `render` command's output."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from .raster import RenderError


class VideoWriter:
    """An MP4 written frame by frame with PyAV: H.264 when this FFmpeg has libx264, else MPEG-4.

    The size is the first frame's (odd sides padded to even, as yuv420p needs); a later frame of another
    size is resized to it. `write(rgb, t)`: t is the frame's time in seconds (None: one frame at `rate`
    after the previous one); timestamps are kept to the millisecond, so a live run that dropped frames
    keeps its timing (`rate` is only the nominal rate). Use as a context manager or close().
    """

    TIME_BASE = Fraction(1, 1000)
    threads = min(os.cpu_count() or 1, 8)  # encoder threads: the machine's cores, whatever this thread's affinity

    def __init__(self, path, rate: float = 30.0) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise RenderError(f"output directory {self.path.parent} does not exist ({self.path})")
        self.rate = rate
        self.frames = 0
        self._container = None
        self._stream = None
        self._size: Optional[tuple[int, int]] = None  # (w, h) of the first frame
        self._t0: Optional[float] = None
        self._last_t: Optional[float] = None
        self._last_pts = -1

    def _open(self, w: int, h: int) -> None:
        import av

        self._container = av.open(str(self.path), "w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        rate = Fraction(self.rate).limit_denominator(1001)
        s = self._container.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
        s.codec_context.time_base = self.TIME_BASE
        # The encoder's output depends on its thread count, and "auto" counts the CPUs the calling thread
        # may use, which differs between processes (pinned thread pools). A fixed count gives the same
        # file for the same frames in every process: `run --overlay` and `render` agree.
        s.codec_context.thread_count = self.threads
        if s.codec_context.name == "libx264":
            s.options = {"crf": "20", "preset": "veryfast"}
        else:
            s.bit_rate = 8_000_000
        self._stream, self._size = s, (w, h)

    def write(self, rgb: np.ndarray, t: Optional[float] = None) -> None:
        import av

        h, w = rgb.shape[:2]
        if self._stream is None:
            self._open(w, h)
        if (w, h) != self._size:
            rgb = cv2.resize(rgb, self._size, interpolation=cv2.INTER_AREA)
            w, h = self._size
        if w % 2 or h % 2:
            rgb = cv2.copyMakeBorder(rgb, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if t is None:
            t = 0.0 if self._last_t is None else self._last_t + 1.0 / self.rate
        if self._t0 is None:
            self._t0 = t
        self._last_t = t
        pts = max(self._last_pts + 1, round((t - self._t0) / self.TIME_BASE))  # strictly increasing
        frame.pts, frame.time_base = pts, self.TIME_BASE
        self._last_pts = pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file; safe to call more than once."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
