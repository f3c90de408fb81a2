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
