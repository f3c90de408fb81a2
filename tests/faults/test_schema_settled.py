"""The points docs/schema.md settles in its decoding rules 12-17 (types and shapes exact, integers never
floats, every float finite, unknown keys and strings, nesting depth, trailing bytes, hand meshes), held by
our decoder (pipeline/wire_decode.py) and the Python subscriber."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from pipeline import wire
from pipeline.messages import HandMesh
from pipeline.subscriber import Subscriber

FACES = np.array([[0, 1, 2], [2, 3, 0]], np.int32)
HAND_FACES = np.array([[0, 1, 2]], np.int32)


def _with_hands() -> dict:
    mf = wire.synthetic_mesh_frame(1)
    z = np.zeros(3, np.float32)
    mf.persons[0].hands["left"] = HandMesh("left", z + 1, z + 2, np.zeros((21, 3), np.float32),
                                           np.zeros((778, 3), np.float32), (3.0, 4.0), 20.0)
    mf.persons[0].hand_skips["right"] = "too_small"
    return msgpack.unpackb(wire.encode_frame(mf, "s", 0), raw=False)


def _frame() -> dict:
    return msgpack.unpackb(wire.encode_frame(wire.synthetic_mesh_frame(1), "s", 0), raw=False)


def _topology(**hand) -> dict:
    return msgpack.unpackb(wire.encode_topology("s", 0, FACES, ["j"] * 14, ["h"] * 17, hand_faces=HAND_FACES,
                                                hand_joint_names=["w"] * 21), raw=False)


def _packed(m: dict) -> bytes:
    return msgpack.packb(m, use_bin_type=True)


def _refused(m) -> None:
    with pytest.raises(wire.WireError):
        wire.decode(m if isinstance(m, bytes) else _packed(m))


def _array(a, dtype) -> dict:
    return wire.pack_array(np.asarray(a), dtype)


def _person(m: dict, **changes) -> dict:
    m["persons"][0].update(changes)
    return m


def _hand(m: dict, **changes) -> dict:
    m["persons"][0]["hands"]["left"].update(changes)
    return m


# The seven messages the doc's types refuse and our subscriber took.
SEVEN = {
    "predicted as int": lambda: _person(_frame(), predicted=1),
    "<f8 vertices": lambda: _person(_frame(), vertices=_array(np.zeros((6890, 3)), "<f8")),
    "<f2 cam_t": lambda: _person(_frame(), cam_t=_array(np.zeros(3), "<f2")),
    "betas (9,)": lambda: _person(_frame(), betas=_array(np.zeros(9), "<f4")),
    "hand joints3d (20, 3)": lambda: _hand(_with_hands(), joints3d=_array(np.zeros((20, 3)), "<f4")),
    "<i2 faces": lambda: {**_topology(), "faces": _array(FACES, "<i2")},
    "hand face out of range": lambda: _topology_with_hand_faces(np.array([[0, 1, 778]], np.int32)),
}


def _topology_with_hand_faces(faces) -> dict:
    m = _topology()
    m["hand"]["num_vertices"] = 778
    m["hand"]["faces_right"] = _array(faces, "<i4")
    return m


@pytest.mark.parametrize("name", SEVEN)
def test_the_seven_messages_the_doc_refuses_are_malformed_for_our_subscriber(name):
    payload = _packed(SEVEN[name]())
    _refused(payload)
    kind = msgpack.unpackb(payload, raw=False)["kind"]
    with Subscriber("tcp://127.0.0.1:9") as sub:
        assert sub._handle([f"s/{kind}".encode(), payload]) is None and sub.stats["malformed"] == 1


def test_integer_fields_take_integers_and_integral_floats_as_integers():
    for key, value in (("seq", 21.0), ("index", 3.0), ("dropped", 0.0), ("width", 640.0), ("height", 480.0)):
        got = wire.decode(_packed({**_frame(), key: value}))[key]
        assert got == int(value) and type(got) is int
        _refused({**_frame(), key: value + 0.5})
        _refused({**_frame(), key: True})
    assert wire.decode(_packed(_person(_frame(), track_id=7.0)))["persons"][0]["track_id"] == 7
    _refused(_person(_frame(), track_id=1.5))
    assert wire.decode(_packed({**_frame(), "lost": [2.0]}))["lost"] == [2]
    _refused({**_frame(), "lost": [2.5]})
    assert wire.decode(_packed({**_frame(), "v": 1.0}))["v"] == 1.0
    _refused({**_frame(), "v": True})
    _refused({**_topology(), "vertices_every": 1.5})
    m = _frame()
    m["persons"][0]["cam"]["shape"] = [3.0]
    assert wire.decode(_packed(m))["persons"][0]["cam"].shape == (3,)
    m["persons"][0]["cam"]["shape"] = [2.5]
    _refused(m)


def test_map_keys_are_strings_never_proto():
    _refused(_packed({**_frame(), 7: "an integer key"}))
    _refused(_packed({**_frame(), b"bin": "a bin key"}))
    _refused(_packed({**_frame(), "__proto__": {}}))
    assert wire.decode(_packed({**_frame(), "__proto": 1}))["kind"] == "frame"


def test_counts_stop_at_the_largest_integer_a_double_holds_exactly():
    assert wire.decode(_packed({**_frame(), "seq": 2**53 - 1}))["seq"] == 2**53 - 1
    _refused({**_frame(), "seq": 2**53})
    _refused({**_frame(), "seq": 2**53 + 1})


def test_ranges_of_width_height_and_vertices_every():
    _refused({**_frame(), "width": 0})
    _refused({**_frame(), "height": 2**31})
    assert wire.decode(_packed({**_frame(), "width": 2**31 - 1}))["width"] == 2**31 - 1
    _refused({**_topology(), "vertices_every": -1})
    _refused({**_topology(), "vertices_every": 2**31})
    _refused({**_topology(), "vertices_dtype": "float64"})


def test_every_float_is_finite():
    for key in ("pts", "focal", "wall"):
        _refused({**_frame(), key: float("inf")})
    _refused({**_frame(), "times": {"decode": float("nan")}})
    _refused(_person(_frame(), center=[0.0, float("nan")]))
    _refused(_person(_frame(), size=float("inf")))
    _refused(_person(_frame(), box=[0.0, 0.0, 1e39, 1.0]))  # beyond float32: the Python reader holds box as float32
    _refused(_hand(_with_hands(), size=float("nan")))
    _refused(_hand(_with_hands(), center=[float("inf"), 0.0]))
    assert wire.decode(_packed({**_frame(), "pts": None}))["pts"] is None


def test_nil_is_not_absent_for_the_optional_arrays_and_maps():
    for key in ("vertices", "rotmat", "betas", "hands", "hand_skips"):
        _refused(_person(_frame(), **{key: None}))
    _refused({**_frame(), "lost": None})
    _refused(_hand(_with_hands(), vertices=None))
    t = _topology()
    t["hand"]["joint_names"] = None
    _refused(t)


def test_the_hand_fields_a_message_needs():
    for key in ("cam", "cam_t", "joints3d", "center", "size"):
        m = _with_hands()
        del m["persons"][0]["hands"]["left"][key]
        _refused(m)
    m = _with_hands()
    del m["persons"][0]["hands"]["left"]["vertices"]
    assert wire.decode(_packed(m))["persons"][0]["hands"]["left"]["vertices"] is None
    for key in ("num_vertices", "faces_right", "faces_left", "joint_names"):
        t = _topology()
        del t["hand"][key]
        _refused(t)


def test_unknown_keys_are_ignored_inside_hands_and_hand_skips_too():
    m = _with_hands()
    m["persons"][0]["hands"]["middle"] = {"anything": 1}
    m["persons"][0]["hands"]["left"]["extra"] = [1, 2]
    m["persons"][0]["hand_skips"]["tail"] = 7
    person = wire.decode(_packed(m))["persons"][0]
    assert set(person["hands"]) == {"left"} and person["hand_skips"] == {"right": "too_small"}


def test_unknown_kind_and_state_strings_are_refused_unknown_skip_reasons_kept():
    _refused({**_frame(), "kind": "pose"})
    _refused(_person(_frame(), state="sleeping"))
    m = _with_hands()
    m["persons"][0]["hand_skips"]["right"] = "a reason from a later publisher"
    assert wire.decode(_packed(m))["persons"][0]["hand_skips"]["right"] == "a reason from a later publisher"


def test_trailing_bytes_are_refused():
    _refused(_packed(_frame()) + b"\x00")


def test_nesting_depth_counts_every_container_empty_ones_too():
    def nested(depth: int) -> bytes:
        inner: object = {}
        for _ in range(depth - 2):
            inner = [inner]
        return _packed({**_frame(), "extra": inner})  # the message map is depth 1

    assert wire.decode(nested(16))["kind"] == "frame"
    _refused(nested(17))


def test_stream_ids_count_code_points():
    m = msgpack.unpackb(wire.encode_end(wire.EndOfStream("s", 1), "s", 1), raw=False)
    m["stream"] = "\U0001F600" * 256  # 256 code points, 512 UTF-16 units
    assert wire.decode(_packed(m))["stream"] == m["stream"]
    m["stream"] += "x"
    _refused(m)


def test_a_track_id_twice_in_a_frame_is_refused():
    mf = wire.synthetic_mesh_frame(2)
    mf.persons[1].person.track_id = mf.persons[0].person.track_id
    _refused(wire.encode_frame(mf, "s", 0))


def test_scale_goes_with_int16_only():
    m = _frame()
    m["persons"][0]["vertices"]["scale"] = 0.5  # on a <f4 array
    _refused(m)
    m = _frame()
    m["persons"][0]["vertices"] = wire.pack_quantised(np.zeros((6890, 3), np.float32))
    m["persons"][0]["vertices"]["scale"] = True
    _refused(m)


def test_a_hand_vertex_count_other_than_the_topology_s_is_counted():
    with Subscriber("tcp://127.0.0.1:9") as sub:
        hand_faces = np.array([[0, 1, 777]], np.int32)
        sub._handle([b"s/topology", wire.encode_topology("s", 0, np.stack([np.arange(6888), np.arange(6888) + 1,
                                                                           np.arange(6888) + 2], 1),
                                                         ["j"] * 14, ["h"] * 17, hand_faces=hand_faces,
                                                         hand_joint_names=["w"] * 21)])
        ok = _with_hands()
        assert sub._handle([b"s/frame", _packed(ok)]) is not None and sub.stats["vertex_count_mismatch"] == 0
        _hand(ok, vertices=_array(np.zeros((700, 3)), "<f4"))
        assert sub._handle([b"s/frame", _packed(ok)]) is not None and sub.stats["vertex_count_mismatch"] == 1


def test_our_encoder_sends_an_unknown_pts_as_nil_never_nan():
    mf = wire.synthetic_mesh_frame(1)
    mf.frame.pts = float("nan")
    assert wire.decode(wire.encode_frame(mf, "s", 0))["pts"] is None
