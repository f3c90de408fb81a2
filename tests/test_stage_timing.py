"""The figures a run reports per stage: service time (decode's decoding without its pacing sleep, infer's
forward pass per batch and per crop), busy time, queue waits, and the live hand-over that keeps only the
newest frame of each source in front of a stage."""
from __future__ import annotations

from pipeline.messages import EndOfStream, Frame, SourceEnd
from pipeline.stage_process import newest_of_each_source
from pipeline.supervisor import RunSettings, Supervisor
from stage_helpers import CountingSource, Sink, read_sink, runtime_config
from timing_stages import PersonSource, PixelForward, SleepyDecode, SleepyInfer


def frame(source: str, index: int, dropped: int = 0) -> Frame:
    return Frame(source, index, None, -1, 16, 16, {}, dropped)


def test_the_newest_frame_of_each_source_is_kept_and_the_others_reported_by_it():
    items = [frame("a", 0), frame("b", 0, dropped=2), frame("a", 1, dropped=1), frame("b", 1), frame("a", 2),
             SourceEnd("b", 2, "end of stream"), frame("b", 2)]
    kept, dropped = newest_of_each_source(items)
    assert [(f.source, f.index) for f in dropped] == [("a", 0), ("b", 0), ("a", 1)]
    assert [(getattr(f, "index", "end"), f.source) for f in kept] == [(1, "b"), (2, "a"), ("end", "b"), (2, "b")]
    # a's two dropped frames (one of which had reported one drop of its own), b's one (which had two)
    assert {(f.source, f.index): f.dropped for f in kept if isinstance(f, Frame)} == {
        ("b", 1): 3, ("a", 2): 3, ("b", 2): 0}
    # a frame before its source's end is never dropped for one after it; the run's end keeps everything
    kept, dropped = newest_of_each_source([frame("a", 0), EndOfStream("a", 1, "end of stream")])
    assert not dropped and len(kept) == 2


def test_a_drop_behind_a_queued_frame_of_its_source_is_reported_by_a_later_frame():
    # a live queue of 2 holds a0, a1; b0 pushes a0 out, but a1 is already queued: a1 gets through without
    # a0's count, and the frame that carried it (a2) is pushed out after it. The taker counts from the
    # source's positions, so a1 reports a0.
    import multiprocessing
    import os
    import threading

    from pipeline.stage_process import _Child
    from stage_helpers import Forward

    q = multiprocessing.get_context("spawn").Queue(2)

    def child(in_q, out_q):
        return _Child(Forward("x"), None, in_q, out_q, None, threading.Event(), threading.Event(),
                      threading.Event(), os.getppid(), live=True)

    sender, taker = child(None, q), child(q, None)
    pos = {"a": 0, "b": 0}

    def send(source):
        f = Frame(source, pos[source], None, -1, 16, 16, {}, 0, position=pos[source])
        pos[source] += 1
        sender.send([f])

    def take():
        f = q.get(timeout=5)
        taker._took(f, 0.0)
        return f

    send("a"), send("a"), send("b")  # a0 pushed out
    got = [take()]  # a1
    send("a"), send("b"), send("b")  # b0 pushed out by b1, a2 (carrying a0) by b2
    got += [take(), take()]
    a = [f for f in got if f.source == "a"]
    assert [f.index for f in a] == [1] and sum(f.dropped for f in a) + len(a) == a[-1].index + 1
    assert [(f.source, f.index, f.dropped) for f in got] == [("a", 1, 1), ("b", 1, 1), ("b", 2, 0)]
    assert sender.m.drops == 3
    q.close()


def test_decode_service_time_is_its_decoding_not_its_pacing_sleep(tmp_path):
    # 12 pictures paced at 10 per second, each taking 20 ms to "decode": the stage waits 80 ms of every 100
    sup = Supervisor(runtime_config(), [SleepyDecode(12, 0.02), Sink(str(tmp_path / "sink.jsonl"))])
    summary = sup.run()
    assert summary.exit_code == 0
    decode = summary.stages[0]
    assert 20.0 <= decode.service_ms["p50"] < 70.0, decode.service_ms
    assert decode.latency_ms["p50"] >= 90.0, decode.latency_ms  # the time per frame, pacing included
    assert decode.busy_s >= 12 * 0.02 and decode.busy < 0.7
    assert all(m.ready_s is not None and m.ready_s > 0 for m in summary.stages)  # start-up, per process
    assert summary.stages[-1].first_done is not None


