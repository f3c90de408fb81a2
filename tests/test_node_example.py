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


def make_recording(path: Path, stream: str) -> Path:
    """4 frames of 2 persons (the same track ids in every stream) as the publish stage records them."""
    stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*", record=path, vertices_dtype="int16",
                                       vertices_every=2, stream=stream))
    stage.setup()
    try:
        for i in range(4):
            stage.process(wire.synthetic_mesh_frame(2, index=i, smpl=(i == 0), source=stream))
        stage.process(EndOfStream(stream, 4))
    finally:
        stage.close()
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory, assets_dir) -> Path:
    return make_recording(tmp_path_factory.mktemp("node") / "rec.msgpack", "cam0")


def replay_process(recording: Path, endpoint: str, mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tools.stream", "replay", str(recording), "--endpoint", endpoint, "--mode", mode,
         "--fast", "--wait", "20", "--hwm", "100"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("mode", ["lossless", "latest"])
def test_node_subscriber_decodes_a_replayed_recording(recording, mode):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    replay = replay_process(recording, endpoint, mode)
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


def test_node_subscriber_keys_persons_by_stream_and_track_across_publishers(tmp_path, assets_dir):
    """Two publishers (cam0, cam1), the same track ids in both, into one Node subscriber with two --endpoint:
    every person is (stream, track), counted on its own, and the subscriber stops after both ends."""
    recs = [make_recording(tmp_path / f"{s}.msgpack", s) for s in ("cam0", "cam1")]
    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in recs]
    replays = [replay_process(rec, e, "lossless") for rec, e in zip(recs, endpoints)]
    try:
        node = subprocess.run(
            ["node", "subscriber.js", "--endpoint", endpoints[0], "--endpoint", endpoints[1], "--mode", "lossless",
             "--json", "--timeout", "20"],
            cwd=NODE_DIR, capture_output=True, text=True, timeout=60,
        )
        errors = [r.communicate(timeout=30)[1] for r in replays]
    finally:
        for r in replays:
            if r.poll() is None:
                r.kill()
                r.wait()
    assert node.returncode == 0, node.stderr
    assert all(r.returncode == 0 for r in replays), errors
    lines = [json.loads(line) for line in node.stdout.splitlines()]
    assert sorted(line["stream"] for line in lines if line["kind"] == "end") == ["cam0", "cam1"]
    frames = [line for line in lines if line["kind"] == "frame"]
    tracks = {p["track_id"] for f in frames for p in f["persons"]}
    assert len(tracks) == 2 and len(frames) == 8
    for stream in ("cam0", "cam1"):
        mine = [f for f in frames if f["stream"] == stream]
        assert [f["index"] for f in mine] == [0, 1, 2, 3]
        for k, f in enumerate(mine):
            for p in f["persons"]:
                # each stream's track counted on its own: keyed by track id alone, the counts would mix
                assert p["key"] == [stream, p["track_id"]] and p["frames_seen"] == k + 1 and p["first_index"] == 0
