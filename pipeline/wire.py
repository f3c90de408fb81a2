"""Wire schema version 1: what the publish stage sends and what subscribers read (docs/schema.md).

Every ZeroMQ message has two frames: a topic ``b"<stream>/<kind>"`` and a msgpack payload, a map whose
``"kind"`` is ``"topology"``, ``"frame"`` or ``"end"``. Arrays travel as a map
``{"dtype": "<f4", "shape": [6890, 3], "data": <raw little-endian bytes>}`` (plus ``"scale"`` for
int16-quantised values), never as lists of floats.

This module is pure: no sockets. ``encode_*`` build payload bytes, ``decode`` turns payload bytes back
into a dict with numpy arrays and raises `WireError` on anything that does not follow the schema, and
`RecordWriter` / `read_recording` handle the ``--record`` file format.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional, Sequence, Union

import msgpack
import numpy as np

from .messages import EndOfStream, MeshFrame, PersonMesh, now
from .wire_limits import StructureError, check_structure

SCHEMA_VERSION = 1
KINDS = ("topology", "frame", "end")
VERTEX_DTYPES = ("float32", "float16", "int16")
TRACK_STATES = ("new", "tracked", "coasting", "lost")
HAND_SIDES = ("left", "right")

# Coordinate conventions of every 3D array on the wire (see fastmetro.camera).
COORDINATES = {
    "frame": "camera",  # cam_t places the body in the camera frame; joints/vertices are body-relative
    "x": "right",
    "y": "down",
    "z": "forward",  # away from the camera, into the scene (OpenCV convention)
    "handedness": "right",
    "units": "metres",  # 3D values; joints2d are frame pixels
    "pixels": "continuous image coordinates, the frame spans [0, W] x [0, H], origin at the top-left",
    "focal": "see fastmetro.camera: perspective camera, principal point at the frame centre",
}

# Dtypes a decoder accepts (the only ones an encoder writes), by their wire name.
_WIRE_DTYPES = {"<f4": np.dtype("<f4"), "<f2": np.dtype("<f2"), "<i2": np.dtype("<i2"), "<i4": np.dtype("<i4"),
                "<f8": np.dtype("<f8"), "<i8": np.dtype("<i8"), "|u1": np.dtype("u1")}
_INT16_MAX = 32767

# msgpack limits used when decoding untrusted bytes: big enough for 6,890 x 3 float32 vertices
# (83 KB per array) and a few hundred persons, small enough that a hostile message cannot make the
# decoder allocate more than its own size.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Integers the schema counts with (seq, index, dropped, frames) lie in [0, 2**53]: exact as a double,
# so a JavaScript subscriber reads them exactly too.
MAX_COUNT = 2**53
# Stream ids: the first part of the topic "<stream>/<kind>", so never holding "/" (a subscription to
# "a/" would also match a stream "a/b"), never empty.
MAX_STREAM_ID = 256


def is_stream_id(stream: str) -> bool:
    """Whether `stream` may name a stream: 1 to MAX_STREAM_ID characters, no '/'."""
    return bool(stream) and len(stream) <= MAX_STREAM_ID and "/" not in stream


class WireError(ValueError):
    """A payload that does not follow wire schema v1."""


# ------------------------------------------------------------------------------------------ arrays
def pack_array(a: np.ndarray, dtype: str = "<f4") -> dict:
    """Array -> ``{"dtype", "shape", "data"}`` with raw little-endian bytes of the given dtype."""
    arr = np.ascontiguousarray(a, dtype=np.dtype(dtype))
    return {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}


def pack_quantised(a: np.ndarray) -> dict:
    """Float array -> int16 with one scale: value = data * scale (error at most scale / 2)."""
    arr = np.asarray(a, dtype=np.float32)
    peak = float(np.max(np.abs(arr))) if arr.size else 0.0
    if not np.isfinite(peak):
        raise WireError("cannot quantise an array holding NaN or infinity; publish it as float32")
    scale = peak / _INT16_MAX if peak > 0 else 1.0
    q = np.rint(arr / scale).astype("<i2")
    return {"dtype": "<i2", "shape": list(arr.shape), "data": q.tobytes(), "scale": scale}


def unpack_array(obj: Any, name: str = "array") -> np.ndarray:
    """``{"dtype", "shape", "data"[, "scale"]}`` -> numpy array (float32 when a scale is given)."""
    if not isinstance(obj, dict) or not {"dtype", "shape", "data"} <= obj.keys():
        raise WireError(f"{name}: expected a map with dtype, shape and data")
    dt = _WIRE_DTYPES.get(obj["dtype"]) if isinstance(obj["dtype"], str) else None
    if dt is None:
        raise WireError(f"{name}: unsupported dtype {obj['dtype']!r}")
    shape = obj["shape"]
    if not isinstance(shape, (list, tuple)) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise WireError(f"{name}: shape must be a list of non-negative integers, got {shape!r}")
    data = obj["data"]
    if not isinstance(data, (bytes, bytearray)):
        raise WireError(f"{name}: data must be bytes")
    count = math.prod(shape)  # Python ints: a hostile shape cannot overflow
    if count * dt.itemsize != len(data):
        raise WireError(f"{name}: {len(data)} bytes do not hold shape {list(shape)} of {dt.str}")
    arr = np.frombuffer(data, dtype=dt).reshape(shape)
    if "scale" in obj:
        scale = obj["scale"]
        if not isinstance(scale, (int, float)) or not np.isfinite(scale):
            raise WireError(f"{name}: scale must be a finite number")
        arr = arr.astype(np.float32) * np.float32(scale)
    return arr


# ------------------------------------------------------------------------------------------ encode
def topic(stream: str, kind: str) -> bytes:
    """The ZeroMQ topic frame of a message: subscribe to ``b"<stream>/"`` for one stream's messages."""
    return f"{stream}/{kind}".encode()


