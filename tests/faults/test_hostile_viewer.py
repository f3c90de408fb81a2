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
            evil = "x`<img src=x onerror=alert(1)>`*[link](javascript:e)*"  # no "/": stream ids hold none
            pub.send_multipart([wire.topic(evil, "topology"), wire.encode_topology(evil, 0, FACES, ["j"] * 14, ["h"] * 17)])
            pub.send_multipart([wire.topic(evil, "end"), wire.encode_end(EndOfStream(evil, 1, evil), evil, 0)])
            deadline = time.monotonic() + 20
            while v.end is None and time.monotonic() < deadline:
                v.step(0.2)
            assert v.end is not None
            assert len(v._faces) <= v.sub.max_streams
            assert len(v._last_vertices) <= v.MAX_TRACKS + 20
            text = v._status_text()
            assert "<" not in text and "[" not in text and text.count("`") == 2, text
    finally:
        pub.close(0)
        ctx.term()
