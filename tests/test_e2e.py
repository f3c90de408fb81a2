"""End to end: the real pipeline on the shipped sample, through the command line and over ZeroMQ."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline import wire

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "sample.mp4"
CLI = [sys.executable, "-m", "fastmetro_stream.cli"]


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def sample_frames() -> int:
    with av.open(str(SAMPLE)) as c:
        return sum(1 for _ in c.decode(video=0))


def cli(*args, timeout=900):
    return subprocess.run(CLI + list(args), cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_run_on_the_sample_records_one_message_per_frame_and_writes_the_overlay(tmp_path):
    from tools.render import render_recording

    rec, overlay = tmp_path / "out.msgpack", tmp_path / "overlay.mp4"
    r = cli("run", "--record", str(rec), "--overlay", str(overlay), "--set", f"publish.endpoint={free_endpoint()}",
            "--set", "detect.detector=hog")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "untrained weights" in r.stderr  # said loudly: no checkpoint here
    msgs = [wire.decode(x.payload) for x in wire.read_recording(rec)]
    assert msgs[0]["kind"] == "topology" and msgs[-1]["kind"] == "end"
    frames = [m for m in msgs if m["kind"] == "frame"]
    n = sample_frames()
    assert [f["index"] for f in frames] == list(range(n))
    persons = [p for f in frames for p in f["persons"]]
    assert len(persons) >= n // 2, "the sample's people should be found in most frames"
    for p in persons:
        assert p["vertices"].shape == (6890, 3) and np.isfinite(p["vertices"]).all()
        assert p["joints3d"].shape == (14, 3) and p["joints2d"].shape == (14, 2)
    assert {"decode", "detect", "infer", "smooth"} <= set(frames[0]["times"])
    assert all(f["focal"] == pytest.approx(800.0) for f in frames)  # the default: the 640x480 frame's diagonal
    # the overlay written while running: every frame, the same pictures as `render` of the recording
    # (offline with the RTS smoother: the frame ring grew so that frames could wait for publishing)
    after = tmp_path / "after.mp4"
    render_recording(rec, SAMPLE, after, progress=False)
    with av.open(str(overlay)) as a, av.open(str(after)) as b:
        live = [f.to_ndarray(format="rgb24") for f in a.decode(video=0)]
        later = [f.to_ndarray(format="rgb24") for f in b.decode(video=0)]
    assert len(live) == len(later) == n and live[0].shape == (480, 640, 3)
    diff = [float(np.abs(x.astype(int) - y).mean()) for x, y in zip(live, later)]
    assert max(diff) < 0.5, {i: round(d, 2) for i, d in enumerate(diff) if d >= 0.5}  # frame: mean |difference|


@pytest.mark.slow
def test_a_subscriber_receives_what_is_recorded(tmp_path):
    from fastmetro_stream.api import run
    from fastmetro_stream.config import load_config
    from pipeline.subscriber import Subscriber

    endpoint = free_endpoint()
    rec = tmp_path / "out.msgpack"
    config = load_config(None, [f"publish.endpoint={endpoint}", "publish.mode=lossless", f"publish.record={rec}",
                                "detect.detector=hog", "progress=false", "decode.max_frames=20"])
    received = []
    with Subscriber(endpoint, mode="lossless") as sub:
        t = threading.Thread(target=lambda: received.extend(sub.frames(idle_timeout_s=300)))
        t.start()
        summary = run(config)
        t.join(timeout=120)
    assert summary.exit_code == 0
    recorded = [m for m in (wire.decode(x.payload) for x in wire.read_recording(rec)) if m["kind"] == "frame"]
    assert len(received) == len(recorded) == 20 == summary.frames
    for got, want in zip(received, recorded):
        assert got.index == want["index"] and len(got.persons) == len(want["persons"])
        for gp, wp in zip(got.persons, want["persons"]):
            assert gp.track_id == wp["track_id"]
            assert np.array_equal(gp.vertices, wp["vertices"])


def test_a_bad_setting_is_named():
    r = cli("run", "--set", "detect.detectr=hog")
    assert r.returncode == 2
    assert "detect.detectr" in r.stderr and "unknown setting" in r.stderr


@pytest.mark.slow
def test_a_missing_source_fails_clearly(tmp_path):
    r = cli("run", "--source", str(tmp_path / "nope.mp4"), "--set", f"publish.endpoint={free_endpoint()}",
            "--set", "detect.detector=hog")
    assert r.returncode != 0
    assert "nope.mp4" in r.stderr


@pytest.mark.slow
def test_run_export_writes_per_track_files_when_the_run_ends(tmp_path):
    import json

    out = tmp_path / "tracks"
    r = cli("run", "--export", str(out), "--export-format", "npz,bvh,gltf", "--set", "decode.max_frames=8",
            "--set", "detect.detector=hog", "--set", f"publish.endpoint={free_endpoint()}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "run.msgpack").is_file()  # no --record: the run records into the export directory
    index = json.loads((out / "tracks.json").read_text())
    assert index["complete"] and index["frames"] == 8 and index["tracks"]
    for t in index["tracks"]:
        assert t["files"] == [f"{t['name']}.npz", f"{t['name']}.bvh", f"{t['name']}.glb"]
        assert all((out / f).is_file() for f in t["files"])
    assert f"export: {len(index['tracks'])} tracks" in r.stdout


@pytest.mark.slow
def test_run_with_hands_gives_persons_hands_and_the_recording_decodes_alone(tmp_path):
    rec, overlay = tmp_path / "hands.msgpack", tmp_path / "hands.mp4"
    r = cli("run", "--record", str(rec), "--overlay", str(overlay), "--set", f"publish.endpoint={free_endpoint()}",
            "--set", "detect.detector=hog", "--set", "infer.hands=true", "--set", "decode.max_frames=6",
            "--set", "progress=false")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "hands run UNTRAINED weights" in r.stderr  # said loudly, like the body's
    msgs = [wire.decode(x.payload) for x in wire.read_recording(rec)]  # the wire module alone
    frames = [m for m in msgs if m["kind"] == "frame"]
    assert [f["index"] for f in frames] == list(range(6))
    first = next(i for i, m in enumerate(msgs) if m["kind"] == "frame" and any(p["hands"] for p in m["persons"]))
    topology = [m for m in msgs[:first] if m["kind"] == "topology"][-1]  # the topology before it knows hands
    assert topology["hand"]["faces_right"].shape == (1538, 3) and topology["hand"]["num_vertices"] == 778
    assert len(topology["hand"]["joint_names"]) == 21
    hands = 0
    for f in frames:
        for p in f["persons"]:
            # every side has a hand or the reason it has none
            assert set(p["hands"]) | set(p["hand_skips"]) == {"left", "right"}, p["hand_skips"]
            for side, h in p["hands"].items():
                assert h["vertices"].shape == (778, 3) and h["joints3d"].shape == (21, 3)
                assert h["cam"].shape == (3,) and h["cam_t"].shape == (3,) and np.isfinite(h["vertices"]).all()
                hands += 1
    assert hands > 0
    with av.open(str(overlay)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6


@pytest.mark.slow
def test_hands_find_their_faces_where_infer_hand_assets_dir_says(tmp_path, mano_dir):
    """Only infer.hand_assets_dir names the MANO files (no FASTMETRO_MANO_ASSETS, an empty cache, no
    download): infer's hands, publish's topology and the overlay all read them there."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "FASTMETRO_MANO_ASSETS"}
    # an empty user cache, and a download that cannot happen (a proxy on a closed local port)
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    rec, overlay = tmp_path / "hands.msgpack", tmp_path / "hands.mp4"
    r = subprocess.run(CLI + ["run", "--record", str(rec), "--overlay", str(overlay),
                              "--set", f"publish.endpoint={free_endpoint()}", "--set", "detect.detector=hog",
                              "--set", "infer.hands=true", "--set", f"infer.hand_assets_dir={mano_dir}",
                              "--set", "decode.max_frames=3", "--set", "progress=false"],
                       cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    msgs = [wire.decode(x.payload) for x in wire.read_recording(rec)]
    assert sum(1 for p in msgs if p["kind"] == "frame" for q in p["persons"] if q["hands"]) > 0
    topology = [m for m in msgs if m["kind"] == "topology"][-1]
    assert topology["hand"]["faces_right"].shape == (1538, 3) and topology["hand"]["faces_left"].shape == (1538, 3)
    with av.open(str(overlay)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 3
