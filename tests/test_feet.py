"""Foot contact and foot locking (fastmetro/feet.py) on walkers with known steps (tests/walk_scene.py):
the flags against the true stance phases, the locked feet against the floor and against sliding."""
from __future__ import annotations

import numpy as np
import pytest

from fastmetro import feet
from fastmetro import humanoid as hu
from tests import walk_scene as ws

CAMERA = np.array([0.0, 3.0, 0.0])  # where the noise's depth rays start (a camera 3 m up at the origin)
WALKERS = [dict(heading=0.6, start=(-1.0, -7.0)), dict(heading=-2.4, start=(2.0, -4.0), phase=0.3),
           dict(heading=1.6, start=(-3.0, -9.0), phase=0.7, speed=1.3, step=0.65)]


def _feet(pos):
    return pos[:, list(feet.FOOT_BONES)], pos[:, list(feet.TOES_BONES)]


def test_walker_is_what_it_says():
    w = ws.walk(120)
    ank, toes = _feet(w.positions)
    assert np.abs(feet.sole_height(ank, toes)[w.contact]).max() < 1e-3  # stance: flat on the floor
    assert feet.slide_speed(ank, w.contact, w.times) < 1e-6
    assert 0.55 < w.contact.mean() < 0.65 and (w.contact.any(1)).all()  # always a foot down
    assert hu.quat_to_matrix(w.pose.rotations[:, 0])[:, 1, 1].min() > 0.9999  # the Hips upright


@pytest.mark.parametrize("noise", ["clean", "noisy"])
def test_contact_flags_agree_with_the_true_steps(noise):
    """>= 80 % agreement with noise (1.5 cm per joint, 2 % depth jitter, the floor 8 cm off); >= 95 % clean."""
    rng = np.random.default_rng(3)
    agree = []
    for kw in WALKERS:
        w = ws.walk(240, **kw)
        pos = w.positions if noise == "clean" else ws.noisy(w, rng, 0.015, 0.02, 0.08, CAMERA)
        ank, toes = _feet(pos)
        c = feet.contact_flags(ank, w.times, toes, root=pos[:, 0])
        agree.append((c == w.contact).mean())
        # ankles alone (the npz's world_joints_h36m) work too
        c2 = feet.contact_flags(ank, w.times, root=pos[:, 0])
        agree.append((c2 == w.contact).mean())
    assert min(agree) >= (0.95 if noise == "clean" else 0.80), agree


def test_online_contact_agrees_with_the_true_steps():
    rng = np.random.default_rng(4)
    det = feet.ContactDetector()
    for k, kw in enumerate(WALKERS):
        w = ws.walk(240, **kw)
        pos = ws.noisy(w, rng, 0.01, 0.0, 0.05, CAMERA)
        ank, toes = _feet(pos)
        c = np.array([det.update(k, t, ank[i], toes[i]) for i, t in enumerate(w.times)])
        assert (c[30:] == w.contact[30:]).mean() >= 0.8  # after the first second (the floor level settles)


def test_locking_stops_the_slide_and_puts_the_feet_on_the_floor():
    """Slide of the feet in contact cut >= 5x; locked feet on the floor (2 cm); ankle height during contact
    within 6 cm of the truth; bone lengths kept; no foot below the floor; the body's height corrected."""
    rng = np.random.default_rng(5)
    for kw in WALKERS:
        w = ws.walk(240, **kw)
        pose = ws.noisy_pose(w, rng, 2.0, 0.02, 0.12, CAMERA)  # the floor 12 cm off: persons hover
        pos = feet._world(pose)[0]
        ank, toes = _feet(pos)
        c = feet.contact_flags(ank, w.times, toes, root=pos[:, 0])
        r = feet.lock_feet(pose, c)
        ank2, toes2 = _feet(r.positions)
        before, after = feet.slide_speed(ank, w.contact, w.times), feet.slide_speed(ank2, w.contact, w.times)
        assert after * 5 <= before, (before, after)
        sole = feet.sole_height(ank2, toes2)
        held = r.weights == 1.0
        assert np.abs(sole[held]).max() < 0.02
        assert sole.min() > -1e-3  # (to the IK passes' 0.1 mm)
        true_ankle = w.positions[:, list(feet.FOOT_BONES), 1]
        err = np.abs(ank2[..., 1] - true_ankle)
        assert err[w.contact & held].max() < 0.06 and np.percentile(err[w.contact], 95) < 0.06
        assert np.abs(ank[..., 1] - true_ankle)[w.contact].mean() > 0.1  # it did hover before
        bones = lambda p: np.linalg.norm(p[:, 1:] - p[:, hu.PARENTS[1:]], axis=-1)  # noqa: E731
        assert np.abs(bones(r.positions) - bones(pos)).max() < 1e-6
        np.testing.assert_allclose(np.linalg.norm(r.pose.rotations, axis=-1), 1.0, atol=1e-9)


