"""`batch`: videos through the pipeline as tasks of a real local Ray (2 CPUs), one recording per video."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline import wire
from fastmetro_stream.batch import BatchError, find_videos, is_complete, plan, run_batch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "sample.mp4"
FAST = ["detect.detector=hog", "infer.variant=fastmetro-s-r50", "smooth.offline=none"]


def clip(path: Path, frames: int, start: int = 0) -> Path:
    """The sample's frames start..start+frames as a video of its own (people in every frame)."""
    with av.open(str(SAMPLE)) as src, av.open(str(path), "w") as dst:
        out = dst.add_stream("mpeg4", rate=15)
        out.width, out.height, out.pix_fmt = 640, 480, "yuv420p"
        for i, f in enumerate(src.decode(video=0)):
            if i >= start + frames:
                break
            if i >= start:
                for pkt in out.encode(av.VideoFrame.from_ndarray(f.to_ndarray(format="rgb24"), format="rgb24")):
                    dst.mux(pkt)
        for pkt in out.encode():
            dst.mux(pkt)
    return path


def recorded_indices(rec: Path) -> list[int]:
    msgs = [wire.decode(r.payload) for r in wire.read_recording(rec)]
    assert msgs[-1]["kind"] == "end", "a complete recording ends with the end message"
    return [m["index"] for m in msgs if m["kind"] == "frame"]


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="pip install '.[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_outputs_are_named_by_stem_and_kept_apart_when_stems_collide(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "take1.mp4").write_bytes(b"x")
    (tmp_path / "b" / "take2.MOV").write_bytes(b"x")
    (tmp_path / "b" / "notes.txt").write_text("not a video")
    videos = find_videos([str(tmp_path)])
    assert [v.name for v in videos] == ["take1.mp4", "take1.mp4", "take2.MOV"]
    assert [j.name for j in plan(videos, tmp_path / "out")] == ["a_take1", "b_take1", "b_take2"]
    assert [j.name for j in plan(videos[1:], tmp_path)] == ["take1", "take2"]
    with pytest.raises(BatchError, match="no such file"):
        find_videos([str(tmp_path / "missing.mp4")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchError, match="no videos found"):
        find_videos([str(tmp_path / "empty")])


def test_an_unwritable_output_folder_or_a_wrong_setting_is_one_clear_error_before_ray_starts(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BatchError, match="cannot write"):
        run_batch([str(SAMPLE)], blocker / "out")
    with pytest.raises(BatchError, match="detect.detector"):
        run_batch([str(SAMPLE)], tmp_path / "out", overrides=["detect.detector=nope"])


def test_a_wrong_export_format_is_one_clear_error_before_ray_starts(tmp_path, capsys):
    from fastmetro_stream.cli import main

    assert main(["batch", str(SAMPLE), "-o", str(tmp_path / "out"), "--export", "npz,usd"]) == 2
    assert "error: --export: unknown export format 'usd'" in capsys.readouterr().err


def test_fbx_without_blender_is_one_clear_error_before_ray_starts(tmp_path, capsys, monkeypatch):
    from fastmetro_stream.cli import main

    monkeypatch.setenv("FASTMETRO_BLENDER_PYTHON", str(tmp_path / "no-python"))
    assert main(["batch", str(SAMPLE), "-o", str(tmp_path / "out"), "--export", "npz,fbx"]) == 2
    err = capsys.readouterr().err
    assert "error: --export: " in err and "FASTMETRO_BLENDER_PYTHON" in err and "not a file" in err


@pytest.mark.slow
def test_three_clips_give_three_complete_recordings_and_a_rerun_skips_them(tmp_path, ray_local):
    lengths = {"one": 3, "two": 5, "three": 4}
    videos = [str(clip(tmp_path / f"{n}.mp4", k, start=i * 10)) for i, (n, k) in enumerate(lengths.items())]
    out = tmp_path / "out"
    s = run_batch(videos, out, overrides=FAST, cpus_per_video=1)
    assert s.exit_code == 0 and sorted(s.done) == sorted(lengths) and not s.failed
    for name, n in lengths.items():
        assert recorded_indices(out / f"{name}.msgpack") == list(range(n))
        manifest = json.loads((out / f"{name}.json").read_text())
        assert manifest["frames"] == n and manifest["untrained"] is True
    assert s.frames == sum(lengths.values())
    assert not list(out.glob(".*.part")), "no temporary files left behind"
    again = run_batch(videos, out, overrides=FAST, cpus_per_video=1)
    assert sorted(again.skipped) == sorted(lengths) and not again.done
    # a video changed since: it runs again, the others stay done
    clip(tmp_path / "two.mp4", 2)
    third = run_batch(videos, out, overrides=FAST, cpus_per_video=1)
    assert third.done == ["two"] and sorted(third.skipped) == ["one", "three"]
    assert recorded_indices(out / "two.msgpack") == [0, 1]
    # other settings: every video runs again
    fourth = run_batch(videos, out, overrides=[*FAST, "smooth.method=none"], cpus_per_video=1)
    assert sorted(fourth.done) == sorted(lengths) and not fourth.skipped


@pytest.mark.slow
def test_a_broken_video_is_reported_failed_while_the_others_finish(tmp_path, ray_local):
    good = clip(tmp_path / "good.mp4", 3)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    out = tmp_path / "out"
    s = run_batch([str(good), str(bad)], out, overrides=FAST, cpus_per_video=1)
    assert s.done == ["good"] and list(s.failed) == ["bad"] and s.exit_code == 1
    assert "bad.mp4" in s.failed["bad"] and "Traceback" not in s.failed["bad"]
    assert recorded_indices(out / "good.msgpack") == [0, 1, 2]
    assert not (out / "bad.msgpack").exists() and not is_complete(plan([bad], out)[0])


def _holder_of(pattern: str) -> int | None:
    """The pid of a process that has a file matching pattern open (the publish stage writing the recording)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if Path(os.readlink(f"/proc/{pid}/fd/{fd}")).match(pattern):
                    return int(pid)
        except OSError:
            continue
    return None


@pytest.mark.slow
def test_a_task_killed_mid_way_is_retried_and_its_output_is_complete(tmp_path, ray_local):
    video = clip(tmp_path / "long.mp4", 16)
    out = tmp_path / "out"
    out.mkdir()
    killed: list[int] = []

    def kill_the_worker_once_frames_are_written():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            for part in out.glob(".long.*.part"):
                if part.stat().st_size > 300_000:  # the topology and a few frames are on disk
                    writer = _holder_of(str(part))
                    if writer is not None:
                        worker = int(Path(f"/proc/{writer}/stat").read_text().rsplit(")", 1)[1].split()[1])
                        os.kill(worker, signal.SIGKILL)  # the Ray worker running the task (the supervisor)
                        killed.append(worker)
                        return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_worker_once_frames_are_written, daemon=True)
    killer.start()
    s = run_batch([str(video)], out, overrides=FAST, cpus_per_video=1, retries=2)
    killer.join(5)
    assert killed, "the test never saw the task writing"
    assert s.done == ["long"] and not s.failed
    assert recorded_indices(out / "long.msgpack") == list(range(16))
    assert not list(out.glob(".*.part")), "the killed try's partial file is cleaned up"
    assert np.all([not Path(f"/proc/{pid}").exists() for pid in killed])


@pytest.mark.slow
def test_exports_land_beside_each_recording_and_count_as_its_outputs(tmp_path, ray_local):
    """`--export`: each video's per-track files in OUT/<name>/ (the BVH files read by bvhio); a re-run skips
    complete videos, other formats only export again (the recording kept), and a failed export fails the video."""
    import bvhio

    from fastmetro_stream.batch import settings_key
    from tools.export.exporter import ExportOptions

    videos = [str(clip(tmp_path / "a.mp4", 3)), str(clip(tmp_path / "b.mp4", 2, start=10))]
    out = tmp_path / "out"
    npz_bvh = ExportOptions(formats=("npz", "bvh"))
    s = run_batch(videos, out, overrides=FAST, cpus_per_video=1, export=npz_bvh)
    assert s.exit_code == 0 and sorted(s.done) == ["a", "b"], s.failed
    for name, n in (("a", 3), ("b", 2)):
        index = json.loads((out / name / "tracks.json").read_text())
        assert index["frames"] == n and index["tracks"], "the sample's people are tracked"
        for track in index["tracks"]:
            data = np.load(out / name / f"{track['name']}.npz")
            assert len(data["frame_index"]) == track["frames_seen"]
            bvh = bvhio.readAsHierarchy(str(out / name / f"{track['name']}.bvh"))
            assert len(bvh.layout()) == 22 and len(bvh.Keyframes) == track["last_frame"] - track["first_frame"] + 1
        manifest = json.loads((out / f"{name}.json").read_text())
        assert manifest["exports"]["options"]["formats"] == ["npz", "bvh"]
    assert not list(out.glob(".*.part")) and not list(out.glob(".*.exporting"))

    again = run_batch(videos, out, overrides=FAST, cpus_per_video=1, export=npz_bvh)
    assert sorted(again.skipped) == ["a", "b"] and not again.done
    # other formats: the recordings stay, only the exports are made again
    recorded = (out / "a.msgpack").stat().st_mtime_ns
    gltf = run_batch(videos, out, overrides=FAST, cpus_per_video=1, export=ExportOptions(formats=("gltf",)))
    assert sorted(gltf.done) == ["a", "b"] and gltf.frames == 0
    assert (out / "a.msgpack").stat().st_mtime_ns == recorded
    assert list((out / "a").glob("*.glb")) and not list((out / "a").glob("*.bvh"))
    # an export that fails (the stream asked for is not in the recordings): each video fails, with the reason
    bad = run_batch(videos, out, overrides=FAST, cpus_per_video=1, export=ExportOptions(formats=("npz",), stream="cam9"))
    assert sorted(bad.failed) == ["a", "b"] and bad.exit_code == 1 and not bad.done
    assert "export" in bad.failed["a"] and "holds no stream 'cam9'; its streams: default" in bad.failed["a"], \
        bad.failed
    job = plan([tmp_path / "a.mp4"], out)[0]
    assert is_complete(job, settings_key(None, FAST)) and not is_complete(job, settings_key(None, FAST),
                                                                            ExportOptions(formats=("npz",), stream="cam9"))
