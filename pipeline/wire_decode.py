"""Decoding untrusted wire payloads: msgpack bounded by the payload's size, then every field checked
against docs/schema.md; anything off-schema raises `WireError`. Pure: no sockets.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import msgpack
import numpy as np

from .wire_arrays import unpack_array
from .wire_limits import StructureError, check_structure
from .wire_schema import (DEFAULT_MAX_MESSAGE_BYTES, HAND_SIDES, KINDS, MAX_COUNT, MAX_STREAM_ID, SCHEMA_VERSION,
                          TRACK_STATES, VERTEX_DTYPES, WireError, is_stream_id)


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
# Fixed shapes of a person's float32 arrays (docs/schema.md, "Decoding rules" 12).
BODY_SHAPES = {"cam": (3,), "cam_t": (3,), "joints3d": (14, 3), "joints2d": (14, 2), "joints_h36m": (17, 3),
               "rotmat": (24, 3, 3), "betas": (10,)}
HAND_SHAPES = {"cam": (3,), "cam_t": (3,), "joints3d": (21, 3)}
MAX_SIDE = 2**31 - 1  # width, height, vertices_every: what every reader holds in an int32
FLOAT32_MAX = float(np.finfo(np.float32).max)


def integral(val: Any) -> Optional[int]:
    """A msgpack integer, or a float with an integral value (21.0: a JavaScript reader cannot tell them
    apart), as an int; None for anything else (a bool, 21.5, a string)."""
    if type(val) is int:
        return val
    if type(val) is float and val.is_integer():
        return int(val)
    return None


def _int(m: dict, key: str, kind: str, low: int = 0, high: int = MAX_COUNT) -> int:
    """An integer field (rule 3) in [low, high]; an integral float is stored back as an int."""
    if key not in m:
        raise WireError(f"{kind} message: missing {key!r}")
    val = integral(m[key])
    if val is None:
        raise WireError(f"{kind} message: {key!r} must be an integer, got {m[key]!r}")
    if not low <= val <= high:
        raise WireError(f"{kind} message: {key!r} = {val} is outside [{low}, {high}]")
    m[key] = val
    return val


def _count(m: dict, key: str, kind: str) -> int:
    """A count field (seq, index, dropped, frames, num_vertices, track_id): an int in [0, 2**53 - 1]."""
    return _int(m, key, kind)


def _finite(m: dict, key: str, kind: str, positive: bool = False) -> float:
    """A float field: a msgpack number (integers accepted), finite; positive when asked."""
    val = float(_req(m, key, _NUM, kind))
    if not math.isfinite(val) or (positive and not val > 0):
        raise WireError(f"{kind} message: {key!r} must be a finite{' positive' if positive else ''} number")
    return val


def _numbers(values: Any, n: int, name: str) -> np.ndarray:
    """n msgpack numbers, finite and within float32's range, held as float32."""
    if not isinstance(values, list) or len(values) != n or not all(
        isinstance(v, _NUM) and not isinstance(v, bool) for v in values
    ):
        raise WireError(f"{name}: expected {n} numbers")
    if not all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in map(float, values)):
        raise WireError(f"{name}: numbers must be finite and within float32's range")
    return np.asarray(values, dtype=np.float32)