def test_locking_leaves_a_clean_walk_alone():
    w = ws.walk(150)
    r = feet.lock_feet(w.pose, w.contact)
    assert np.abs(r.root_shift).max() < 0.005
    held = r.weights == 1.0
    assert np.abs(r.positions[:, list(feet.FOOT_BONES)] - w.positions[:, list(feet.FOOT_BONES)])[held].max() < 0.005


def test_two_bone_ik_reaches_and_keeps_lengths():
    rng = np.random.default_rng(6)
    n = 200
    hip = rng.normal(0, 1, (n, 3))
    knee = hip + np.array([0, -0.43, 0]) + rng.normal(0, 0.05, (n, 3))
    ankle = knee + np.array([0, -0.40, 0]) + rng.normal(0, 0.05, (n, 3))
    l1, l2 = np.linalg.norm(knee - hip, axis=1), np.linalg.norm(ankle - knee, axis=1)
    d = rng.normal(0, 1, (n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    reach = rng.uniform(np.abs(l1 - l2) + 0.01, l1 + l2 - 0.01)
    target = hip + d * reach[:, None]
    swing, bend = feet.two_bone_ik(hip, knee, ankle, target, np.tile([-1.0, 0, 0], (n, 1)))
    knee2 = hip + (swing @ (knee - hip)[..., None])[..., 0]
    ankle2 = knee2 + (swing @ bend @ (ankle - knee)[..., None])[..., 0]
    np.testing.assert_allclose(ankle2, target, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(knee2 - hip, axis=1), l1, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(ankle2 - knee2, axis=1), l2, atol=1e-9)
    # out of reach: the leg points at the target, straight
    far = hip + d * (l1 + l2 + 0.3)[:, None]
    swing, bend = feet.two_bone_ik(hip, knee, ankle, far, np.tile([-1.0, 0, 0], (n, 1)))
    knee2 = hip + (swing @ (knee - hip)[..., None])[..., 0]
    ankle2 = knee2 + (swing @ bend @ (ankle - knee)[..., None])[..., 0]
    np.testing.assert_allclose(np.linalg.norm(ankle2 - hip, axis=1), l1 + l2, atol=1e-5)


def test_a_straight_leg_bends_its_knee_forward():
    offsets = ws.template_offsets()
    pose = hu.HumanoidPose(np.tile([0.0, 0, 0, 1], (1, len(hu.BONES), 1)), offsets[None], np.array([[0, 1.0, 0]]))
    pos = feet._world(pose)[0]
    up, low, foot = feet.LEG_BONES[0]
    target = pos[:, foot] + [0, 0.2, 0]  # lift the foot 20 cm: the knee must bend
    swing, bend = feet.two_bone_ik(pos[:, up], pos[:, low], pos[:, foot], target, np.array([[-1.0, 0, 0]]))
    knee2 = pos[:, up] + (swing @ (pos[:, low] - pos[:, up])[..., None])[..., 0]
    assert knee2[0, 2] > pos[0, low, 2] + 0.1  # the humanoid faces +Z: the knee comes forward


def test_pose_to_world_moves_the_skeleton_as_the_camera_says():
    from tests.walk_scene import _yaw

    rng = np.random.default_rng(7)
    w = ws.walk(10)
    pitch = np.radians(20)
    r = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]]) @ _yaw(
        np.array([0.3]))[0]
    t = np.eye(4)
    t[:3, :3], t[:3, 3] = r, rng.normal(size=3)
    # a pose in the humanoid's camera-derived y-up frame, whose world is t
    m = t[:3, :3] @ hu.CAMERA_TO_YUP
    inv = m.T
    rot = w.pose.rotations.copy()
    rot[:, 0] = hu.quat_from_matrix(inv @ hu.quat_to_matrix(rot[:, 0]))
    cam_pose = hu.HumanoidPose(rot, w.pose.offsets, (w.pose.root - t[:3, 3]) @ inv.T)
    back = feet.pose_to_world(cam_pose, t)
    np.testing.assert_allclose(feet._world(back)[0], w.positions, atol=1e-9)


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="ankles must be"):
        feet.contact_flags(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="increasing"):
        feet.contact_flags(np.zeros((3, 2, 3)), times=[0, 0, 1])


