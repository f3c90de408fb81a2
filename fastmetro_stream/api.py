"""The Python API of a run: the stages built from the config, handed to the runtime, the summary shown.
`fastmetro-stream run` is a thin layer over it.

    import fastmetro_stream
    summary = fastmetro_stream.run(fastmetro_stream.load_config("configs/offline_file.yaml", ["source=my.mp4"]))
    print(summary.frames, summary.fps, summary.exit_code)
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fastmetro import UNTRAINED_MESSAGE

from pipeline.messages import Detections, MeshFrame
from pipeline.metrics import RunSummary, StageMetrics, process_started
from pipeline.supervisor import Supervisor

from .config import Config

log = logging.getLogger(__name__)


def build_stages(config: Config) -> list:
    """The stages in order, each given its own section and the run's context: decode (of several sources
    when `sources` is set), detect, infer, smooth, the overlay video when `overlay.path` is set, publish."""
    from stages.decode import DecodeStage
    from stages.decode_multi import MultiDecodeStage
    from stages.detect import DetectStage
    from stages.infer import InferStage
    from stages.overlay import OverlayStage
    from stages.publish import PublishStage
    from stages.smooth import SmoothStage

    ctx = config.stage_context()
    decode = (MultiDecodeStage(config.sources, config.decode, ctx) if config.sources
              else DecodeStage(config.decode, ctx))
    stages = [decode, DetectStage(config.detect, ctx), InferStage(config.infer, ctx),
              SmoothStage(config.smooth, context=ctx, world=config.world)]
    if config.overlay.path is not None:
        stages.append(OverlayStage(config.overlay, ctx))
    return stages + [PublishStage(config.publish, ctx)]


def count_persons(msg) -> int:
    """What each stage counts of its messages (the runtime's `measure`): persons."""
    return len(msg.persons) if isinstance(msg, (Detections, MeshFrame)) else 0


class _Progress:
    """One status line, refreshed twice a second: frames, fps, persons, drops, queue depths; with several
    sources, frames published per source too (id:frames, and /drops when some were dropped)."""

    def __init__(self, console: Console, stage_names: Sequence[str], enabled: bool):
        self.console, self.names, self.enabled = console, list(stage_names), enabled
        self.start = time.monotonic()
        self.last = 0.0
        self.status = console.status("starting the stages...") if enabled else None
        if self.status:
            self.status.start()

    def __call__(self, metrics: dict[str, StageMetrics]) -> None:
        if not self.enabled or time.monotonic() - self.last < 0.5:
            return
        self.last = time.monotonic()
        first, last = metrics[self.names[0]], metrics[self.names[-1]]
        elapsed = time.monotonic() - self.start
        drops = sum(m.drops + m.dropped_here for m in metrics.values())
        queues = " ".join(f"{n}:{metrics[n].queue_depth}" for n in self.names[1:])
        per = last.sources if len(last.sources) > 1 else {}
        streams = " ".join(f"{k}:{v[0]}" + (f"/{v[1]}" if v[1] else "") for k, v in list(per.items())[:8])
        self.status.update(
            f"decoded {first.items_out}  published {last.items_in}  "
            f"{last.items_in / max(elapsed, 1e-9):.1f} fps  persons {last.persons}  drops {drops}  "
            + (f"[{escape(streams)}{' ...' if len(per) > 8 else ''}]  " if per else "")
            + f"queues [{queues}]"
        )

    def stop(self) -> None:
        if self.status:
            self.status.stop()


def summary_table(summary: RunSummary) -> Table:
    """One row per stage: items in and out, drops, the deepest its input queue got, how long items waited
    in that queue, the stage's service time per item (its work: infer's forward pass per batch, decode's
    decoding without pacing), and its busy fraction (docs/metrics.md)."""
    # two-line headers, no vertical rules: the table fits an 80-column terminal
    t = Table(title=f"{summary.frames} frames in {summary.elapsed_s:.1f} s ({summary.fps:.1f} fps), "
                    f"{summary.persons} person-frames, {summary.reason}", box=box.SIMPLE_HEAD, pad_edge=False,
              collapse_padding=True)
    for col in ("stage", "in", "out", "drops", "queue\nmax", "wait\np50 ms", "wait\np95 ms", "service\np50 ms",
                "service\np95 ms", "busy"):
        t.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)

    def ms(d: dict, k: str) -> str:
        return ("-" if not d or k not in d else f"{d[k]:.1f}" if d[k] < 100 else f"{d[k]:.0f}")

    for m in summary.stages:
        t.add_row(m.name, str(m.items_in), str(m.items_out), str(m.drops), str(m.queue_depth_max),
                  ms(m.wait_ms, "p50"), ms(m.wait_ms, "p95"), ms(m.service_ms, "p50"), ms(m.service_ms, "p95"),
                  f"{m.busy:.0%}" if m.busy_s else "-")
    return t