def _pack(obj: dict) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _message(kind: str, stream: str, seq: int, wall: Optional[float], fields: dict) -> bytes:
    """A payload: the common fields every kind has (schema "Common fields"), then the kind's own."""
    return _pack({"v": SCHEMA_VERSION, "kind": kind, "stream": stream, "seq": int(seq),
                  "wall": now() if wall is None else float(wall), **fields})


def encode_topology(
    stream: str,
    seq: int,
    faces: np.ndarray,
    joint_names: Sequence[str],
    h36m_joint_names: Sequence[str],
    vertices_dtype: str = "float32",
    vertices_every: int = 1,
    wall: Optional[float] = None,
    hand_faces: Optional[np.ndarray] = None,
    hand_joint_names: Optional[Sequence[str]] = None,
) -> bytes:
    """The mesh topology and conventions a subscriber needs to read frames. hand_faces: the right-hand
    MANO triangles (fastmetro.load_hand_mesh_data().faces) when frames carry hands; the left hand's are
    the same with their winding reversed (its mesh is a mirror image), sent too so no reader has to know."""
    faces = np.asarray(faces)
    fields = {
        "num_vertices": int(faces.max()) + 1 if faces.size else 0,
        "faces": pack_array(faces, "<i4"),
        "joint_names": list(joint_names),
        "h36m_joint_names": list(h36m_joint_names),
        "coordinates": dict(COORDINATES),
        "vertices_dtype": vertices_dtype,
        "vertices_every": int(vertices_every),
    }
    if hand_faces is not None:
        hf = np.asarray(hand_faces)
        fields["hand"] = {
            "num_vertices": int(hf.max()) + 1 if hf.size else 0,
            "faces_right": pack_array(hf, "<i4"),
            "faces_left": pack_array(hf[:, ::-1], "<i4"),
            "joint_names": list(hand_joint_names or ()),
        }
    return _message("topology", stream, seq, wall, fields)


def _pack_vertices(v: np.ndarray, vertices_dtype: str) -> dict:
    if vertices_dtype == "int16":
        return pack_quantised(v)
    return pack_array(v, "<f2" if vertices_dtype == "float16" else "<f4")


