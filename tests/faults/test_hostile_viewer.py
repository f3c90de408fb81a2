"""The viewer (`view`) fed by a hostile publisher: per-stream and per-track state stay bounded, and
publisher text reaches the panel without markup."""
from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

pytest.importorskip("viser", reason="the viewer needs viser")

from conftest import free_port  # noqa: E402
from pipeline import wire  # noqa: E402
from pipeline.messages import EndOfStream  # noqa: E402
from tools.viewer import MeshViewer  # noqa: E402

FACES = np.array([[0, 1, 2]], np.int32)


def test_fake_streams_tracks_and_markup_stay_bounded():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    pub.bind(endpoint)
    try:
        with MeshViewer(endpoint, port=0) as v:
            assert pub.poll(10000), "the viewer never subscribed"
            pub.recv()
            for i in range(400):
                s = f"fake{i}"
                pub.send_multipart([wire.topic(s, "topology"), wire.encode_topology(s, 0, FACES, ["j"] * 14, ["h"] * 17)])
            for k in range(30):  # 30 frames of 20 persons each, new track ids every frame, never lost
                mf = wire.synthetic_mesh_frame(20, index=k)
                for j, pm in enumerate(mf.persons):
                    pm.person.track_id = 1000 * k + j
                pub.send_multipart([b"fake399/frame", wire.encode_frame(mf, "fake399", k)])
            for k in range(100):  # frames of many streams (bounded per-stream state in the subscriber and here)
                s = f"fake{300 + k}"
                pub.send_multipart([wire.topic(s, "frame"), wire.encode_frame(wire.synthetic_mesh_frame(1), s, 0)])
            evil = "x`<img src=x onerror=alert(1)>`*[link](javascript:e)*"  # no "/": stream ids hold none
            pub.send_multipart([wire.topic(evil, "topology"), wire.encode_topology(evil, 0, FACES, ["j"] * 14, ["h"] * 17)])
            pub.send_multipart([wire.topic(evil, "frame"), wire.encode_frame(wire.synthetic_mesh_frame(1), evil, 0)])
            pub.send_multipart([wire.topic(evil, "end"), wire.encode_end(EndOfStream(evil, 1, evil), evil, 1)])
            deadline = time.monotonic() + 20
            while v.end is None and time.monotonic() < deadline:
                v.step(0.2)
            assert v.end is not None
            assert len(v._faces) <= v.sub.max_streams
            assert len(v.streams) <= v.MAX_STREAMS
            assert all(len(st.last_vertices) <= v.MAX_TRACKS + 20 for st in v.streams.values())
            assert v.streams[evil].ended is not None  # its name is on the streams line, as plain text
            text = v._status_text()
            assert "<" not in text and "[" not in text, text
            # code spans: the endpoint's and one per stream named (at most 8); none opened by a stream id
            assert text.count("`") == 2 + 2 * min(8, len(v.streams)), text
    finally:
        pub.close(0)
        ctx.term()
