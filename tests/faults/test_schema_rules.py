"""The decoding rules docs/schema.md settles, held by our decoder (pipeline/wire.py) and subscriber."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from pipeline import wire
from pipeline.stage import StageError
from pipeline.subscriber import Subscriber
from stages.publish import PublishConfig, PublishStage

FACES = np.array([[0, 1, 2], [2, 3, 0]], np.int32)


def _frame(**person_changes) -> dict:
    m = msgpack.unpackb(wire.encode_frame(wire.synthetic_mesh_frame(1), "s", 0), raw=False)
    m["persons"][0].update(person_changes)
    return m


def _bad(m: dict) -> None:
    with pytest.raises(wire.WireError):
        wire.decode(msgpack.packb(m, use_bin_type=True))


def test_stream_ids_hold_no_slash_and_are_not_empty():
    for stream in ("a/b", "", "x" * 300):
        m = msgpack.unpackb(wire.encode_end(wire.EndOfStream(stream, 1), stream, 1), raw=False)
        _bad(m)
    with pytest.raises(StageError, match="without '/'"):
        PublishStage(PublishConfig(stream="cam/1")).check()


def test_arrays_and_numbers_are_finite_and_counts_in_range():
    nan3 = wire.pack_array(np.array([np.nan, 0, 1], np.float32))
    _bad(_frame(cam_t=nan3))
    _bad(_frame(box=[0.0, 0.0, float("inf"), 1.0]))
    _bad(_frame(track_id=-1))
    m = _frame()
    m["lost"] = [2**60]
    _bad(m)
    m = _frame()
    m["wall"] = float("nan")
    _bad(m)
    # an int where a float goes is a float; a float32 on the wire is read as well as a float64
    m = _frame(score=1)
    assert wire.decode(msgpack.packb(m, use_bin_type=True))["persons"][0]["score"] == 1.0
    packed = msgpack.packb(_frame(), use_bin_type=True, use_single_float=True)
    assert wire.decode(packed)["kind"] == "frame"


def test_faces_index_the_topology_vertices():
    m = msgpack.unpackb(wire.encode_topology("s", 0, FACES, ["j"] * 14, ["h"] * 17), raw=False)
    m["num_vertices"] = 3  # faces use vertex 3
    _bad(m)


def test_int16_vertices_are_data_times_scale_in_float32():
    v = np.random.default_rng(0).uniform(-1, 1, (6890, 3)).astype(np.float32)
    q = wire.pack_quantised(v)
    back = wire.unpack_array(q)
    want = np.frombuffer(q["data"], "<i2").reshape(6890, 3).astype(np.float32) * np.float32(q["scale"])
    assert back.dtype == np.float32 and np.array_equal(back, want)
    assert np.abs(back - v).max() <= q["scale"] / 2 + 1e-7


def test_a_vertex_count_other_than_the_topology_s_is_counted():
    with Subscriber("tcp://127.0.0.1:9") as sub:
        sub._handle([b"s/topology", wire.encode_topology("s", 0, FACES, ["j"] * 14, ["h"] * 17)])
        msg = sub._handle([b"s/frame", wire.encode_frame(wire.synthetic_mesh_frame(1), "s", 0)])
        assert msg is not None and sub.stats["vertex_count_mismatch"] == 1


def test_invalid_utf8_is_malformed():
    payload = wire.encode_end(wire.EndOfStream("s", 1), "s", 1).replace(b"end of stream", b"end \xff\xfe stream")
    with Subscriber("tcp://127.0.0.1:9") as sub:
        assert sub._handle([b"s/end", payload]) is None and sub.stats["malformed"] == 1
