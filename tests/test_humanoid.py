"""The humanoid skeleton: rotations recovered from points and from SMPL rotations, conventions pinned."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fastmetro import humanoid as hu
from tests.humanoid_data import PosedTemplate, random_rotations, to_camera

B = {name: i for i, name in enumerate(hu.BONES)}


@pytest.fixture(scope="module")
def template(assets_dir) -> PosedTemplate:
    return PosedTemplate(assets_dir)


def angle_between(qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """Rotation angle (radians) between quaternions, sign-blind."""
    return 2 * np.arccos(np.clip(np.abs((qa * qb).sum(-1)), 0, 1))


def test_bones_and_parents():
    assert hu.BONES[0] == "Hips" and len(hu.BONES) == len(hu.PARENTS) == 22
    assert hu.PARENTS[0] == -1 and all(0 <= hu.PARENTS[b] < b for b in range(1, 22))  # parents first
    chain = ["LeftHand", "LeftLowerArm", "LeftUpperArm", "LeftShoulder", "UpperChest", "Chest", "Spine", "Hips"]
    for child, parent in zip(chain, chain[1:]):
        assert hu.BONES[hu.PARENTS[B[child]]] == parent
    assert hu.BONES[hu.PARENTS[B["RightToes"]]] == "RightFoot"
    assert hu.BONES[hu.PARENTS[B["Head"]]] == "Neck"


def test_import_needs_no_torch():
    code = "import sys, fastmetro.humanoid; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_quaternion_helpers_agree_with_scipy():
    r = Rotation.random(500, random_state=3)
    q = hu.quat_from_matrix(r.as_matrix())
    ref = r.as_quat() * np.sign(r.as_quat()[:, 3:])
    np.testing.assert_allclose(q, ref, atol=1e-12)
    for m in (np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):  # 180 degree turns
        np.testing.assert_allclose(hu.quat_to_matrix(hu.quat_from_matrix(m)), m, atol=1e-12)
    a, b = Rotation.random(2, random_state=4)
    np.testing.assert_allclose(hu.quat_to_matrix(hu.quat_multiply(a.as_quat(), b.as_quat())),
                               (a * b).as_matrix(), atol=1e-12)
    v = np.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(hu.quat_rotate(a.as_quat(), v), a.apply(v), atol=1e-12)


def test_markers_sit_where_their_names_say(template):
    """Every vertex the solver uses, checked on the SMPL template (y up, facing +Z, left at +X)."""
    v, kp = template.v, template.kp
    m = {k: v[i] for k, i in hu.MARKERS.items()}
    for side, sign in (("l", 1), ("r", -1)):
        for k in ("ear", "index", "middle", "pinky", "bigtoe", "smalltoe", "clavicle_top", "biceps", "triceps",
                  "forearm_front", "forearm_back", "thigh_front", "thigh_back", "shin_front", "shin_back"):
            assert sign * m[side + k][0] > 0.03, f"{side}{k} is not on the {side} side"
        assert sign * m[side + "middle"][0] > 0.75 and sign * m[side + "index"][0] > 0.75  # finger tips, T-pose
        assert m[side + "index"][2] > m[side + "pinky"][2]  # palms down: index in front of the pinky
        assert m[side + "bigtoe"][1] < -1.05 and m[side + "bigtoe"][2] > 0.1  # toes: lowest, in front
        assert abs(m[side + "bigtoe"][0]) < abs(m[side + "smalltoe"][0])  # the big toe is the inner one
        for seg in ("biceps", "forearm_front", "thigh_front", "shin_front"):
            back = {"biceps": "triceps"}.get(seg, seg.replace("front", "back"))
            assert m[side + seg][2] > m[side + back][2] + 0.04, f"{side}{seg} is not in front of {side}{back}"
    for front, back in (("belly_front", "belly_back"), ("chest_front", "chest_back"),
                        ("sternum_front", "upper_back"), ("throat", "nape")):
        assert m[front][2] > 0.05 > -0.04 > m[back][2] and abs(m[front][0]) < 0.04 > abs(m[back][0])
    assert m["head_top"][1] == v[:, 1].max() and m["nose"][2] > 0.12 and m["nose"][1] > m["throat"][1]
    assert kp[B["Hips"], 1] < m["belly_front"][1] < kp[B["Chest"], 1] < m["chest_front"][1] < kp[B["Neck"], 1]
    assert kp[B["Neck"], 1] < m["throat"][1] < kp[B["Head"], 1] < m["head_top"][1]


def test_template_constants_match_the_shared_data(template):
    np.testing.assert_allclose(template.kp, hu._TEMPLATE_KEY_POINTS, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_rotations_come_back_from_points(template, seed):
    """Known random rotations -> points by forward kinematics -> solve -> the same rotations (1e-4)."""
    q = random_rotations(np.random.default_rng(seed), 16)
    kp, _, _ = template.posed(q, root=np.random.default_rng(seed).normal(size=(16, 3)))
    pose = hu.solve_points(kp)
    assert np.abs(angle_between(pose.rotations, q)).max() < 1e-4
    np.testing.assert_allclose(pose.offsets, np.broadcast_to(template.pose.offsets, pose.offsets.shape), atol=1e-9)
    pos, rot = hu.forward_kinematics(pose)
    np.testing.assert_allclose(pos, kp[:, : len(hu.BONES)], atol=1e-9)


def test_rotations_from_a_posed_mesh(template):
    """The same through `solve` on whole meshes in the camera frame (the stream's arrays). The template is
    posed by rigid skinning (each vertex with its nearest bone) and the joints are regressed from it, so
    the regressed joints are not rigid with one bone: world orientations within a few degrees for limbs
    and head, more for the trunk, and the short clavicles are the weak spot (a 2-3 cm joint error on a
    10 cm bone)."""
    rng = np.random.default_rng(5)
    q = random_rotations(rng, 20, max_angle=0.3)
    cam_t = np.tile([0.2, -0.1, 3.0], (20, 1))
    kp, verts, joints = template.posed(q, root=np.zeros((20, 3)))
    pose = hu.solve(to_camera(verts).astype(np.float32), to_camera(joints).astype(np.float32), cam_t)
    _, got = hu.forward_kinematics(pose)
    _, want = hu.forward_kinematics(hu.HumanoidPose(q, pose.offsets, pose.root))
    err = np.degrees(angle_between(got, want)).max(axis=0)
    limbs = [B[n] for n in hu.BONES if any(k in n for k in ("Arm", "Hand", "Leg", "Foot", "Toes", "Head"))]
    trunk = [B[n] for n in ("Hips", "Spine", "Chest", "UpperChest", "Neck")]
    assert err[limbs].max() < 5, dict(zip(hu.BONES, err.round(1)))
    assert err[trunk].max() < 15, dict(zip(hu.BONES, err.round(1)))
    assert err[[B["LeftShoulder"], B["RightShoulder"]]].max() < 50, dict(zip(hu.BONES, err.round(1)))
    np.testing.assert_allclose(pose.root, joints[:, 0] + to_camera(cam_t), atol=1e-5)
    pos, _ = hu.forward_kinematics(pose)
    regressed = hu.key_points(verts, joints)[:, : len(hu.BONES)] + to_camera(cam_t)[:, None]
    np.testing.assert_allclose(pos, regressed, atol=1e-5)  # forward kinematics lands on the person's joints


def smpl_rotmat_for(template: PosedTemplate, q: np.ndarray) -> np.ndarray:
    """SMPL parent-relative rotations (root in the camera frame) that pose the body as humanoid locals q."""
    n = len(q)
    _, wq = hu.forward_kinematics(hu.HumanoidPose(q, np.zeros(q.shape[:-1] + (3,)), np.zeros((n, 3))))
    g = np.tile(np.eye(3), (n, 24, 1, 1))
    g[:, hu.SMPL_JOINT] = hu.quat_to_matrix(wq) @ np.swapaxes(template.world, -1, -2)  # SMPL global, y-up
    for hand, wrist in ((22, 20), (23, 21)):
        g[:, hand] = g[:, wrist]
    g = hu.CAMERA_TO_YUP @ g  # the root's global orientation is in the camera frame
    local = np.swapaxes(g[:, hu._SMPL_PARENTS[1:]], -1, -2) @ g[:, 1:]
    return np.concatenate([g[:, :1], local], axis=1)


def test_random_rotations_come_back_through_the_smpl_head(template):
    q = random_rotations(np.random.default_rng(7), 8)
    rotmat = smpl_rotmat_for(template, q)
    _, verts, joints = template.posed(q)
    pose = hu.solve(to_camera(verts), to_camera(joints), np.zeros((8, 3)), rotmat=rotmat)
    assert np.abs(angle_between(pose.rotations, q)).max() < 1e-4


def test_smpl_rest_is_the_template_and_the_mesh_agrees(template):
    """SMPL's rest (all identity) with the usual root of an upright person facing the camera (180 degrees
    about X) is the template: the SMPL path and the mesh path give the same rotations."""
    rotmat = np.tile(np.eye(3), (1, 24, 1, 1))
    rotmat[0, 0] = np.diag([1.0, -1.0, -1.0])
    verts, joints = to_camera(template.v)[None], to_camera(template.regressor @ template.v)[None]
    a = hu.solve(verts, joints, rotmat=rotmat)
    b = hu.solve(verts, joints)
    assert np.degrees(angle_between(a.rotations, b.rotations)).max() < 1e-3
    assert np.degrees(angle_between(b.rotations[0, 0], np.array([0, 0, 0, 1.0]))) < 3  # Hips: upright, facing +Z


def test_upright_person_facing_the_camera(template):
    """Camera frame in, y-up out: head above hips, the person's left on +X, facing the camera (-z_cam = +Z)."""
    cam_t = np.array([[0.5, 0.2, 4.0]])
    pose = hu.solve(to_camera(template.v)[None], to_camera(template.regressor @ template.v)[None], cam_t)
    pos, rot = hu.forward_kinematics(pose)
    p = pos[0]
    assert p[B["Head"], 1] > p[B["Neck"], 1] > p[B["Hips"], 1] > p[B["LeftFoot"], 1]
    assert p[B["LeftHand"], 0] > p[B["Hips"], 0] + 0.5 > p[B["RightHand"], 0] + 1.0
    np.testing.assert_allclose(pose.root[0], [0.5 + template.kp[0, 0], template.kp[0, 1] - 0.2,
                                              template.kp[0, 2] - 4.0], atol=1e-6)
    facing = hu.quat_rotate(rot[0, B["Hips"]], np.array([0, 0, 1.0]))
    assert facing[2] > 0.99  # toward the camera, which sits at the origin behind +Z of the person
    assert 0.8 < hu.rest_height(pose)[0] < 1.1


