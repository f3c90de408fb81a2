"""End to end: two sources in one run (the shipped sample video and an image folder), through the command
line; the recording holds every frame of each under its own stream id, with its own track ids, and the
overlay gives one video per source."""
from __future__ import annotations

import json

import av
import cv2
import pytest

from pipeline import wire
from pipeline.recording import recording_frames
from tests.test_e2e import SAMPLE, cli, free_endpoint

VIDEO_FRAMES, IMAGES = 4, 3


@pytest.mark.slow
def test_two_sources_in_one_run_each_recorded_as_its_own_stream(tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    with av.open(str(SAMPLE)) as c:  # later frames of the sample, mirrored: people elsewhere in the picture
        for i, f in enumerate(c.decode(video=0)):
            if 10 <= i < 10 + IMAGES:
                cv2.imwrite(str(pics / f"{i:04d}.png"), cv2.flip(f.to_ndarray(format="bgr24"), 1))
            if i >= 10 + IMAGES:
                break
    rec = tmp_path / "run.msgpack"
    r = cli("run", "--source", f"video={SAMPLE}", "--source", str(pics), "--record", str(rec),
            "--set", f"decode.max_frames={VIDEO_FRAMES}", "--set", "detect.detector=hog",
            "--set", "detect.max_persons=16", "--set", f"publish.endpoint={free_endpoint()}",
            "--export", str(tmp_path / "tracks"), "--export-format", "npz", "--overlay", str(tmp_path / "o.mp4"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"stream video: {VIDEO_FRAMES} frames published, 0 dropped" in r.stderr
    assert f"stream cam1: {IMAGES} frames published, 0 dropped" in r.stderr  # the second --source: cam1

    msgs = [wire.decode(x.payload) for x in wire.read_recording(rec)]
    assert {m["stream"] for m in msgs} == {"video", "cam1"}
    for stream, n in (("video", VIDEO_FRAMES), ("cam1", IMAGES)):
        mine = [m for m in msgs if m["stream"] == stream]
        assert mine[0]["kind"] == "topology"
        frames = [m for m in mine if m["kind"] == "frame"]
        assert [f["index"] for f in frames] == list(range(n)) and [f["seq"] for f in frames] == list(range(n))
        ends = [m for m in mine if m["kind"] == "end"]
        assert len(ends) == 1 and mine[-1] is ends[0] and ends[0]["frames"] == n and ends[0]["seq"] == n
        assert ends[0]["reason"] == "end of stream"
        # each source's tracker numbers its own people from 1: the other source's do not shift them (every
        # person of a tracker's first frame is reported, max_persons being above the people in the picture)
        first = sorted(p["track_id"] for p in frames[0]["persons"])
        assert first and first == list(range(1, len(first) + 1)), (stream, first)
        # and the recording reads back per stream, and --export wrote each stream's tracks apart
        assert [f.index for f in recording_frames(rec, stream=stream)] == list(range(n))
        index = json.loads((tmp_path / "tracks" / stream / "tracks.json").read_text())
        assert index["complete"] and index["frames"] == n and index["tracks"]
        with av.open(str(tmp_path / f"o.{stream}.mp4")) as c:  # --overlay: one video per source
            assert sum(1 for _ in c.decode(video=0)) == n
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.slow
def test_ctrl_c_drains_a_live_run_of_two_sources_and_ends_both_streams(tmp_path):
    import signal
    import subprocess
    import time

    from tests.test_e2e import CLI, REPO

    for name in ("a", "b"):  # two looping image folders paced as cameras: live, never ending on their own
        d = tmp_path / name
        d.mkdir()
        with av.open(str(SAMPLE)) as c:
            for i, f in enumerate(c.decode(video=0)):
                cv2.imwrite(str(d / f"{i:04d}.png"), f.to_ndarray(format="bgr24"))
                if i >= 3:
                    break
    rec = tmp_path / "run.msgpack"
    proc = subprocess.Popen(CLI + ["run", "--source", f"a={tmp_path / 'a'}", "--source", f"b={tmp_path / 'b'}",
                                   "--record", str(rec), "--set", "decode.loop=true", "--set", "decode.realtime=true",
                                   "--set", "decode.image_fps=5", "--set", "detect.detector=hog",
                                   "--set", "detect.max_persons=2", "--set", f"publish.endpoint={free_endpoint()}",
                                   # what is in flight drains through untrained networks on a busy CPU
                                   "--set", "stop_timeout_s=300", "--set", "queue_size=1"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        seen: set = set()
        while seen != {"a", "b"} and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1.0)
            if rec.is_file():
                try:
                    seen = {wire.decode(x.payload)["stream"] for x in wire.read_recording(rec)
                            if x.topic.endswith(b"/frame")}
                except wire.WireError:  # a record being written
                    pass
        assert seen == {"a", "b"}, proc.stderr.read() if proc.poll() is not None else "no frames of both"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    msgs = [wire.decode(x.payload) for x in wire.read_recording(rec)]
    ends = {m["stream"]: m for m in msgs if m["kind"] == "end"}
    assert set(ends) == {"a", "b"} and all(e["reason"] == "stopped" for e in ends.values())
    for sid in ("a", "b"):
        frames = [m for m in msgs if m["kind"] == "frame" and m["stream"] == sid]
        assert ends[sid]["seq"] == len(frames) and [f["seq"] for f in frames] == list(range(len(frames)))
