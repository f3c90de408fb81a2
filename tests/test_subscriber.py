"""The Python subscriber against a raw socket: garbage, oversized messages, sequence gaps, streams."""
from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
import zmq

from pipeline import wire
from pipeline.messages import EndOfStream
from pipeline.subscriber import FrameData, Subscriber, Topology

FACES = np.arange(30, dtype=np.int64).reshape(10, 3)


@pytest.fixture
def raw_pub():
    """A bare XPUB socket on a free port, so a test can send anything at all."""
    sock = zmq.Context.instance().socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # report every subscription, so connect() can wait for each
    sock.bind("tcp://127.0.0.1:*")
    yield sock
    sock.close(0)


def connect(raw_pub, **kw) -> Subscriber:
    sub = Subscriber(raw_pub.getsockopt_string(zmq.LAST_ENDPOINT), **kw)
    while True:  # skip the unsubscription of a subscriber closed before (it may arrive late)
        assert raw_pub.poll(5000, zmq.POLLIN), "subscription never arrived"
        if raw_pub.recv()[:1] == b"\x01":
            return sub


def send(sock, stream: str, kind: str, payload: bytes) -> None:
    sock.send_multipart([wire.topic(stream, kind), payload])


def topology(stream="s", seq=0) -> bytes:
    return wire.encode_topology(stream, seq, FACES, ["j"] * 14, ["h"] * 17)


def frame(seq: int, stream="s", persons=1) -> bytes:
    return wire.encode_frame(wire.synthetic_mesh_frame(persons, index=seq), stream, seq)


def drain(sub: Subscriber) -> list:
    out = []
    while (msg := sub.recv(timeout_s=0.5)) is not None:
        out.append(msg)
    return out


