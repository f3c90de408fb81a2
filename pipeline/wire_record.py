"""The ``--record`` file format: one msgpack array ``[wall_time, topic, payload]`` per published message,
written by the publisher and read back for replay and export (`pipeline.recording` reads it as frames).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Union

import msgpack

from .wire_schema import DEFAULT_MAX_MESSAGE_BYTES, WireError


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
