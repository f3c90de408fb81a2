"""Encoding wire messages: topology, frame and end payloads as msgpack bytes, and their ZeroMQ topic
(docs/schema.md). Pure: no sockets.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import msgpack
import numpy as np

from .messages import EndOfStream, MeshFrame, PersonMesh, now
from .wire_arrays import pack_array, pack_quantised
from .wire_schema import COORDINATES, SCHEMA_VERSION, VERTEX_DTYPES, WireError


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
        "pts": None if f.pts is None or not math.isfinite(f.pts) else float(f.pts),  # nil: unknown (never NaN)
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


def encode_end(eos: EndOfStream, stream: str, seq: int, wall: Optional[float] = None,
               streams_open: Optional[list] = None) -> bytes:
    """`streams_open`: the publisher's other streams that have not ended (a run of several sources), so a
    subscriber that heard only this one knows to go on."""
    fields: dict = {"frames": int(eos.frames), "reason": str(eos.reason)}
    if streams_open is not None:
        fields["streams_open"] = [str(s) for s in streams_open]
    return _message("end", stream, seq, wall, fields)
