"""Export as an attack surface: a recording (or a stream id) made to hurt the exporter gets one line and
bounded, complete output. A frame index jumping by millions, 60 tracks under a small open-file limit, ids
like "..", a full disk, a track id twice in one frame, timestamps giving a 0 s BVH frame time, hands the
files do not hold, a stream the recording lacks, a VMC host that does not resolve."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastmetro_stream.cli import main
from pipeline import wire
from pipeline.messages import EndOfStream, HandMesh

REPO = Path(__file__).resolve().parents[2]
FACES = np.array([[0, 1, 2]], np.int32)


def _record(path: Path, frames, stream: str = "s", with_vertices: bool = True) -> Path:
    """A recording of MeshFrames (their index and pts as given), with its topology and end."""
    w = wire.RecordWriter(path)
    w.write(0.0, wire.topic(stream, "topology"), wire.encode_topology(stream, 0, FACES, ["j"] * 14, ["h"] * 17))
    for seq, mf in enumerate(frames):
        w.write(1.0 + seq, wire.topic(stream, "frame"), wire.encode_frame(mf, stream, seq, with_vertices=with_vertices))
    w.write(9.0, wire.topic(stream, "end"), wire.encode_end(EndOfStream(stream, len(frames)), stream, len(frames)))
    w.close()
    return path


def _frame(index: int, persons: int = 1, pts=None):
    mf = wire.synthetic_mesh_frame(persons, index=index)
    mf.frame.pts = index / 30.0 if pts is None else pts
    return mf


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _export_in_child(args: list, limits: dict) -> subprocess.CompletedProcess:
    """`fastmetro-stream export ...` in a child process under resource limits (RLIMIT_* -> soft = hard)."""
    def preexec():
        for name, value in limits.items():
            resource.setrlimit(getattr(resource, name), (value, value))

    code = "import sys; from fastmetro_stream.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "export", *args], cwd=REPO, capture_output=True, text=True,
                          preexec_fn=preexec, timeout=120)


def test_a_frame_index_jumping_by_millions_gives_no_huge_bvh(tmp_path, capsys):
    rec = _record(tmp_path / "run.msgpack", [_frame(0), _frame(1), _frame(200_000)])
    out = tmp_path / "out"
    assert main(["export", str(rec), "-o", str(out), "--format", "npz,bvh,gltf"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "track_0001" in warnings[0] and "no BVH" in warnings[0], err
    assert not (out / "track_0001.bvh").exists()
    assert (out / "track_0001.glb").is_file() and (out / "track_0001.npz").is_file()  # bounded by the frames seen
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) < 2_000_000
    track = json.loads((out / "tracks.json").read_text())["tracks"][0]
    assert "no BVH" in track["note"] and track["files"] == ["track_0001.npz", "track_0001.glb"]


def test_sixty_tracks_export_under_a_small_open_file_limit(tmp_path):
    rec = _record(tmp_path / "run.msgpack", [_frame(i, persons=60) for i in range(3)], with_vertices=False)
    out = tmp_path / "out"
    r = _export_in_child([str(rec), "-o", str(out), "--format", "npz"], {"RLIMIT_NOFILE": 128})
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("track_*.npz"))) == 60
    assert all(len(np.load(p)["frame_index"]) == 3 for p in out.glob("track_*.npz"))


@pytest.mark.parametrize("stream", ["..", ".", "../up", "a\\b", "C:", "~", " x", "%2E.", "\u00e9", "x" * 256])
def test_a_stream_id_is_never_a_path(tmp_path, stream):
    from stages.overlay import overlay_paths
    from tools.export.cli import stream_jobs
    from tools.export.exporter import ExportOptions

    stream = stream.replace("/", "_")  # ids never hold "/" (refused before the run); everything else may come
    jobs = stream_jobs(tmp_path / "DIR", ExportOptions(), [stream, "ok"])
    for folder, options in jobs:
        assert folder.parent == tmp_path / "DIR" and folder.name not in (".", "..", "") and len(folder.name) <= 120
        assert (folder / "x").resolve().parent.parent == (tmp_path / "DIR").resolve()
    assert [o.stream for _, o in jobs] == [stream, "ok"] and jobs[0][0] != jobs[1][0]
    videos = overlay_paths(tmp_path / "out.mp4", [stream, "ok"])
    assert all(p.parent == tmp_path and p.suffix == ".mp4" for p in videos.values())
    assert videos[stream] != videos["ok"]


def test_distinct_stream_ids_get_distinct_file_names():
    ids = ["..", "%2E.", ".", "%2E", "a b", "a%20b", "a_b", "é", "%C3%A9", "x" * 256, "x" * 255 + "y"]
    assert len({wire.stream_file_name(s) for s in ids}) == len(ids)


def test_a_full_disk_gives_one_line_and_leaves_nothing_half_written(tmp_path):
    rec = _record(tmp_path / "run.msgpack", [_frame(i) for i in range(40)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("a file of the user's")
    # a file size limit of 2 MB stands in for a full disk: the export needs ~3.3 MB of vertices
    r = _export_in_child([str(rec), "-o", str(out), "--format", "npz,bvh", "--vertices", "float32"],
                         {"RLIMIT_FSIZE": 2_000_000})
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: export:") and "Traceback" not in r.stderr, r.stderr
    assert _files(out) == ["mine.txt"]  # no scratch folder, no half-written npz, no tracks.json


def test_a_track_id_twice_in_one_frame_skips_that_frame_with_one_line(tmp_path, capsys):
    frames = [_frame(i, persons=2) for i in range(6)]
    for mf in frames:
        mf.persons[1].person.track_id = 2
    frames[3].persons[1].person.track_id = 1  # frame 3 names track 1 twice
    rec = _record(tmp_path / "run.msgpack", frames)
    out = tmp_path / "out"
    assert main(["export", str(rec), "-o", str(out), "--format", "npz,bvh,gltf"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "skipped 1 record" in warnings[0] and "twice" in warnings[0], err
    z = np.load(out / "track_0001.npz")
    assert z["frame_index"].tolist() == [0, 1, 2, 4, 5]
    import pygltflib

    assert len(pygltflib.GLTF2().load(str(out / "track_0001.glb")).animations) == 1


def test_absurd_timestamps_never_give_a_zero_bvh_frame_time(tmp_path):
    rec = _record(tmp_path / "run.msgpack", [_frame(i, pts=i * 1e-9) for i in range(5)])
    out = tmp_path / "out"
    assert main(["export", str(rec), "-o", str(out), "--format", "bvh"]) == 0
    frame_time = next(line for line in (out / "track_0001.bvh").read_text().splitlines() if line.startswith("Frame Time"))
    assert float(frame_time.split(":")[1]) == pytest.approx(1 / 30)
    index = json.loads((out / "tracks.json").read_text())
    assert index["tracks"][0]["fps"] == 30.0 and "frames per second" in index["tracks"][0]["note"]


def test_hands_the_files_do_not_hold_are_said(tmp_path, capsys):
    frames = [_frame(i) for i in range(4)]
    for mf in frames[1:3]:
        z = np.zeros(3, np.float32)
        mf.persons[0].hands["left"] = HandMesh("left", z + 1, mf.persons[0].cam_t + [0.3, 0, 0],
                                               np.zeros((21, 3), np.float32), np.zeros((778, 3), np.float32),
                                               (3.0, 4.0), 20.0)
    rec = _record(tmp_path / "run.msgpack", frames)
    out = tmp_path / "out"
    assert main(["export", str(rec), "-o", str(out), "--format", "npz"]) == 0
    err = capsys.readouterr().err
    assert any(line.startswith("warning:") and "2 person-frames carry hands" in line for line in err.splitlines()), err
    assert json.loads((out / "tracks.json").read_text())["hands_dropped"] == 2


def test_a_stream_the_recording_lacks_is_named_with_the_ones_it_holds(tmp_path, capsys):
    rec = tmp_path / "run.msgpack"
    w = wire.RecordWriter(rec)
    for stream in ("door", "desk"):
        w.write(0.0, wire.topic(stream, "topology"), wire.encode_topology(stream, 0, FACES, ["j"] * 14, ["h"] * 17))
        w.write(1.0, wire.topic(stream, "frame"), wire.encode_frame(_frame(0), stream, 0))
    w.close()
    assert main(["export", str(rec), "-o", str(tmp_path / "out"), "--stream", "nosuch"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'nosuch'" in err[0] and "desk, door" in err[0], err


def test_vmc_to_a_host_that_does_not_resolve_is_one_line(capsys):
    assert main(["vmc", "--host", "nonexistent.invalid", "--frames", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: vmc:") and "nonexistent.invalid" in err[0], err


def test_the_scratch_store_keeps_no_file_open(tmp_path):
    from tools.export.tracks import TrackStore

    store = TrackStore(tmp_path / "t")
    for i in range(10):
        store.append("a", np.float32(i))
        store.append("b", np.arange(3) + i)
    fds = len(list(Path("/proc/self/fd").iterdir()))
    stores = [TrackStore(tmp_path / f"t{k}") for k in range(50)]
    for s in stores:
        for name in "abcdefghij":
            s.append(name, np.float32(1))
    assert len(list(Path("/proc/self/fd").iterdir())) == fds
    assert store.array("a").tolist() == list(range(10)) and store.array("b")[9].tolist() == [9, 10, 11]


def test_the_bvh_writer_refuses_a_rate_whose_frame_time_would_read_0(tmp_path):
    from tools.export.bvh import write_bvh

    args = (["Hips"], [-1], np.zeros((1, 3)), np.tile([0.0, 0, 0, 1], (2, 1, 1)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="fps"):
        write_bvh(tmp_path / "a.bvh", *args, fps=1e9)
    write_bvh(tmp_path / "b.bvh", *args, fps=1e4)
    assert "Frame Time: 0.00010000" in (tmp_path / "b.bvh").read_text()


@pytest.mark.slow
def test_a_run_with_a_source_named_dot_dot_exports_inside_its_folder(tmp_path):
    from tests.test_e2e import SAMPLE, cli, free_endpoint

    out = tmp_path / "runs" / "DIR"
    r = cli("run", "--source", f"..={SAMPLE}", "--source", f"ok={SAMPLE}", "--record", str(tmp_path / "run.msgpack"),
            "--set", "decode.max_frames=2", "--set", "detect.detector=hog", "--set", "detect.max_persons=1",
            "--set", f"publish.endpoint={free_endpoint()}", "--export", str(out), "--export-format", "npz",
            "--overlay", str(tmp_path / "o.mp4"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["DIR"]  # nothing in DIR's parent
    assert sorted(p.name for p in out.iterdir()) == ["%2E%2E", "ok"]
    assert json.loads((out / "%2E%2E" / "tracks.json").read_text())["frames"] == 2
    assert (tmp_path / "o.%2E%2E.mp4").is_file() and (tmp_path / "o.ok.mp4").is_file()
