"""Recordings (`run --record FILE`) read back as the subscriber's decoded types (FrameData, PersonData).

    for frame in recording_frames("run.msgpack"):          # one stream's frames, in order
        frame.index, frame.topology.faces, frame.persons[0].vertices
"""
from __future__ import annotations

import os
from typing import Iterator, Optional, Union

from . import wire
from .subscriber import FrameData, Topology, to_message


def recording_frames(path: Union[str, os.PathLike], stream: Optional[str] = None) -> Iterator[FrameData]:
    """The frame messages of one stream of a --record file, in order, each with its stream's topology.
    Frames before the stream's first topology message are skipped (no faces yet). stream None: the first
    stream that has frames. A damaged file raises wire.WireError."""
    topologies: dict[str, Topology] = {}
    for rec in wire.read_recording(path):
        m = wire.decode(rec.payload)
        if m["kind"] == "topology":
            topologies[m["stream"]] = to_message(m, None)
        elif m["kind"] == "frame":
            if stream is None:
                stream = m["stream"]
            if m["stream"] == stream and stream in topologies:
                yield to_message(m, topologies[stream])
