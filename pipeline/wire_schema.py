"""Wire schema version 1, the vocabulary every other wire module shares (docs/schema.md): the version, the
message kinds, the dtypes and track states a payload may name, the coordinate conventions, the numeric limits,
the stream-id rule and `WireError`.
"""
from __future__ import annotations

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
