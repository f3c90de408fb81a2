"""Arrays on the wire: a numpy array <-> the map ``{"dtype", "shape", "data"[, "scale"]}`` of raw
little-endian bytes (``"scale"`` for int16-quantised values), never lists of floats (docs/schema.md).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .wire_schema import WireError

# Dtypes a decoder accepts (the only ones an encoder writes), by their wire name.
_WIRE_DTYPES = {"<f4": np.dtype("<f4"), "<f2": np.dtype("<f2"), "<i2": np.dtype("<i2"), "<i4": np.dtype("<i4"),
                "<f8": np.dtype("<f8"), "<i8": np.dtype("<i8"), "|u1": np.dtype("u1")}
_INT16_MAX = 32767


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
    if isinstance(shape, (list, tuple)):  # integers; an integral float (3.0) reads as the integer (rule 3)
        shape = [int(s) if type(s) is float and s.is_integer() else s for s in shape]
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
        raise WireError(f"{name}: shape must be a list of non-negative integers, got {obj['shape']!r}")
    data = obj["data"]
    if not isinstance(data, (bytes, bytearray)):
        raise WireError(f"{name}: data must be bytes")
    count = math.prod(shape)  # Python ints: a hostile shape cannot overflow
    if count * dt.itemsize != len(data):
        raise WireError(f"{name}: {len(data)} bytes do not hold shape {list(shape)} of {dt.str}")
    arr = np.frombuffer(data, dtype=dt).reshape(shape)
    if "scale" in obj:  # rule 4: float32(data[i]) * float32(scale), computed in float32
        scale = obj["scale"]
        if dt.str != "<i2":
            raise WireError(f"{name}: scale is for int16 (<i2) arrays only, not {dt.str}")
        if type(scale) not in (int, float) or not np.isfinite(scale):
            raise WireError(f"{name}: scale must be a finite number")
        arr = arr.astype(np.float32) * np.float32(scale)
    return arr
