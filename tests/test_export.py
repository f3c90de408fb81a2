"""`fastmetro-stream export`: per-track files from a recording (tools/export/). The npz round trip, gaps and
track ends, truncated and damaged recordings, one-line errors, OBJ frames, and memory that does not grow
with the recording's length. The consumers' side (Blender, glTF validator, bvhio): test_export_consumers.py.
"""
from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from export_helpers import FPS, LAYOUT, mesh_faces, write_layout_recording
from pipeline import wire
from fastmetro_stream.cli import main
from tools.export import ExportError, ExportOptions, export_recording

FACES = mesh_faces()


def expected_tracks(frames, vertices_every: int = 1) -> dict:
    """track name -> list of (frame index, PersonMesh, vertices sent?) from the MeshFrames written."""
    out, current, uses = {}, {}, {}
    for seq, mf in enumerate(frames):
        for pm in mf.persons:
            tid = pm.person.track_id
            if tid not in current:
                uses[tid] = uses.get(tid, 0) + 1
                current[tid] = f"track_{tid:04d}" + (f"-{uses[tid]}" if uses[tid] > 1 else "")
                out[current[tid]] = []
            out[current[tid]].append((mf.frame.index, pm, vertices_every > 0 and seq % vertices_every == 0))
        for tid in mf.lost:
            current.pop(tid, None)
    return out


def test_npz_round_trip_gives_back_what_the_recording_held(tmp_path):
    rec = tmp_path / "run.msgpack"
    frames = write_layout_recording(rec, FACES, vertices_every=2)
    summary = export_recording(rec, tmp_path / "out", ExportOptions(formats=("npz",), vertices="float32"))
    assert summary.note is None and summary.frames == len(LAYOUT)
    expected = expected_tracks(frames, vertices_every=2)
    assert sorted(t["name"] for t in summary.tracks) == sorted(expected) == [
        "track_0001", "track_0001-2", "track_0002", "track_0003"]
    for name, rows in expected.items():
        z = np.load(tmp_path / "out" / f"{name}.npz")
        np.testing.assert_array_equal(z["frame_index"], [r[0] for r in rows])
        np.testing.assert_array_equal(z["timestamp"], [r[0] / FPS for r in rows])
        assert z["state"].tolist() == [r[1].person.state for r in rows]
        np.testing.assert_array_equal(z["coasting"], [r[1].person.state == "coasting" for r in rows])
        for key in ("cam", "cam_t", "joints3d", "joints2d", "joints_h36m", "rotmat", "betas"):
            np.testing.assert_array_equal(z[key], np.stack([getattr(r[1], key) for r in rows]), err_msg=key)
        np.testing.assert_array_equal(z["box"], np.float32([r[1].person.box for r in rows]))
        np.testing.assert_array_equal(z["score"], [r[1].person.score for r in rows])
        sent = [r for r in rows if r[2]]
        np.testing.assert_array_equal(z["vertices_frame"], [r[0] for r in sent])
        np.testing.assert_array_equal(z["vertices"], np.stack([r[1].vertices for r in sent]))
        np.testing.assert_array_equal(z["faces"], FACES)
        assert float(z["fps"]) == pytest.approx(FPS)
        assert z["joint_names"].tolist() == [f"j{i}" for i in range(14)]
    # track 2 was not seen at frames 6-7: marked, not filled
    z = np.load(tmp_path / "out" / "track_0002.npz")
    assert z["gaps"].tolist() == [[6, 7]] and 6 not in z["frame_index"]
    index = json.loads((tmp_path / "out" / "tracks.json").read_text())
    by_name = {t["name"]: t for t in index["tracks"]}
    assert by_name["track_0001"]["end"] == "lost at frame 9" and by_name["track_0001"]["frames_coasting"] == 2
    assert by_name["track_0002"]["end"] == "the recording ended" and by_name["track_0002"]["gaps"] == [[6, 7]]
    assert index["complete"] and index["fps"] == pytest.approx(FPS)


def test_float16_vertices_and_no_vertices(tmp_path):
    rec = tmp_path / "run.msgpack"
    frames = write_layout_recording(rec, FACES)
    export_recording(rec, tmp_path / "h", ExportOptions(formats=("npz",), vertices="float16"))
    z = np.load(tmp_path / "h" / "track_0003.npz")
    want = np.stack([pm.vertices for mf in frames for pm in mf.persons if pm.person.track_id == 3])
    assert z["vertices"].dtype == np.float16
    np.testing.assert_allclose(z["vertices"].astype(np.float32), want, atol=1e-3)
    export_recording(rec, tmp_path / "n", ExportOptions(formats=("npz",)))
    assert "vertices" not in np.load(tmp_path / "n" / "track_0003.npz").files


