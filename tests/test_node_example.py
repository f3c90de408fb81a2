"""The Node.js example subscriber (examples/node) decodes a replayed recording the way Python does.

Needs node and the example's npm packages: `cd examples/node && npm install` (or `npm ci`).
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import wire
from pipeline.messages import EndOfStream
from stages.publish import PublishConfig, PublishStage

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "examples" / "node"

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules" / "zeromq").is_dir() or not (NODE_DIR / "node_modules" / "@msgpack").is_dir(),
        reason="examples/node has no node_modules: run `npm install --prefix examples/node` first",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def recording(tmp_path_factory, assets_dir) -> Path:
    path = tmp_path_factory.mktemp("node") / "rec.msgpack"
    stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*", record=path, vertices_dtype="int16",
                                       vertices_every=2, stream="cam0"))
    stage.setup()
    try:
        for i in range(4):
            stage.process(wire.synthetic_mesh_frame(2, index=i, smpl=(i == 0), source="cam0"))
        stage.process(EndOfStream("cam0", 4))
    finally:
        stage.close()
    return path


@pytest.mark.parametrize("mode", ["lossless", "latest"])
def test_node_subscriber_decodes_a_replayed_recording(recording, mode):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    replay = subprocess.Popen(
        [sys.executable, "-m", "tools.stream", "replay", str(recording), "--endpoint", endpoint, "--mode", mode,
         "--fast", "--wait", "20", "--hwm", "100"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        node = subprocess.run(
            ["node", "subscriber.js", "--endpoint", endpoint, "--mode", mode, "--json", "--timeout", "20"],
            cwd=NODE_DIR, capture_output=True, text=True, timeout=60,
        )
        _, replay_err = replay.communicate(timeout=30)
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait()
    assert node.returncode == 0, node.stderr
    assert replay.returncode == 0, replay_err
    lines = [json.loads(line) for line in node.stdout.splitlines()]
    expected = [wire.decode(r.payload) for r in wire.read_recording(recording)]
    exp_frames = [m for m in expected if m["kind"] == "frame"]

    kinds = [line["kind"] for line in lines]
    assert kinds[0] == "topology" and kinds[-1] == "end"
    assert lines[0]["faces"] == list(next(m for m in expected if m["kind"] == "topology")["faces"].shape)
    frames = [line for line in lines if line["kind"] == "frame"]
    assert [f["index"] for f in frames] == [m["index"] for m in exp_frames] == [0, 1, 2, 3]
    for got, exp in zip(frames, exp_frames):
        assert got["stream"] == "cam0" and got["seq"] == exp["seq"]
        for gp, ep in zip(got["persons"], exp["persons"]):
            assert gp["track_id"] == ep["track_id"] and gp["state"] == ep["state"]
            np.testing.assert_allclose(gp["cam_t"], ep["cam_t"], rtol=1e-6)
            assert gp["joints2d_sum"] == pytest.approx(float(ep["joints2d"].astype(np.float64).sum()), rel=1e-6)
            assert gp["smpl"] == (ep["betas"] is not None)
            if ep["vertices"] is None:
                assert gp["vertices"] is None
            else:  # int16 vertices, dequantised with their scale in both languages
                assert gp["vertices"] == [6890, 3]
                assert gp["vertices_sum"] == pytest.approx(float(ep["vertices"].astype(np.float64).sum()), abs=1e-2)
    assert [f["persons"][0]["vertices"] is not None for f in frames] == [True, False, True, False]
    end = lines[-1]
    assert end["frames"] == 4 and end["stats"]["gaps"] == 0 and end["stats"]["malformed"] == 0