def _person(pm: PersonMesh, with_vertices: bool, vertices_dtype: str) -> dict:
    p = pm.person
    out = {
        "track_id": int(p.track_id),
        "state": p.state,
        "box": [float(x) for x in p.box],
        "score": float(p.score),
        "predicted": bool(pm.predicted),
        "center": [float(x) for x in p.center],
        "size": float(p.size),
        "cam": pack_array(pm.cam),
        "cam_t": pack_array(pm.cam_t),
        "joints3d": pack_array(pm.joints3d),
        "joints2d": pack_array(pm.joints2d),
        "joints_h36m": pack_array(pm.joints_h36m),
    }
    if with_vertices:
        out["vertices"] = _pack_vertices(pm.vertices, vertices_dtype)
    if pm.rotmat is not None:
        out["rotmat"] = pack_array(pm.rotmat)
    if pm.betas is not None:
        out["betas"] = pack_array(pm.betas)
    if pm.hands:  # optional, added within version 1: absent when hands are off or none is seen
        out["hands"] = {}
        for side, h in pm.hands.items():
            hand = {"cam": pack_array(h.cam), "cam_t": pack_array(h.cam_t), "joints3d": pack_array(h.joints3d),
                    "center": [float(x) for x in h.center], "size": float(h.size)}
            if with_vertices:
                hand["vertices"] = _pack_vertices(h.vertices, vertices_dtype)
            out["hands"][str(side)] = hand
    if pm.hand_skips:
        out["hand_skips"] = {str(k): str(v) for k, v in pm.hand_skips.items()}
    if pm.foot_contact is not None:  # optional, added within version 1
        out["foot_contact"] = [bool(x) for x in pm.foot_contact]
    return out


def encode_frame(
    mf: MeshFrame,
    stream: str,
    seq: int,
    with_vertices: bool = True,
    vertices_dtype: str = "float32",
    wall: Optional[float] = None,
) -> bytes:
    """One frame's message; ``with_vertices=False`` leaves the ``vertices`` key out of every person."""
    if vertices_dtype not in VERTEX_DTYPES:
        raise WireError(f"vertices_dtype must be one of {VERTEX_DTYPES}, got {vertices_dtype!r}")
    f = mf.frame
    fields = {
        "index": int(f.index),
        "pts": None if f.pts is None else float(f.pts),
        "width": int(f.width),
        "height": int(f.height),
        "times": {str(k): float(v) for k, v in f.times.items()},
        "dropped": int(f.dropped),
        "persons": [_person(pm, with_vertices, vertices_dtype) for pm in mf.persons],
        "lost": [int(t) for t in mf.lost],
    }
    if mf.focal is not None:
        fields["focal"] = float(mf.focal)
    if mf.world is not None:  # optional, added within version 1
        w = {"state": str(mf.world.state), "focal_estimated": bool(mf.world.focal_estimated)}
        if mf.world.world_from_camera is not None:
            w["world_from_camera"] = pack_array(np.asarray(mf.world.world_from_camera))
        fields["world"] = w
    return _message("frame", stream, seq, wall, fields)


def encode_end(eos: EndOfStream, stream: str, seq: int, wall: Optional[float] = None) -> bytes:
    return _message("end", stream, seq, wall, {"frames": int(eos.frames), "reason": str(eos.reason)})


# ------------------------------------------------------------------------------------------ decode
def unpackb(payload: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Any:
    """msgpack with every size limit set to the payload's own length (never more than ``max_bytes``),
    after `check_structure` (object count and depth bounded, so memory stays near the payload's size)."""
    if len(payload) > max_bytes:
        raise WireError(f"message of {len(payload)} bytes is over the limit of {max_bytes}")
    n = len(payload)
    try:
        check_structure(payload)
    except StructureError as e:
        raise WireError(str(e)) from None
    try:
        return msgpack.unpackb(
            payload, raw=False, strict_map_key=True, max_bin_len=n, max_str_len=n,
            max_array_len=n, max_map_len=n // 2 + 1, max_ext_len=n,
        )
    except Exception as e:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...)
        raise WireError(f"not a msgpack object: {type(e).__name__}: {e}") from None


def _req(m: dict, key: str, types, kind: str):
    if key not in m:
        raise WireError(f"{kind} message: missing {key!r}")
    val = m[key]
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(val, allowed) or (isinstance(val, bool) and bool not in allowed):
        raise WireError(f"{kind} message: {key!r} has type {type(val).__name__}")
    return val


_NUM = (int, float)


