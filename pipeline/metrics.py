"""What a run measures: per-stage metrics (items, drops, queue depths, service and wait times, busy
fraction, the stage's own counters and timings) and the run's summary. The supervisor fills them; the
application shows them (a progress observer, the summary table). docs/metrics.md says what each is.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class StageMetrics:
    name: str
    items_in: int = 0
    items_out: int = 0
    drops: int = 0  # live mode: stale frames dropped at this stage's hand-overs (its input and output queues)
    queue_depth_max: int = 0
    queue_depth: int = 0
    persons: int = 0
    latency_ms: dict = field(default_factory=dict)  # p50/p95/p99 of time in the stage per item
    # (for the source: time to produce an item; for others: time in process(), which for a batching
    # stage is near zero while it collects and one forward when the batch runs)
    e2e_ms: dict = field(default_factory=dict)  # p50/p95/p99 capture-to-here (publish only)
    # p50/p95/p99 of the stage's work per item: the time in process() (a stage with `reports_service`
    # measures it itself: decode its decoding without the pacing sleep, infer its forward pass per batch)
    service_ms: dict = field(default_factory=dict)
    wait_ms: dict = field(default_factory=dict)  # p50/p95/p99 of the time items waited in the input queue
    busy_s: float = 0.0  # seconds of work (the sum of the service times; a source: its own samples)
    busy: float = 0.0  # busy_s / seconds since the stage took its first item: near 1 = the bottleneck
    timings_ms: dict = field(default_factory=dict)  # the stage's own other timings: name -> p50/p95/p99
    first_done: Optional[float] = None  # wall time (epoch s) the stage finished its first item
    ready_s: Optional[float] = None  # its process's start to its setup done (imports, models loaded)
    counters: dict = field(default_factory=dict)
    dropped_here: int = 0  # frames the stage itself dropped (its `drop_counters`, e.g. no free slot)
    wall_s: float = 0.0
    # stream id -> [frames taken, drops those frames reported (Frame.dropped)]; at the last stage: the
    # frames published of each source and the drops upstream of them
    sources: dict = field(default_factory=dict)


@dataclass
class RunSummary:
    exit_code: int
    reason: str
    frames: int  # frames published
    persons: int  # person-frames published
    elapsed_s: float
    stages: list[StageMetrics]
    error: Optional[str] = None  # the failing stage's traceback, or "<stage>: <message>" for a StageError
    untrained: bool = False
    startup_s: Optional[float] = None  # the command's start to the first frame published (None: no frame)

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def drops(self) -> int:
        return sum(s.drops + s.dropped_here for s in self.stages)

    @property
    def sources(self) -> dict[str, tuple[int, int]]:
        """Per stream id: (frames published, frames dropped before publishing), from the last stage."""
        last = self.stages[-1].sources if self.stages else {}
        return {k: (int(v[0]), int(v[1])) for k, v in last.items()}


def percentiles(samples: list[float]) -> dict:
    if not samples:
        return {}
    a = np.asarray(samples) * 1000.0
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99))}


def process_started() -> float:
    """Wall time (epoch seconds) this process started: from /proc on Linux (so the interpreter's start and
    the imports count), else the import of this module."""
    try:
        with open("/proc/self/stat") as f:
            ticks = float(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time, clock ticks after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return _IMPORTED


_IMPORTED = time.time()