# ------------------------------------------------------------------- the published fields of a synthetic scene
def _scene_tracks(spec_kw=None, seed=0):
    """World joints of every walking track of fastmetro.world_synth's scene, placed as the pipeline would with
    the true camera (depth rescaled from the assumed focal to the true one), with the truth beside them."""
    from fastmetro import world
    from fastmetro.world_synth import SceneSpec, make_scene

    scene = make_scene(SceneSpec(seconds=12, **(spec_kw or {})), seed=seed)
    cam = scene.camera
    k = cam.focal / scene.assumed_focal
    tracks: dict = {}
    for fi, persons in enumerate(scene.frames):
        for p in persons:
            if p.kind == "walk":
                cam_t = p.cam_t * [1.0, 1.0, k]
                tracks.setdefault(p.track_id, []).append(
                    (fi / scene.spec.fps, world.camera_to_world(p.joints_h36m + cam_t, cam), p.world_joints, p.contact))
    out = []
    for rows in tracks.values():
        if len(rows) >= 40:
            out.append(tuple(np.array([r[i] for r in rows]) for i in range(4)))
    return out


def test_contact_and_locking_on_the_published_fields_of_a_synthetic_scene():
    """world_synth's walkers (noisy boxes, 3 % scale, 3 degree orientation, unsmoothed), joints only: contact
    flags >= 80 % like the truth; locking the joints cuts the slide of the feet in contact >= 5x and puts the
    ankles in contact within 6 cm of their true height (on average; 95 % within 10 cm)."""
    agree, before, after, err = [], [], [], []
    for t, wj, truth, contact in _scene_tracks():
        c = feet.contact_flags(wj[:, list(feet.H36M_ANKLES)], t, root=wj[:, 0])
        agree.append((c == contact).mean())
        locked, _ = feet.lock_joints(wj, c)
        a0, a1 = wj[:, list(feet.H36M_ANKLES)], locked[:, list(feet.H36M_ANKLES)]
        before.append(feet.slide_speed(a0, contact, t))
        after.append(feet.slide_speed(a1, contact, t))
        err.append(np.abs(a1[..., 1] - truth[:, list(feet.H36M_ANKLES), 1])[contact])
        legs = lambda x: np.linalg.norm(x[:, [5, 6, 2, 3]] - x[:, [4, 5, 1, 2]], axis=-1)  # noqa: E731
        assert np.abs(legs(locked) - legs(wj)).max() < 1e-6
    err = np.concatenate(err)
    assert len(agree) >= 5 and np.mean(agree) >= 0.8 and min(agree) >= 0.7, agree
    assert np.sum(after) * 5 <= np.sum(before), (np.sum(before), np.sum(after))
    assert err.mean() < 0.06 and np.percentile(err, 95) < 0.10, (err.mean(), np.percentile(err, 95))


def test_a_live_run_publishes_foot_contact(tmp_path):
    """The smooth stage (live, Kalman) with a fixed camera marks every person's feet (stages/feet_contact.py);
    through the wire, the flags agree with world_synth's true contacts >= 70 % (live sees no frame ahead);
    without a world no flags are sent."""
    from fastmetro.world_synth import SceneSpec, make_scene
    from fastmetro_stream.config import load_config
    from pipeline import wire
    from pipeline.subscriber import to_message
    from stages.smooth import SmoothStage
    from tests.world_scene import mesh_frames

    scene = make_scene(SceneSpec(seconds=10), seed=3)
    scene.camera.save(tmp_path / "camera.json")
    truth = {(i, p.track_id): p.contact for i, ps in enumerate(scene.frames) for p in ps}
    for world, expect in ((f"world.camera={tmp_path / 'camera.json'}", True), ('world.mode="off"', False)):
        stage = SmoothStage(load_config(None, [world], mode="live"))
        agree, flagged = [], 0
        for mf in mesh_frames(scene):
            for out in stage.process(mf):
                m = to_message(wire.decode(wire.encode_frame(out, "default", out.frame.index, with_vertices=False)), None)
                for p in m.persons:
                    flagged += p.foot_contact is not None
                    if p.foot_contact is not None and m.index >= 25 and (m.index, p.track_id) in truth:
                        agree.append((p.foot_contact == truth[(m.index, p.track_id)]).mean())
        if expect:
            assert len(agree) > 500 and np.mean(agree) >= 0.7, np.mean(agree)
        else:
            assert flagged == 0


def test_short_tracks_lock_too():
    """Tracks shorter than the smoothing kernels (a few frames) come out with their own length."""
    for n in (2, 3, 5, 9):
        w = ws.walk(n)
        c = feet.contact_flags(w.positions[:, list(feet.FOOT_BONES)], w.times, root=w.positions[:, 0])
        assert c.shape == (n, 2)
        joints = w.positions[:, [0, 18, 19, 20, 14, 15, 16] + [0] * 10]
        locked, weights = feet.lock_joints(joints, np.ones((n, 2), bool))
        assert locked.shape == joints.shape and weights.shape == (n, 2)
        assert feet.lock_feet(w.pose, np.ones((n, 2), bool)).pose.root.shape == (n, 3)
        assert feet.ground_shift(joints[:, [6, 3]], np.ones((n, 2), bool)).shape == (n, 3)