def _count(m: dict, key: str, kind: str) -> int:
    """A count field (seq, index, dropped, frames): an int in [0, MAX_COUNT]."""
    val = _req(m, key, int, kind)
    if not 0 <= val <= MAX_COUNT:
        raise WireError(f"{kind} message: {key!r} = {val} is outside [0, 2**53]")
    return val


def _numbers(values: Any, n: int, name: str) -> np.ndarray:
    if not isinstance(values, list) or len(values) != n or not all(
        isinstance(v, _NUM) and not isinstance(v, bool) for v in values
    ):
        raise WireError(f"{name}: expected {n} numbers")
    with np.errstate(over="ignore"):  # out-of-range values become inf, as float32 would hold them
        return np.asarray(values, dtype=np.float32)


def _shaped(obj: Any, shape: tuple, name: str) -> np.ndarray:
    arr = unpack_array(obj, name)
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        raise WireError(f"{name}: shape {arr.shape} does not match {shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise WireError(f"{name}: holds NaN or infinity (arrays on the wire are finite)")
    return arr.astype(np.float32, copy=False)


def _faces(obj: Any, name: str) -> np.ndarray:
    f = unpack_array(obj, name)
    if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind != "i":
        raise WireError(f"{name}: expected (F, 3) integers, got {f.shape} {f.dtype}")
    return f


def _decode_hands(p: dict, where: str) -> tuple[dict, dict]:
    """A person's optional "hands" (side -> hand) and "hand_skips" (side -> reason); empty when absent."""
    hands, skips = p.get("hands", {}), p.get("hand_skips", {})
    if not isinstance(hands, dict) or not isinstance(skips, dict):
        raise WireError(f"{where}: hands and hand_skips must be maps")
    out = {}
    for side, h in hands.items():
        name = f"{where}.hands.{side}"
        if side not in HAND_SIDES or not isinstance(h, dict):
            raise WireError(f"{name}: expected a map under 'left' or 'right'")
        out[side] = {
            "side": side,
            "cam": _shaped(_req(h, "cam", dict, name), (3,), f"{name}.cam"),
            "cam_t": _shaped(_req(h, "cam_t", dict, name), (3,), f"{name}.cam_t"),
            "joints3d": _shaped(_req(h, "joints3d", dict, name), (None, 3), f"{name}.joints3d"),
            "vertices": _shaped(h["vertices"], (None, 3), f"{name}.vertices") if "vertices" in h else None,
            "center": _numbers(_req(h, "center", list, name), 2, f"{name}.center"),
            "size": float(_req(h, "size", _NUM, name)),
        }
    if not all(k in HAND_SIDES and isinstance(v, str) for k, v in skips.items()):
        raise WireError(f"{where}.hand_skips: expected 'left'/'right' -> reason strings")
    return out, dict(skips)


def _decode_person(p: Any, i: int) -> dict:
    where = f"frame message: persons[{i}]"
    if not isinstance(p, dict):
        raise WireError(f"{where} is not a map")
    out = {
        "track_id": _count(p, "track_id", where),
        "state": _req(p, "state", str, where),
        "box": _numbers(_req(p, "box", list, where), 4, f"{where}.box"),
        "score": float(_req(p, "score", _NUM, where)),
        "predicted": bool(p.get("predicted", False)),
        "center": _numbers(p.get("center", [np.nan, np.nan]), 2, f"{where}.center"),
        "size": float(_req(p, "size", _NUM, where)) if "size" in p else float("nan"),
    }
    if not np.isfinite(out["box"]).all() or not math.isfinite(out["score"]):
        raise WireError(f"{where}: box and score must be finite")
    if out["state"] not in TRACK_STATES:
        raise WireError(f"{where}: unknown state {out['state']!r}")
    for key, shape in (("cam", (3,)), ("cam_t", (3,)), ("joints3d", (None, 3)), ("joints2d", (None, 2)),
                       ("joints_h36m", (None, 3)), ("vertices", (None, 3)), ("rotmat", (None, 3, 3)),
                       ("betas", (None,))):
        if key not in p:
            if key in ("vertices", "rotmat", "betas"):
                out[key] = None
                continue
            raise WireError(f"{where}: missing {key!r}")
        out[key] = _shaped(p[key], shape, f"{where}.{key}")
    out["hands"], out["hand_skips"] = _decode_hands(p, where)
    fc = p.get("foot_contact")
    if fc is not None and (not isinstance(fc, list) or len(fc) != 2 or not all(isinstance(b, bool) for b in fc)):
        raise WireError(f"{where}: foot_contact must be two booleans (left, right)")
    out["foot_contact"] = None if fc is None else np.array(fc, dtype=bool)
    return out


WORLD_STATES = ("calibrating", "calibrated", "fixed")


def _decode_world(w: Any) -> Optional[dict]:
    if w is None:
        return None
    if not isinstance(w, dict) or not isinstance(w.get("state"), str):  # states beyond WORLD_STATES are allowed
        raise WireError("frame message: world must be a map with a state string")
    t = None
    if w.get("world_from_camera") is not None:
        t = _shaped(w["world_from_camera"], (4, 4), "frame message: world.world_from_camera").astype(np.float64)
    return {"state": w["state"], "focal_estimated": bool(w.get("focal_estimated", False)), "world_from_camera": t}


def decode(payload: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> dict:
    """Payload bytes -> message dict with numpy arrays; `WireError` for anything off-schema.

    Topology: faces (F, 3) int32 (and, with hands, hand.faces_right / faces_left). Frame: persons[i] with
    float32 arrays (int16/float16 vertices come back as float32), and "hands" (side -> hand dict) and
    "hand_skips" (side -> reason), empty maps when the publisher sent none. Unknown extra keys are kept
    (forward compatible within version 1).
    """
    m = unpackb(payload, max_bytes)
    if not isinstance(m, dict):
        raise WireError("message is not a map")
    version = m.get("v")
    if version != SCHEMA_VERSION:
        raise WireError(f"schema version {version!r} is not supported (this decoder reads {SCHEMA_VERSION})")
    kind = m.get("kind")
    if kind not in KINDS:
        raise WireError(f"unknown message kind {kind!r}")
    stream = _req(m, "stream", str, kind)
    if not is_stream_id(stream):
        raise WireError(f"{kind} message: stream id must be 1 to {MAX_STREAM_ID} characters without '/'")
    _count(m, "seq", kind)
    if not math.isfinite(_req(m, "wall", _NUM, kind)):
        raise WireError(f"{kind} message: wall must be finite")
    if kind == "topology":
        faces = m["faces"] = _faces(_req(m, "faces", dict, kind), "topology.faces")
        nv = _count(m, "num_vertices", kind)
        if faces.size and (int(faces.min()) < 0 or int(faces.max()) >= nv):
            raise WireError(f"topology.faces: indices must lie in [0, num_vertices={nv})")
        for key in ("joint_names", "h36m_joint_names"):
            names = _req(m, key, list, kind)
            if not all(isinstance(n, str) for n in names):
                raise WireError(f"topology.{key}: must be a list of strings")
        _req(m, "num_vertices", int, kind)
        _req(m, "coordinates", dict, kind)
        if "hand" in m:  # optional, added within version 1: the hand mesh, when frames carry hands
            hand = _req(m, "hand", dict, kind)
            for key in ("faces_right", "faces_left"):
                hand[key] = _faces(_req(hand, key, dict, "topology.hand"), f"topology.hand.{key}")
            _req(hand, "num_vertices", int, "topology.hand")
            if not all(isinstance(n, str) for n in _req(hand, "joint_names", list, "topology.hand")):
                raise WireError("topology.hand.joint_names: must be a list of strings")
    elif kind == "frame":
        _count(m, "index", kind)
        if m.get("pts") is not None and not isinstance(m["pts"], _NUM):
            raise WireError("frame message: pts must be a number or nil")
        times = _req(m, "times", dict, kind)
        if not all(isinstance(k, str) and isinstance(v, _NUM) for k, v in times.items()):
            raise WireError("frame message: times must map stage names to numbers")
        _count(m, "dropped", kind)
        if m.get("focal") is not None and (not isinstance(m["focal"], _NUM) or not m["focal"] > 0):
            raise WireError("frame message: focal must be a positive number")
        m["world"] = _decode_world(m.get("world"))
        persons = _req(m, "persons", list, kind)
        m["persons"] = [_decode_person(p, i) for i, p in enumerate(persons)]
        lost = m.get("lost", [])
        if not isinstance(lost, list) or not all(isinstance(t, int) and 0 <= t <= MAX_COUNT for t in lost):
            raise WireError("frame message: lost must be a list of track ids")
        m["lost"] = lost
    else:
        _count(m, "frames", kind)
        _req(m, "reason", str, kind)
    return m


# --------------------------------------------------------------------------------------- recording
class RecordWriter:
    """``--record FILE``: one msgpack array ``[wall_time, topic, payload]`` per published message.

    ``payload`` is the exact bytes sent on the socket, so a replay sends byte-identical messages.
    Each record is flushed so that a crashed run leaves every message it published readable.
    """

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.is_dir():
            raise FileNotFoundError(
                f"record: directory {self.path.parent} does not exist (publish.record = {self.path})"
            )
        self._f: Optional[BinaryIO] = open(self.path, "wb")
        self.count = 0

    def write(self, t: float, topic_: bytes, payload: bytes) -> None:
        assert self._f is not None, "RecordWriter is closed"
        self._f.write(msgpack.packb([float(t), topic_, payload], use_bin_type=True))
        self._f.flush()
        self.count += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


@dataclass
class Record:
    t: float  # wall-clock time it was published (seconds since the epoch)
    topic: bytes
    payload: bytes  # the exact bytes published; `decode(payload)` reads it


def read_recording(path: Union[str, os.PathLike], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Iterator[Record]:
    """Records of a ``--record`` file, in order. A truncated last record (a killed run) ends the
    iteration quietly; a record of the wrong form raises `WireError` naming the file and position."""
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=max_bytes + 1024, max_bin_len=max_bytes)
        for i, rec in enumerate(unpacker):
            if (not isinstance(rec, list) or len(rec) != 3 or not isinstance(rec[0], (int, float))
                    or not isinstance(rec[1], bytes) or not isinstance(rec[2], bytes)):
                raise WireError(f"{path}: record {i} is not [time, topic, payload]; is this a --record file?")
            yield Record(float(rec[0]), rec[1], rec[2])


# ------------------------------------------------------------------------------------------ samples
def synthetic_mesh_frame(
    persons: int = 1, index: int = 0, rng: Optional[np.random.Generator] = None, smpl: bool = False,
    source: str = "default",
) -> MeshFrame:
    """A MeshFrame of random but plausibly sized arrays (bodies within +-1 m, 3-5 m away), for
    benchmarks, tests and examples of the wire format; no network needed."""
    from .messages import Frame, Person

    rng = rng if rng is not None else np.random.default_rng(index)
    f32 = np.float32
    frame = Frame(source=source, index=index, pts=index / 30.0, slot=-1, height=720, width=1280,
                  times={"decode": now(), "detect": now(), "infer": now(), "smooth": now()}, dropped=0)
    out = []
    for i in range(persons):
        x1, y1 = rng.uniform(0, 900), rng.uniform(0, 300)
        person = Person(track_id=i + 1, state="tracked", box=(x1, y1, x1 + 200, y1 + 400), score=0.9,
                        center=(x1 + 100, y1 + 200), size=440.0, crop_index=i)
        out.append(PersonMesh(
            person=person,
            cam=np.array([0.9, 0.01, 0.2], f32),
            cam_t=np.array([rng.uniform(-1, 1), rng.uniform(-0.5, 0.5), rng.uniform(3, 5)], f32),
            joints3d=rng.uniform(-1, 1, (14, 3)).astype(f32),
            joints_h36m=rng.uniform(-1, 1, (17, 3)).astype(f32),
            joints2d=rng.uniform(0, 720, (14, 2)).astype(f32),
            vertices=rng.uniform(-1, 1, (6890, 3)).astype(f32),
            rotmat=np.tile(np.eye(3, dtype=f32), (24, 1, 1)) if smpl else None,
            betas=rng.normal(size=10).astype(f32) if smpl else None,
        ))
    return MeshFrame(frame=frame, persons=out, lost=[])
