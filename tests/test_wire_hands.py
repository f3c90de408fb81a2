"""Hands on the wire (schema v1, optional per-person fields): round trips, old payloads, off-schema hands."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from pipeline import wire
from pipeline.messages import HandMesh
from pipeline.subscriber import HandData, HandTopology, to_message

HAND_JOINTS = [f"J{i}" for i in range(21)]


def _hand(side: str, rng) -> HandMesh:
    f32 = np.float32
    return HandMesh(side=side, cam=np.array([5.1, 0.02, -0.01], f32),
                    cam_t=np.array([rng.uniform(-1, 1), rng.uniform(-0.5, 0.5), rng.uniform(2, 4)], f32),
                    joints3d=rng.uniform(-0.1, 0.1, (21, 3)).astype(f32),
                    vertices=rng.uniform(-0.1, 0.1, (778, 3)).astype(f32),
                    center=(float(rng.uniform(0, 1280)), float(rng.uniform(0, 720))), size=float(rng.uniform(40, 120)))


def _frame_with_hands(seed=0):
    rng = np.random.default_rng(seed)
    mf = wire.synthetic_mesh_frame(2, index=3, rng=rng)
    mf.persons[0].hands = {"left": _hand("left", rng), "right": _hand("right", rng)}
    mf.persons[1].hands = {"right": _hand("right", rng)}
    mf.persons[1].hand_skips = {"left": "out_of_frame"}
    return mf


def test_hands_round_trip_with_every_field():
    mf = _frame_with_hands()
    m = wire.decode(wire.encode_frame(mf, "cam0", 5))
    p0, p1 = m["persons"]
    assert set(p0["hands"]) == {"left", "right"} and p0["hand_skips"] == {}
    assert set(p1["hands"]) == {"right"} and p1["hand_skips"] == {"left": "out_of_frame"}
    for got, pm in ((p0, mf.persons[0]), (p1, mf.persons[1])):
        for side, h in pm.hands.items():
            g = got["hands"][side]
            assert g["side"] == side and g["size"] == pytest.approx(h.size)
            np.testing.assert_allclose(g["center"], h.center, rtol=1e-6)
            for key in ("cam", "cam_t", "joints3d", "vertices"):
                np.testing.assert_array_equal(g[key], getattr(h, key))
                assert g[key].dtype == np.float32
    assert p0["hands"]["left"]["vertices"].shape == (778, 3) and p0["hands"]["left"]["joints3d"].shape == (21, 3)


@pytest.mark.parametrize("dtype, wire_dtype, tol", [("float16", "<f2", 1e-4), ("int16", "<i2", 1e-5)])
def test_hand_vertices_follow_the_body_vertex_options(dtype, wire_dtype, tol):
    mf = _frame_with_hands(1)
    payload = wire.encode_frame(mf, "s", 0, vertices_dtype=dtype)
    raw = msgpack.unpackb(payload, raw=False)
    assert raw["persons"][0]["hands"]["left"]["vertices"]["dtype"] == wire_dtype
    got = wire.decode(payload)["persons"][0]["hands"]["left"]["vertices"]
    assert np.abs(got - mf.persons[0].hands["left"].vertices).max() < tol
    no_vertices = wire.decode(wire.encode_frame(mf, "s", 1, with_vertices=False))
    hand = no_vertices["persons"][0]["hands"]["left"]
    assert hand["vertices"] is None and hand["joints3d"].shape == (21, 3)


def test_payloads_without_hands_are_unchanged_and_still_decode():
    mf = wire.synthetic_mesh_frame(2, index=1)
    raw = msgpack.unpackb(wire.encode_frame(mf, "s", 0), raw=False)
    assert "hands" not in raw["persons"][0] and "hand_skips" not in raw["persons"][0]  # nothing added
    m = wire.decode(wire.encode_frame(mf, "s", 0))
    assert m["persons"][0]["hands"] == {} and m["persons"][0]["hand_skips"] == {}
    topo = wire.decode(wire.encode_topology("s", 0, np.zeros((4, 3), np.int32), ["a"], ["b"]))
    assert "hand" not in topo
    assert to_message(topo, None).hand is None
    frame = to_message(m, None)
    assert frame.persons[0].hands == {} and frame.persons[0].hand_skips == {}


def test_topology_carries_both_hands_faces():
    faces = np.random.default_rng(2).integers(0, 778, (1538, 3))
    faces[0] = (0, 1, 777)
    m = wire.decode(wire.encode_topology("s", 0, np.zeros((4, 3), np.int32), ["a"], ["b"],
                                         hand_faces=faces, hand_joint_names=HAND_JOINTS))
    hand = m["hand"]
    assert hand["num_vertices"] == 778 and hand["joint_names"] == HAND_JOINTS
    np.testing.assert_array_equal(hand["faces_right"], faces)
    np.testing.assert_array_equal(hand["faces_left"], faces[:, ::-1])  # a mirror image: winding reversed
    t = to_message(m, None).hand
    assert isinstance(t, HandTopology) and t.faces_left.shape == (1538, 3)


def test_the_subscriber_gives_typed_hands():
    m = wire.decode(wire.encode_frame(_frame_with_hands(3), "s", 0))
    frame = to_message(m, None)
    left = frame.persons[0].hands["left"]
    assert isinstance(left, HandData) and left.side == "left" and left.vertices.shape == (778, 3)
    assert frame.persons[1].hand_skips == {"left": "out_of_frame"}


def _break(path, value):
    def edit(raw):
        node = raw
        for key in path[:-1]:
            node = node[key]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return edit


@pytest.mark.parametrize("breakage", [
    _break(["persons", 0, "hands", "left", "cam_t"], KeyError),          # a required field missing
    _break(["persons", 0, "hands", "left", "cam", "shape"], [4]),        # shape does not hold the data
    _break(["persons", 0, "hands", "left", "center"], [1.0]),            # 2 numbers expected
    _break(["persons", 0, "hands"], [1, 2]),                             # not a map
    _break(["persons", 1, "hand_skips", "left"], 3),                     # reason not a string
])
def test_off_schema_hands_raise_wire_error(breakage):
    raw = msgpack.unpackb(wire.encode_frame(_frame_with_hands(4), "s", 0), raw=False)
    breakage(raw)
    with pytest.raises(wire.WireError):
        wire.decode(msgpack.packb(raw, use_bin_type=True))


def test_hands_read_with_the_schema_doc_alone():
    # what docs/schema.md tells a reader in another language: msgpack maps, arrays as
    # {dtype, shape, data} of little-endian bytes; hands under persons[i].hands.<side>
    mf = _frame_with_hands(5)
    raw = msgpack.unpackb(wire.encode_frame(mf, "s", 0, vertices_dtype="int16"), raw=False)
    hand = raw["persons"][0]["hands"]["right"]

    def array(a):
        x = np.frombuffer(a["data"], dtype=np.dtype(a["dtype"])).reshape(a["shape"])
        return x * a["scale"] if "scale" in a else x

    want = mf.persons[0].hands["right"]
    assert np.abs(array(hand["vertices"]) - want.vertices).max() <= hand["vertices"]["scale"] / 2 + 1e-9
    np.testing.assert_array_equal(array(hand["joints3d"]), want.joints3d)
    np.testing.assert_array_equal(array(hand["cam_t"]), want.cam_t)
    assert hand["center"] == pytest.approx(list(want.center)) and hand["size"] == pytest.approx(want.size)
