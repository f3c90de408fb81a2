"""`dropped` on the wire is the number of frames of the source lost since the previous frame message, in
order, however the runtime's live queues spread their drop counts; the end message's `frames` is `seq`
plus the sum of `dropped`, however the run ended."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, child_env, free_port
from pipeline import wire
from pipeline.messages import EndOfStream
from pipeline.stage import StageContext, run_stage
from stages.publish import PublishConfig, PublishStage


def _frames(positions, runtime_dropped):
    out = []
    for pos, d in zip(positions, runtime_dropped):
        mf = wire.synthetic_mesh_frame(0, index=pos)
        mf.frame.position, mf.frame.dropped = pos, d
        out.append(mf)
    return out


def _published(rec):
    msgs = [wire.decode(r.payload) for r in wire.read_recording(rec)]
    return [m for m in msgs if m["kind"] == "frame"], [m for m in msgs if m["kind"] == "end"]


def test_dropped_counts_the_frames_between_two_frame_messages(tmp_path, assets_dir):
    # what a 4-deep live queue gave for frames 0..59 where 1..55 were pushed out: each drop went to the
    # frame that pushed it out, 4 places on, so the last four carried 13, 14, 14, 14
    rec = tmp_path / "run.msgpack"
    stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*", record=rec),
                         StageContext(assets_dir=str(assets_dir)))
    run_stage(stage, _frames([0, 56, 57, 58, 59], [0, 13, 14, 14, 14]) + [EndOfStream("default", 5, "end of stream")])
    frames, ends = _published(rec)
    assert [m["dropped"] for m in frames] == [0, 55, 0, 0, 0]
    assert ends[0]["frames"] == 60 == ends[0]["seq"] + sum(m["dropped"] for m in frames)


def test_the_end_counts_the_same_after_a_stop(tmp_path, assets_dir):
    rec = tmp_path / "run.msgpack"
    stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*", record=rec),
                         StageContext(assets_dir=str(assets_dir)))
    stage.setup()
    for mf in _frames([3, 4, 9], [3, 0, 4]):
        stage.process(mf)
    stage.stop_reason = "stopped"  # the stop timeout: no EndOfStream reaches publish
    stage.close()
    frames, ends = _published(rec)
    assert [m["dropped"] for m in frames] == [3, 0, 4]
    assert ends[0]["reason"] == "stopped" and ends[0]["frames"] == 10 == ends[0]["seq"] + 7


@pytest.mark.slow
def test_a_live_run_reports_each_gap_once(tmp_path):
    rec = tmp_path / "live.msgpack"
    cmd = [sys.executable, "-m", "fastmetro_stream.cli", "run", "--source", str(REPO / "samples" / "sample.mp4"),
           "--set", "decode.realtime=true", "--set", "decode.max_frames=40", "--set", "detect.detector=hog",
           "--set", "detect.max_persons=1", "--set", f"publish.endpoint=tcp://127.0.0.1:{free_port()}",
           "--record", str(rec)]
    p = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert p.returncode == 0, p.stderr[-2000:]
    frames, ends = _published(rec)
    last = -1
    for m in frames:  # a file's index counts every frame decoded: the gap is exactly what was dropped
        assert m["dropped"] == m["index"] - last - 1, [(f["index"], f["dropped"]) for f in frames]
        last = m["index"]
    assert ends[0]["frames"] == ends[0]["seq"] + sum(m["dropped"] for m in frames)
