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
# Integers the schema counts with (seq, index, dropped, frames, track ids, num_vertices) lie in
# [0, 2**53 - 1] (JavaScript's Number.MAX_SAFE_INTEGER): a JavaScript subscriber reads them exactly and can
# tell every one of them from an integer beyond the range (2**53 + 1 reads as 2**53 in a double).
MAX_COUNT = 2**53 - 1
# Stream ids: the first part of the topic "<stream>/<kind>", so never holding "/" (a subscription to
# "a/" would also match a stream "a/b"), never empty.
MAX_STREAM_ID = 256


def is_stream_id(stream: str) -> bool:
    """Whether `stream` may name a stream: 1 to MAX_STREAM_ID characters, no '/'."""
    return bool(stream) and len(stream) <= MAX_STREAM_ID and "/" not in stream


def stream_file_name(stream: str) -> str:
    """A stream id as one safe file-name part: a stream id is never a path. ASCII letters, digits, "-", "_",
    and "." and " " (not first or last) stay; every other character becomes %XX of its UTF-8 bytes, so "..", "a\\b" or
    "con:" map to names that stay inside the folder and two ids never share a name. Ids whose escaped
    form passes 120 characters keep 80 and add a digest."""
    out = []
    for i, ch in enumerate(stream):
        if (ch.isascii() and ch.isalnum()) or ch in "-_" or (ch in ". " and 0 < i < len(stream) - 1):
            out.append(ch)
        else:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
    name = "".join(out)
    if len(name) > 120:
        import hashlib

        name = f"{name[:80]}~{hashlib.sha256(stream.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"
    return name


class WireError(ValueError):
    """A payload that does not follow wire schema v1."""
