"""What a run measures: per-stage metrics (items, drops, queue depths, latencies, the stage's own counters)
and the run's summary. The supervisor fills them; the application shows them (a progress observer, the
summary table).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class StageMetrics:
    name: str
    items_in: int = 0
    items_out: int = 0
    drops: int = 0  # items this stage dropped from its output queue (live mode)
    queue_depth_max: int = 0
    queue_depth: int = 0
    persons: int = 0
    latency_ms: dict = field(default_factory=dict)  # p50/p95/p99 of time in the stage per item
    # (for the source: time to produce an item; for others: time in process(), which for a batching
    # stage is near zero while it collects and one forward when the batch runs)
    e2e_ms: dict = field(default_factory=dict)  # p50/p95/p99 capture-to-here (publish only)
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