def raise_left_arm(template: PosedTemplate) -> np.ndarray:
    q = np.tile(template.pose.rotations, (1, 1, 1)).copy()
    up = Rotation.from_euler("z", 90, degrees=True)  # about +Z: +X (the left arm) -> +Y
    q[0, B["LeftShoulder"]] = (up * Rotation.from_quat(q[0, B["LeftShoulder"]])).as_quat()
    return q


def test_a_raised_left_arm_raises_the_left_arm(template):
    q = raise_left_arm(template)
    _, verts, joints = template.posed(q)
    assert to_camera(verts)[0, hu.MARKERS["lmiddle"], 1] < -0.5  # the image shows the hand up (y down)
    pose = hu.solve(to_camera(verts), to_camera(joints))
    pos, _ = hu.forward_kinematics(pose)
    p = pos[0]
    assert p[B["LeftHand"], 1] > p[B["Head"], 1] and p[B["LeftHand"], 0] > 0.05
    assert p[B["RightHand"], 1] < p[B["Neck"], 1]
    rot = hu.quat_to_matrix(hu.forward_kinematics(pose)[1][0, B["LeftUpperArm"]])
    assert (rot @ np.array([1.0, 0, 0]))[1] > 0.9  # the rest arm (+X) now points up
    # the same pose through the SMPL head
    rotmat = smpl_rotmat_for(template, q)
    pose_smpl = hu.solve(to_camera(verts), to_camera(joints), rotmat=rotmat)
    assert angle_between(pose_smpl.rotations, q).max() < 1e-4