def test_infer_service_time_is_its_forward_pass_per_batch_and_per_crop(tmp_path):
    # offline: frames of 2 persons collected into batches of max_batch 4 crops, each forward 100 ms;
    # every other process() call only collects a frame, which is not work
    settings = RunSettings(mode="offline", ring_slots=8, queue_size=2, max_pixels=16 * 16, max_persons=2)
    sup = Supervisor(settings, [PersonSource(8, persons=2), SleepyInfer(0.1, "offline", max_batch=4),
                                Sink(str(tmp_path / "sink.jsonl"))])
    summary = sup.run()
    assert summary.exit_code == 0
    infer = summary.stages[1]
    assert infer.counters["forwards"] == 4 and infer.counters["crops"] == 16
    assert 100.0 <= infer.service_ms["p50"] < 180.0, infer.service_ms
    assert 25.0 <= infer.timings_ms["forward per crop"]["p50"] < 45.0, infer.timings_ms
    assert 0.4 <= infer.busy_s < 0.7
    assert infer.wait_ms.keys() == {"p50", "p95", "p99"}

    # the summary shows them: the service and busy columns, the per-crop forward time below the table
    from rich.console import Console

    from fastmetro_stream.api import summary_notes, summary_table

    summary.startup_s = 3.25
    console = Console(record=True, width=80)  # the table fits a terminal of 80 columns
    console.print(summary_table(summary))
    assert "…" not in console.export_text(clear=False)
    for line in summary_notes(summary):
        console.print(line, soft_wrap=True)
    text = console.export_text()
    header = [line.split() for line in text.splitlines() if "service" in line or "p50 ms" in line]
    assert header[0][-2:] == ["service", "service"] and header[1][-3:] == ["p95", "ms", "busy"], header
    row = next(line for line in text.splitlines() if line.strip(" │|").startswith("infer"))
    svc = infer.service_ms["p50"]
    assert (f"{svc:.1f}" if svc < 100 else f"{svc:.0f}") in row.split() and f"{infer.busy:.0%}" in row
    assert "infer forward per crop: p50" in text and "start-up: first frame published 3.2 s" in text


def test_live_a_slow_stage_takes_the_newest_frame_and_every_drop_is_reported(tmp_path):
    out = tmp_path / "sink.jsonl"
    n = 200
    summary = Supervisor(runtime_config(mode="live", queue_size=4, ring_slots=8), [
        CountingSource(n, live=True, delay_s=0.002), PixelForward("slow", delay_s=0.03), Sink(str(out))]).run()
    frames, ends = read_sink(out)
    assert summary.exit_code == 0 and ends
    idx = [f[0] for f in frames]
    assert idx == sorted(set(idx))
    assert sum(d for _, d in frames) + len(idx) == n  # delivered + reported dropped: every frame
    slow = summary.stages[1]
    assert slow.drops > 0  # stale frames dropped in front of it
    # it took the newest frame each time: one that had waited about a source interval (2 ms), not the
    # queue of older frames (each a 30 ms service) it would otherwise have worked through first
    assert slow.wait_ms["p50"] < slow.service_ms["p50"] / 2, (slow.wait_ms, slow.service_ms)


def test_listen_reads_each_stage_s_service_wait_and_busy_from_the_frames_times():
    from tools.stream import stage_figures

    # two frames, 1 s apart: decode works 10 ms, detect waits 5 ms and works 100 ms, infer waits 20 ms and
    # works 300 ms (busy 0.3 s of the second), publish waits 1 ms
    def times(t0, detect_busy, infer_busy):
        return {"decode:in": t0, "decode": t0 + 0.01, "detect:in": t0 + 0.015, "detect": t0 + 0.115,
                "detect:busy": detect_busy, "infer:in": t0 + 0.135, "infer": t0 + 0.435, "infer:busy": infer_busy,
                "publish:in": t0 + 0.436}

    figures = {name: rest for name, *rest in stage_figures([times(100.0, 1.0, 2.0), times(101.0, 1.1, 2.3)])}
    assert list(figures) == ["decode", "detect", "infer", "publish"]
    assert abs(figures["detect"][0] - 100) < 1e-3 and abs(figures["detect"][1] - 5) < 1e-3
    assert abs(figures["infer"][0] - 300) < 1e-3 and abs(figures["infer"][1] - 20) < 1e-3
    assert abs(figures["infer"][2] - 0.3) < 1e-6 and abs(figures["detect"][2] - 0.1) < 1e-6
    assert figures["publish"][0] is None and abs(figures["publish"][1] - 1) < 1e-3
    assert stage_figures([{"decode": 1.0, "infer": 2.0}]) == []  # a publisher without the stamps


def test_live_a_stage_works_no_further_ahead_of_a_slower_next_stage_than_it_can_use(tmp_path):
    # a 10 ms stage before a 60 ms one: without pacing it would work on ~6 frames per frame the slow
    # stage takes (and all but one dropped in front of it); paced, on about as many as it passes on
    out = tmp_path / "sink.jsonl"
    summary = Supervisor(runtime_config(mode="live", queue_size=4, ring_slots=8), [
        CountingSource(150, live=True, delay_s=0.004), PixelForward("fast", delay_s=0.01),
        PixelForward("slow", delay_s=0.06), Sink(str(out))]).run()
    frames, _ = read_sink(out)
    assert summary.exit_code == 0
    assert sum(d for _, d in frames) + len(frames) == 150  # every frame delivered or reported dropped
    fast, slow = summary.stages[1], summary.stages[2]
    assert fast.items_in <= 2 * slow.items_in, (fast.items_in, slow.items_in)
    assert slow.wait_ms["p50"] < slow.service_ms["p50"], (slow.wait_ms, slow.service_ms)
    assert summary.stages[-1].drops == 0  # what the pixel stages made is not dropped after them
