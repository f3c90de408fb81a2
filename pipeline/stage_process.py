"""The stage process: the loop that runs one stage in its own OS process for the supervisor.

    in_q --message--> stage.process --messages--> out_q          (events -> the supervisor)

It takes messages from its input queue (or, for the source, reads its frames once the supervisor says go),
applies the run's queue policy, forwards the end messages exactly once, reports progress, readiness,
errors and its end to the supervisor, and stops cleanly on a drain (Ctrl-C), an abort, or the death of its
supervisor. pipeline/supervisor.py starts one per stage and says what the policies are.

Live mode hands over newest-wins in front of the stages that read pixels (detect, infer, the overlay:
the costly ones): when such a stage is free it takes everything waiting in its input queue, keeps the
newest frame of each source and drops the older ones (counted, their frame slots released, the drop
reported by the kept frame of that source), and gives what it kept to `stage.process_many` at once. So
it always works on the freshest frame while the stage after it works on the one before (detect on frame
n+1 while infer runs frame n), and no frame waits behind stale ones; the meshes infer made are not
dropped after it. A full output queue still drops its oldest item (same accounting). A stage whose frames
go on to another pixel stage (detect) is paced (`_pace`). Offline nothing is dropped: a full queue blocks.

Those carried counts can land on the wrong frame: a frame pushed out of a full queue by a frame of another
source hands its count to the next frame of its source that this stage sends, but a later frame of that
source may already wait in the queue and get through without it; if the frames after that one are all
dropped, the count is never reported. So live, where the source numbers its frames (`Frame.position`:
frames taken from it before, delivered or dropped), each stage sets a frame's `dropped` when it takes it
from that number (`dropped_since`): the frames of the source between its previous frame here and this one,
wherever upstream they were lost. The carried counts stay for sources that do not number their frames.

Measured per stage (pipeline/metrics.py, docs/metrics.md): service time per item, the wait of each item in
the input queue, busy seconds; each frame carries, in `times`, when each stage took it ("<stage>:in") and
that stage's busy seconds when it passed the frame on ("<stage>:busy"), so a subscriber sees them too.
"""
from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import Any, Optional

from .messages import CONTROL, EndOfStream, Frame, SourceEnd, now
from .metrics import StageMetrics, percentiles, process_started
from .shm import FrameStore
from .stage import StageError

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5
PACE_POLL_S = 0.005  # how often a paced live stage looks whether the next stage took its item
TAKES_KEPT = 8  # the next stage's recent take intervals a paced live stage keeps
LATENCY_SAMPLES = 20000
ORPHAN_GRACE_S = 2.0  # what a stage whose supervisor died has to close itself before it exits anyway


# --- messages from the stages to the supervisor ---------------------------------------------------

def _frame_of(msg: Any) -> Optional[Frame]:
    if isinstance(msg, Frame):
        return msg
    return getattr(msg, "frame", None)


def handed_over(f: Frame) -> Optional[float]:
    """When the stage before passed the frame on: the latest stage stamp in its `times` (the keys with a
    ':' are the runtime's own: when a stage took it, busy seconds)."""
    stamps = [v for k, v in f.times.items() if ":" not in k]
    return max(stamps) if stamps else None


def newest_of_each_source(items: list) -> tuple[list, list]:
    """(kept, dropped) of messages taken from a queue at once, in order: a frame is dropped when a later
    one of the same source follows before any end message of that source; each kept frame reports the
    drops of its source before it in `dropped`. End messages are always kept, in place."""
    kept, dropped, carry = [], [], {}
    for i, item in enumerate(items):
        f = _frame_of(item)
        stale = False
        if f is not None and not isinstance(item, CONTROL):
            for later in items[i + 1:]:
                if isinstance(later, CONTROL):
                    if isinstance(later, EndOfStream) or later.source == f.source:
                        break
                    continue
                g = _frame_of(later)
                if g is not None and g.source == f.source:
                    stale = True
                    break
        if stale:
            carry[f.source] = carry.get(f.source, 0) + 1 + f.dropped
            dropped.append(item)
        else:
            if f is not None and not isinstance(item, CONTROL):
                f.dropped += carry.pop(f.source, 0)
            kept.append(item)
    return kept, dropped


