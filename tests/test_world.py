"""The world calibration on synthetic scenes with a known camera (fastmetro.world_synth): persons walking on a
floor, their published fields made as the pipeline makes them, with noise on boxes, scale and orientation;
sitting and stairs persons as outliers."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from fastmetro.camera import crop_to_frame_translation
from fastmetro.world import CameraModel, camera_to_world, pitch_roll_deg, up_from_pitch_roll, world_from_camera
from fastmetro.world_calib import OnlineCalibrator, calibrate, observations_from_boxes
from fastmetro.world_synth import SceneSpec, make_scene


def _rows(scene):
    ps = [(i, p) for i, fr in enumerate(scene.frames) for p in fr]
    return (np.array([p.box for _, p in ps]), np.array([p.track_id for _, p in ps]), np.array([i for i, _ in ps]),
            np.array([p.joints_h36m for _, p in ps]), [p for _, p in ps])


def _angle(a, b) -> float:
    return math.degrees(math.acos(float(np.clip(a @ b, -1, 1))))


@pytest.fixture(scope="module")
def scenes():
    out = {}
    for name, pitch in (("down20", 20.0), ("down10", 10.0), ("level", 2.0)):
        out[name] = make_scene(SceneSpec(pitch_deg=pitch, roll_deg=2.0, height=3.5, focal_ratio=0.7, seconds=16,
                                         sitting=1, stairs=1), seed=int(pitch))
    return out


def test_world_frame_axes():
    up = up_from_pitch_roll(25.0, -4.0)
    assert np.allclose(pitch_roll_deg(up), (25.0, -4.0))
    t = world_from_camera(up, 3.0)
    r = t[:3, :3]
    assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(np.linalg.det(r), 1.0)  # right-handed rotation
    m = CameraModel(focal=900.0, up=up, height=3.0, width=1280, height_px=720, focal_estimated=True)
    assert np.allclose(camera_to_world(np.zeros(3), m), [0, 3, 0])  # the camera at (0, height, 0)
    fwd = camera_to_world([0, 0, 1.0], m) - [0, 3, 0]
    assert fwd[2] < 0 and abs(fwd[0]) < 1e-9 and fwd[1] < 0  # looks towards -Z, down
    assert np.allclose(camera_to_world(-up, m) - [0, 3, 0], [0, -1, 0])  # the camera's "down" is world -Y
    level = CameraModel(focal=900.0, up=[0, -1, 0], height=2.0, width=1280, height_px=720, focal_estimated=False)
    assert np.allclose(camera_to_world([1.0, 0, 0], level), [1, 2, 0])  # +X the camera's right


def test_camera_file_round_trip(tmp_path):
    m = CameraModel(focal=812.5, up=up_from_pitch_roll(12, 1), height=2.7, width=768, height_px=576,
                    focal_estimated=False, persons=9, frames=300, residual=0.03)
    m.save(tmp_path / "camera.json")
    back = CameraModel.load(tmp_path / "camera.json")
    assert np.allclose(back.up, m.up) and back.focal == m.focal and back.height == m.height
    assert back.focal_estimated is False and back.persons == 9
    (tmp_path / "bad.json").write_text('{"focal": 1}')
    with pytest.raises(ValueError, match="lacks"):
        CameraModel.load(tmp_path / "bad.json")


@pytest.mark.parametrize("name", ["down20", "down10"])
def test_looking_down_with_trusted_meshes(scenes, name):
    sc = scenes[name]
    boxes, tracks, frames, joints, _ = _rows(sc)
    m = calibrate(observations_from_boxes(boxes, tracks, frames, sc.frame_wh, joints), sc.frame_wh,
                  sc.assumed_focal, mesh_weight=1.0)
    assert m.focal_estimated
    assert abs(m.focal / sc.camera.focal - 1) < 0.10
    assert _angle(m.up, sc.camera.up) < 2.0
    assert abs(m.height / sc.camera.height - 1) < 0.08


@pytest.mark.parametrize("name", ["down20", "level"])
def test_boxes_alone_with_the_right_focal(scenes, name):
    """Boxes alone fix the horizon, not the focal: the focal is reported kept, and with the camera's own focal
    given, up and height are right."""
    sc = scenes[name]
    boxes, tracks, frames, _, _ = _rows(sc)
    obs = observations_from_boxes(boxes, tracks, frames, sc.frame_wh)
    m = calibrate(obs, sc.frame_wh, sc.camera.focal)
    assert not m.focal_estimated and m.focal == sc.camera.focal
    assert _angle(m.up, sc.camera.up) < 2.0
    assert abs(m.height / sc.camera.height - 1) < 0.08


def test_level_camera_keeps_the_focal(scenes):
    sc = scenes["level"]
    boxes, tracks, frames, joints, _ = _rows(sc)
    m = calibrate(observations_from_boxes(boxes, tracks, frames, sc.frame_wh, joints), sc.frame_wh,
                  sc.assumed_focal, mesh_weight=1.0)
    assert not m.focal_estimated and m.focal == sc.assumed_focal
    assert _angle(m.up, sc.camera.up) < 2.0
    assert abs(m.height / sc.camera.height - 1) < 0.08


def test_world_positions_from_the_calibrated_focal(scenes):
    """Placing persons at the calibrated focal (fastmetro.camera) puts them within 6 % of their distance."""
    sc = scenes["down20"]
    boxes, tracks, frames, joints, persons = _rows(sc)
    m = calibrate(observations_from_boxes(boxes, tracks, frames, sc.frame_wh, joints), sc.frame_wh,
                  sc.assumed_focal, mesh_weight=1.0)
    errs, errs_guess = [], []
    for p in persons:
        if p.kind != "walk" or p.cut:
            continue
        true = p.world_joints[0]
        dist = np.linalg.norm(true - sc.camera.position())
        cam_t = crop_to_frame_translation(p.cam[None], p.center[None], np.array([p.size]), sc.frame_wh, m.focal)[0]
        errs.append(np.linalg.norm(camera_to_world(cam_t, m) - true) / dist)
        errs_guess.append(np.linalg.norm(camera_to_world(p.cam_t, sc.camera) - true) / dist)
    assert np.median(errs) < 0.06
    assert np.median(errs_guess) > 0.2  # the diagonal's focal put them far off (the test can tell)


@pytest.mark.slow
def test_online_converges_holds_and_finds_a_bumped_camera():
    sc = make_scene(SceneSpec(pitch_deg=20, roll_deg=2, seconds=40, sitting=1, bump_at=22), seed=3)
    cal = OnlineCalibrator(sc.frame_wh, sc.assumed_focal, use_mesh=True)
    calibrated_at = None
    for i, fr in enumerate(sc.frames):
        if not fr:
            continue
        m = cal.observe(np.array([p.box for p in fr]), [p.track_id for p in fr], i,
                        np.array([p.joints_h36m for p in fr]))
        t = i / sc.spec.fps
        if m is not None and calibrated_at is None:
            calibrated_at = t
            assert _angle(m.up, sc.camera.up) < 2.0
        if 12 < t < 22:
            assert cal.state == "calibrated" and cal.moves == 0  # held
    assert calibrated_at is not None and calibrated_at < 10
    assert cal.moves == 1 and cal.state == "calibrated"
    assert _angle(cal.model.up, sc.cameras[-1].up) < 2.0  # the new camera


# ------------------------------------------------------------------------ in the pipeline and on the wire
def _config(**world):
    from fastmetro_stream.config import load_config

    return load_config(None, [f"world.{k}={v}" for k, v in world.items()] + ["smooth.method=none"], mode="live")


@pytest.mark.slow
def test_live_run_calibrates_and_finds_a_bumped_camera(tmp_path):
    """A synthetic scene replayed through the smooth stage (live) and the wire: frames say `calibrating`, then
    `calibrated` with the camera's pose; a bump sends it back to `calibrating` and to the new camera."""
    from pipeline import wire
    from pipeline.subscriber import to_message
    from stages.smooth import SmoothStage
    from tests.world_scene import mesh_frames

    sc = make_scene(SceneSpec(pitch_deg=20, roll_deg=2, seconds=40, bump_at=22), seed=5)
    stage = SmoothStage(_config(trust_meshes="true", background="false"))
    states, first = [], {}
    for mf in mesh_frames(sc):
        for out in stage.process(mf):
            m = to_message(wire.decode(wire.encode_frame(out, "default", out.frame.index, with_vertices=False)), None)
            t = m.index / sc.spec.fps
            states.append((t, m.world.state))
            first.setdefault((m.world.state, t > 22), (t, m))
            last = m
    t_cal, m = first[("calibrated", False)]
    assert t_cal < 10  # seconds of video
    T = m.world.world_from_camera
    assert _angle(T[1, :3], sc.camera.up) < 2.0 and abs(T[1, 3] / sc.camera.height - 1) < 0.08
    assert m.world.focal_estimated and abs(m.focal / sc.camera.focal - 1) < 0.10
    # the persons are placed at the calibrated focal: their depth is right, not 1/0.7 too far
    p = m.persons[0]
    truth = [q for q in sc.frames[m.index] if q.track_id == p.track_id][0]
    true_root = world_to_camera_root(truth, sc)
    assert abs(p.cam_t[2] / true_root[2] - 1) < 0.08
    assert ("calibrating", True) in first  # the bump was seen
    assert last.world.state == "calibrated"  # again, at the new camera
    assert _angle(last.world.world_from_camera[1, :3], sc.cameras[-1].up) < 2.0


