"""Bounds on untrusted msgpack, checked on the raw bytes before anything is built (docs/schema.md,
"Decoding rules" 7 and 16): how many objects a payload holds, how deep it nests, and that map keys are
strings. `pipeline.wire_decode.unpackb` calls `check_structure` first, so a hostile message cannot make the decoder build far more than its size.
"""
from __future__ import annotations

# Structure limits, checked on the raw bytes before msgpack builds anything: a frame message holds about
# 120 msgpack objects per person, so 100,000 objects is ~800 persons; a valid message nests 5 deep.
# Without them a 1 MB payload of empty maps becomes a million dicts (~70 MB).
MAX_OBJECTS = 100_000
MAX_DEPTH = 16


class StructureError(ValueError):
    """A payload whose msgpack structure is over the limits, or not msgpack at all."""


# msgpack type byte -> (bytes of the length/value field, kind): "skip" a fixed-size value, "len" a
# str/bin/ext whose length follows (ext: plus a type byte), "arr"/"map" a container whose count follows.
_MSGPACK_HEADS = {0xc4: (1, "len"), 0xc5: (2, "len"), 0xc6: (4, "len"), 0xc7: (1, "ext"), 0xc8: (2, "ext"),
                  0xc9: (4, "ext"), 0xca: (4, "skip"), 0xcb: (8, "skip"), 0xcc: (1, "skip"), 0xcd: (2, "skip"),
                  0xce: (4, "skip"), 0xcf: (8, "skip"), 0xd0: (1, "skip"), 0xd1: (2, "skip"), 0xd2: (4, "skip"),
                  0xd3: (8, "skip"), 0xd4: (2, "skip"), 0xd5: (3, "skip"), 0xd6: (5, "skip"), 0xd7: (9, "skip"),
                  0xd8: (17, "skip"), 0xd9: (1, "len"), 0xda: (2, "len"), 0xdb: (4, "len"), 0xdc: (2, "arr"),
                  0xdd: (4, "arr"), 0xde: (2, "map"), 0xdf: (4, "map")}


def check_structure(payload: bytes, max_objects: int = MAX_OBJECTS, max_depth: int = MAX_DEPTH) -> int:
    """Walk the msgpack headers of one object without building it (str/bin contents are skipped):
    StructureError if it holds more than max_objects objects, nests deeper than max_depth, a container
    claims more elements than bytes remain, or a map key is not a str (or is "__proto__", which a
    JavaScript reader cannot hold). Returns the number of objects."""
    b, n, pos, objects = memoryview(payload), len(payload), 0, 0
    remaining = [1]  # items still to read at each open container level
    in_map = [False]  # whether that level is a map (its items alternate key, value)
    while remaining:
        if remaining[-1] == 0:
            remaining.pop()
            in_map.pop()
            continue
        is_key = in_map[-1] and remaining[-1] % 2 == 0
        remaining[-1] -= 1
        if pos >= n:
            raise StructureError("not a msgpack object: truncated")
        t = b[pos]
        pos += 1
        objects += 1
        if objects > max_objects:
            raise StructureError(f"message holds more than {max_objects} msgpack objects")
        if is_key:
            _check_key(b, t, pos)
        count = 0
        if t <= 0x7f or t >= 0xe0 or t in (0xc0, 0xc2, 0xc3):
            continue
        if 0x80 <= t <= 0x8f:
            count = 2 * (t & 0x0f)
        elif 0x90 <= t <= 0x9f:
            count = t & 0x0f
        elif 0xa0 <= t <= 0xbf:
            pos += t & 0x1f
            continue
        elif t in _MSGPACK_HEADS:
            size, kind = _MSGPACK_HEADS[t]
            if kind == "skip":
                pos += size
                continue
            value = int.from_bytes(b[pos:pos + size], "big")
            pos += size
            if kind in ("len", "ext"):
                pos += value + (1 if kind == "ext" else 0)
                continue
            count = value * (2 if kind == "map" else 1)
        else:
            raise StructureError(f"not a msgpack object: byte 0x{t:02x} at {pos - 1}")
        # a container (map or array, empty or not) lies at depth len(remaining): the top-level map is depth 1
        if len(remaining) > max_depth:
            raise StructureError(f"message nests deeper than {max_depth}")
        if count > n - pos:
            raise StructureError(f"a msgpack container claims {count} items in {n - pos} bytes")
        if count:
            remaining.append(count)
            in_map.append(0x80 <= t <= 0x8f or t in (0xde, 0xdf))
    return objects


_PROTO = b"__proto__"


def _check_key(b: memoryview, t: int, pos: int) -> None:
    """A map key: a msgpack str (fixstr, str8/16/32), not "__proto__"."""
    if 0xa0 <= t <= 0xbf:
        length, start = t & 0x1f, pos
    elif t in (0xd9, 0xda, 0xdb):
        size = _MSGPACK_HEADS[t][0]
        length, start = int.from_bytes(b[pos:pos + size], "big"), pos + size
    else:
        raise StructureError(f"a map key is not a string (msgpack type 0x{t:02x})")
    if length == len(_PROTO) and b[start:start + length] == _PROTO:
        raise StructureError("a map key is '__proto__'")
