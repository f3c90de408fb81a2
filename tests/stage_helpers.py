"""Small real stages for testing the runtime on its own (importable by the spawned stage processes)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

from pipeline.messages import EndOfStream, Frame, now
from pipeline.stage import SourceStage, Stage, StageError
from pipeline.supervisor import RunSettings


def runtime_config(mode="offline", ring_slots=8, queue_size=2, stop_timeout_s=5.0):
    """What the supervisor is told: small 16 x 16 frames, one crop."""
    return RunSettings(mode=mode, ring_slots=ring_slots, queue_size=queue_size, stop_timeout_s=stop_timeout_s,
                       max_pixels=16 * 16, max_persons=1)


def _note_pid(pid_dir: Optional[str], name: str) -> None:
    if pid_dir:
        Path(pid_dir, f"{name}.pid").write_text(str(os.getpid()))


class CountingSource(SourceStage):
    """Frames 0..n-1 (n=None: forever), pixel value = index % 256, optionally paced."""

    name = "source"
    drop_counters = ("dropped_no_slot",)

    def __init__(self, n: Optional[int], live: bool = False, delay_s: float = 0.0, pid_dir: Optional[str] = None):
        super().__init__()
        self.n, self.live, self.delay_s, self.pid_dir = n, live, delay_s, pid_dir
        self._stop = False

    def setup(self):
        _note_pid(self.pid_dir, self.name)

    def stop(self):
        self._stop = True

    def frames(self):
        i, dropped = 0, 0
        while (self.n is None or i < self.n) and not self._stop:
            slot = self.store.acquire(block=not self.live, timeout=None if not self.live else 0)
            if slot is None:
                dropped += 1
                self.count("dropped_no_slot")
            else:
                f = Frame("test", i, i / 30, slot, 16, 16, {"decode": now()}, dropped)
                dropped = 0
                self.store.frame(f)[:] = i % 256
                yield f
            i += 1
            if self.delay_s:
                time.sleep(self.delay_s)


class Forward(Stage):
    """Passes frames on after delay_s; raises at frame `fail_at`, or in setup() a StageError `setup_error`."""

    def __init__(self, name="forward", delay_s=0.0, fail_at=None, pid_dir=None, setup_s=0.0, setup_error=None):
        super().__init__()
        self.name, self.delay_s, self.fail_at, self.pid_dir = name, delay_s, fail_at, pid_dir
        self.setup_s, self.setup_error = setup_s, setup_error

    def setup(self):
        time.sleep(self.setup_s)  # e.g. a model loading
        if self.setup_error:
            raise StageError(self.setup_error)
        _note_pid(self.pid_dir, self.name)

    def process(self, msg):
        if isinstance(msg, Frame):
            if msg.index == self.fail_at:
                raise ValueError(f"boom at {msg.index}")
            if self.delay_s:
                time.sleep(self.delay_s)
            # the pixels must be the ones the source wrote
            assert int(self.store.frame(msg)[0, 0, 0]) == msg.index % 256
        return [msg]


class Sink(Stage):
    """Releases each frame's slot and appends (index, dropped) to a JSON-lines file."""

    name = "sink"

    def __init__(self, out: str, pid_dir=None):
        super().__init__()
        self.out, self.pid_dir = out, pid_dir

    def setup(self):
        _note_pid(self.pid_dir, self.name)
        self.f = open(self.out, "w")

    def process(self, msg):
        if isinstance(msg, Frame):
            self.store.release(msg)
            self.f.write(json.dumps([msg.index, msg.dropped]) + "\n")
            self.f.flush()
        elif isinstance(msg, EndOfStream):
            self.f.write(json.dumps(["end", msg.frames, msg.reason]) + "\n")
            self.f.flush()
        return []

    def close(self):
        if hasattr(self, "f"):
            self.f.close()


def read_sink(path) -> tuple[list, list]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return [r for r in rows if r[0] != "end"], [r for r in rows if r[0] == "end"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


class StreamSink(Stage):
    """Several sources: releases each frame's slot and appends ["frame", source, index, dropped], and
    ["source_end", source, frames, reason] / ["end", source, frames, reason], to a JSON-lines file."""

    name = "sink"

    def __init__(self, out: str):
        super().__init__()
        self.out = out

    def setup(self):
        self.f = open(self.out, "w")

    def process(self, msg):
        from pipeline.messages import SourceEnd

        if isinstance(msg, Frame):
            self.store.release(msg)
            row = ["frame", msg.source, msg.index, msg.dropped]
        else:
            row = ["source_end" if isinstance(msg, SourceEnd) else "end", msg.source, msg.frames, msg.reason]
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()
        return []

    def close(self):
        if hasattr(self, "f"):
            self.f.close()
