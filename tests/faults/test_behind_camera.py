"""joints2d of a person behind the camera (a coasting track whose cam_t.z the smoother carried past zero):
no image position exists; they are projected as if 0.1 m in front (fastmetro.camera.NEAR_M), finite and
bounded, never ~1e10 px (the old depth floor of 1e-6 m) nor NaN (refused by the wire's decoding rules)."""
from __future__ import annotations

import numpy as np

from fastmetro import camera
from pipeline import wire
from pipeline.subscriber import to_message


def test_joints_behind_the_camera_project_finite_and_bounded():
    joints = np.random.default_rng(0).uniform(-0.8, 0.8, (1, 14, 3))
    focal, wh = 1468.6, (1280, 720)
    for tz in (-3.0, -0.05, 0.0, 0.05):
        j2d = camera.project(joints, np.array([[0.4, -0.2, tz]]), focal, wh)
        assert np.isfinite(j2d).all()
        # at most focal * |x| / NEAR_M from the centre: ~1e4 px, not 1e10
        assert np.abs(j2d).max() < focal * 2.0 / camera.NEAR_M, (tz, np.abs(j2d).max())
    # in front of the camera nothing changes
    j2d = camera.project(joints, np.array([[0.0, 0.0, 4.0]]), focal, wh)
    expect = focal * joints[0, :, :2] / (joints[0, :, 2:] + 4.0) + np.array([640.0, 360.0])
    assert np.allclose(j2d[0], expect)


def test_a_person_behind_the_camera_goes_over_the_wire():
    mf = wire.synthetic_mesh_frame(1, index=0)
    p = mf.persons[0]
    p.cam_t[:] = [0.3, 0.1, -2.5]
    p.joints2d[:] = camera.project(p.joints3d[None], p.cam_t[None], 1468.6, (1280, 720))[0]
    m = wire.decode(wire.encode_frame(mf, "default", 0))
    got = to_message(m, None).persons[0].joints2d
    assert np.isfinite(got).all() and np.abs(got).max() < 1e5
