"""Several sources in one run: a decode thread per source, their frames interleaved (docs/scale.md).

    cam0 --thread: DecodeStage logic--> box --+
    cam1 --thread: DecodeStage logic--> box --+--round robin--> Frame (Frame.source = its id) --> detect
                                                               SourceEnd when one source ends

Each source is read by the decode stage's own logic (pacing, start/max frames, looping, reconnects:
stages/decode.py) with its own settings (the `decode` section with the source's overrides), in a thread
of its own, so a slow or dead source never stalls the others. Its frames carry its id, index and pts.

Frames wait in a small box per source; the stage takes them round robin from the sources that have one.
Offline, a full box makes its thread wait (nothing lost); live, a new frame replaces the one still in the
box (the freshest wins; counted "dropped_behind", reported by the next frame of that source).

All sources share the frame ring (pipeline/shm.py). `SlotPool` caps the slots one source may hold, so the
others always find a few: with n sources no source holds more than max(slots // n, slots - 2 (n - 1)).

A source that cannot be opened, fails mid-way or is lost beyond its reconnect attempts ends its own
stream (a `SourceEnd` with the reason); the others go on. The stage ends when every source has ended (file
sources at their end, live ones on stop); when every source failed, the run fails with their reasons.
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Iterator, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline import wire
from pipeline.messages import ALL_SOURCES, Frame, SourceEnd
from pipeline.stage import SourceStage, StageContext, StageError

from .decode import SLOT_POLL_S, DecodeConfig, DecodeStage, StopFlagPickling
from .sources import SourceError, is_live_source

log = logging.getLogger(__name__)

RESERVE_SLOTS = 2  # slots of the ring kept for each other source
BOX_DEPTH = 2  # frames that wait per source, decoded and in their slot


# ------------------------------------------------------------------------------------------- settings
class SourceSettings(BaseModel):
    """One source of a run of several (`sources:` in the root config): its stream id, what to read, and
    the decode settings that are its own (None: the `decode` section's)."""

    model_config = ConfigDict(extra="forbid")

    # the stream id on the wire (topics "<id>/frame", recordings): 1-256 characters, no '/'
    id: str
    # a video file, an image folder, a camera (/dev/video0 or 0), an rtsp:// or http(s):// URL
    source: str
    realtime: Optional[bool] = None
    loop: Optional[bool] = None
    start_frame: Optional[int] = Field(None, ge=0)
    max_frames: Optional[int] = Field(None, ge=1)
    camera_width: Optional[int] = Field(None, ge=1, le=16384)
    camera_height: Optional[int] = Field(None, ge=1, le=16384)
    camera_fps: Optional[float] = Field(None, gt=0, le=1000)
    camera_format: Optional[str] = None
    rtsp_transport: Optional[Literal["tcp", "udp", "http", "udp_multicast"]] = None
    image_fps: Optional[float] = Field(None, gt=0, le=1000)

    @field_validator("id")
    @classmethod
    def _stream_id(cls, v: str) -> str:
        if not wire.is_stream_id(v) or v == ALL_SOURCES:
            raise ValueError(f"stream id {v!r}: use 1 to {wire.MAX_STREAM_ID} characters without '/' (it is the "
                             f"first part of every topic)")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty source: give a file, an image folder, a camera or a URL")
        return v

    def decode_config(self, base: DecodeConfig) -> DecodeConfig:
        """The `decode` section with this source's own settings over it (validated again)."""
        own = self.model_dump(exclude={"id", "source"}, exclude_none=True)
        return DecodeConfig.model_validate({**base.model_dump(), **own})

    def is_live(self, base: DecodeConfig) -> bool:
        return bool(self.realtime if self.realtime is not None else base.realtime) or is_live_source(self.source)


# ------------------------------------------------------------------------------------------- the ring
class SlotPool:
    """The frame ring shared by several sources, with at most `cap` slots held by any one of them.

    Slots come back to the ring's free queue from other processes (infer, the runtime), so this process
    knows a slot is no longer held only when it takes it from that queue again: a source at its cap first
    takes what is free there (into `spare`), which tells it which of its slots came back."""

    def __init__(self, store: Any, ids: list[str], cap: int) -> None:
        self.store, self.cap = store, cap
        self.owner: dict[int, str] = {}  # slot -> the source it was handed to, until it is seen free again
        self.held = {i: 0 for i in ids}
        self.spare: list[int] = []  # free slots taken from the ring's queue, not handed out yet
        self.lock = threading.Lock()

    @staticmethod
    def cap_for(slots: int, sources: int) -> int:
        return max(1, slots // max(1, sources), slots - RESERVE_SLOTS * (sources - 1))

    def _seen_free(self, slot: int) -> None:
        prev = self.owner.pop(slot, None)
        if prev is not None:
            self.held[prev] -= 1

    def _try(self, source: str) -> Optional[int]:
        with self.lock:
            while self.held[source] >= self.cap:  # some of its slots may be free again: find out
                s = self.store.acquire(block=False)
                if s is None:
                    return None
                self._seen_free(s)
                self.spare.append(s)
            if self.spare:
                s = self.spare.pop()
            else:
                s = self.store.acquire(block=False)
                if s is None:
                    return None
                self._seen_free(s)
            self.owner[s] = source
            self.held[source] += 1
            return s

    def take(self, source: str, block: bool, stop: threading.Event) -> Optional[int]:
        """A slot for `source`; None at once when none may be had (block False) or when stopped."""
        while True:
            s = self._try(source)
            if s is not None or not block or stop.is_set():
                return s
            got = self.store.acquire(block=True, timeout=SLOT_POLL_S)  # wait for one to come back
            if got is not None:
                with self.lock:
                    self._seen_free(got)
                    self.spare.append(got)


class _SourceDecoder(DecodeStage):
    """The decode stage's logic for one source of several: slots from the shared pool."""

    def __init__(self, cfg: DecodeConfig, source: str, source_id: str, mode: str) -> None:
        super().__init__(cfg, source=source, source_id=source_id, mode=mode)
        self.pool: Optional[SlotPool] = None

    def _acquire(self) -> Optional[int]:
        return self.pool.take(self.source_id, block=not self.live, stop=self._stop)


class _Boxes:
    """A small box of frames per source; taken round robin. A source's SourceEnd goes into its box after
    its last frame, so it leaves after them."""

    def __init__(self, ids: list[str], live: bool) -> None:
        self.ids, self.live = ids, live
        self.boxes: dict[str, collections.deque] = {i: collections.deque() for i in ids}
        self.cond = threading.Condition()
        self.next = 0

    def put(self, frame: Frame, stop: threading.Event) -> Optional[Frame]:
        """Offline: wait for room. Live: replace the oldest waiting frame, returned (its slot to release);
        the new frame reports it in `dropped`."""
        with self.cond:
            box = self.boxes[frame.source]
            old = None
            if self.live:
                if len(box) >= BOX_DEPTH:
                    old = box.popleft()
                    frame.dropped += 1 + old.dropped
            else:
                while len(box) >= BOX_DEPTH and not stop.is_set():
                    self.cond.wait(SLOT_POLL_S)
            box.append(frame)
            self.cond.notify_all()
            return old

    def end(self, msg: SourceEnd) -> None:
        with self.cond:
            self.boxes[msg.source].append(msg)
            self.cond.notify_all()

    def take(self, timeout: float) -> Union[Frame, SourceEnd, None]:
        """The next item round robin over the sources that have one; None after `timeout` without."""
        with self.cond:
            for _ in range(2):
                n = len(self.ids)
                for k in range(n):
                    i = self.ids[(self.next + k) % n]
                    if self.boxes[i]:
                        self.next = (self.next + k + 1) % n
                        item = self.boxes[i].popleft()
                        self.cond.notify_all()
                        return item
                self.cond.wait(timeout)
            return None

    def drain(self) -> list:
        with self.cond:
            items = [x for box in self.boxes.values() for x in box]
            for box in self.boxes.values():
                box.clear()
            return items


# ------------------------------------------------------------------------------------------- the stage
class MultiDecodeStage(StopFlagPickling, SourceStage):
    """Source stage of a run of several sources: `MultiDecodeStage(sources, decode_config, context)`.
    Yields each source's Frames interleaved and a SourceEnd when one ends (see the module docstring)."""

    name = "decode"
    drop_counters = ("dropped_no_slot", "dropped_behind")
    reports_service = True  # each source's decoding (stages/decode.py), gathered from its thread
    source_id = ALL_SOURCES
    _not_pickled = ("_threads",)  # (each decoder carries its own stop flag)

    def __init__(self, sources: list[SourceSettings], config: Optional[DecodeConfig] = None,
                 context: Optional[StageContext] = None) -> None:
        super().__init__()
        if not sources:
            raise ValueError("MultiDecodeStage needs at least one source")
        base = config or DecodeConfig()
        mode = (context.mode if context is not None else None) or (
            "live" if any(s.is_live(base) for s in sources) else "offline")
        self.mode = mode
        self.ids = [s.id for s in sources]
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"sources: stream ids must be unique, got {self.ids}")
        self.decoders = [_SourceDecoder(s.decode_config(base), s.source, s.id, mode) for s in sources]
        # live and file sources mixed: said by check() (a run has one queue policy; a file must lose nothing)
        live_ids = [s.id for s in sources if s.is_live(base)]
        self._mixed = (live_ids[0], next(s.id for s in sources if not s.is_live(base))) if (
            mode == "live" and 0 < len(live_ids) < len(sources)) else None
        self.store: Any = None  # set by the runtime before setup()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ended: dict[str, str] = {}  # stream id -> reason its source ended

    @property
    def live(self) -> bool:
        return self.mode == "live"

    def check(self) -> None:
        """Every file and image folder is there (cameras and URLs are tried when opened); no file beside a
        live source, unless it plays in real time."""
        if self._mixed is not None:
            live, file = self._mixed
            raise SourceError(
                f"sources: {file!r} is a file and {live!r} a live source; a live run drops frames to stay current, "
                f"which a file must not silently do: give {file!r} realtime: true (played at its own pace, its "
                f"drops counted like a camera's) or run it on its own")
        for d in self.decoders:
            try:
                d.check()
            except SourceError as e:
                raise SourceError(f"source {d.source_id!r}: {e}") from None

    def setup(self) -> None:
        if self.store is None:
            raise RuntimeError("decode stage: set stage.store (a FrameStore) before setup()")
        pool = SlotPool(self.store, self.ids, SlotPool.cap_for(self.store.spec.slots, len(self.ids)))
        for d in self.decoders:
            d.store, d.pool, d._stop = self.store, pool, self._stop  # one stop for all
        log.info("decode: %d sources (%s mode), at most %d of the %d frame slots each", len(self.ids), self.mode,
                 pool.cap, self.store.spec.slots)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2.0)

    # --- frames ---------------------------------------------------------------------------------------
    def _read(self, d: _SourceDecoder, boxes: _Boxes) -> None:
        """One source, in its own thread: its frames into its box, then its SourceEnd."""
        reason = "end of stream"
        try:
            d.setup()
            for f in d.frames():
                old = boxes.put(f, self._stop)
                if old is not None:
                    self.store.release(old)
                    d.count("dropped_behind")
            if self._stop.is_set():
                reason = "stopped"
        except StageError as e:
            log.error("decode: source %s ended: %s", d.source_id, e)
            reason = f"error: decode: {e}"
        except Exception as e:  # noqa: BLE001 (a bug, or what the source library raised: this source only)
            log.exception("decode: source %s failed", d.source_id)
            reason = f"error: decode: {d.source_id}: {type(e).__name__}: {e}"
        boxes.end(SourceEnd(d.source_id, 0, reason))

    def _gather_counters(self) -> None:
        total: dict[str, int] = {}
        for d in self.decoders:
            for k, v in dict(d.counters).items():
                total[k] = total.get(k, 0) + v
        total["sources_failed"] = sum(r.startswith("error") for r in self._ended.values())
        self.counters = total
        for d in self.decoders:  # timings move here (the runtime reads them from this stage)
            for key in list(d.timings):
                samples, d.timings[key] = d.timings[key], []
                self.timings.setdefault(key, []).extend(samples)

    def frames(self) -> Iterator[Union[Frame, SourceEnd]]:
        boxes = _Boxes(self.ids, self.live)
        delivered = {i: 0 for i in self.ids}
        self._threads = [threading.Thread(target=self._read, args=(d, boxes), name=f"decode-{d.source_id}",
                                          daemon=True) for d in self.decoders]
        for t in self._threads:
            t.start()
        try:
            while len(self._ended) < len(self.ids):
                item = boxes.take(SLOT_POLL_S)
                if isinstance(item, SourceEnd):
                    item.frames = delivered[item.source]
                    self._ended[item.source] = item.reason
                self._gather_counters()
                if item is None:
                    continue
                if isinstance(item, SourceEnd):
                    log.info("decode: source %s ended after %d frames (%s)", item.source, item.frames, item.reason)
                    yield item
                    continue
                delivered[item.source] += 1
                yield item
        finally:
            self._stop.set()
            for f in boxes.drain():  # frames still boxed when stopped at once hold slots
                if isinstance(f, Frame) and f.slot >= 0:
                    self.store.release(f)
        failed = [f"{i}: {self._ended[i]}" for i in self.ids if self._ended.get(i, "").startswith("error")]
        if failed and len(failed) == len(self.ids):
            raise StageError("every source failed: " + "; ".join(failed))
