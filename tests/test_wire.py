"""Wire schema v1 without sockets: encode/decode of every message kind, payload options, recordings."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from pipeline import wire
from pipeline.messages import EndOfStream


def test_frame_round_trip_keeps_every_field():
    mf = wire.synthetic_mesh_frame(3, index=7, smpl=True)
    mf.frame.dropped = 2
    mf.lost = [9]
    mf.persons[1].predicted = True
    mf.persons[2].person.state = "coasting"
    mf.focal = 1468.6
    m = wire.decode(wire.encode_frame(mf, "cam0", 41, wall=123.5))
    assert m["focal"] == pytest.approx(1468.6)
    assert (m["v"], m["kind"], m["stream"], m["seq"], m["index"]) == (1, "frame", "cam0", 41, 7)
    assert m["pts"] == pytest.approx(mf.frame.pts) and m["wall"] == 123.5
    assert (m["width"], m["height"], m["dropped"], m["lost"]) == (1280, 720, 2, [9])
    assert m["times"] == pytest.approx(mf.frame.times)
    assert len(m["persons"]) == 3
    for got, pm in zip(m["persons"], mf.persons):
        assert got["track_id"] == pm.person.track_id and got["state"] == pm.person.state
        assert got["predicted"] == pm.predicted and got["score"] == pytest.approx(pm.person.score)
        np.testing.assert_allclose(got["box"], pm.person.box, rtol=1e-6)
        for key in ("cam", "cam_t", "joints3d", "joints2d", "joints_h36m", "vertices", "rotmat", "betas"):
            np.testing.assert_array_equal(got[key], getattr(pm, key))
            assert got[key].dtype == np.float32


def test_arrays_are_raw_little_endian_bytes_not_lists():
    mf = wire.synthetic_mesh_frame(1)
    raw = msgpack.unpackb(wire.encode_frame(mf, "s", 0), raw=False)
    v = raw["persons"][0]["vertices"]
    assert v["dtype"] == "<f4" and v["shape"] == [6890, 3]
    assert v["data"] == mf.persons[0].vertices.astype("<f4").tobytes()


def test_no_smpl_fields_without_the_smpl_head():
    m = wire.decode(wire.encode_frame(wire.synthetic_mesh_frame(1, smpl=False), "s", 0))
    assert m["persons"][0]["rotmat"] is None and m["persons"][0]["betas"] is None


@pytest.mark.parametrize("dtype,wire_dtype", [("float32", "<f4"), ("float16", "<f2"), ("int16", "<i2")])
def test_vertex_payload_options(dtype, wire_dtype):
    mf = wire.synthetic_mesh_frame(1)
    verts = mf.persons[0].vertices
    payload = wire.encode_frame(mf, "s", 0, vertices_dtype=dtype)
    raw = msgpack.unpackb(payload, raw=False)["persons"][0]["vertices"]
    assert raw["dtype"] == wire_dtype
    got = wire.decode(payload)["persons"][0]["vertices"]
    assert got.shape == (6890, 3) and got.dtype == np.float32
    if dtype == "float32":
        np.testing.assert_array_equal(got, verts)
    elif dtype == "float16":
        np.testing.assert_allclose(got, verts, atol=1e-3)
    else:
        assert raw["scale"] == pytest.approx(np.abs(verts).max() / 32767)
        assert np.abs(got - verts).max() <= raw["scale"] / 2 + 1e-7
    smaller = wire.encode_frame(mf, "s", 0, with_vertices=False)
    assert "vertices" not in msgpack.unpackb(smaller, raw=False)["persons"][0]
    assert wire.decode(smaller)["persons"][0]["vertices"] is None
    if dtype != "float32":
        assert len(payload) < 0.6 * len(wire.encode_frame(mf, "s", 0))


def test_quantising_nan_is_refused():
    mf = wire.synthetic_mesh_frame(1)
    mf.persons[0].vertices[0, 0] = np.nan
    with pytest.raises(wire.WireError, match="float32"):
        wire.encode_frame(mf, "s", 0, vertices_dtype="int16")


def test_topology_and_end_round_trip():
    faces = np.random.default_rng(0).integers(0, 6890, (13776, 3))
    faces[0, 0] = 6889
    m = wire.decode(wire.encode_topology("s", 5, faces, ["a", "b"], ["c"], "int16", 3))
    assert m["kind"] == "topology" and m["seq"] == 5 and m["num_vertices"] == 6890
    np.testing.assert_array_equal(m["faces"], faces)
    assert m["joint_names"] == ["a", "b"] and m["h36m_joint_names"] == ["c"]
    assert (m["vertices_dtype"], m["vertices_every"]) == ("int16", 3)
    assert m["coordinates"]["handedness"] == "right" and m["coordinates"]["units"] == "metres"
    e = wire.decode(wire.encode_end(EndOfStream("s", 12, "stopped"), "s", 11))
    assert (e["kind"], e["seq"], e["frames"], e["reason"]) == ("end", 11, 12, "stopped")


def _raw_frame() -> dict:
    return msgpack.unpackb(wire.encode_frame(wire.synthetic_mesh_frame(1), "s", 0), raw=False)


@pytest.mark.parametrize("breakage", [
    "version", "kind", "seq_type", "focal", "shape_mismatch", "shape_overflow", "box_text", "bad_dtype", "state", "persons_not_list", "not_a_map",
])
def test_off_schema_payloads_raise_wire_error(breakage):
    m = _raw_frame()
    p = m["persons"][0]
    if breakage == "version":
        m["v"] = 2
    elif breakage == "kind":
        m["kind"] = "video"
    elif breakage == "seq_type":
        m["seq"] = "1"
    elif breakage == "focal":
        m["focal"] = -5.0
    elif breakage == "shape_mismatch":
        p["vertices"]["shape"] = [6891, 3]
    elif breakage == "shape_overflow":
        p["joints3d"]["shape"] = [2**63 + 7, 2, 3]  # beyond int64: must not crash the size check
    elif breakage == "box_text":
        p["box"] = ["a", 1, 2, 3]
    elif breakage == "bad_dtype":
        p["joints3d"]["dtype"] = "|O"
    elif breakage == "state":
        p["state"] = "zombie"
    elif breakage == "persons_not_list":
        m["persons"] = {"a": 1}
    else:
        m = [1, 2, 3]
    with pytest.raises(wire.WireError):
        wire.decode(msgpack.packb(m, use_bin_type=True))


def test_random_and_truncated_bytes_only_raise_wire_error():
    rng = np.random.default_rng(1)
    good = wire.encode_frame(wire.synthetic_mesh_frame(1), "s", 0)
    samples = [rng.bytes(n) for n in (0, 1, 7, 100, 5000)]
    samples += [good[:n] for n in (1, 10, 100, 1000, len(good) - 1)]
    # a header that claims a 4-billion-element array in 5 bytes: limits must refuse it
    samples.append(b"\xdd\xff\xff\xff\xff")
    for s in samples:
        with pytest.raises(wire.WireError):
            wire.decode(s)


def test_size_limit():
    good = wire.encode_frame(wire.synthetic_mesh_frame(1), "s", 0)
    with pytest.raises(wire.WireError, match="over the limit"):
        wire.decode(good, max_bytes=len(good) - 1)
    assert wire.decode(good, max_bytes=len(good))["kind"] == "frame"


def test_recording_round_trip_and_truncated_tail(tmp_path):
    path = tmp_path / "rec.msgpack"
    w = wire.RecordWriter(path)
    payloads = [wire.encode_frame(wire.synthetic_mesh_frame(1, index=i), "s", i) for i in range(3)]
    for i, p in enumerate(payloads):
        w.write(100.0 + i, wire.topic("s", "frame"), p)
    w.close()
    recs = list(wire.read_recording(path))
    assert [r.payload for r in recs] == payloads
    assert [r.t for r in recs] == [100.0, 101.0, 102.0] and recs[0].topic == b"s/frame"
    # a run killed mid-write leaves a partial last record: the complete ones still read
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    assert [r.payload for r in wire.read_recording(path)] == payloads[:2]


def test_recording_of_the_wrong_form_is_named(tmp_path):
    path = tmp_path / "other.msgpack"
    path.write_bytes(msgpack.packb({"a": 1}))
    with pytest.raises(wire.WireError, match="--record file"):
        list(wire.read_recording(path))


def test_record_into_missing_directory_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="publish.record"):
        wire.RecordWriter(tmp_path / "nope" / "rec.msgpack")


def test_corrupted_bytes_never_raise_anything_but_wire_error():
    rng = np.random.default_rng(2)
    mf = wire.synthetic_mesh_frame(1, smpl=True)
    mf.persons[0].vertices = mf.persons[0].vertices[:8]  # keeps the message small: more hits per byte
    good = wire.encode_frame(mf, "s", 0)
    outcomes = set()
    for _ in range(3000):
        b = bytearray(good)
        for pos in rng.integers(0, len(b), rng.integers(1, 4)):
            b[pos] = rng.integers(0, 256)
        try:
            wire.decode(bytes(b))
            outcomes.add("decoded")
        except wire.WireError:
            outcomes.add("refused")
    assert outcomes == {"decoded", "refused"}
