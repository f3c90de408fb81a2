"""Lossless mode keeps its tail: a consumer far slower than ZeroMQ's linger still gets every frame and the
end message (the publisher waits as long as it keeps reading), and one that stops reading makes the
publisher say so and fail, never exit 0 as if all went out. The `replay --mode lossless` command too."""
from __future__ import annotations

import sys
import textwrap

import pytest

from conftest import REPO, popen_python
from pipeline.subscriber import Subscriber

sys.path.insert(0, str(REPO / "scripts"))
from replay_loop import make_recording, read_stream, replay_once  # noqa: E402

N = 24  # frames of 6 persons (~0.5 MB): more than the sockets' buffers hold

REPLAY_N = 12

PUBLISHER = textwrap.dedent("""
    import os, sys
    from pipeline import wire
    from pipeline.messages import EndOfStream
    from pipeline.stage import StageError
    from stages.publish import PublishConfig, PublishStage
    stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:{port}", mode="lossless", hwm={hwm}, linger_ms=300))
    stage.setup()
    for i in range({n}):
        stage.process(wire.synthetic_mesh_frame({persons}, index=i))
    stage.process(EndOfStream("default", {n}))
    try:
        stage.close()
    except StageError as e:
        print("error:", e, flush=True)
        os._exit(1)
    print("closed", stage.counters.get("end_sent"), flush=True)
    os._exit(0)  # as a stage process ends
""")


@pytest.mark.slow
def test_a_consumer_slower_than_the_linger_gets_every_frame_and_the_end(port):
    # 0.3 s per frame: the last frames and the end wait in the publisher's queue for seconds
    with Subscriber(f"tcp://127.0.0.1:{port}", mode="lossless", rcvhwm=1) as sub:
        proc = popen_python(PUBLISHER.format(port=port, n=N, hwm=4, persons=6))
        try:
            seqs, end = read_stream(sub, proc, 0.3)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert seqs == list(range(N)), f"{len(seqs)} of {N} frames"
    assert end is not None and end.seq == N and end.reason == "end of stream"
    assert proc.returncode == 0 and "closed 1" in out, err[-2000:]


def test_a_consumer_that_stops_reading_fails_the_publisher_loudly(port):
    with Subscriber(f"tcp://127.0.0.1:{port}", mode="lossless", rcvhwm=1) as sub:
        # a queue that holds it all: the publisher is closing while the consumer stops with most of it unread
        proc = popen_python(PUBLISHER.format(port=port, n=150, hwm=200, persons=1))
        try:
            seqs, end = read_stream(sub, proc, 0.0, stop_after=10)  # then never reads again, still connected
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert end is None
    assert proc.returncode == 1, (out, err[-2000:])
    assert "did not reach it" in out and "end message" in out


@pytest.fixture(scope="module")
def recording(tmp_path_factory, assets_dir):
    path = tmp_path_factory.mktemp("rec") / "run.msgpack"
    make_recording(path, REPLAY_N, persons=30)  # big frames: the sockets' buffers hold few
    return path


@pytest.mark.slow
def test_lossless_replay_into_a_1s_per_frame_consumer_delivers_the_end(recording):
    code, seqs, end, err = replay_once(recording, "lossless", 1.0)  # 1 s per frame: past the 2 s linger
    assert seqs == list(range(REPLAY_N)), f"{len(seqs)} of {REPLAY_N} frames: {err[-1500:]}"
    assert end is not None and end.seq == REPLAY_N, err[-1500:]
    assert code == 0, err[-1500:]
