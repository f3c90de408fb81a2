"""The stream's tail: a consumer connected from the start gets every frame it is owed and the end
message, in both modes, even when the publishing process exits right after sending (as a stage does)."""
from __future__ import annotations

import textwrap
import time

import pytest

from conftest import popen_python
from pipeline.subscriber import Subscriber

N = 60

PUBLISHER = textwrap.dedent("""
    import os
    from pipeline import wire
    from pipeline.messages import EndOfStream
    from stages.publish import PublishConfig, PublishStage
    stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:{port}", mode="{mode}", hwm={hwm}, linger_ms=4000))
    stage.setup()
    {wait}
    for i in range({n}):
        stage.process(wire.synthetic_mesh_frame(1, index=i))
    stage.process(EndOfStream("default", {n}))
    stage.close()
    print("closed", flush=True)
    os._exit(0)  # as a stage process ends (multiprocessing): no interpreter clean-up after close()
""")


def _consume(sub: Subscriber, sleep_s: float, proc=None, timeout_s: float = 60.0):
    """Frame seqs and the end message (None if it never came) as a slow reader sees them."""
    seqs, end = [], None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.recv(timeout_s=1.0)
        if msg is None:
            if proc is not None and proc.poll() is not None:
                break  # the publisher is gone and nothing more came
            continue
        if msg.kind == "frame":
            seqs.append(msg.seq)
            time.sleep(sleep_s)
        elif msg.kind == "end":
            end = msg
            break
    return seqs, end


@pytest.mark.parametrize("sleep_s", [0.0, 0.05])
def test_lossless_slow_consumer_gets_every_frame_and_the_end(port, sleep_s):
    with Subscriber(f"tcp://127.0.0.1:{port}", mode="lossless", rcvhwm=1) as sub:
        proc = popen_python(PUBLISHER.format(port=port, mode="lossless", hwm=1, n=N, wait=""))
        try:
            seqs, end = _consume(sub, sleep_s, proc)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert seqs == list(range(N)) and sub.stats["malformed"] == 0
    assert end is not None and end.seq == N and end.reason == "end of stream"


def test_latest_consumer_connected_from_the_start_gets_the_end(port):
    # latest mode may drop frames for a slow reader, never the end message
    with Subscriber(f"tcp://127.0.0.1:{port}", mode="latest", rcvhwm=4) as sub:
        wait = "stage.publisher.wait_subscriber(10)"
        proc = popen_python(PUBLISHER.format(port=port, mode="latest", hwm=4, n=N, wait=wait))
        try:
            seqs, end = _consume(sub, 0.01, proc)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert end is not None and end.seq == N and sub.stats["malformed"] == 0, (seqs, sub.stats, err[-1500:])
    assert seqs and seqs == sorted(seqs)