def test_scale_and_persons(template):
    from pipeline.subscriber import PersonData

    _, verts, joints = template.posed(random_rotations(np.random.default_rng(1), 2, 0.5))
    cam_t = np.array([[0, 0, 3.0], [1, 0, 5.0]])
    a = hu.solve(to_camera(verts), to_camera(joints), cam_t)
    b = hu.solve(to_camera(verts), to_camera(joints), cam_t, scale=2.0)
    np.testing.assert_allclose(b.offsets, 2 * a.offsets)
    np.testing.assert_allclose(b.root, 2 * a.root)
    np.testing.assert_allclose(b.rotations, a.rotations)

    def person(i, with_vertices=True):
        f = np.float32
        return PersonData(i + 1, "tracked", np.zeros(4, f), 0.9, False, np.zeros(2, f), 100.0, np.zeros(3, f),
                          cam_t[i].astype(f), np.zeros((14, 3), f), np.zeros((14, 2), f),
                          to_camera(joints[i]).astype(f), to_camera(verts[i]).astype(f) if with_vertices else None)

    c = hu.solve_persons([person(0), person(1)])
    np.testing.assert_allclose(c.rotations, a.rotations, atol=1e-5)
    assert len(hu.solve_persons([])) == 0
    with pytest.raises(ValueError, match="without vertices"):
        hu.solve_persons([person(0, with_vertices=False)])
    with pytest.raises(ValueError, match="expected vertices"):
        hu.solve(np.zeros((1, 431, 3)), np.zeros((1, 17, 3)))