def test_garbage_is_counted_and_skipped(raw_pub):
    sub = connect(raw_pub, max_message_bytes=400_000)
    good = frame(0)
    bad_shape = msgpack.unpackb(frame(1), raw=False)
    bad_shape["persons"][0]["vertices"]["shape"] = [10, 3]
    garbage = [
        [b"s/frame"],  # one part only
        [b"s/frame", good, b"extra"],  # three parts
        [b"s/frame", b"\xc1\xc1 not msgpack"],
        [b"s/frame", b"\xdd\xff\xff\xff\xff"],  # claims a 4-billion-element array
        [b"s/frame", msgpack.packb(bad_shape, use_bin_type=True)],
        [b"s/frame", msgpack.packb({"v": 99, "kind": "frame"})],
        [b"s/frame", good[: len(good) // 2]],  # truncated
        [b"s/topology", good],  # topic does not match the payload
        [b"s/frame", b"\x00" * 500_000],  # over max_message_bytes
    ]
    send(raw_pub, "s", "topology", topology())
    for parts in garbage:
        raw_pub.send_multipart(parts)
    send(raw_pub, "s", "frame", good)
    msgs = drain(sub)
    assert [m.kind for m in msgs] == ["topology", "frame"]
    assert msgs[1].persons[0].vertices.shape == (6890, 3)
    assert sub.stats["malformed"] == len(garbage) - 1 and sub.stats["oversized"] == 1
    assert sub.last_error  # says what was wrong with the last bad message
    sub.close()


def test_sequence_gaps_are_reported(raw_pub):
    sub = connect(raw_pub)
    send(raw_pub, "s", "topology", topology())
    for seq in (0, 1, 4, 5, 9):
        send(raw_pub, "s", "frame", frame(seq))
    send(raw_pub, "s", "end", wire.encode_end(EndOfStream("s", 12), "s", 12))
    msgs = drain(sub)
    assert [m.seq for m in msgs if m.kind == "frame"] == [0, 1, 4, 5, 9]
    # 2-3 and 6-8 missing between frames, 10-11 missing before the end message
    assert sub.stats["gaps"] == 3 and sub.stats["missed"] == 2 + 3 + 2
    sub.close()


def test_frames_wait_for_topology_unless_told_otherwise(raw_pub):
    sub = connect(raw_pub)
    send(raw_pub, "s", "frame", frame(0))
    send(raw_pub, "s", "topology", topology(seq=1))
    send(raw_pub, "s", "frame", frame(1))
    msgs = drain(sub)
    assert [m.kind for m in msgs] == ["topology", "frame"]
    assert isinstance(msgs[1], FrameData) and msgs[1].topology is msgs[0]
    np.testing.assert_array_equal(msgs[0].faces, FACES)
    assert sub.stats["before_topology"] == 1
    sub.close()

    eager = connect(raw_pub, require_topology=False)
    send(raw_pub, "s", "frame", frame(0))
    (m,) = drain(eager)
    assert m.kind == "frame" and m.topology is None
    eager.close()


def test_stream_filter_and_per_stream_topology(raw_pub):
    sub = connect(raw_pub, stream="a")
    for stream in ("b", "a"):
        send(raw_pub, stream, "topology", topology(stream))
        send(raw_pub, stream, "frame", frame(0, stream))
    msgs = drain(sub)
    assert [(m.kind, m.stream) for m in msgs] == [("topology", "a"), ("frame", "a")]
    sub.close()


def test_iteration_stops_at_end_message(raw_pub):
    sub = connect(raw_pub)
    send(raw_pub, "s", "topology", topology())
    for seq in range(3):
        send(raw_pub, "s", "frame", frame(seq, persons=2))
    send(raw_pub, "s", "end", wire.encode_end(EndOfStream("s", 3), "s", 3))
    send(raw_pub, "s", "frame", frame(3))  # after the end: not part of this iteration
    frames = list(sub)
    assert [f.seq for f in frames] == [0, 1, 2] and all(len(f.persons) == 2 for f in frames)
    assert sub.stats["ends"] == 1 and sub.stats["gaps"] == 0
    sub.close()


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        Subscriber("tcp://127.0.0.1:1", mode="fast")
    with pytest.raises(FileNotFoundError, match="server_key"):
        Subscriber("tcp://127.0.0.1:1", server_key=tmp_path / "missing.key")


def test_topology_type(raw_pub):
    sub = connect(raw_pub)
    send(raw_pub, "s", "topology", topology())
    (t,) = drain(sub)
    assert isinstance(t, Topology) and t.num_vertices == 30 and t.coordinates["y"] == "down"
    sub.close()


def test_one_subscriber_merges_the_streams_of_two_publishers_by_stream_id():
    """Two publishers (as two runs, two cameras) into one Subscriber: every frame of each, told apart by
    stream id, and the iteration ends once both streams have ended, not at the first end."""
    from pipeline.publisher import Publisher, PublisherSettings

    pubs = [Publisher(PublisherSettings(endpoint="tcp://127.0.0.1:*", hwm=100)) for _ in range(2)]
    for p in pubs:
        p.open()
    sub = Subscriber([p.endpoint for p in pubs])
    try:
        deadline = time.monotonic() + 10
        waiting = set(range(2))
        while waiting and time.monotonic() < deadline:  # each publisher sees the subscription
            waiting = {i for i in waiting if not pubs[i].wait_subscriber(0.1)}
        assert not waiting, "a publisher never saw the subscriber"
        for name, pub, n in (("cam0", pubs[0], 3), ("cam1", pubs[1], 5)):
            pub.send(wire.topic(name, "topology"), topology(name))
            for seq in range(n):
                pub.send(wire.topic(name, "frame"), frame(seq, stream=name))
        pubs[0].send(wire.topic("cam0", "end"), wire.encode_end(EndOfStream("cam0", 3), "cam0", 3))
        frames = []
        it = sub.frames(idle_timeout_s=10)
        for f in it:
            frames.append(f)
            if len(frames) == 8:
                break
        pubs[1].send(wire.topic("cam1", "end"), wire.encode_end(EndOfStream("cam1", 5), "cam1", 5))
        frames += list(it)  # nothing more: it stops at cam1's end, the last live stream
        by_stream = {s: [f.seq for f in frames if f.stream == s] for s in ("cam0", "cam1")}
        assert by_stream == {"cam0": [0, 1, 2], "cam1": [0, 1, 2, 3, 4]}
        assert sub.stats["ends"] == 2 and sub.stats["gaps"] == 0 and set(sub.topology) == {"cam0", "cam1"}
    finally:
        sub.close()
        for p in pubs:
            p.close()
