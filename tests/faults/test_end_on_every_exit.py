"""Every way a run stops still ends the stream: a subscriber connected from the start gets the end
message with the documented reason ("end of stream", "stopped", "error: <stage>: ..."), so a consumer
iterating the stream never waits forever."""
from __future__ import annotations

import os
import signal
import textwrap
import threading
import time

import pytest

from conftest import free_port, popen_python
from fault_stages import ToMesh
from pipeline.subscriber import Subscriber
from pipeline.supervisor import Supervisor
from stage_helpers import CountingSource, Forward, runtime_config
from stages.publish import PublishConfig, PublishStage


def _collect(sub: Subscriber, out: dict, timeout_s: float = 90.0) -> None:
    out["frames"], out["end"] = [], None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.recv(timeout_s=0.5)
        if msg is None:
            continue
        if msg.kind == "topology":
            out["topology"] = True
        elif msg.kind == "frame":
            out["frames"].append(msg.seq)
        elif msg.kind == "end":
            out["end"] = msg
            return


def run_with_subscriber(stages, mode: str, port: int, during=None, **cfg):
    got: dict = {}
    with Subscriber(f"tcp://127.0.0.1:{port}", mode=mode) as sub:
        reader = threading.Thread(target=_collect, args=(sub, got), daemon=True)
        reader.start()
        sup = Supervisor(runtime_config(**cfg), stages)
        if during is not None:
            threading.Thread(target=during, args=(sup, got), daemon=True).start()
        summary = sup.run()
        reader.join(30)
        assert not reader.is_alive(), "no end message within 30 s of the run's end"
    return summary, got


@pytest.mark.parametrize("mode", ["latest", "lossless"])
def test_an_exception_in_a_stage_ends_the_stream_with_the_error(assets_dir, port, mode):
    pub = PublishStage(PublishConfig(endpoint=f"tcp://127.0.0.1:{port}", mode=mode))
    summary, got = run_with_subscriber([CountingSource(None, delay_s=0.02), Forward("a", fail_at=15), ToMesh(), pub],
                                       mode, port)
    assert summary.exit_code == 1
    end = got["end"]
    assert end is not None, "no end message after a stage error"
    assert end.reason.startswith("error: a: ") and "boom at 15" in end.reason, end.reason
    assert end.seq == len(got["frames"]) or mode == "latest"


def test_a_killed_stage_ends_the_stream_naming_it(assets_dir, port, tmp_path):
    pub = PublishStage(PublishConfig(endpoint=f"tcp://127.0.0.1:{port}", mode="lossless"))
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()

    def kill_forward(sup, got):
        deadline = time.monotonic() + 60
        while not got.get("frames") and time.monotonic() < deadline:  # publishing has started
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(int((pid_dir / "a.pid").read_text()), signal.SIGKILL)

    summary, got = run_with_subscriber(
        [CountingSource(None, delay_s=0.02), Forward("a", pid_dir=str(pid_dir)), ToMesh(), pub],
        "lossless", port, during=kill_forward)
    assert summary.exit_code == 1
    assert got["end"] is not None and got["end"].reason == "error: stage a killed by SIGKILL", got["end"]
    assert got["frames"] == list(range(len(got["frames"])))


def test_a_second_ctrl_c_ends_the_stream_as_stopped(assets_dir, port):
    pub = PublishStage(PublishConfig(endpoint=f"tcp://127.0.0.1:{port}", mode="latest"))

    def two_signals(sup, got):
        deadline = time.monotonic() + 60
        while not got.get("topology") and time.monotonic() < deadline:  # the subscriber is connected
            time.sleep(0.05)
        sup._on_signal(signal.SIGINT, None)
        sup._on_signal(signal.SIGINT, None)

    # a stage that takes 30 s per frame cannot drain: the second Ctrl-C stops every stage at once
    summary, got = run_with_subscriber([CountingSource(None, delay_s=0.01), Forward("a", delay_s=30), ToMesh(), pub],
                                       "latest", port, during=two_signals)
    assert summary.exit_code == 130
    assert got["end"] is not None and got["end"].reason == "stopped"


SUPERVISED = textwrap.dedent("""
    import sys
    from pipeline.supervisor import Supervisor
    from stage_helpers import CountingSource, runtime_config
    from fault_stages import ToMesh
    from stages.publish import PublishConfig, PublishStage
    pub = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:{port}", mode="{mode}"))
    summary = Supervisor(runtime_config(stop_timeout_s=20), [CountingSource(None, delay_s=0.02), ToMesh(), pub]).run()
    print("EXIT", summary.exit_code, summary.reason, flush=True)
    sys.exit(summary.exit_code)
""")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["latest", "lossless"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_drains_and_the_consumer_gets_every_frame_and_the_end(assets_dir, port, mode, sig):
    got: dict = {}
    with Subscriber(f"tcp://127.0.0.1:{port}", mode=mode) as sub:
        proc = popen_python(SUPERVISED.format(port=port, mode=mode))
        try:
            first = sub.recv(timeout_s=60)
            while first is not None and first.kind != "frame":
                first = sub.recv(timeout_s=60)
            assert first is not None, "no frame came"
            time.sleep(0.5)
            proc.send_signal(sig)
            _collect(sub, got, timeout_s=60)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert got["end"] is not None and got["end"].reason == "stopped"
    if mode == "lossless":
        assert [first.seq] + got["frames"] == list(range(got["end"].seq))
