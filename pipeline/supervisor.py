"""Runs the stages, one OS process each, joined by bounded queues, and stops them all cleanly.

    source -> q -> stage -> q -> ... -> last stage       (pixels in a FrameStore ring, pipeline/shm.py)

It knows no stage: the application tells it what it needs (RunSettings: mode, queue size, the ring's
size; a `measure` of each message; a progress observer). The last stage that declares `needs_pixels`
gets `releases_pixels` (pipeline/stage.py).

Policies between stages (RunSettings.mode):
  offline  a full queue blocks the producer: back-pressure slows decoding; nothing is ever dropped.
  live     newest-wins: a stage takes everything waiting and keeps the newest frame of each source, and
           a full queue drops its OLDEST item; dropped frames are counted, their slots released, and the
           next frame through of the same source (Frame.source) carries the count in Frame.dropped. A
           stage works no further ahead of a slower next stage than it can use (pipeline/stage_process.py).
           No item is processed twice. End messages (EndOfStream, SourceEnd) are never dropped.
Per source (stream id), every stage counts the frames it took and the drops they reported
(StageMetrics.sources); the last stage's counts are the run's per-source figures.

Shutdown:
  end of stream   the source emits EndOfStream, each stage flushes and forwards it; the run ends, exit 0,
                  when the last stage has handled it.
  an exception    the failing stage reports its traceback (a StageError: its message only); every stage
                  is stopped; exit 1.
  a dead stage    (e.g. SIGKILL) seen by its exit code: every stage is stopped; exit 1.
  Ctrl-C/SIGTERM  the source stops and what is in flight drains through (exit 0); a second Ctrl-C (or
                  the stop timeout: no stage took an item for stop_timeout_s) stops every stage at once
                  (exit 130). SIGTERM to the whole process
                  group (kill -- -PGID) ends the stages at once: "stopped at once" too (exit 130), not a
                  stage failure.
  start           the source starts reading once every other stage reports ready (setup done).
  dead supervisor children get SIGTERM from the kernel (PR_SET_PDEATHSIG) and also watch their parent;
                  they close their stage and exit at once, within ORPHAN_GRACE_S (pipeline/stage_process.py) even when a long call holds
                  their main thread (tests/faults/test_supervisor_killed.py).
The shared-memory ring is unlinked in every case (and by the resource tracker if this process is killed).
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from .metrics import RunSummary, StageMetrics
from .shm import FrameStore
from .stage import StageError
from .stage_process import END_REASON_BYTES, _child_main, end_reason

log = logging.getLogger(__name__)


@dataclass
class RunSettings:
    """What the runtime needs to know of a run; the application works it out from its settings."""

    mode: str = "offline"  # "live": drop the oldest queued item when behind; "offline": block
    queue_size: int = 4  # messages waiting between two stages
    ring_slots: int = 16  # frames in flight in shared memory
    max_pixels: int = 1920 * 1080  # pixels of the largest frame a slot holds
    max_persons: int = 8  # crops a slot holds
    stop_timeout_s: float = 10.0  # how long stages may take to stop on their own


def assign_pixel_release(stages: Sequence[Any]) -> None:
    """The last stage that declares needs_pixels releases each frame's slot; no other stage does."""
    readers = [s for s in stages if getattr(s, "needs_pixels", False)]
    for s in readers:
        s.releases_pixels = s is readers[-1]


# --- the supervisor side --------------------------------------------------------------------------

