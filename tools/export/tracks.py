"""A recording read as tracks, streaming: frames in order, each person's values appended to its track's
files on disk, a track closed when the stream says it was lost or the recording ends.

Memory does not grow with the length of the video: what is kept per open track is a small buffer and
counters (no open file); the values themselves go to raw files in a scratch directory (`TrackStore`), read
back as memory maps when the track is written out.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Union

import msgpack
import numpy as np

from pipeline import wire
from pipeline.subscriber import FrameData, Topology, to_message

DEFAULT_FPS = 30.0  # when the recording has no timestamps at all


class RecordingError(ValueError):
    """A file that is not a recording, or one without frames."""


@dataclass
class ReadStatus:
    """How far a recording could be read."""

    records: int = 0
    frames: int = 0
    last_frame: Optional[int] = None
    ended: bool = False  # an end message was read
    reason: str = ""  # the end message's reason
    stopped: Optional[str] = None  # why reading stopped early (damaged record); None when it did not
    damage: Optional[str] = None  # the reader's own words about the damaged record
    skipped: int = 0  # whole records whose message does not decode (NaN in a frame, a wrong field): skipped
    skipped_first: Optional[str] = None  # the first of them, in words
    streams: set = field(default_factory=set)  # the streams whose frames the recording holds (up to 1,000 named)

    def note(self) -> Optional[str]:
        """One line when the recording is incomplete, else None."""
        parts = []
        if self.stopped:
            parts.append(self.stopped)
        elif not self.ended:
            where = "before any frame" if self.last_frame is None else f"after frame {self.last_frame}"
            parts.append(f"the recording stops {where} without an end message (a killed run?); "
                         f"exported the {self.frames} complete frames")
        if self.skipped:
            parts.append(f"skipped {self.skipped} record(s) that do not decode (the first: {self.skipped_first})")
        return "; ".join(parts) or None


def read_frames(path: Union[str, Path], stream: Optional[str] = None,
                status: Optional[ReadStatus] = None) -> Iterator[FrameData]:
    """The frames of one stream of a recording (the first stream with frames when None), each with its
    stream's topology. A damaged record (the file's structure) ends the iteration and is described in
    `status.stopped`; a whole record whose message does not decode (docs/schema.md refuses NaN, for one) is
    skipped and counted in `status.skipped`, and reading goes on."""
    status = status if status is not None else ReadStatus()
    topology: dict[str, Topology] = {}
    records = wire.read_recording(path)
    while True:
        try:
            rec = next(records)
        except StopIteration:
            return
        except (wire.WireError, ValueError, msgpack.UnpackException) as e:
            status.damage = str(e)
            status.stopped = (f"record {status.records + 1} is damaged ({e}); exported the {status.frames} "
                              f"frames before it")
            return
        status.records += 1
        try:
            msg = to_message(wire.decode(rec.payload), None)
        except (wire.WireError, ValueError, TypeError, KeyError) as e:
            status.skipped += 1
            if status.skipped_first is None:
                status.skipped_first = f"record {status.records}: {e}"
                status.damage = f"{path}: record {status.records}: {e}"
            continue
        if isinstance(msg, Topology):
            topology[msg.stream] = msg
            continue
        if isinstance(msg, FrameData) and len(status.streams) < 1000:
            status.streams.add(msg.stream)
        if stream is None and isinstance(msg, FrameData):
            stream = msg.stream
        if msg.stream != stream:
            continue
        if msg.kind == "end":
            status.ended, status.reason = True, msg.reason
            return
        msg.topology = topology.get(msg.stream)
        status.frames += 1
        status.last_frame = msg.index
        yield msg


class TrackStore:
    """Per-frame arrays of one track, appended to raw files in a directory of their own.

    `append(name, value)` fixes the field's dtype and shape at its first value; `array(name)` maps the
    file back as a read-only (n, *shape) array. No file stays open between calls (an export may hold
    hundreds of tracks open, each with some twenty fields): values wait in a small buffer and are
    appended to their files, opened and closed again, a field once it holds `FIELD_BYTES` (a mesh, every
    frame), every field once the store holds `BUFFER_BYTES`.
    """

    FIELD_BYTES = 64 * 1024
    BUFFER_BYTES = 512 * 1024

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=False)
        self._pending: dict[str, list[bytes]] = {}
        self._pending_bytes = 0
        self._kind: dict[str, tuple[np.dtype, tuple]] = {}
        self.counts: dict[str, int] = {}

    def append(self, name: str, value) -> None:
        arr = np.asarray(value)
        if name not in self._kind:
            self._kind[name] = (arr.dtype, arr.shape)
            self._pending[name] = []
            self.counts[name] = 0
        dtype, shape = self._kind[name]
        if arr.shape != shape:
            raise ValueError(f"{name}: shape {arr.shape} differs from the track's {shape}")
        data = np.ascontiguousarray(arr, dtype).tobytes()
        self.counts[name] += 1
        if len(data) >= self.FIELD_BYTES:  # a large value (a mesh) goes straight to its file
            self._write(name, [*self._pending[name], data])
            return
        self._pending[name].append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= self.BUFFER_BYTES:
            self.flush()

    def _write(self, name: str, chunks: list) -> None:
        with open(self.dir / f"{name}.raw", "ab") as f:
            for chunk in chunks:
                f.write(chunk)
        self._pending_bytes -= sum(map(len, self._pending[name]))
        self._pending[name].clear()

    def flush(self) -> None:
        """Append every buffered value to its file."""
        for name, chunks in self._pending.items():
            if chunks:
                self._write(name, chunks)

    def __contains__(self, name: str) -> bool:
        return name in self._kind

    def array(self, name: str) -> np.ndarray:
        self.flush()
        dtype, shape = self._kind[name]
        n = self.counts[name]
        if n == 0 or dtype.itemsize * int(np.prod(shape)) == 0:
            return np.zeros((n, *shape), dtype)
        return np.memmap(self.dir / f"{name}.raw", dtype=dtype, mode="r", shape=(n, *shape))

    def names(self) -> list[str]:
        return list(self._kind)

    def remove(self) -> None:
        self._pending.clear()
        self._kind.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Track:
    """One track: a person across frames, from when it appears until it is lost or the recording ends."""

    track_id: int
    name: str  # file stem: track_0007, or track_0007-2 for the second track that reused id 7
    store: TrackStore
    first: int = -1
    last: int = -1
    seen: int = 0
    coasting: int = 0
    gaps: list = field(default_factory=list)  # [first missing frame, last missing frame]
    t_first: Optional[float] = None  # (frame, pts) of the first and last seen frame with a timestamp
    t_last: Optional[tuple] = None
    end: str = ""
    extra: dict = field(default_factory=dict)  # arrays for its npz computed at its end (the world: tools/export/world.py)

    def add_frame(self, index: int, pts: Optional[float], coasting: bool) -> None:
        if self.seen and index > self.last + 1:
            self.gaps.append([self.last + 1, index - 1])
        if self.seen == 0:
            self.first = index
        self.last = index
        self.seen += 1
        self.coasting += int(coasting)
        if pts is not None:
            if self.t_first is None:
                self.t_first = (index, pts)
            self.t_last = (index, pts)

    def fps(self, fallback: Optional[float]) -> float:
        """Frames per second from the track's own timestamps, else the recording's, else 30."""
        if self.t_first and self.t_last and self.t_last[0] > self.t_first[0] and self.t_last[1] > self.t_first[1]:
            return round((self.t_last[0] - self.t_first[0]) / (self.t_last[1] - self.t_first[1]), 6)
        return fallback or DEFAULT_FPS

    def info(self, fps: float) -> dict:
        return {"track_id": self.track_id, "name": self.name, "first_frame": self.first, "last_frame": self.last,
                "frames_seen": self.seen, "frames_coasting": self.coasting, "gaps": self.gaps, "fps": fps,
                "end": self.end}


class RateEstimate:
    """The source's frame rate from the frames' timestamps: (last index - first) / (last pts - first)."""

    def __init__(self) -> None:
        self.first: Optional[tuple] = None
        self.last: Optional[tuple] = None

    def add(self, index: int, pts: Optional[float]) -> None:
        if pts is None:
            return
        if self.first is None:
            self.first = (index, pts)
        self.last = (index, pts)

    @property
    def fps(self) -> Optional[float]:
        if self.first and self.last and self.last[0] > self.first[0] and self.last[1] > self.first[1]:
            return round((self.last[0] - self.first[0]) / (self.last[1] - self.first[1]), 6)
        return None
