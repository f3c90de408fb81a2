"""The sources the decode stage reads, as classes behind one small interface (docs/sources.md).

    None                    the sample video that ships with the project (samples/sample.mp4, package data)
    a video file            FileSource: any container/codec FFmpeg reads; threaded decoding; PTS from it
    a directory of images   ImageFolderSource: files matching `decode.image_glob`, in name order
    /dev/videoN or "N"      CameraSource: V4L2 through PyAV when its FFmpeg has the device, else OpenCV
    rtsp://, http(s)://...  UrlSource: network streams

    source = make_source(src, decode_config, stop_event, count)
    source.check()                      cheap: the file or folder is there
    source.open(); for pts, to_rgb in source.pictures(): ...; source.close()     one pass

`pictures()` yields, per picture in decode order, its time in seconds (None if unknown) and `to_rgb(max_pixels)`
that decodes it to (H, W, 3) uint8 RGB fitted to max_pixels (None: unreadable, counted). A file source also
sets `rate` and `start` (its frame rate and first time), by which the stage numbers frames after damaged data,
and counts a file that ends before the frames its index lists, or its header's duration holds where the
container keeps no count (Matroska/WebM), as truncated (frames_missing). Slots, pacing,
start/max frames, looping and reconnects are the decode stage's.
"""
from __future__ import annotations

import fnmatch
import logging
import math
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Optional

import numpy as np

from pipeline.stage import StageError

log = logging.getLogger(__name__)
MAX_ERRORS_IN_ROW = 200  # consecutive unreadable packets after which a file is given up as unreadable
Picture = tuple[Optional[float], Callable[[int], Optional[np.ndarray]]]

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# in a checkout beside the packages; installed (a wheel), as data of the application package
_SAMPLES = (PACKAGE_ROOT / "samples" / "sample.mp4", PACKAGE_ROOT / "fastmetro_stream" / "samples" / "sample.mp4")
SAMPLE = next((p for p in _SAMPLES if p.is_file()), _SAMPLES[0])
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


IMAGE_FORMATS = "8- or 16-bit PNG, JPEG, BMP, TIFF or WebP; grey, palette, RGB or RGBA"


def read_image(path) -> Optional[np.ndarray]:
    """An image file as (H, W, 3) uint8 RGB, or None when it cannot be read. Grey and palette images become
    RGB, an alpha channel is dropped, 16-bit samples are scaled to 8 bits (v / 257, not clipped); images
    OpenCV cannot read (32-bit samples, unknown formats) give None, without OpenCV's own console lines."""
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # its "can not handle" warnings: ours says it
    try:
        img = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if img is None or img.size == 0:
        return None
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # full range to full range
    elif img.dtype != np.uint8:  # float or 32-bit samples: no one range to map
        return None
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return None


def open_av(src: str, **kw):
    """An av input container, or SourceError naming the source."""
    import av

    try:
        return av.open(src, mode="r", **kw)
    except av.error.ExitError as e:  # FFmpeg's "Immediate exit requested": PyAV's open timeout fired
        timeout = kw.get("timeout")
        limit = timeout[0] if isinstance(timeout, tuple) else timeout
        raise SourceError(f"cannot open source {src!r}: no answer within decode.open_timeout_s="
                          f"{limit:g} s (check the address, or raise the timeout)") from e
    except (av.error.FFmpegError, OSError) as e:
        raise SourceError(f"cannot open source {src!r}: {e} (check that it is a readable video file, "
                          f"image folder, camera or URL)") from e


class OpenStopped(SourceError):
    """The run was stopped while the source was still opening."""


def open_stoppable(stop: threading.Event, open_fn: Callable[[], Any], src: str) -> Any:
    """open_fn() in a thread of its own, given up when `stop` is set first: an open can wait for its whole
    open_timeout_s (a URL that does not answer), and Ctrl-C must not wait for it. What an abandoned open
    returns later is closed."""
    box: dict = {}
    lock = threading.Lock()

    def run() -> None:
        try:
            got = open_fn()
        except BaseException as e:  # handed to the caller
            got, box["error"] = None, e
        with lock:
            if box.get("abandoned") and got is not None:
                got.close()
            box["value"] = got

    t = threading.Thread(target=run, name="source-open", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.05)
        if stop.is_set():
            with lock:
                if "value" not in box:
                    box["abandoned"] = True
                    raise OpenStopped(f"stopped while opening {src!r}")
            break
    if "error" in box:
        raise box["error"]
    return box["value"]