class Supervisor:
    """Runs `stages` (the first one a source) with `settings`. measure(msg) -> int: what each stage counts
    of the messages it takes (a picklable function; the application counts persons); on_progress(metrics):
    called in this process about twice a second."""

    def __init__(self, settings: RunSettings, stages: Sequence[Any], on_progress: Optional[Callable] = None,
                 measure: Optional[Callable[[Any], int]] = None):
        self.config = settings
        self.stages = list(stages)
        self.on_progress = on_progress
        self.measure = measure
        self.ctx = mp.get_context("spawn")
        self.metrics: dict[str, StageMetrics] = {s.name: StageMetrics(s.name) for s in self.stages}
        self.status: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.stop_details: dict[str, str] = {}  # stage -> why it stopped when told to ("SIGTERM", "exit 1")
        self.procs: list = []
        self.store: Optional[FrameStore] = None
        self._signals = 0

    def _on_signal(self, signum, frame) -> None:
        self._signals += 1
        if self._signals == 1:
            log.warning("stopping: finishing what is in flight (Ctrl-C again to stop at once)")
            self.drain.set()
        else:
            self.abort.set()

    def run(self) -> RunSummary:
        import pickle

        for stage in self.stages:  # fail before anything starts, naming the stage
            try:
                pickle.dumps(stage)
            except Exception as e:
                raise RuntimeError(
                    f"stage {stage.name} cannot be sent to its process ({e}): a stage must create "
                    f"threads, locks, sockets and models in setup(), not in __init__") from None
        for stage in self.stages:  # what the user gave, checked before anything starts (no model loads first)
            try:
                stage.check()
            except StageError as e:
                return RunSummary(1, f"error in {stage.name}", 0, 0, 0.0, [], error=f"{stage.name}: {e}")
        cfg = self.config
        live = cfg.mode == "live"
        start = time.monotonic()
        assign_pixel_release(self.stages)
        self.store = FrameStore.create(self.ctx, cfg.ring_slots, cfg.max_pixels, cfg.max_persons)
        self.drain, self.abort, self.go = self.ctx.Event(), self.ctx.Event(), self.ctx.Event()
        self.end_reason = self.ctx.Array(ctypes.c_char, END_REASON_BYTES)  # why the run stopped, for the end message
        events = self.ctx.Queue()
        queues = [self.ctx.Queue(maxsize=cfg.queue_size) for _ in self.stages[1:]]
        old_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, self._on_signal)
        reason, exit_code = "end of stream", 0
        # children inherit a blocked SIGINT through exec and unblock it once they ignore it: a Ctrl-C
        # during start-up reaches only this process (which drains) instead of killing a child mid-import
        masked = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
        if masked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for i, stage in enumerate(self.stages):
                in_q = queues[i - 1] if i > 0 else None
                out_q = queues[i] if i < len(queues) else None
                p = self.ctx.Process(
                    target=_child_main, name=f"fastmetro-{stage.name}",
                    args=(stage, self.store.spec, in_q, out_q, events, self.drain, self.abort, self.go,
                          os.getpid(), live, self.measure, self.stages[0].name, self.end_reason),
                    daemon=True,
                )
                p.start()
                self.procs.append(p)
            if masked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
                masked = False
            exit_code, reason = self._watch(events)
            if self.errors:  # before every stage is stopped: the publisher's end message says why
                name, error = next(iter(self.errors.items()))
                self.end_reason.value = end_reason(name, error).encode("utf-8")[:END_REASON_BYTES - 1]
        finally:
            if masked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            self._stop_all(events)
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
            for q in queues:
                q.cancel_join_thread()
                q.close()
            self.store.close()
            self.store.unlink()
        last = self.metrics[self.stages[-1].name]
        frames = last.items_in - (1 if self.status.get(last.name) == "done" else 0)  # not the EndOfStream
        error = next(iter(self.errors.values()), None)
        return RunSummary(
            exit_code=exit_code, reason=reason, frames=max(frames, 0), persons=last.persons,
            elapsed_s=time.monotonic() - start, stages=[self.metrics[s.name] for s in self.stages],
            error=error,
        )

    def _handle(self, ev) -> None:
        kind, name, payload = ev
        if kind == "progress":
            self.metrics[name] = payload
        else:
            self.status[name] = kind
            if kind == "error":
                self.errors[name] = payload
            elif kind == "stopped":
                self.stop_details[name] = "SIGTERM" if payload == "exit 143" else payload

    def _drain_events(self, events, wait_s: float = 0.0) -> None:
        """Handle every event that has arrived (waiting up to wait_s for the first)."""
        try:
            if wait_s:
                self._handle(events.get(timeout=wait_s))
            while True:
                self._handle(events.get_nowait())
        except queue.Empty:
            pass

    def _watch(self, events) -> tuple[int, str]:
        last_name = self.stages[-1].name
        draining_since, drained_items = None, 0
        while True:
            self._drain_events(events, wait_s=0.1)
            if not self.go.is_set() and all(self.status.get(s.name) == "ready" for s in self.stages[1:]):
                self.go.set()
            if self.on_progress:
                self.on_progress(self.metrics)
            if self.errors:  # the traceback travels in RunSummary.error (the application prints it)
                name = next(iter(self.errors))
                log.error("stage %s failed; stopping every stage", name)
                return 1, f"error in {name}"
            for p, stage in zip(self.procs, self.stages):
                if p.exitcode is not None and self.status.get(stage.name) not in ("done", "error"):
                    sig = -p.exitcode if p.exitcode < 0 else None
                    how = f"killed by {signal.Signals(sig).name}" if sig else f"exited with {p.exitcode}"
                    # give its last event a moment to arrive before calling it dead
                    if self.status.get(stage.name) != "stopped":
                        self._drain_events(events, wait_s=0.1)
                        if self.errors:
                            break
                        if self.status.get(stage.name) == "done":  # it had finished its work
                            log.warning("stage %s finished, then its process %s", stage.name, how)
                            continue
                    if self.status.get(stage.name) == "stopped":
                        # told to stop, not failed: a SIGTERM to the whole process group (kill -- -PGID,
                        # a cancelled job, a closed terminal) reaches every stage with the supervisor
                        log.warning("stage %s was stopped (%s): stopping every stage", stage.name,
                                    self.stop_details.get(stage.name) or how)
                        return 130, "stopped at once"
                    msg = f"stage {stage.name} {how}"
                    log.error(msg)
                    self.errors.setdefault(stage.name, msg)
                    return 1, msg
            if self.status.get(last_name) == "done":
                return (0, "stopped" if self.drain.is_set() else "end of stream")
            if self.abort.is_set():
                return 130, "stopped at once"
            if self.drain.is_set():
                # The stop timeout follows what is in flight: it runs from the last item any stage took, so
                # a slow machine drains everything decoded however long that takes, and a stage stuck on
                # one item is still stopped (the source stopped: what is in flight only shrinks)
                moved = sum(m.items_in for m in self.metrics.values())
                if draining_since is None or moved != drained_items:
                    draining_since, drained_items = time.monotonic(), moved
                if time.monotonic() - draining_since > self.config.stop_timeout_s:
                    log.error("stages took nothing for %.0f s while draining: stopping them", self.config.stop_timeout_s)
                    return 130, "stop timeout"

    def _stop_all(self, events) -> None:
        self.abort.set()
        deadline = time.monotonic() + self.config.stop_timeout_s
        for p in self.procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=2.0)
            if p.is_alive():
                p.kill()
                p.join()
        try:  # last metrics
            self._drain_events(events)
        except (OSError, EOFError, ValueError):  # a child died while writing its last event
            pass
        events.cancel_join_thread()
        events.close()
