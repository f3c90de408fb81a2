"""Runs the stages, one OS process each, joined by bounded queues, and stops them all cleanly.

    source -> q -> stage -> q -> ... -> last stage       (pixels in a FrameStore ring, pipeline/shm.py)

It knows no stage: the application tells it what it needs (RunSettings: mode, queue size, the ring's
size; a `measure` of each message; a progress observer). The last stage that declares `needs_pixels`
gets `releases_pixels` (pipeline/stage.py).

Policies between stages (RunSettings.mode):
  offline  a full queue blocks the producer: back-pressure slows decoding; nothing is ever dropped.
  live     a full queue drops its OLDEST item (counted, its frame slot released) so the freshest frame
           wins; the next frame through of the same source (Frame.source) carries the count in
           Frame.dropped. No item is processed twice. End messages (EndOfStream, SourceEnd) are never dropped.
Per source (stream id), every stage counts the frames it took and the drops they reported
(StageMetrics.sources); the last stage's counts are the run's per-source figures.

Shutdown:
  end of stream   the source emits EndOfStream, each stage flushes and forwards it; the run ends, exit 0,
                  when the last stage has handled it.
  an exception    the failing stage reports its traceback (a StageError: its message only); every stage
                  is stopped; exit 1.
  a dead stage    (e.g. SIGKILL) seen by its exit code: every stage is stopped; exit 1.
  Ctrl-C/SIGTERM  the source stops and what is in flight drains through (exit 0); a second Ctrl-C (or
                  the stop timeout) stops every stage at once (exit 130). SIGTERM to the whole process
                  group (kill -- -PGID) ends the stages at once: "stopped at once" too (exit 130), not a
                  stage failure.
  start           the source starts reading once every other stage reports ready (setup done).
  dead supervisor children get SIGTERM from the kernel (PR_SET_PDEATHSIG) and also watch their parent;
                  they close their stage and exit at once, within ORPHAN_GRACE_S even when a long call holds
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
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from .messages import CONTROL, EndOfStream, Frame, SourceEnd
from .metrics import RunSummary, StageMetrics, percentiles
from .shm import FrameStore
from .stage import StageError

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5
LATENCY_SAMPLES = 20000
ORPHAN_GRACE_S = 2.0  # what a stage whose supervisor died has to close itself before it exits anyway


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


# --- messages from the stages to the supervisor ---------------------------------------------------

def _frame_of(msg: Any) -> Optional[Frame]:
    if isinstance(msg, Frame):
        return msg
    return getattr(msg, "frame", None)


# --- the child side -------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the supervisor dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


class _Child:
    """The loop that runs one stage inside its process."""

    def __init__(self, stage, spec, in_q, out_q, events, drain, abort, go, parent_pid, live, measure=None,
                 source_name=None, end_reason=None):
        self.stage, self.spec, self.in_q, self.out_q = stage, spec, in_q, out_q
        self.end_reason = end_reason  # shared bytes: why the supervisor stopped the run (see _stop_reason)
        self.events, self.drain, self.abort, self.go = events, drain, abort, go
        self.parent_pid, self.live = parent_pid, live
        self.measure, self.source_name = measure, source_name
        self.m = StageMetrics(stage.name)
        self.latencies: list[float] = []
        self.e2e: list[float] = []
        self.pending_drops: dict = {}  # stream id (None: unknown) -> drops the next frame of it reports
        self.last_report = 0.0
        self.store = None

    # signals: Ctrl-C goes to the whole process group; only the supervisor acts on it.
    def _install_signals(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

        def on_term(signum, frame):
            raise SystemExit(143)

        signal.signal(signal.SIGTERM, on_term)
        # the supervisor started us with SIGINT blocked (so a Ctrl-C during start-up could not kill us
        # with a traceback); ignored now, it can be let through
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    def parent_alive(self) -> bool:
        return os.getppid() == self.parent_pid

    def _exit_when_orphaned(self) -> None:
        """A thread: once the supervisor is gone, the main thread has ORPHAN_GRACE_S to close the stage; a
        long call that holds it (a network's forward pass, a detector on a large frame) does not keep the
        process alive past that."""
        while self.parent_alive():
            time.sleep(0.2)
        time.sleep(ORPHAN_GRACE_S)
        os._exit(1)

    def report(self, force: bool = False) -> None:
        t = time.monotonic()
        if not force and t - self.last_report < PROGRESS_EVERY_S:
            return
        self.last_report = t
        self.m.counters = dict(self.stage.counters)
        self.m.dropped_here = sum(self.stage.counters.get(k, 0) for k in getattr(self.stage, "drop_counters", ()))
        if self.in_q is not None:
            try:
                self.m.queue_depth = self.in_q.qsize()
            except NotImplementedError:  # macOS
                self.m.queue_depth = 0
            self.m.queue_depth_max = max(self.m.queue_depth_max, self.m.queue_depth)
        self.events.put(("progress", self.stage.name, self.m))

    # --- output with the mode's policy ---
    def send(self, items) -> None:
        if self.out_q is None:  # the last stage: nothing to pass on
            return
        for item in items:
            f = _frame_of(item)
            if f is not None:
                f.times.setdefault(self.stage.name, time.time())  # when this stage emitted it
            if f is not None and self.pending_drops:
                f.dropped += self.pending_drops.pop(f.source, 0) + self.pending_drops.pop(None, 0)
            self._put(item)
            if not isinstance(item, SourceEnd):  # a control message, not an item of the stream
                self.m.items_out += 1

    def _put(self, item) -> None:
        eos = isinstance(item, CONTROL)
        if self.live and not eos:
            while True:
                try:
                    self.out_q.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        old = self.out_q.get_nowait()
                    except queue.Empty:
                        continue
                    if isinstance(old, CONTROL):  # never lose an end: put it back and wait
                        self.out_q.put(old)
                        continue
                    f = _frame_of(old)
                    if f is not None and f.slot >= 0:
                        self.store.release(f)
                    self.m.drops += 1
                    # The item that pushed it out reports it (with what it carried) when it is of the
                    # same source, else the next frame of that source: every drop is reported by the
                    # next frame of its own stream that gets through.
                    lost = 1 + (f.dropped if f is not None else 0)
                    mine = _frame_of(item)
                    if mine is not None and (f is None or mine.source == f.source):
                        mine.dropped += lost
                    else:
                        key = None if f is None else f.source
                        self.pending_drops[key] = self.pending_drops.get(key, 0) + lost
        while True:  # offline (and the end of stream): block, but stay stoppable
            try:
                self.out_q.put(item, timeout=0.2)
                return
            except queue.Full:
                if self.abort.is_set() or not self.parent_alive():
                    raise SystemExit(1)

    # --- the loops ---
    def run(self) -> int:
        self._install_signals()
        _die_with_parent()
        threading.Thread(target=self._exit_when_orphaned, name="orphan-watch", daemon=True).start()
        status, detail = "done", None
        try:
            self.store = FrameStore.attach(self.spec)
            self.stage.store = self.store
            self.stage.setup()
            self.events.put(("ready", self.stage.name, None))
            start = time.monotonic()
            if hasattr(self.stage, "frames"):
                # Start reading only when every later stage is ready (models loaded, sockets bound):
                # a live source would otherwise drop its first seconds while they start.
                while not self.go.wait(0.1):
                    if self.abort.is_set() or not self.parent_alive():
                        raise SystemExit(1)
                self._run_source()
            else:
                self._run_worker()
            self.m.wall_s = time.monotonic() - start
        except SystemExit as e:
            status, detail = "stopped", f"exit {e.code}"
        except StageError as e:  # the user's to fix: the message says how, a traceback would bury it
            log.debug("stage %s:\n%s", self.stage.name, traceback.format_exc())
            status, detail = "error", f"{self.stage.name}: {e}"
        except BaseException:
            status, detail = "error", traceback.format_exc()
        finally:
            if status != "done":  # stopped before the end of stream: say why, for an end message
                self.stage.stop_reason = self._stop_reason(status, detail)
            try:
                self.stage.close()
            except Exception:
                if status == "done":
                    status, detail = "error", traceback.format_exc()
            self.m.latency_ms = percentiles(self.latencies)
            self.m.e2e_ms = percentiles(self.e2e)
            self.report(force=True)
            self.events.put((status, self.stage.name, detail))
            if self.store is not None:
                self.store.close()
            if status != "done" and self.out_q is not None:
                self.out_q.cancel_join_thread()  # nobody may read what is still buffered
        return 0 if status == "done" else 1

    def _stop_reason(self, status: str, detail: Optional[str]) -> str:
        """The end-of-stream reason when this stage stops early: its own error, else the one the
        supervisor wrote before stopping every stage, else "stopped" (Ctrl-C, SIGTERM, stop timeout)."""
        if status == "error" and detail:
            return end_reason(self.stage.name, detail)
        if self.end_reason is not None:
            text = self.end_reason.value.decode("utf-8", "replace")
            if text:
                return text
        return "stopped"

    def _run_source(self) -> None:
        frames = 0
        it = self.stage.frames()
        reason = "end of stream"
        t0 = time.monotonic()
        finished = threading.Event()

        def stop_on_request() -> None:
            # Ctrl-C while the source waits inside frames() (a camera or URL opening, a reconnect delay)
            # must not wait for its next frame to be noticed
            while not finished.wait(0.1):
                if self.drain.is_set() or self.abort.is_set() or not self.parent_alive():
                    self.stage.stop()
                    return

        threading.Thread(target=stop_on_request, name="stop-watch", daemon=True).start()
        for item in it:
            self.latencies.append(time.monotonic() - t0)  # time to produce the item (not to queue it)
            if not isinstance(item, SourceEnd):
                self.m.items_in += 1
                frames += 1
                self._count_source(item)
            self.send([item])
            self.report()
            t0 = time.monotonic()
            if self.abort.is_set() or not self.parent_alive():
                raise SystemExit(1)
            if self.drain.is_set():
                self.stage.stop()
                reason = "stopped"
        finished.set()
        if self.drain.is_set():
            reason = "stopped"
        source = getattr(self.stage, "source_id", None) or "default"
        self.send([EndOfStream(source=source, frames=frames, reason=reason)])

    def _count_source(self, msg) -> None:
        f = _frame_of(msg)
        if f is not None:
            counts = self.m.sources.setdefault(f.source, [0, 0])
            counts[0] += 1
            counts[1] += f.dropped

    def _run_worker(self) -> None:
        stage = self.stage
        while True:
            if self.abort.is_set() or not self.parent_alive():
                raise SystemExit(1)
            deadline = stage.next_deadline()
            wait = 0.1 if deadline is None else min(0.1, max(0.0, deadline - time.monotonic()))
            try:
                msg = self.in_q.get(timeout=wait) if wait > 0 else self.in_q.get_nowait()
            except queue.Empty:
                deadline = stage.next_deadline()
                if deadline is not None and time.monotonic() >= deadline:
                    self.send(list(stage.tick()))
                self.report()
                continue
            if not isinstance(msg, SourceEnd):
                self.m.items_in += 1
                self._count_source(msg)
            if self.measure is not None:
                self.m.persons += self.measure(msg)
            t0 = time.monotonic()
            outs = list(stage.process(msg))
            if isinstance(msg, EndOfStream):
                outs += list(stage.finish())
                ends = [o for o in outs if isinstance(o, EndOfStream)] or [msg]
                outs = [o for o in outs if not isinstance(o, EndOfStream)] + ends[:1]
            self.latencies.append(time.monotonic() - t0)
            f = _frame_of(msg)
            if self.out_q is None and f is not None and self.source_name in f.times:
                self.e2e.append(time.time() - f.times[self.source_name])  # capture to the end
            if len(self.latencies) > LATENCY_SAMPLES:
                del self.latencies[: LATENCY_SAMPLES // 2]
            self.send(outs)
            self.report()
            if isinstance(msg, EndOfStream):
                if self.out_q is not None:
                    self.out_q.close()
                    self.out_q.join_thread()  # everything handed to the next stage before exiting
                return


def end_reason(name: str, error: str) -> str:
    """ "error: <stage>: <one line>" from a stage's error: a StageError's "<stage>: message", a
    traceback (its last line), or the supervisor's "stage <name> killed by SIGKILL"."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "failed"
    if len(lines) == 1 and (last.startswith(f"{name}: ") or last.startswith("stage ")):
        return f"error: {last}"[:END_REASON_BYTES // 2]
    return f"error: {name}: {last}"[:END_REASON_BYTES // 2]


END_REASON_BYTES = 1024


def _child_main(stage, spec, in_q, out_q, events, drain, abort, go, parent_pid, live, measure, source_name,
                end_reason=None) -> None:
    logging.basicConfig(level=logging.INFO, format=f"[{stage.name}] %(levelname)s %(message)s")
    code = _Child(stage, spec, in_q, out_q, events, drain, abort, go, parent_pid, live, measure, source_name,
                  end_reason).run()
    if os.getppid() != parent_pid:  # the supervisor died: the stage is closed, and no one waits for the
        logging.shutdown()          # interpreter's teardown (collecting a torch model's heap takes seconds)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


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
        draining_since = None
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
                draining_since = draining_since or time.monotonic()
                if time.monotonic() - draining_since > self.config.stop_timeout_s:
                    log.error("stages did not drain within %.0f s: stopping them", self.config.stop_timeout_s)
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
