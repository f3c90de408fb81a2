"""Decoding untrusted wire payloads: msgpack bounded by the payload's size, then every field checked
against docs/schema.md; anything off-schema raises `WireError`. Pure: no sockets.
"""
from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

from .wire_arrays import unpack_array
from .wire_limits import StructureError, check_structure
from .wire_schema import (DEFAULT_MAX_MESSAGE_BYTES, HAND_SIDES, KINDS, MAX_COUNT, MAX_STREAM_ID, SCHEMA_VERSION,
                          TRACK_STATES, WireError, is_stream_id)


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
    return out


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
        persons = _req(m, "persons", list, kind)
        m["persons"] = [_decode_person(p, i) for i, p in enumerate(persons)]
        ids = [p["track_id"] for p in m["persons"]]
        if len(set(ids)) != len(ids):
            raise WireError("frame message: a track_id appears twice among the persons (one person per track)")
        lost = m.get("lost", [])
        if not isinstance(lost, list) or not all(isinstance(t, int) and 0 <= t <= MAX_COUNT for t in lost):
            raise WireError("frame message: lost must be a list of track ids")
        m["lost"] = lost
    else:
        _count(m, "frames", kind)
        _req(m, "reason", str, kind)
    return m