def test_truncated_recording_exports_what_is_complete_and_says_where(tmp_path, capsys):
    rec = tmp_path / "run.msgpack"
    write_layout_recording(rec, FACES, end=False)
    data = rec.read_bytes()
    rec.write_bytes(data[:-5000])  # a killed run: the last frame's record is cut short
    assert main(["export", str(rec), "-o", str(tmp_path / "out"), "--format", "npz"]) == 0
    err = capsys.readouterr().err
    assert "stops after frame 12 without an end message" in err and "13 complete frames" in err
    index = json.loads((tmp_path / "out" / "tracks.json").read_text())
    assert not index["complete"] and index["frames"] == 13
    z = np.load(tmp_path / "out" / "track_0002.npz")
    assert z["frame_index"][-1] == 12
    assert {t["name"]: t["end"] for t in index["tracks"]}["track_0002"] == "the recording stopped"


def test_damaged_record_stops_there(tmp_path):
    rec = tmp_path / "run.msgpack"
    write_layout_recording(rec, FACES, frames=[0, 1, 2], end=False)
    with open(rec, "ab") as f:  # a record of the wrong form after three good frames
        f.write(b"\x93\x01\x02\x03")
    summary = export_recording(rec, tmp_path / "out", ExportOptions(formats=("npz",)))
    assert summary.frames == 3 and "record 5 is damaged" in summary.note


