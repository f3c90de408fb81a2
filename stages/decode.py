"""The decode stage: a source of RGB frames in shared memory (docs/sources.md).

    source --PyAV/OpenCV--> RGB24 numpy --> FrameStore slot --Frame--> detect

The sources (file, image folder, camera, URL) are classes in stages/sources.py; this stage keeps the
slots, real-time pacing, start/max frames, looping (pts keep increasing: image folders at
`decode.image_fps`) and the reconnects of live sources (`decode.reconnect_attempts`).

Policies: offline mode waits for a free FrameStore slot (nothing lost); live mode drops a frame when no
slot is free (counted "dropped_no_slot", added to the next frame's `dropped`). Undecodable packets are
counted ("corrupt_frames") and skipped; a source that cannot be opened at all raises `SourceError`.

Service time (docs/metrics.md): the work on each frame, reading and decoding it and converting it to RGB
(`_timed`); not the pacing sleep nor a wait for a free slot.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.messages import Frame, now
from pipeline.stage import SourceStage, StageContext, config_section

from .sources import SAMPLE, Source, SourceError, fit_size, is_live_source, make_source, sample_path

__all__ = ["DecodeConfig", "DecodeStage", "SourceError", "is_live_source", "sample_path", "fit_size"]

log = logging.getLogger(__name__)

SLOT_POLL_S = 0.1  # how often a wait (for a slot, for pacing) checks the stop flag


# ------------------------------------------------------------------------------------------- settings
class DecodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # pace files at their frame rate (by PTS) so they act like a camera; off: files decode as fast as the
    # pipeline takes them, which is what offline processing wants
    realtime: bool = False
    # frames with more pixels are downscaled (aspect kept) to fit; the FrameStore slots are sized from this
    # (the runtime passes it to FrameStore.create), so 1080p fits and a 4K source costs no 4x memory
    max_pixels: int = Field(1920 * 1080, ge=64 * 64, le=7680 * 4320)
    # start over at the end of a file or image folder (demo loops); pts and index keep increasing
    loop: bool = False
    # skip this many frames at the start of the source (decode order): jump past an intro
    start_frame: int = Field(0, ge=0)
    # stop after this many frames from start_frame on (None = to the end): quick trials on long files
    max_frames: Optional[int] = Field(None, ge=1)
    # camera capture size and rate; None = the device's own default, which always opens
    camera_width: Optional[int] = Field(None, ge=1, le=16384)
    camera_height: Optional[int] = Field(None, ge=1, le=16384)
    camera_fps: Optional[float] = Field(None, gt=0, le=1000)
    # camera pixel format asked of V4L2 (e.g. "mjpeg": most USB cameras reach their full rate only in
    # MJPEG); None = the device default
    camera_format: Optional[str] = None
    # RTSP over TCP: no lost UDP packets (smeared frames) behind NAT and firewalls, at a little latency
    rtsp_transport: Literal["tcp", "udp", "http", "udp_multicast"] = "tcp"
    # seconds to wait for a network source or camera to open; long enough for a slow RTSP handshake
    open_timeout_s: float = Field(10.0, gt=0, le=600)
    # seconds without data from a network source before it counts as lost (and reconnects)
    read_timeout_s: float = Field(5.0, gt=0, le=600)
    # live sources (cameras, URLs): tries to reopen after the stream is lost before giving up; a few
    # cover a camera or RTSP server restarting
    reconnect_attempts: int = Field(5, ge=0, le=100000)
    # seconds between reconnect tries: enough for a server to come back, short enough to lose little
    reconnect_delay_s: float = Field(2.0, ge=0, le=600)
    # image-folder files taken (case-insensitive, sorted by name): the common still-image formats
    image_glob: list[str] = Field(
        default_factory=lambda: ["*.jpg", "*.jpeg", "*.png", "*.bmp", "*.tif", "*.tiff", "*.webp"])
    # frame rate given to image folders (pts = i / image_fps, and realtime pacing): a typical camera rate
    image_fps: float = Field(30.0, gt=0, le=1000)

    @model_validator(mode="after")
    def _check(self) -> "DecodeConfig":
        if (self.camera_width is None) != (self.camera_height is None):
            raise ValueError("decode.camera_width and decode.camera_height go together: set both or neither")
        if not self.image_glob:
            raise ValueError("decode.image_glob is empty: give at least one pattern, e.g. ['*.jpg']")
        return self


# ------------------------------------------------------------------------------------------- the stage
class StopFlagPickling:
    """A source stage travels to its process pickled, and a threading.Event does not pickle: its `_stop`
    event travels as whether it is set (and the attributes named in `_not_pickled` as empty lists)."""

    _not_pickled: tuple[str, ...] = ()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_stop"] = self._stop.is_set()
        state.update({name: [] for name in self._not_pickled})
        return state

    def __setstate__(self, state: dict) -> None:
        stopped = state.pop("_stop")
        self.__dict__.update(state)
        self._stop = threading.Event()
        if stopped:
            self._stop.set()


class DecodeStage(StopFlagPickling, SourceStage):
    """Source stage: `DecodeStage(config)` with the root Config (reads `source`, `source_id`, `mode`
    and the section `decode`) or a `DecodeConfig` (then source/source_id/mode come as keywords).
    The runtime sets `self.store` (a FrameStore), calls `setup()`, iterates `frames()`, then `close()`.
    """

    name = "decode"
    drop_counters = ("dropped_no_slot",)
    reports_service = True  # decoding, without the pacing sleep and slot waits (_timed)

    def __init__(self, config: Any = None, context: Optional[StageContext] = None, *, source: Optional[str] = None,
                 source_id: Optional[str] = None, mode: Optional[str] = None) -> None:
        super().__init__()
        section = config_section(config, "decode", DecodeConfig)
        self.cfg = section
        if context is not None:
            source, source_id, mode = context.source, context.source_id, context.mode
        self.source = source if source is not None else getattr(config, "source", None)
        self.source_id = source_id or getattr(config, "source_id", None) or "default"
        mode = mode or getattr(config, "mode", None) or "auto"
        if mode == "auto":  # the runtime resolves it; a stage made by hand decides the same way
            live = section.realtime or (self.source is not None and is_live_source(self.source))
            mode = "live" if live else "offline"
        if mode not in ("live", "offline"):
            raise ValueError(f"mode must be 'live' or 'offline', not {mode!r}")
        self.mode = mode
        self.store: Any = None  # set by the runtime before setup()
        self._stop = threading.Event()
        self._index = 0  # decode-order index of the next frame from the source
        self._taken = 0  # frames taken from start_frame on (delivered or dropped), for max_frames
        self._position = 0  # frames delivered or dropped for want of a slot so far (Frame.position)
        self._pending_drops = 0
        self._max_pixels = section.max_pixels

    # --- life cycle ---------------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return self.mode == "live"

    def resolved_source(self) -> str:
        if self.source is None:
            if not SAMPLE.is_file():
                raise SourceError(
                    f"no source given and the sample video {SAMPLE} is missing: give a source "
                    f"(--source FILE|DIR|/dev/video0|rtsp://...) or make it with `python scripts/make_sample.py`")
            return str(SAMPLE)
        return str(self.source)

    def check(self) -> None:
        """The sample, file or image folder is there (cameras and URLs are tried when opened)."""
        make_source(self.resolved_source(), self.cfg, self._stop, self.count).check()

    def setup(self) -> None:
        if self.store is None:
            raise RuntimeError("decode stage: set stage.store (a FrameStore) before setup()")
        self._max_pixels = min(self.cfg.max_pixels, self.store.spec.max_pixels)
        if self.store.spec.max_pixels < self.cfg.max_pixels:
            log.warning("frame store slots hold %d pixels, less than decode.max_pixels=%d: frames are fitted "
                        "to the slots", self.store.spec.max_pixels, self.cfg.max_pixels)
        self.check()  # again: the source may have gone since (and a stage used without the runtime)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        pass

    # --- frames ---------------------------------------------------------------------------------------
    def frames(self) -> Iterator[Frame]:
        src = self.resolved_source()
        source = make_source(src, self.cfg, self._stop, self.count)
        log.info("decode: %s source %s (%s mode)", source.kind, src, self.mode)
        yield from (self._live_frames(source) if source.live else self._passes(source))

    def _done(self) -> bool:
        return self._stop.is_set() or (self.cfg.max_frames is not None and self._taken >= self.cfg.max_frames)

    def _emit(self, index: int, pts: Optional[float], to_rgb) -> Optional[Frame]:
        """Take a slot and fill it with `to_rgb(max_pixels)` -> (H, W, 3) uint8; None when skipped."""
        if index < self.cfg.start_frame:
            return None
        self._taken += 1
        slot = self._acquire()
        if slot is None:
            if self.live and not self._stop.is_set():
                self.count("dropped_no_slot")
                self._pending_drops += 1
                self._position += 1
            return None
        try:
            rgb = to_rgb(self._max_pixels)
        except BaseException:
            self.store.release(slot)
            raise
        if rgb is None:  # undecodable image
            self.store.release(slot)
            return None
        h, w = rgb.shape[:2]
        frame = Frame(source=self.source_id, index=index, pts=pts, slot=slot, height=h, width=w,
                      dropped=self._pending_drops, position=self._position)
        self._position += 1
        self.store.frame(frame)[:] = rgb
        self._pending_drops = 0
        frame.times["decode"] = now()
        self.count("frames")
        return frame

    def _acquire(self) -> Optional[int]:
        if self.live:
            return self.store.acquire(block=False)
        while not self._stop.is_set():
            slot = self.store.acquire(block=True, timeout=SLOT_POLL_S)
            if slot is not None:
                return slot
        return None

    def _timed(self, pictures: Iterator) -> Iterator:
        """The source's pictures, each one's work recorded as a "service" timing: reading and decoding it,
        and converting it to RGB when it is (a picture skipped or dropped for want of a slot: the first)."""
        while True:
            t0 = time.monotonic()
            try:
                pts, to_rgb = next(pictures)
            except StopIteration:
                return
            pulled = [time.monotonic() - t0]  # cleared once recorded

            def timed_rgb(max_pixels, to_rgb=to_rgb, pulled=pulled):
                t1 = time.monotonic()
                try:
                    return to_rgb(max_pixels)
                finally:
                    self.timing("service", pulled.pop() + time.monotonic() - t1 if pulled else 0.0)

            yield pts, timed_rgb
            if pulled:  # not converted: its reading and decoding were work all the same
                self.timing("service", pulled.pop())

    def _pace(self, t0: float, pts: Optional[float], pts0: float) -> None:
        """Realtime: sleep until the frame's PTS has come, checking the stop flag."""
        if pts is None:
            return
        due = t0 + (pts - pts0)
        while not self._stop.is_set():
            left = due - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, SLOT_POLL_S))

    # --- files and image folders: passes, looped with pts going on ----------------------------------------
    def _passes(self, source: Source) -> Iterator[Frame]:
        offset = 0.0  # pts added on each loop so that pts keeps increasing
        t0, pts0 = 0.0, None  # realtime clock: wall time and pts of the first frame delivered
        while True:
            source.open()
            first_raw, last_raw, duration = None, None, None  # source pts of this pass
            base, corrupt = self._index, self.counters.get("corrupt_frames", 0)
            try:
                for raw, to_rgb in self._timed(source.pictures()):
                    index = self._index
                    if self.counters.get("corrupt_frames", 0) > corrupt and raw is not None and source.rate:
                        # frames were lost to damage: the index is the frame's position in the source (from
                        # its PTS and the frame rate), not a count of frames decoded, so time order holds
                        index = max(index, base + int(round((raw - source.start) * source.rate)))
                    self._index = index + 1
                    pts = None if raw is None else raw + offset
                    if raw is not None:
                        if first_raw is None:
                            first_raw = raw
                        if last_raw is not None and raw > last_raw:
                            duration = raw - last_raw
                        last_raw = raw
                    if self.cfg.realtime and index >= self.cfg.start_frame and pts is not None:
                        if pts0 is None:
                            t0, pts0 = time.monotonic(), pts
                        self._pace(t0, pts, pts0)
                    f = self._emit(index, pts, to_rgb)
                    if f is not None:
                        yield f
                    if self._done():
                        return
            finally:
                source.close()
            if not self.cfg.loop or self._stop.is_set() or self._index == 0:
                return
            if last_raw is not None:  # the next pass starts one frame after this one's last
                offset += last_raw - first_raw + (duration or source.period or 0.0)

    # --- cameras and URLs: reconnects ---------------------------------------------------------------------
    def _live_frames(self, source: Source) -> Iterator[Frame]:
        """Cameras and URLs: reconnect (counted "reconnects") when the stream is lost."""
        import av

        src = source.src
        failures = 0
        # a source reopened may start its clock again: its pts are moved on to continue from the last frame
        # delivered (plus the time it was away), so pts keep increasing across reconnects
        offset, last_pts, last_wall = 0.0, None, 0.0
        while not self._done():
            try:
                source.open()
            except SourceError as e:
                if self._stop.is_set():  # stopped while opening (OpenStopped) or waiting: a stop, not a failure
                    return
                failures += 1
                if failures > self.cfg.reconnect_attempts or self._stop.is_set():
                    if last_pts is None and not self._index:  # never opened: the open error says it
                        raise
                    raise SourceError(f"source {src!r} lost and did not come back after "
                                      f"{self.cfg.reconnect_attempts} reconnect attempts "
                                      f"(decode.reconnect_attempts): {e}") from e
                log.warning("decode: %s not available, retry %d/%d in %.1f s", src, failures,
                            self.cfg.reconnect_attempts, self.cfg.reconnect_delay_s)
                self._sleep(self.cfg.reconnect_delay_s)
                continue
            got = 0
            ended = False  # a clean end of a finite stream (e.g. a file over HTTP): no reconnect
            try:
                for pts, to_rgb in self._timed(source.pictures()):
                    if pts is not None:
                        if got == 0 and last_pts is not None and pts + offset <= last_pts:
                            offset = last_pts + max(time.monotonic() - last_wall, 1e-3) - pts
                        pts += offset
                        last_pts, last_wall = pts, time.monotonic()
                    index = self._index
                    self._index += 1
                    got += 1
                    failures = 0
                    f = self._emit(index, pts, to_rgb)
                    if f is not None:
                        yield f
                    if self._done():
                        return
                ended = source.finite
            except (av.error.FFmpegError, OSError) as e:
                log.warning("decode: %s lost (%s)", src, e)
            finally:
                source.close()
            if ended or self._stop.is_set():
                return
            failures += 1 if got == 0 else 0
            if failures > self.cfg.reconnect_attempts:
                raise SourceError(f"source {src!r} lost and did not come back after "
                                  f"{self.cfg.reconnect_attempts} reconnect attempts (decode.reconnect_attempts)")
            self.count("reconnects")
            log.warning("decode: reconnecting to %s in %.1f s", src, self.cfg.reconnect_delay_s)
            self._sleep(self.cfg.reconnect_delay_s)

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)
