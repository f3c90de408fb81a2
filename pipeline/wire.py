"""Wire schema version 1: what the publish stage sends and what subscribers read (docs/schema.md).

Every ZeroMQ message has two frames: a topic ``b"<stream>/<kind>"`` and a msgpack payload, a map whose
``"kind"`` is ``"topology"``, ``"frame"`` or ``"end"``. Arrays travel as a map
``{"dtype": "<f4", "shape": [6890, 3], "data": <raw little-endian bytes>}`` (plus ``"scale"`` for
int16-quantised values), never as lists of floats.

This module is the one import surface of the wire protocol; its parts live beside it, one job each:

    wire_schema    version, kinds, dtypes, states, conventions, limits, the stream-id rule, `WireError`
    wire_arrays    numpy array <-> ``{"dtype", "shape", "data"[, "scale"]}``
    wire_encode    ``encode_*`` build payload bytes; `topic` the ZeroMQ topic
    wire_decode    `decode` payload bytes -> dict with numpy arrays, `WireError` on anything off-schema
    wire_limits    bounds on untrusted msgpack (object count, depth), checked before decoding
    wire_record    `RecordWriter` / `read_recording`: the ``--record`` file format
    wire_samples   `synthetic_mesh_frame`, random frames for benchmarks, tests and examples

All of it is pure: no sockets.
"""
from __future__ import annotations

from .messages import EndOfStream, MeshFrame, PersonMesh, now  # noqa: F401  (kept importable from here)
from .wire_arrays import pack_array, pack_quantised, unpack_array
from .wire_decode import decode, unpackb
from .wire_encode import encode_end, encode_frame, encode_topology, topic
from .wire_limits import StructureError, check_structure
from .wire_record import Record, RecordWriter, read_recording
from .wire_samples import synthetic_mesh_frame
from .wire_schema import (COORDINATES, DEFAULT_MAX_MESSAGE_BYTES, HAND_SIDES, KINDS, MAX_COUNT, MAX_STREAM_ID,
                          SCHEMA_VERSION, TRACK_STATES, VERTEX_DTYPES, WireError, is_stream_id, stream_file_name)

__all__ = [
    "COORDINATES", "DEFAULT_MAX_MESSAGE_BYTES", "HAND_SIDES", "KINDS", "MAX_COUNT", "MAX_STREAM_ID", "SCHEMA_VERSION",
    "TRACK_STATES", "VERTEX_DTYPES", "EndOfStream", "MeshFrame", "PersonMesh", "Record", "RecordWriter",
    "StructureError", "WireError", "check_structure", "decode", "encode_end", "encode_frame", "encode_topology",
    "is_stream_id", "stream_file_name", "now", "pack_array", "pack_quantised", "read_recording", "synthetic_mesh_frame", "topic",
    "unpack_array", "unpackb",
]
