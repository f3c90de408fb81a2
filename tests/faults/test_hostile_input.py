"""Hostile bytes to the subscribers we ship (the Python Subscriber, which `view` uses, and `listen`):
bounded memory, bounded per-stream state, no absurd counts, nothing raw to the terminal."""
from __future__ import annotations

import argparse
import threading
import time
import tracemalloc

import msgpack
import numpy as np
import pytest
import zmq

from conftest import free_port
from pipeline import wire
from pipeline.messages import EndOfStream
from pipeline.subscriber import Subscriber

UNUSED = "tcp://127.0.0.1:9"  # nothing listens: the subscriber is fed by hand


def _peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
    except wire.WireError:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6


@pytest.mark.parametrize("bomb", [
    msgpack.packb([{}] * 1_000_000),                      # 1 MB -> a million dicts
    msgpack.packb([[]] * 1_000_000),                      # a million lists
    msgpack.packb({"v": 1, "kind": "frame", "x": [None] * 2_000_000}),
])
def test_msgpack_amplification_is_refused_before_building_objects(bomb):
    peak = _peak_mb(lambda: wire.decode(bomb))
    assert peak < 10 * len(bomb) / 1e6 + 5, f"{peak:.0f} MB built from a {len(bomb) / 1e6:.1f} MB message"
    t0 = time.monotonic()
    with pytest.raises(wire.WireError):
        wire.decode(bomb)
    assert time.monotonic() - t0 < 3.0  # refused after at most MAX_OBJECTS headers


def test_deep_nesting_is_a_wire_error():
    deep = b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(wire.WireError):
        wire.decode(deep)


def _topology(stream: str, seq: int = 0) -> list[bytes]:
    faces = np.array([[0, 1, 2]], np.int32)
    return [wire.topic(stream, "topology"), wire.encode_topology(stream, seq, faces, ["a"], ["b"])]


def test_fake_stream_ids_do_not_grow_state_without_bound():
    with Subscriber(UNUSED, max_streams=32) as sub:
        for i in range(3000):
            s = f"fake{i}"
            sub._handle(_topology(s))
            sub._handle([wire.topic(s, "frame"), wire.encode_frame(wire.synthetic_mesh_frame(0, index=i), s, 5)])
        assert len(sub.topology) <= 32 and len(sub._last_seq) <= 32
        assert sub.stats["streams_forgotten"] >= 3000 - 32


def test_an_absurd_seq_is_refused_and_never_counted_as_missed_frames():
    with Subscriber(UNUSED) as sub:
        sub._handle(_topology("default"))
        sub._handle([b"default/frame", wire.encode_frame(wire.synthetic_mesh_frame(0), "default", 0)])
        huge = wire.encode_frame(wire.synthetic_mesh_frame(0), "default", 2**63)
        assert sub._handle([b"default/frame", huge]) is None
        sub._handle([b"default/frame", wire.encode_frame(wire.synthetic_mesh_frame(0), "default", 1)])
        assert sub.stats["missed"] == 0 and sub.stats["malformed"] == 1


def test_the_subscriber_socket_refuses_oversized_frames_before_buffering_them():
    with Subscriber(UNUSED, max_message_bytes=1 << 20) as sub:
        limit = sub.sock.getsockopt(zmq.MAXMSGSIZE)
        assert 0 < limit <= 2 * (1 << 20) + 4096  # buffered at most twice the limit


def test_listen_prints_no_terminal_escape_sequences(capsys):
    from tools.stream import add_commands

    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.bind(endpoint)
    evil_stream = "s\x1b]0;owned\x07\x1b[2J"
    evil_reason = "end\x1b]52;c;ZWNobyBoaQ==\x07\x9b31m\r\nfake line"

    def publish():
        pub.poll(10000)  # the listener subscribed
        pub.recv()
        time.sleep(0.2)
        end = wire.encode_end(EndOfStream(evil_stream, 3, evil_reason), evil_stream, 3)
        pub.send_multipart([wire.topic(evil_stream, "end"), end])

    t = threading.Thread(target=publish)
    t.start()
    p = argparse.ArgumentParser()
    add_commands(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["listen", "--endpoint", endpoint, "--duration", "4", "--interval", "0.5"])
    try:
        assert args.func(args) == 0
    finally:
        t.join(10)
        pub.close(0)
        ctx.term()
    out = capsys.readouterr().out
    assert "end of stream" in out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\rfake" not in out
    assert "fake line" in out.replace("\\r\\n", " ")  # shown, escaped