def dropped_since(f: Frame, taken: dict) -> None:
    """Live: `f.dropped` from the source's count (`Frame.position`): the frames of its source lost since
    the previous one taken here; `taken` (stream id -> position after the last frame taken) is updated. A
    frame without a position (-1), or one behind the last taken, keeps the count it carried."""
    if f.position < 0:
        return
    before = taken.get(f.source, 0)
    if f.position >= before:
        f.dropped = f.position - before
    taken[f.source] = max(before, f.position + 1)


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
        self.service: list[float] = []  # seconds of work per item (or per batch: the stage's own samples)
        self.waits: list[float] = []  # seconds each item waited in the input queue
        self.timings: dict[str, list[float]] = {}  # the stage's other own timings
        self.started = 0.0  # time.monotonic() of the first work (a source: of the go), for the busy fraction
        self.last_take: Optional[float] = None  # live pacing: when the next stage last took our items
        self.take_intervals: list[float] = []
        self.awaiting_take = False  # live: items given to the next stage that it has not taken yet
        self.refreshed = False  # live: this cycle of the next stage already had one fresher frame
        self.pending_drops: dict = {}  # stream id (None: unknown) -> drops the next frame of it reports
        self.positions: dict = {}  # live: stream id -> Frame.position after the last frame taken (dropped_since)
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
        self._collect_timings()
        if self.started:
            self.m.busy = self.m.busy_s / max(t - self.started, 1e-9)
        self.m.counters = dict(self.stage.counters)
        self.m.dropped_here = sum(self.stage.counters.get(k, 0) for k in getattr(self.stage, "drop_counters", ()))
        if self.in_q is not None:
            try:
                self.m.queue_depth = self.in_q.qsize()
            except NotImplementedError:  # macOS
                self.m.queue_depth = 0
            self.m.queue_depth_max = max(self.m.queue_depth_max, self.m.queue_depth)
        self.events.put(("progress", self.stage.name, self.m))

    # --- timings ---
    def _collect_timings(self) -> None:
        """The stage's own samples moved into the runtime's (its "service" ones count as its busy time)."""
        own = getattr(self.stage, "timings", None)
        if not own:
            return
        for key in list(own):
            samples, own[key] = own[key], []
            if key == "service":
                self.m.busy_s += sum(samples)
                self.service.extend(samples)
            else:
                self.timings.setdefault(key, []).extend(samples)
        for xs in (self.service, *self.timings.values()):
            if len(xs) > LATENCY_SAMPLES:
                del xs[: LATENCY_SAMPLES // 2]

    def _worked(self, seconds: float, items: int) -> None:
        """A call of the stage took `seconds` for `items` items (0: a tick): its service time, unless the
        stage measures its own."""
        if not self.started:  # the busy fraction counts from the first work (item or tick)
            self.started = time.monotonic() - seconds
        if getattr(self.stage, "reports_service", False):
            self._collect_timings()
            return
        self.m.busy_s += seconds
        if items:
            self.service.extend([seconds / items] * items)
            if len(self.service) > LATENCY_SAMPLES:
                del self.service[: LATENCY_SAMPLES // 2]

    def _final_figures(self) -> None:
        self._collect_timings()
        self.m.latency_ms = percentiles(self.latencies)
        self.m.e2e_ms = percentiles(self.e2e)
        self.m.service_ms = percentiles(self.service)
        self.m.wait_ms = percentiles(self.waits)
        self.m.timings_ms = {k: percentiles(v) for k, v in self.timings.items() if v}

    # --- output with the mode's policy ---
    def send(self, items) -> None:
        if self.out_q is None:  # the last stage: nothing to pass on
            return
        for item in items:
            f = _frame_of(item)
            if f is not None:
                f.times.setdefault(self.stage.name, time.time())  # when this stage emitted it
                f.times[f"{self.stage.name}:busy"] = round(self.m.busy_s, 6)
            if f is not None and self.pending_drops:
                f.dropped += self.pending_drops.pop(f.source, 0) + self.pending_drops.pop(None, 0)
            self._put(item)
            if not isinstance(item, SourceEnd):  # a control message, not an item of the stream
                self.m.items_out += 1
            if f is not None and not isinstance(item, CONTROL):
                self.awaiting_take = True

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
            self.m.ready_s = time.time() - process_started()
            self.report(force=True)
            self.events.put(("ready", self.stage.name, None))
            start = time.monotonic()
            if hasattr(self.stage, "frames"):
                # Start reading only when every later stage is ready (models loaded, sockets bound):
                # a live source would otherwise drop its first seconds while they start.
                while not self.go.wait(0.1):
                    if self.abort.is_set() or not self.parent_alive():
                        raise SystemExit(1)
                start = self.started = time.monotonic()
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
            except StageError as e:  # e.g. a lossless tail the consumer never took: one line, the run fails
                if status == "done":
                    status, detail = "error", f"{self.stage.name}: {e}"
            except Exception:
                if status == "done":
                    status, detail = "error", traceback.format_exc()
            self._final_figures()
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
            self._worked(time.monotonic() - t0, 0 if isinstance(item, SourceEnd) else 1)
            f = _frame_of(item)
            if f is not None and self.service and self.stage.name in f.times:  # when its work on it began
                f.times.setdefault(f"{self.stage.name}:in", f.times[self.stage.name] - self.service[-1])
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
            self._pace()
            deadline = stage.next_deadline()
            wait = 0.1 if deadline is None else min(0.1, max(0.0, deadline - time.monotonic()))
            try:
                msg = self.in_q.get(timeout=wait) if wait > 0 else self.in_q.get_nowait()
            except queue.Empty:
                deadline = stage.next_deadline()
                if deadline is not None and time.monotonic() >= deadline:
                    t0 = time.monotonic()
                    outs = list(stage.tick())
                    self._worked(time.monotonic() - t0, 0)
                    self.send(outs)
                self.report()
                continue
            if not self.started:  # the busy fraction counts from the first work (not the others' start-up)
                self.started = time.monotonic()
            msgs = self._newest([msg]) if self.live and getattr(stage, "needs_pixels", False) else [msg]
            taken = now()
            for m in msgs:
                self._took(m, taken)
            t0 = time.monotonic()
            outs = list(stage.process_many(msgs) if self.live else stage.process(msg))
            end = isinstance(msgs[-1], EndOfStream)
            if end:
                outs += list(stage.finish())
                ends = [o for o in outs if isinstance(o, EndOfStream)] or [msgs[-1]]
                outs = [o for o in outs if not isinstance(o, EndOfStream)] + ends[:1]
            spent = time.monotonic() - t0
            self.latencies.extend([spent / len(msgs)] * len(msgs))
            items = sum(not isinstance(m, CONTROL) for m in msgs)
            self._worked(spent, items)
            if items and self.m.first_done is None:
                self.m.first_done = now()
            for m in msgs:
                f = _frame_of(m)
                if self.out_q is None and f is not None and self.source_name in f.times:
                    self.e2e.append(time.time() - f.times[self.source_name])  # capture to the end
            if len(self.latencies) > LATENCY_SAMPLES:
                del self.latencies[: LATENCY_SAMPLES // 2]
            self.send(outs)
            self.report()
            if end:
                if self.out_q is not None:
                    self.out_q.close()
                    self.out_q.join_thread()  # everything handed to the next stage before exiting
                return

    def _pace(self) -> None:
        """Live: work no further ahead of a slower next stage than it can use. Once the next stage took
        what this one gave it (one item per source), this one starts its next frame so as to finish
        about when the next stage is free again: after the next stage's recent take interval (the lower
        quartile of the last few: rather early than late) less its own service time (p90) per item. Until
        then, and while the next stage has not taken its items, it waits instead of working on frames that
        would be dropped in front of it (on a few CPU cores that work slows the next stage down). When the
        next stage runs longer than that interval by one service time here, this one does one frame more
        (the next stage takes only the newest of what waits), once per cycle of the next stage."""
        if (not self.live or self.out_q is None or self.stage.next_deadline() is not None
                or not getattr(self.stage, "needs_pixels", False) or getattr(self.stage, "releases_pixels", False)):
            return  # (only a stage whose frames go on to another that reads pixels: detect before infer)
        ahead = max(1, len(self.m.sources))
        try:
            while self.out_q.qsize() >= ahead:  # not taken yet
                due = self._free_by()
                if not self.refreshed and due is not None and time.monotonic() >= due + self._own(0.5):
                    self.refreshed = True  # the next stage runs long: a frame done now is fresher (it takes
                    return                 # the newest); once a cycle, so little work is thrown away
                if self.abort.is_set() or not self.parent_alive():
                    raise SystemExit(1)
                time.sleep(PACE_POLL_S)
        except NotImplementedError:  # no qsize (macOS): no pacing
            return
        if not self.awaiting_take:
            return
        self.awaiting_take = self.refreshed = False
        taken = time.monotonic()  # (or a little before, when it happened while this stage worked)
        if self.last_take is not None:
            self.take_intervals = (self.take_intervals + [taken - self.last_take])[-TAKES_KEPT:]
        self.last_take = taken
        due = self._free_by()
        if due is None or not self.service:
            return
        until = due - self._own(0.9) * ahead
        while time.monotonic() < until:
            if self.abort.is_set() or not self.parent_alive() or self.drain.is_set():
                return
            time.sleep(min(0.05, max(0.0, until - time.monotonic())))

    def _own(self, q: float) -> float:
        """This stage's recent service time per item, quantile q (0 before any)."""
        recent = sorted(self.service[-20:])
        return recent[int(q * (len(recent) - 1))] if recent else 0.0

    def _free_by(self) -> Optional[float]:
        """When the next stage should be free again: its last take plus the lower quartile of its recent
        take intervals (None: not known yet)."""
        if self.last_take is None or not self.take_intervals:
            return None
        intervals = sorted(self.take_intervals)
        return self.last_take + intervals[(len(intervals) - 1) // 4]

    def _newest(self, items: list) -> list:
        """Live: `items` and everything else waiting now, the stale frames of each source dropped."""
        if isinstance(items[-1], EndOfStream):
            return items
        while True:
            try:
                items.append(self.in_q.get_nowait())
            except queue.Empty:
                break
            if isinstance(items[-1], EndOfStream):
                break
        if len(items) == 1:
            return items
        kept, dropped = newest_of_each_source(items)
        for item in dropped:
            f = _frame_of(item)
            if f.slot >= 0:
                self.store.release(f)
            self.m.drops += 1  # (its count travels on with the kept frame of its source)
        return kept

    def _took(self, msg, wall: float) -> None:
        """Counts of a message the stage is about to work on, and how long it waited for it."""
        f = _frame_of(msg)
        if self.live and f is not None and not isinstance(msg, CONTROL):
            dropped_since(f, self.positions)
        if not isinstance(msg, SourceEnd):
            self.m.items_in += 1
            self._count_source(msg)
        if self.measure is not None:
            self.m.persons += self.measure(msg)
        if f is not None and not isinstance(msg, CONTROL):
            sent = handed_over(f)
            if sent is not None:
                self.waits.append(max(0.0, wall - sent))
                if len(self.waits) > LATENCY_SAMPLES:
                    del self.waits[: LATENCY_SAMPLES // 2]
            f.times[f"{self.stage.name}:in"] = wall


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