def _shaped(obj: Any, shape: tuple, name: str, dtypes: tuple = ("<f4",)) -> np.ndarray:
    """An array map of one of `dtypes` and exactly `shape` (None: any length), finite, as float32."""
    arr = unpack_array(obj, name)
    if obj["dtype"] not in dtypes:
        raise WireError(f"{name}: dtype {obj['dtype']!r} is not {' or '.join(dtypes)}")
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        raise WireError(f"{name}: shape {arr.shape} does not match {shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise WireError(f"{name}: holds NaN or infinity (arrays on the wire are finite)")
    return arr.astype(np.float32, copy=False)


def _vertices(obj: Any, name: str) -> np.ndarray:
    """Vertices: (N, 3) "<f4", "<f2", or "<i2" (with "scale": quantised, rule 4)."""
    return _shaped(obj, (None, 3), name, ("<f4", "<f2", "<i2"))


def _faces(obj: Any, name: str, num_vertices: int) -> np.ndarray:
    """Triangles: (F, 3) "<i4", no scale, every index in [0, num_vertices)."""
    f = unpack_array(obj, name)
    if obj["dtype"] != "<i4" or "scale" in obj or f.ndim != 2 or f.shape[1] != 3:
        raise WireError(f"{name}: expected (F, 3) <i4, got {f.shape} {obj['dtype']}")
    if f.size and (int(f.min()) < 0 or int(f.max()) >= num_vertices):
        raise WireError(f"{name}: indices must lie in [0, num_vertices={num_vertices})")
    return f


def _decode_hands(p: dict, where: str) -> tuple[dict, dict]:
    """A person's optional "hands" (side -> hand) and "hand_skips" (side -> reason); empty when absent.
    Keys other than "left"/"right" are ignored, as unknown keys are (rule 13)."""
    hands, skips = p.get("hands", {}), p.get("hand_skips", {})
    if not isinstance(hands, dict) or not isinstance(skips, dict):
        raise WireError(f"{where}: hands and hand_skips must be maps")
    out = {}
    for side in HAND_SIDES:
        if side not in hands:
            continue
        h, name = hands[side], f"{where}.hands.{side}"
        if not isinstance(h, dict):
            raise WireError(f"{name}: expected a map")
        out[side] = {"side": side}
        for key, shape in HAND_SHAPES.items():
            out[side][key] = _shaped(_req(h, key, dict, name), shape, f"{name}.{key}")
        out[side]["vertices"] = _vertices(h["vertices"], f"{name}.vertices") if "vertices" in h else None
        out[side]["center"] = _numbers(_req(h, "center", list, name), 2, f"{name}.center")
        out[side]["size"] = _finite(h, "size", name)
    if not all(isinstance(skips[k], str) for k in HAND_SIDES if k in skips):
        raise WireError(f"{where}.hand_skips: expected 'left'/'right' -> reason strings")
    return out, {k: skips[k] for k in HAND_SIDES if k in skips}


def _decode_person(p: Any, i: int) -> dict:
    where = f"frame message: persons[{i}]"
    if not isinstance(p, dict):
        raise WireError(f"{where} is not a map")
    out = {
        "track_id": _count(p, "track_id", where),
        "state": _req(p, "state", str, where),
        "box": _numbers(_req(p, "box", list, where), 4, f"{where}.box"),
        "score": _finite(p, "score", where),
        "predicted": _req(p, "predicted", bool, where) if "predicted" in p else False,
        "center": _numbers(p["center"], 2, f"{where}.center") if "center" in p else np.full(2, np.nan, np.float32),
        "size": _finite(p, "size", where) if "size" in p else float("nan"),
    }
    if out["state"] not in TRACK_STATES:
        raise WireError(f"{where}: unknown state {out['state']!r}")
    for key, shape in BODY_SHAPES.items():
        if key not in p and key in ("rotmat", "betas"):
            out[key] = None
            continue
        out[key] = _shaped(_req(p, key, dict, where), shape, f"{where}.{key}")
    out["vertices"] = _vertices(p["vertices"], f"{where}.vertices") if "vertices" in p else None
    out["hands"], out["hand_skips"] = _decode_hands(p, where)
    fc = p.get("foot_contact")
    if fc is not None and (not isinstance(fc, list) or len(fc) != 2 or not all(isinstance(b, bool) for b in fc)):
        raise WireError(f"{where}: foot_contact must be two booleans (left, right)")
    out["foot_contact"] = None if fc is None else np.array(fc, dtype=bool)
    return out


WORLD_STATES = ("calibrating", "calibrated", "fixed")


def _decode_world(w: Any) -> Optional[dict]:
    """A frame's optional "world": the calibration state, whether the focal was estimated, and the camera
    pose (world from camera, 4x4) once there is one. An unknown state is refused, as unknown strings are."""
    if w is None:
        return None
    if not isinstance(w, dict) or w.get("state") not in WORLD_STATES:
        raise WireError(f"frame message: world must be a map whose state is one of {WORLD_STATES}")
    if "focal_estimated" in w and not isinstance(w["focal_estimated"], bool):
        raise WireError("frame message: world.focal_estimated must be a boolean")
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
    version = integral(m.get("v"))
    if version != SCHEMA_VERSION:
        raise WireError(f"schema version {version!r} is not supported (this decoder reads {SCHEMA_VERSION})")
    kind = m.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise WireError(f"unknown message kind {kind!r}")
    stream = _req(m, "stream", str, kind)
    if not is_stream_id(stream):
        raise WireError(f"{kind} message: stream id must be 1 to {MAX_STREAM_ID} characters without '/'")
    _count(m, "seq", kind)
    _finite(m, "wall", kind)
    if kind == "topology":
        nv = _count(m, "num_vertices", kind)
        m["faces"] = _faces(_req(m, "faces", dict, kind), "topology.faces", nv)
        for key in ("joint_names", "h36m_joint_names"):
            names = _req(m, key, list, kind)
            if not all(isinstance(n, str) for n in names):
                raise WireError(f"topology.{key}: must be a list of strings")
        _req(m, "coordinates", dict, kind)
        if "vertices_dtype" in m and m["vertices_dtype"] not in VERTEX_DTYPES:
            raise WireError(f"topology message: vertices_dtype must be one of {VERTEX_DTYPES}")
        if "vertices_every" in m:
            _int(m, "vertices_every", kind, 0, MAX_SIDE)
        if "hand" in m:  # optional, added within version 1: the hand mesh, when frames carry hands
            hand = _req(m, "hand", dict, kind)
            hnv = _count(hand, "num_vertices", "topology.hand")
            for key in ("faces_right", "faces_left"):
                hand[key] = _faces(_req(hand, key, dict, "topology.hand"), f"topology.hand.{key}", hnv)
            if not all(isinstance(n, str) for n in _req(hand, "joint_names", list, "topology.hand")):
                raise WireError("topology.hand.joint_names: must be a list of strings")
    elif kind == "frame":
        _count(m, "index", kind)
        if m.get("pts") is not None:
            _finite(m, "pts", kind)
        for key in ("width", "height"):
            if key in m:
                _int(m, key, kind, 1, MAX_SIDE)
        times = _req(m, "times", dict, kind)
        if not all(isinstance(k, str) and isinstance(v, _NUM) and not isinstance(v, bool) and math.isfinite(v)
                   for k, v in times.items()):
            raise WireError("frame message: times must map stage names to finite numbers")
        _count(m, "dropped", kind)
        if m.get("focal") is not None:
            _finite(m, "focal", kind, positive=True)
        m["world"] = _decode_world(m.get("world"))
        persons = _req(m, "persons", list, kind)
        m["persons"] = [_decode_person(p, i) for i, p in enumerate(persons)]
        ids = [p["track_id"] for p in m["persons"]]
        if len(set(ids)) != len(ids):
            raise WireError("frame message: a track_id appears twice among the persons (one person per track)")
        lost = [integral(t) for t in (_req(m, "lost", list, kind) if "lost" in m else [])]
        if not all(t is not None and 0 <= t <= MAX_COUNT for t in lost):
            raise WireError("frame message: lost must be a list of track ids")
        m["lost"] = lost
    else:
        _count(m, "frames", kind)
        _req(m, "reason", str, kind)
        if "streams_open" in m:  # optional, added within version 1: the publisher's streams still going
            opened = _req(m, "streams_open", list, kind)
            if not all(isinstance(s, str) and is_stream_id(s) for s in opened):
                raise WireError("end message: streams_open must be a list of stream ids")
    return m