def summary_notes(summary: RunSummary, streams: Sequence[str] = ()) -> list[str]:
    """Each stage's own counters and timings, the capture-to-published latency, the start-up time, and
    with several sources (streams: their ids) each one's frames published and frames dropped."""
    lines = []
    sources = summary.sources
    if len(streams) > 1 or len(sources) > 1:
        for sid in dict.fromkeys([*streams, *sources]):
            frames, drops = sources.get(sid, (0, 0))
            lines.append(f"  stream {sid}: {frames} frames published, {drops} dropped")
    for m in summary.stages:
        notes = ", ".join(f"{k} {v}" for k, v in sorted(m.counters.items()) if v)
        if notes:
            lines.append(f"  {m.name}: {notes}")
        for key, d in sorted((m.timings_ms or {}).items()):
            lines.append(f"  {m.name} {key}: p50 {d['p50']:.1f} ms, p95 {d['p95']:.1f} ms, p99 {d['p99']:.1f} ms")
        if m.e2e_ms:
            lines.append(f"  capture -> published: p50 {m.e2e_ms['p50']:.0f} ms, p95 {m.e2e_ms['p95']:.0f} ms, "
                         f"p99 {m.e2e_ms['p99']:.0f} ms")
    if summary.startup_s is not None:
        ready = ", ".join(f"{m.name} {m.ready_s:.1f} s" for m in summary.stages if m.ready_s is not None)
        lines.append(f"  start-up: first frame published {summary.startup_s:.1f} s after the command started"
                     + (f" (each stage's process ready after: {ready})" if ready else ""))
    return lines


_RUNS = []  # the times run() was called in this process


def _command_started(called: float) -> float:
    """When the command began: the process's start when this is its first run() and it came within a
    minute of it (the CLI, a script), else the call of run() (a notebook, a second run)."""
    _RUNS.append(called)
    start = process_started()
    return start if len(_RUNS) == 1 and called - start < 60.0 else called


def run(config: Config, stages: Optional[list] = None, console: Optional[Console] = None,
        export: Optional[tuple] = None,
        on_progress: Optional[Callable[[dict[str, StageMetrics]], None]] = None) -> RunSummary:
    """Run the pipeline to the end of its source (or a stop signal); returns its summary.

    export: (DIR, tools.export.ExportOptions): once the run ends, its recording (publish.record, required)
    is exported to per-track files in DIR (several sources: each stream to DIR/<its id>, the id made a safe
    file name by wire.stream_file_name); a failed export makes the exit code 1.
    on_progress: also called with every stage's metrics, about twice a second (e.g. a batch's counter)."""
    called = time.time()
    config = config.resolved()
    console = console or Console(stderr=True)
    if config.infer.checkpoint is None:
        console.print(f"[bold red]WARNING: {UNTRAINED_MESSAGE}[/bold red]")
    if config.smooth.method == "none":
        console.print("smooth: off (smooth.method: none): results are published unfiltered")
    stages = stages if stages is not None else build_stages(config)
    source = (", ".join(f"{s.id}={s.source}" for s in config.sources) if config.sources
              else config.source or "the shipped sample")
    videos = ""
    if config.overlay.path is not None:
        from stages.overlay import overlay_paths

        videos = ", ".join(str(p) for p in overlay_paths(config.overlay.path, [s.id for s in config.sources or ()]).values())
    console.print(f"fastmetro-stream: {source} ({config.mode}) -> {config.publish.endpoint}"
                  + (f", recording to {config.publish.record}" if config.publish.record else "")
                  + (f", overlay video to {videos}" if videos else ""))
    settings = config.run_settings()
    if settings.ring_slots > config.ring_slots:
        log.info("frame ring: %d slots (ring_slots %d), frames stay in it until drawn (overlay.path)",
                 settings.ring_slots, config.ring_slots)
    progress = _Progress(console, [s.name for s in stages], config.progress and console.is_terminal)

    def observe(metrics: dict[str, StageMetrics]) -> None:
        progress(metrics)
        if on_progress is not None:
            on_progress(metrics)

    try:
        summary = Supervisor(settings, stages, on_progress=observe, measure=count_persons).run()
    finally:
        progress.stop()
    summary.untrained = any(m.counters.get("untrained_weights") for m in summary.stages)
    if summary.stages and summary.stages[-1].first_done is not None:
        summary.startup_s = summary.stages[-1].first_done - _command_started(called)
    if summary.stages:  # (none when a check failed before any stage started)
        console.print(summary_table(summary))
    for line in summary_notes(summary, config.stream_ids() if config.sources else ()):
        console.print(line, highlight=False)
    if summary.error:
        console.print(f"[red]error: {escape(summary.error)}[/red]", highlight=False)
    if summary.untrained or config.infer.checkpoint is None:
        console.print(f"[bold red]WARNING: {UNTRAINED_MESSAGE}[/bold red]")
    if export is not None and config.publish.record is not None and config.publish.record.is_file():
        from tools.export.cli import export_and_report, stream_jobs

        jobs = stream_jobs(export[0], export[1], config.stream_ids()) if config.sources else [export]
        for out_dir, options in jobs:
            if export_and_report(config.publish.record, out_dir, options, show_progress=console.is_terminal):
                summary.exit_code = summary.exit_code or 1
    return summary