def world_to_camera_root(p, sc):
    from fastmetro.world import world_to_camera

    return world_to_camera(p.world_joints[0], sc.camera)


@pytest.mark.slow
def test_calibrate_command_and_a_run_taking_its_file(tmp_path, assets_dir, capsys):
    """`calibrate REC -o camera.json` on a recording of a synthetic scene; a run with world.camera places
    persons at that camera's focal and says `fixed`."""
    import json

    import fastmetro
    from fastmetro_stream.cli import main
    from stages.smooth import SmoothStage
    from tests.world_scene import mesh_frames, write_recording

    sc = make_scene(SceneSpec(pitch_deg=15, roll_deg=-3, seconds=12), seed=7)
    rec = write_recording(sc, tmp_path / "run.msgpack", fastmetro.load_mesh_data(assets_dir).faces)
    out = tmp_path / "camera.json"
    assert main(["calibrate", str(rec), "-o", str(out), "--trust-meshes"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    for key in ("focal", "up", "height", "pitch_deg", "roll_deg", "focal_estimated", "persons", "frames", "residual"):
        assert key in saved and key in printed
    assert abs(saved["pitch_deg"] - 15) < 2 and abs(saved["roll_deg"] + 3) < 2 and saved["focal_estimated"]
    stage = SmoothStage(_config(camera=str(out)))
    mf = stage.process(mesh_frames(sc)[5])[0]
    assert mf.world.state == "fixed" and mf.focal == pytest.approx(saved["focal"])
    assert np.allclose(mf.world.world_from_camera, saved["world_from_camera"])
    # boxes alone: the focal is not observable, said and kept
    assert main(["calibrate", str(rec), "-o", str(out)]) == 0
    assert json.loads(out.read_text())["focal_estimated"] is False
    assert main(["calibrate", str(tmp_path / "missing.msgpack")]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("FASTMETRO_VTEST"), reason="set FASTMETRO_VTEST to OpenCV's vtest.avi")
def test_vtest_street_camera(tmp_path):
    """OpenCV's sample street video (people about 60 px tall: HOG needs the frames enlarged 3x): HOG boxes of
    its first 12 s give a camera several metres up, looking down, nearly without roll."""
    from fastmetro_stream.cli import main

    out = tmp_path / "camera.json"
    assert main(["calibrate", os.environ["FASTMETRO_VTEST"], "--detector", "hog", "--hog-max-side", "1440",
                 "--detect-scale", "3", "--every", "3", "--max-frames", "120", "-o", str(out)]) == 0
    m = CameraModel.load(out)
    assert 3.0 < m.height < 15.0 and 10.0 < m.pitch_deg < 60.0 and abs(m.roll_deg) < 10
    assert not m.focal_estimated  # boxes alone


def test_wire_carries_world_and_foot_contact():
    import msgpack

    from pipeline import wire
    from pipeline.messages import WorldInfo
    from pipeline.subscriber import to_message
    from tests.world_scene import mesh_frames

    sc = make_scene(SceneSpec(seconds=0.2, walkers=2), seed=1)
    mf = mesh_frames(sc)[0]
    mf.persons[0].foot_contact = np.array([True, False])
    T = world_from_camera(up_from_pitch_roll(20, 1), 3.5)
    mf.world = WorldInfo(state="calibrated", world_from_camera=T, focal_estimated=True)
    m = to_message(wire.decode(wire.encode_frame(mf, "default", 0, with_vertices=False)), None)
    assert m.world.state == "calibrated" and m.world.focal_estimated
    assert np.allclose(m.world.world_from_camera, T, atol=1e-6)
    assert m.persons[0].foot_contact.tolist() == [True, False] and m.persons[1].foot_contact is None
    raw = msgpack.unpackb(wire.encode_frame(mf, "default", 0, with_vertices=False), raw=False)
    raw["persons"][0]["foot_contact"] = [1, 0]
    with pytest.raises(wire.WireError, match="foot_contact"):
        wire.decode(msgpack.packb(raw, use_bin_type=True))


def test_world_settings():
    from fastmetro_stream.config import ConfigError, load_config
    from stages.smooth import SmoothStage
    from tests.world_scene import mesh_frames

    with pytest.raises(ConfigError, match="world.camera"):
        load_config(None, ["world.mode=fixed"])
    mf = mesh_frames(make_scene(SceneSpec(seconds=0.2, walkers=2), seed=2))[0]
    assert SmoothStage(_config(mode="off")).process(mf)[0].world is None
    out = SmoothStage(_config()).process(mf)[0]
    assert out.world.state == "calibrating" and out.world.world_from_camera is None


def test_online_fits_in_a_worker_thread():
    """background=True: observe() never runs a fit itself; the fits' results arrive and calibrate the camera."""
    import time

    sc = make_scene(SceneSpec(pitch_deg=20, roll_deg=2, seconds=12), seed=4)
    cal = OnlineCalibrator(sc.frame_wh, sc.assumed_focal, use_mesh=True, background=True)
    for i, fr in enumerate(sc.frames):
        if fr:
            cal.observe(np.array([p.box for p in fr]), [p.track_id for p in fr], i, np.array([p.joints_h36m for p in fr]))
            time.sleep(0.002)  # frames keep coming while a fit runs
    deadline = time.time() + 30
    while cal.state != "calibrated" and time.time() < deadline:
        time.sleep(0.05)
        cal.observe(np.zeros((0, 4)), [], len(sc.frames))
    cal.close()
    assert cal.state == "calibrated" and cal.fits >= 2
    assert _angle(cal.model.up, sc.camera.up) < 2.0


def test_the_run_gives_the_smooth_stage_the_world_settings():
    from fastmetro_stream.api import build_stages
    from fastmetro_stream.config import load_config

    smooth = [s for s in build_stages(load_config(None, ["world.trust_meshes=true"])) if s.name == "smooth"][0]
    assert smooth.world.mode == "auto" and smooth.world.cfg.trust_meshes