def test_unknown_format_and_unwritable_directory_are_one_line(tmp_path, capsys):
    rec = tmp_path / "run.msgpack"
    write_layout_recording(rec, FACES, frames=[0, 1])
    assert main(["export", str(rec), "-o", str(tmp_path / "out"), "--format", "npz,usd"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: export: unknown export format 'usd': choose from npz, bvh, gltf, obj, fbx, blend"
    (tmp_path / "file").write_text("")
    assert main(["export", str(rec), "-o", str(tmp_path / "file" / "out"), "--format", "npz"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: export: cannot write to {tmp_path}")
    assert main(["export", str(tmp_path / "missing.msgpack"), "-o", str(tmp_path / "o"), "--format", "npz"]) == 1
    assert capsys.readouterr().err.strip() == f"error: export: recording {tmp_path / 'missing.msgpack'} not found"
    (tmp_path / "video.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))  # not a recording
    assert main(["export", str(tmp_path / "video.mp4"), "-o", str(tmp_path / "o"), "--format", "npz"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: export: no frames read: {tmp_path / 'video.mp4'}: record 0 is not [time, topic, payload]; " \
                  "is this a --record file?"
    with pytest.raises(ExportError, match="vertices must be"):
        export_recording(rec, tmp_path / "o", ExportOptions(vertices="float64"))


def test_obj_per_person_frame_for_a_frame_range(tmp_path):
    rec = tmp_path / "run.msgpack"
    frames = write_layout_recording(rec, FACES)
    assert main(["export", str(rec), "-o", str(tmp_path / "out"), "--format", "obj", "--frames", "2:4"]) == 0
    objs = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.obj"))
    assert objs == ["obj/track_0001/frame_000002.obj", "obj/track_0001/frame_000003.obj",
                    "obj/track_0001/frame_000004.obj", "obj/track_0002/frame_000003.obj",
                    "obj/track_0002/frame_000004.obj"]
    lines = (tmp_path / "out" / "obj" / "track_0002" / "frame_000004.obj").read_text().splitlines()
    pm = frames[4].persons[1]
    first_v = np.array([float(x) for x in lines[1].split()[1:]])
    np.testing.assert_allclose(first_v, (pm.vertices[0] + pm.cam_t) * [1, -1, -1], atol=1e-5)
    assert sum(line.startswith("f ") for line in lines) == len(FACES)


def _peak_bytes(tmp_path: Path, frames: int, vertices: str) -> int:
    """Peak Python/numpy memory while exporting a recording of `frames` frames of two persons."""
    rec = tmp_path / f"long{frames}{vertices}.msgpack"
    w = wire.RecordWriter(rec)
    w.write(0.0, b"s/topology", wire.encode_topology("s", 0, FACES, ["j"] * 14, ["h"] * 17))
    for i in range(frames):
        mf = wire.synthetic_mesh_frame(2, index=i, smpl=True)
        w.write(0.0, b"s/frame", wire.encode_frame(mf, "s", i, with_vertices=vertices != "none"))
    w.close()
    tracemalloc.start()
    try:
        export_recording(rec, tmp_path / f"out{frames}{vertices}", ExportOptions(formats=("npz",), vertices=vertices))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_recording(tmp_path):
    short, long = _peak_bytes(tmp_path, 40, "none"), _peak_bytes(tmp_path, 400, "none")
    assert long < 1.5 * short, (short, long)
    peak = _peak_bytes(tmp_path, 240, "float32")  # 2 x 198 MB of vertices go through
    z = np.load(tmp_path / "out240float32" / "track_0001.npz", mmap_mode="r")
    assert z["vertices"].shape == (240, 6890, 3)
    assert peak < 30e6, peak  # numpy's npz writer copies 16 MiB at a time; nothing else grows


def test_run_export_options_are_checked_before_the_run_starts(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["run", "--export", str(tmp_path / "file" / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: export: cannot write to {tmp_path / 'file' / 'out'}") and "\n" not in err
    assert main(["run", "--export", str(tmp_path / "out"), "--export-format", "usd"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: export: unknown export format 'usd': choose from npz, bvh, gltf, obj, fbx, blend")


def test_blender_formats_without_bpy_are_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    """fbx and blend run Blender (bpy) in a Python that has it; without one, before any work is done."""
    import importlib.util

    rec = tmp_path / "run.msgpack"
    write_layout_recording(rec, FACES, frames=[0, 1])
    monkeypatch.setenv("FASTMETRO_BLENDER_PYTHON", str(tmp_path / "no-python"))
    assert main(["export", str(rec), "-o", str(tmp_path / "out"), "--format", "npz,fbx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: export: FASTMETRO_BLENDER_PYTHON={tmp_path / 'no-python'} is not a file; "
                          "fbx needs Blender as a Python module: pip install 'fastmetro-stream[blender]'")
    assert "\n" not in err and not (tmp_path / "out").exists()
    assert main(["run", "--export", str(tmp_path / "out2"), "--export-format", "blend"]) == 2
    assert "blend needs Blender as a Python module" in capsys.readouterr().err
    if importlib.util.find_spec("bpy") is None:  # this Python has no bpy: the variable unset, the same line
        monkeypatch.delenv("FASTMETRO_BLENDER_PYTHON")
        with pytest.raises(ExportError, match=r"^fbx needs Blender as a Python module: pip install "
                                              r"'fastmetro-stream\[blender\]' \(Python 3.11\), or set"):
            export_recording(rec, tmp_path / "out", ExportOptions(formats=("fbx",)))


def test_skeleton_only_in_frames_sent_with_vertices(tmp_path):
    rec = tmp_path / "run.msgpack"
    frames = write_layout_recording(rec, FACES, vertices_every=2)  # every other frame message has vertices
    summary = export_recording(rec, tmp_path / "out", ExportOptions(formats=("npz", "bvh", "gltf")))
    expected = expected_tracks(frames, vertices_every=2)
    by_name = {t["name"]: t for t in summary.tracks}
    for name, rows in expected.items():
        with_pose = [r[0] for r in rows if r[2]]
        z = np.load(tmp_path / "out" / f"{name}.npz")
        assert z["humanoid_frame"].tolist() == with_pose
        assert z["humanoid_rotations"].shape == (len(with_pose), 22, 4)
        np.testing.assert_allclose(np.linalg.norm(z["humanoid_rotations"], axis=-1), 1, atol=1e-5)
        assert by_name[name]["animation_frames"] == [with_pose[0], with_pose[-1]]
        bvh = (tmp_path / "out" / f"{name}.bvh").read_text()
        assert f"Frames: {with_pose[-1] - with_pose[0] + 1}\n" in bvh
    # no vertices at all: npz only, and the index says why
    rec2 = tmp_path / "bare.msgpack"
    write_layout_recording(rec2, FACES, vertices_every=0)
    summary = export_recording(rec2, tmp_path / "bare", ExportOptions(formats=("npz", "bvh")))
    assert all(t["files"] == [f"{t['name']}.npz"] and "no skeleton" in t["note"] for t in summary.tracks)


def test_a_frame_with_nan_vertices_is_skipped_and_reported(tmp_path):
    # arrays on the wire are finite (docs/schema.md): the decoder refuses such a frame; the export skips
    # it, keeps every other frame, and says which record it skipped, with no NaN in what it wrote
    rec = tmp_path / "run.msgpack"
    w = wire.RecordWriter(rec)
    w.write(0.0, b"s/topology", wire.encode_topology("s", 0, FACES, ["j"] * 14, ["h"] * 17))
    for i in range(4):
        mf = wire.synthetic_mesh_frame(1, index=i)
        if i == 2:
            mf.persons[0].vertices[:] = np.nan
        w.write(0.0, b"s/frame", wire.encode_frame(mf, "s", i))
    w.close()
    summary = export_recording(rec, tmp_path / "out", ExportOptions(formats=("npz", "bvh")))
    z = np.load(tmp_path / "out" / "track_0001.npz")
    assert z["frame_index"].tolist() == [0, 1, 3] and z["humanoid_frame"].tolist() == [0, 1, 3]
    assert summary.note is not None and "skipped 1 record" in summary.note and "record 4" in summary.note
    assert "NaN" in summary.note, summary.note
    assert "nan" not in (tmp_path / "out" / "track_0001.bvh").read_text().lower()