def test_smpl_joint_numbers_by_hand(template):
    """SMPL rotations written by hand, in SMPL's own numbering (16 = left shoulder, 5 = right knee),
    not derived from our mapping: a left arm raised 90 degrees about +Z and a right knee bent 90 degrees
    about +X (heel back)."""
    rotmat = np.tile(np.eye(3), (1, 24, 1, 1))
    rotmat[0, 0] = np.diag([1.0, -1.0, -1.0])  # upright, facing the camera
    rotmat[0, 16] = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    rotmat[0, 5] = Rotation.from_euler("x", 90, degrees=True).as_matrix()
    verts, joints = to_camera(template.v)[None], to_camera(template.regressor @ template.v)[None]
    _, rot = hu.forward_kinematics(hu.solve(verts, joints, rotmat=rotmat))
    world = hu.quat_to_matrix(rot[0])
    assert (world[B["LeftUpperArm"]] @ [1.0, 0, 0])[1] > 0.95  # the left arm points up
    assert (world[B["RightUpperArm"]] @ [-1.0, 0, 0])[0] < -0.95  # the right arm still sideways
    assert (world[B["RightLowerLeg"]] @ [0, -1.0, 0])[2] < -0.9  # the right shin points backwards
    assert (world[B["LeftLowerLeg"]] @ [0, -1.0, 0])[1] < -0.95  # the left one still down


def test_degenerate_meshes_still_give_rotations_and_land_on_the_joints():
    """An untrained network's meshes can collapse: a marker pair on one point, a bone of zero length.
    The frames stay orthonormal, so the rotations are unit quaternions and forward kinematics still lands
    on the joints."""
    rng = np.random.default_rng(0)
    verts = rng.normal(scale=0.3, size=(3, 6890, 3))
    joints = rng.normal(scale=0.3, size=(3, 17, 3))
    verts[0] = 0.01  # everything on one point
    joints[0] = 0.01
    verts[1, hu.MARKERS["lindex"]] = verts[1, hu.MARKERS["lpinky"]]  # a twist pair on one point
    joints[2, 12] = joints[2, 11]  # a zero-length upper arm
    pose = hu.solve(verts, joints, np.tile([0.0, 0.0, 3.0], (3, 1)))
    assert np.all(np.isfinite(pose.rotations)) and np.allclose(np.linalg.norm(pose.rotations, axis=-1), 1)
    pos, _ = hu.forward_kinematics(pose)
    want = hu.key_points(to_camera(verts), to_camera(joints))[:, : len(hu.BONES)] + [0.0, 0.0, -3.0]
    np.testing.assert_allclose(pos, want, atol=1e-9)