def video_stream(container, src: str):
    if not container.streams.video:
        raise SourceError(f"source {src!r} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threads: several cores per decoder
    return stream


def decoded(container, stream, live: bool, stop: threading.Event, count: Callable[..., None]) -> Iterator[Any]:
    """Decoded av.VideoFrames; packets the decoder or demuxer rejects are counted and skipped.
    Live: an I/O error (lost connection, timeout) is raised for the caller to reconnect."""
    import av

    demux = container.demux(stream)
    errors_in_row = 0
    # A packet the demuxer flags corrupt is held until the next one comes: when the data ends there it was
    # the cut-off tail of a truncated file and is dropped, for a frame-threaded decoder given it loses
    # the frames its threads still hold (the flush gives them back only without it).
    held = None

    def flushed():  # frames the decoder still holds when the data ends early (a cut file)
        try:
            return [vf for vf in stream.codec_context.decode(None) if not vf.is_corrupt]
        except (av.error.FFmpegError, ValueError):
            return []

    def cut_tail():
        count("corrupt_frames")
        log.warning("decode: the data ends inside a packet (a cut file): its frame is skipped")

    while not stop.is_set():
        try:
            packet = next(demux)
        except (StopIteration, av.error.EOFError):
            if held is not None:
                cut_tail()
            yield from flushed()
            return
        except av.error.InvalidDataError as e:
            count("corrupt_frames")
            errors_in_row += 1
            log.warning("decode: unreadable data skipped (%s)", e)
            if errors_in_row > MAX_ERRORS_IN_ROW:
                log.error("decode: %d unreadable packets in a row: giving up on the rest", errors_in_row)
                return
            demux = container.demux(stream)  # the failed generator is finished; go on from here
            continue
        except av.error.FFmpegError as e:
            if live:
                raise
            count("corrupt_frames")
            log.error("decode: read error, the rest of the file is skipped (%s)", e)
            yield from flushed()
            return
        if packet.is_corrupt and packet.size and not live:
            packets, held = ([held] if held is not None else []), packet
        elif held is not None and not packet.size:  # the end (the demuxer's empty flush packet)
            cut_tail()
            packets, held = [packet], None
        else:
            packets, held = ([held] if held is not None else []) + [packet], None
        for packet in packets:
            try:
                frames = packet.decode()
            except av.error.FFmpegError as e:
                count("corrupt_frames")
                errors_in_row += 1
                log.warning("decode: undecodable packet skipped (%s)", e)
                if errors_in_row > MAX_ERRORS_IN_ROW:
                    return
                continue
            errors_in_row = 0
            for vf in frames:
                if vf.is_corrupt:  # decoded with errors the decoder concealed: not a frame to measure on
                    count("corrupt_frames")
                    continue
                yield vf


def declared_by_duration(stream, rate: Optional[float]) -> int:
    """The frames a stream's header says it has when the container keeps no frame count: Matroska/WebM
    store each stream's duration as a DURATION tag ("HH:MM:SS.nnnnnnnnn"). 0 when unknown."""
    m = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", str(stream.metadata.get("DURATION", "")).strip())
    if not m or not rate:
        return 0
    seconds = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return int(round(seconds * rate))


class Source:
    """One source of pictures. `live` sources (cameras, URLs) are reopened when lost; the others can be
    read again from the start (decode.loop). `period`: seconds between pictures when the source has no
    clock of its own (image folders). `finite`: after a pass, whether the stream ended on its own."""

    kind: ClassVar[str] = "source"
    live: ClassVar[bool] = False
    period: Optional[float] = None
    rate: Optional[float] = None  # frames per second the source declares (None: unknown), set by pictures()
    start: float = 0.0  # the time of the source's first frame, set by pictures()

    def __init__(self, src: str, cfg: Any, stop: threading.Event, count: Callable[..., None]) -> None:
        self.src, self.cfg, self.stop, self.count = src, cfg, stop, count
        self.finite = True

    def check(self) -> None:
        """Cheap checks before anything starts (SourceError)."""

    def open(self) -> None:
        pass

    def pictures(self) -> Iterator[Picture]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FileSource(Source):
    kind = "file"

    def check(self) -> None:
        if not Path(self.src).exists():
            raise SourceError(f"source {self.src!r}: no such file or directory (check the path, or give a camera "
                              f"/dev/videoN, an rtsp:// or http(s):// URL)")

    def open(self) -> None:
        self.container = open_av(self.src)

    def pictures(self) -> Iterator[Picture]:
        stream = video_stream(self.container, self.src)
        rate = stream.average_rate or stream.guessed_rate
        self.rate = float(rate) if rate else None
        self.start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        seen = 0
        for vf in decoded(self.container, stream, False, self.stop, self.count):
            seen += 1
            yield (None if vf.time is None else float(vf.time)), (lambda mp, vf=vf: _to_rgb(vf, mp))
        declared = stream.frames or declared_by_duration(stream, self.rate)  # 0: unknown
        if declared and seen < declared and not self.stop.is_set():
            self.count("truncated")
            self.count("frames_missing", declared - seen)
            log.warning("decode: %s ended after %d of the %d frames its header lists (truncated or damaged file)",
                        self.src, seen, declared)

    def close(self) -> None:
        self.container.close()


class ImageFolderSource(Source):
    kind = "images"

    def __init__(self, src: str, cfg: Any, stop: threading.Event, count: Callable[..., None]) -> None:
        super().__init__(src, cfg, stop, count)
        self.period = 1.0 / cfg.image_fps

    def files(self) -> list[Path]:
        pats = [p.lower() for p in self.cfg.image_glob]
        return sorted(p for p in Path(self.src).iterdir()
                      if p.is_file() and any(fnmatch.fnmatch(p.name.lower(), pat) for pat in pats))

    def check(self) -> None:
        if not self.files():
            raise SourceError(f"source {self.src!r} is a directory without images matching decode.image_glob="
                              f"{self.cfg.image_glob}: put images there or change decode.image_glob")

    def pictures(self) -> Iterator[Picture]:
        import cv2

        files = self.files()
        if not files:
            raise SourceError(f"source {self.src!r} holds no images matching decode.image_glob="
                              f"{self.cfg.image_glob}")
        for i, path in enumerate(files):
            if self.stop.is_set():
                return

            def read(mp, path=path):
                rgb = read_image(path)
                if rgb is None:
                    self.count("corrupt_frames")
                    log.warning("decode: %s is not a readable image (%s): skipped", path, IMAGE_FORMATS)
                    return None
                h, w = rgb.shape[:2]
                fw, fh = fit_size(w, h, mp)
                if (fw, fh) != (w, h):
                    rgb = cv2.resize(rgb, (fw, fh), interpolation=cv2.INTER_AREA)
                return rgb

            yield i * self.period, read


class UrlSource(Source):
    kind = "url"
    live = True

    def open(self) -> None:
        cfg = self.cfg
        options = {}
        if self.src.lower().startswith("rtsp"):
            options["rtsp_transport"] = cfg.rtsp_transport
        self.container = open_stoppable(
            self.stop, lambda: open_av(self.src, options=options, timeout=(cfg.open_timeout_s, cfg.read_timeout_s)),
            self.src)

    def pictures(self) -> Iterator[Picture]:
        self.finite = False
        stream = video_stream(self.container, self.src)
        for vf in decoded(self.container, stream, True, self.stop, self.count):
            yield (None if vf.time is None else float(vf.time)), (lambda mp, vf=vf: _to_rgb(vf, mp))
        self.finite = self.container.duration is not None  # a clean end of a finite stream: no reconnect

    def close(self) -> None:
        self.container.close()


class CameraSource(UrlSource):
    """A camera through PyAV (V4L2, AVFoundation, DirectShow), or OpenCV when this FFmpeg has no such input;
    OpenCV pictures are timed from when the source was made."""

    kind = "camera"

    def __init__(self, src: str, cfg: Any, stop: threading.Event, count: Callable[..., None]) -> None:
        super().__init__(src, cfg, stop, count)
        self.capture = None
        self.t_start = time.monotonic()

    def open(self) -> None:
        import av

        cfg = self.cfg
        device, fmt = _camera_device(self.src)
        options = {}
        if cfg.camera_width is not None:
            options["video_size"] = f"{cfg.camera_width}x{cfg.camera_height}"
        if cfg.camera_fps is not None:
            options["framerate"] = f"{cfg.camera_fps:g}"
        if cfg.camera_format is not None:
            options["input_format" if fmt == "v4l2" else "pixel_format"] = cfg.camera_format
        if fmt in av.formats_available:
            self.container = open_av(device, format=fmt, options=options,
                                     timeout=(cfg.open_timeout_s, cfg.read_timeout_s))
        else:
            self.container, self.capture = None, self._open_cv2(device)

    def _open_cv2(self, device: str):
        import cv2

        index = int(self.src) if self.src.isdigit() else device
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            raise SourceError(f"cannot open camera {self.src!r} ({device}): check that it is connected, not used "
                              f"by another program, and that you may read it (Linux: the 'video' group)")
        cfg = self.cfg
        if cfg.camera_format:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.camera_format.upper()[:4].ljust(4)))
        if cfg.camera_width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.camera_width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.camera_height)
        if cfg.camera_fps is not None:
            cap.set(cv2.CAP_PROP_FPS, cfg.camera_fps)
        return cap

    def pictures(self) -> Iterator[Picture]:
        if self.capture is None:
            yield from super().pictures()
            return
        import cv2

        self.finite = False
        while not self.stop.is_set():
            ok, bgr = self.capture.read()
            if not ok:
                return

            def conv(mp, bgr=bgr):
                h, w = bgr.shape[:2]
                fw, fh = fit_size(w, h, mp)
                if (fw, fh) != (w, h):
                    bgr = cv2.resize(bgr, (fw, fh), interpolation=cv2.INTER_AREA)
                return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

            yield time.monotonic() - self.t_start, conv

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None
        else:
            self.container.close()


SOURCES: dict[str, type[Source]] = {
    "file": FileSource, "images": ImageFolderSource, "camera": CameraSource, "url": UrlSource}


def make_source(src: str, cfg: Any, stop: threading.Event, count: Callable[..., None]) -> Source:
    """The Source for what `src` names (see source_kind)."""
    return SOURCES[source_kind(src)](src, cfg, stop, count)
