"""Replaying a recording, lossless and as fast as possible, many times in a row: every run delivers every
record and the end, and exits 0 (`scripts/replay_loop.py` runs the long form, 50 replays)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import REPO, child_env, free_port
from pipeline import wire
from pipeline.messages import EndOfStream
from pipeline.subscriber import Subscriber
from stages.publish import PublishConfig, PublishStage

N = 40


@pytest.fixture(scope="module")
def recording(tmp_path_factory, assets_dir):
    path = tmp_path_factory.mktemp("rec") / "run.msgpack"
    stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*", record=path, linger_ms=0))
    stage.setup()
    for i in range(N):
        stage.process(wire.synthetic_mesh_frame(2, index=i))
    stage.process(EndOfStream("default", N))
    stage.close()
    return path


def replay_once(path, mode: str = "lossless", sleep_s: float = 0.002):
    """One `replay --fast` run with a consumer connected from the start: (exit code, seqs, end, stderr)."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    seqs, end = [], None
    with Subscriber(endpoint, mode=mode, rcvhwm=1) as sub:
        cmd = [sys.executable, "-m", "tools.stream", "replay", str(path), "--fast", "--mode", mode,
               "--endpoint", endpoint]
        if mode == "latest":
            cmd += ["--wait", "10"]
        proc = subprocess.Popen(cmd, env=child_env(), cwd=str(REPO), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = sub.recv(timeout_s=0.5)
            if msg is None:
                if proc.poll() is not None:
                    break
                continue
            if msg.kind == "frame":
                seqs.append(msg.seq)
                time.sleep(sleep_s)
            elif msg.kind == "end":
                end = msg
                break
        _, err = proc.communicate(timeout=60)
    return proc.returncode, seqs, end, err


@pytest.mark.slow
def test_lossless_replays_in_a_row_all_complete(recording):
    for i in range(8):
        code, seqs, end, err = replay_once(recording)
        assert code == 0, f"replay {i}: exit {code}: {err[-1500:]}"
        assert seqs == list(range(N)), f"replay {i}: got {len(seqs)} of {N} frames"
        assert end is not None and end.seq == N, f"replay {i}: no end message"


def test_latest_replay_delivers_the_end(recording):
    for i in range(3):
        code, seqs, end, err = replay_once(recording, mode="latest", sleep_s=0.01)
        assert code == 0, err[-1500:]
        assert end is not None and end.seq == N, f"replay {i}: no end message ({len(seqs)} frames)"
