"""One Ctrl-C keeps what was decoded on a slow machine: the stop timeout runs from the last item a stage
took, so a drain that takes longer than it in all, but moves, finishes (exit 0, every decoded frame at the
end of the chain); a stage stuck on one item is still stopped after the timeout."""
from __future__ import annotations

import signal
import threading
import time

from pipeline.supervisor import Supervisor
from stage_helpers import CountingSource, Forward, Sink, read_sink, runtime_config


def _ctrl_c_after(sup, seconds):
    def go():
        time.sleep(seconds)
        sup._on_signal(signal.SIGINT, None)
    threading.Thread(target=go, daemon=True).start()


def test_a_drain_longer_than_the_stop_timeout_keeps_every_decoded_frame(tmp_path):
    out = tmp_path / "sink.jsonl"
    # 0.4 s per frame in the slow stage, queues of 4 and a ring of 8: ~3 s in flight, stop timeout 1.5 s
    sup = Supervisor(runtime_config(ring_slots=8, queue_size=4, stop_timeout_s=1.5),
                     [CountingSource(None), Forward("slow", delay_s=0.4), Sink(str(out))])
    _ctrl_c_after(sup, 4.0)
    summary = sup.run()
    frames, ends = read_sink(out)
    decoded = summary.stages[0].items_in
    assert summary.exit_code == 0 and summary.reason == "stopped", summary.reason
    assert len(frames) == decoded and [f[0] for f in frames] == list(range(decoded))
    assert ends and ends[0][2] == "stopped"


def test_a_stuck_drain_is_still_stopped(tmp_path):
    out = tmp_path / "sink.jsonl"
    sup = Supervisor(runtime_config(stop_timeout_s=1.0), [CountingSource(None), Forward("stuck", delay_s=30),
                                                          Sink(str(out))])
    _ctrl_c_after(sup, 3.0)
    t0 = time.monotonic()
    summary = sup.run()
    assert summary.exit_code == 130 and summary.reason == "stop timeout"
    assert time.monotonic() - t0 < 20
