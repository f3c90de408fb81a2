"""The Node.js example (examples/node/decode.js, subscriber.js) keeps docs/schema.md's decoding rules as the
Python decoder does: every hostile message gets the same verdict from both, every accepted array the same
float32 bits (int16 vertices exactly per rule 4), a payload of millions of tiny objects is refused in bounded
memory, and streams named "__proto__" or "constructor" and a person without cam_t do not break the loop.

Needs node and the example's npm packages (as tests/test_node_example.py)."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest

from pipeline import wire
from pipeline.messages import EndOfStream, HandMesh

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "examples" / "node"
FACES = np.array([[0, 1, 2], [2, 3, 0]], np.int32)

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules" / "zeromq").is_dir() or not (NODE_DIR / "node_modules" / "@msgpack").is_dir(),
        reason="examples/node has no node_modules: run `npm install --prefix examples/node` first",
    ),
]


def _frame(dtype: str = "float32", hands: bool = False, smpl: bool = False, stream: str = "s") -> dict:
    mf = wire.synthetic_mesh_frame(2, smpl=smpl)
    if hands:
        rng = np.random.default_rng(3)
        mf.persons[0].hands["left"] = HandMesh("left", np.ones(3, np.float32), np.full(3, 2, np.float32),
                                               rng.normal(size=(21, 3)).astype(np.float32),
                                               rng.normal(size=(778, 3)).astype(np.float32), (3.0, 4.0), 20.0)
        mf.persons[1].hand_skips["right"] = "too_small"
    return msgpack.unpackb(wire.encode_frame(mf, stream, 0, vertices_dtype=dtype), raw=False)


def _topology(stream: str = "s") -> dict:
    return msgpack.unpackb(wire.encode_topology(stream, 0, FACES, ["j"] * 14, ["h"] * 17, hand_faces=FACES,
                                                hand_joint_names=["w"] * 21), raw=False)


def _pack(m) -> bytes:
    return msgpack.packb(m, use_bin_type=True)


def _edit(m: dict, path: list, value=None, delete: bool = False) -> dict:
    node = m
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return m


def _arr(a, dtype: str) -> dict:
    return wire.pack_array(np.asarray(a), dtype)


def corpus() -> list[tuple[str, bytes, bytes]]:
    """(name, topic, payload): messages the doc accepts and messages it refuses, one rule each."""
    P = ["persons", 0]
    H = ["persons", 0, "hands", "left"]
    frame_bytes = _pack(_frame())
    items = {
        "frame float32": _frame(), "frame float16": _frame("float16"), "frame int16": _frame("int16"),
        "frame with hands": _frame("int16", hands=True), "frame smpl": _frame(smpl=True), "topology": _topology(),
        "end": msgpack.unpackb(wire.encode_end(EndOfStream("s", 3), "s", 3), raw=False),
        "integral float seq": {**_frame(), "seq": 21.0},
        "integral float width": {**_frame(), "width": 640.0},
        "int16 without scale": _edit(_frame(), P + ["vertices"], _arr(np.arange(6890 * 3).reshape(6890, 3) % 999, "<i2")),
        "unknown keys inside hands": _edit(_edit(_frame(hands=True), ["persons", 0, "hands", "middle"], {"x": 1}),
                                           ["persons", 1, "hand_skips", "tail"], 3),
        "hand without vertices": _edit(_frame(hands=True), H + ["vertices"], delete=True),
        "256 emoji stream": {**msgpack.unpackb(wire.encode_end(EndOfStream("s", 1), "s", 1), raw=False),
                             "stream": "\U0001F600" * 256},
        "stream __proto__": _frame(stream="__proto__"),
        "stream constructor": _frame(stream="constructor"),
        "seq 2^53-1": {**_frame(), "seq": 2**53 - 1},
        # refused
        "predicted as int": _edit(_frame(), P + ["predicted"], 1),
        "<f8 vertices": _edit(_frame(), P + ["vertices"], _arr(np.zeros((6890, 3)), "<f8")),
        "<f2 cam_t": _edit(_frame(), P + ["cam_t"], _arr(np.zeros(3), "<f2")),
        "betas (9,)": _edit(_frame(smpl=True), P + ["betas"], _arr(np.zeros(9), "<f4")),
        "hand joints3d (20, 3)": _edit(_frame(hands=True), H + ["joints3d"], _arr(np.zeros((20, 3)), "<f4")),
        "<i2 faces": {**_topology(), "faces": _arr(FACES, "<i2")},
        "hand face out of range": _edit(_topology(), ["hand", "faces_right"], _arr([[0, 1, 4]], "<i4")),
        "joints3d (13, 3)": _edit(_frame(), P + ["joints3d"], _arr(np.zeros((13, 3)), "<f4")),
        "joints2d (14, 3)": _edit(_frame(), P + ["joints2d"], _arr(np.zeros((14, 3)), "<f4")),
        "no cam_t": _edit(_frame(), P + ["cam_t"], delete=True),
        "no joints3d": _edit(_frame(), P + ["joints3d"], delete=True),
        "no joints2d": _edit(_frame(), P + ["joints2d"], delete=True),
        "seq 2^53": {**_frame(), "seq": 2**53},
        "seq 2^53+1": {**_frame(), "seq": 2**53 + 1},
        "seq 21.5": {**_frame(), "seq": 21.5},
        "NaN wall": {**_frame(), "wall": float("nan")},
        "inf pts": {**_frame(), "pts": float("inf")},
        "NaN in times": {**_frame(), "times": {"decode": float("nan")}},
        "zero focal": {**_frame(), "focal": 0.0},
        "width 0": {**_frame(), "width": 0},
        "box beyond float32": _edit(_frame(), P + ["box"], [0.0, 0.0, 1e39, 1.0]),
        "nil vertices": _edit(_frame(), P + ["vertices"], None),
        "nil hands": _edit(_frame(), P + ["hands"], None),
        "nil lost": {**_frame(), "lost": None},
        "hand without size": _edit(_frame(hands=True), H + ["size"], delete=True),
        "topology hand without joint_names": _edit(_topology(), ["hand", "joint_names"], delete=True),
        "unknown state": _edit(_frame(), P + ["state"], "sleeping"),
        "unknown kind": {**_frame(), "kind": "pose"},
        "v 2": {**_frame(), "v": 2},
        "v true": {**_frame(), "v": True},
        "scale on f4": _edit(_frame(), P + ["vertices", "scale"], 0.5),
        "duplicate track id": _edit(_frame(), ["persons", 1, "track_id"], _frame()["persons"][0]["track_id"]),
        "257 code points": {**msgpack.unpackb(wire.encode_end(EndOfStream("s", 1), "s", 1), raw=False),
                            "stream": "\U0001F600" * 257},
        "vertices_every 2^31": {**_topology(), "vertices_every": 2**31},
        "vertices_dtype float64": {**_topology(), "vertices_dtype": "float64"},
    }
    out = []
    for name, m in items.items():
        payload = m if isinstance(m, bytes) else _pack(m)
        stream = m.get("stream", "s") if isinstance(m, dict) else "s"
        kind = m.get("kind", "frame") if isinstance(m, dict) else "frame"
        out.append((name, f"{stream}/{kind}".encode(), payload))
    reason = b"end of stream"
    end = wire.encode_end(EndOfStream("s", 1), "s", 1)
    out += [
        ("invalid UTF-8 in a value", b"s/end", end.replace(reason, b"end \xff\xfe stream")),
        ("invalid UTF-8 in a key", b"s/frame", frame_bytes.replace(b"\xa7dropped", b"\xa7dr\xffpped")),
        ("trailing bytes", b"s/frame", frame_bytes + b"\x00"),
        ("integer map key", b"s/frame", _pack({**_frame(), 7: 1})),
        ("bin map key", b"s/frame", _pack({**_frame(), b"k": 1})),
        ("__proto__ key", b"s/frame", _pack({**_frame(), "__proto__": {}})),
        ("17 deep", b"s/frame", _pack({**_frame(), "x": _nested(16)})),
        ("16 deep", b"s/frame", _pack({**_frame(), "x": _nested(15)})),
        ("topic of another stream", b"t/frame", frame_bytes),
        ("invalid UTF-8 topic", b"s\xff/frame", frame_bytes),
    ]
    return out


def _nested(depth: int):
    inner: object = {}
    for _ in range(depth - 1):
        inner = [inner]
    return inner


def python_verdict(topic: bytes, payload: bytes):
    """What our Python side does with the message: the decoded dict, or None when refused."""
    try:
        m = wire.decode(payload)
        if topic != wire.topic(m["stream"], m["kind"]):
            return None
        return m
    except wire.WireError:
        return None


def node_decode(path: Path) -> list[dict]:
    r = subprocess.run(["node", "decode.js", str(path)], cwd=NODE_DIR, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def _bits(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, "<f4").tobytes()).decode()


def test_node_and_python_give_every_message_the_same_verdict_and_the_same_bits(tmp_path):
    items = corpus()
    rec = wire.RecordWriter(tmp_path / "corpus.msgpack")
    for _, topic, payload in items:
        rec.write(0.0, topic, payload)
    rec.close()
    lines = node_decode(tmp_path / "corpus.msgpack")
    assert len(lines) == len(items) + 1
    disagree = []
    for (name, topic, payload), got in zip(items, lines):
        want = python_verdict(topic, payload)
        if got["ok"] != (want is not None):
            disagree.append(f"{name}: node {'accepts' if got['ok'] else 'refuses: ' + got['error']}, python "
                            f"{'accepts' if want is not None else 'refuses'}")
            continue
        if want is None or want["kind"] != "frame":
            continue
        assert got["seq"] == want["seq"] and got["lost"] == want["lost"], name
        for gp, wp in zip(got["persons"], want["persons"]):
            for key, bits in gp["arrays"].items():
                assert bits == (None if wp[key] is None else _bits(wp[key])), f"{name}: {key}"
            assert gp["predicted"] == wp["predicted"] and gp["hand_skips"] == wp["hand_skips"], name
            assert set(gp["hands"]) == set(wp["hands"]), name
            for side, h in gp["hands"].items():
                assert h["joints3d"] == _bits(wp["hands"][side]["joints3d"]), name
                assert h["vertices"] == (None if wp["hands"][side]["vertices"] is None
                                         else _bits(wp["hands"][side]["vertices"])), name
    assert not disagree, "\n".join(disagree)
    verdicts = {name: line["ok"] for (name, _, _), line in zip(items, lines)}
    assert verdicts["frame int16"] and verdicts["stream __proto__"] and not verdicts["seq 2^53+1"]
    assert not verdicts["invalid UTF-8 in a value"] and not verdicts["NaN wall"] and not verdicts["no cam_t"]


def test_int16_dequantisation_is_the_float32_product_for_every_value(tmp_path):
    rng = np.random.default_rng(7)
    q = rng.integers(-32767, 32768, (6890, 3)).astype("<i2")
    m = _frame("int16")
    scales = [0.1, 1 / 3, 3.0517578125e-05 * 1.37, 7.3e-6]
    rec = wire.RecordWriter(tmp_path / "q.msgpack")
    for scale in scales:
        m["persons"][0]["vertices"] = {"dtype": "<i2", "shape": [6890, 3], "data": q.tobytes(), "scale": scale}
        rec.write(0.0, b"s/frame", _pack(m))
    rec.close()
    for scale, line in zip(scales, node_decode(tmp_path / "q.msgpack")):
        want = q.astype(np.float32) * np.float32(scale)
        got = np.frombuffer(base64.b64decode(line["persons"][0]["arrays"]["vertices"]), "<f4").reshape(6890, 3)
        assert np.array_equal(got, want), f"scale {scale}: {(got != want).mean():.1%} of values differ"


def test_a_payload_of_millions_of_tiny_objects_is_refused_in_bounded_memory(tmp_path):
    n = 60_000_000  # 60 MB of empty maps: decoded whole, about 4 GB of JavaScript objects
    head = _pack({"v": 1, "kind": "frame", "stream": "s"})
    payload = bytes([head[0] + 1]) + head[1:] + _pack("x") + b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n
    rec = wire.RecordWriter(tmp_path / "huge.msgpack")
    rec.write(0.0, b"s/frame", payload)
    rec.close()
    lines = node_decode(tmp_path / "huge.msgpack")
    assert lines[0]["ok"] is False and "100000" in lines[0]["error"]
    assert lines[1]["rss_max"] < 400 * 2**20, lines[1]
    assert python_verdict(b"s/frame", payload) is None


def test_the_node_subscriber_survives_hostile_streams_and_persons(tmp_path):
    """Streams named "__proto__" and "constructor", a person without cam_t, joints3d or joints2d, a
    malformed UTF-8 message: the Node subscriber counts the bad ones and keeps every stream apart."""
    path = tmp_path / "hostile.msgpack"
    rec = wire.RecordWriter(path)
    for stream in ("__proto__", "constructor"):
        rec.write(0.0, f"{stream}/topology".encode(), _pack(_topology(stream)))
    for i in range(3):
        for stream in ("__proto__", "constructor"):
            m = _frame(stream=stream)
            m["seq"], m["index"] = i, i
            rec.write(0.1, f"{stream}/frame".encode(), _pack(m))
    for key in ("cam_t", "joints3d", "joints2d"):
        rec.write(0.2, b"__proto__/frame", _pack({**_edit(_frame(stream="__proto__"), ["persons", 0, key], delete=True),
                                                 "seq": 3}))
    for stream in ("__proto__", "constructor"):
        rec.write(0.3, f"{stream}/end".encode(), wire.encode_end(EndOfStream(stream, 3), stream, 3))
    rec.close()
    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    replay = subprocess.Popen([sys.executable, "-m", "tools.stream", "replay", str(path), "--endpoint", endpoint,
                               "--mode", "lossless", "--fast", "--wait", "20", "--hwm", "100"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        node = subprocess.run(["node", "subscriber.js", "--endpoint", endpoint, "--mode", "lossless", "--json",
                               "--timeout", "20"], cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
        replay.communicate(timeout=30)
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait()
    assert node.returncode == 0, node.stderr
    assert "TypeError" not in node.stderr
    lines = [json.loads(line) for line in node.stdout.splitlines()]
    frames = [line for line in lines if line["kind"] == "frame"]
    for stream in ("__proto__", "constructor"):
        assert [f["index"] for f in frames if f["stream"] == stream] == [0, 1, 2]
    ends = [line for line in lines if line["kind"] == "end"]
    assert sorted(e["stream"] for e in ends) == ["__proto__", "constructor"]
    assert ends[-1]["stats"]["malformed"] >= 3


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
