"""The finger bones: rotations recovered from points, from a curled MANO hand, mirrored for left hands; the
Hand bone from the hand mesh against the body solve; the seen / held / relaxed policy over time."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fastmetro import humanoid as hu
from fastmetro import humanoid_hands as hh
from fastmetro.humanoid_hand_policy import HandPolicy, HandTiming
from tests.hand_data import PosedHand, flexion, load_mano_template, template_joints
from tests.humanoid_data import PosedTemplate, random_rotations, to_camera

FLIP = np.array([1.0, -1.0, -1.0])


def angle_between(qa, qb):
    return 2 * np.arccos(np.clip(np.abs((np.asarray(qa) * np.asarray(qb)).sum(-1)), 0, 1))


def swing_twist_errors(q_got: np.ndarray, q_want: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Degrees: the angle between the bone directions (swing) and the twist about the bone of the rest."""
    err = hu.quat_multiply(hu.quat_conjugate(q_want), q_got)  # in the bone's rest frame
    d_got = hu.quat_rotate(q_got, axis)
    d_want = hu.quat_rotate(q_want, axis)
    swing = np.degrees(np.arccos(np.clip((d_got * d_want).sum(-1), -1, 1)))
    proj = (err[..., :3] * axis).sum(-1)  # twist part of err about the axis: (axis * proj, w)
    twist = np.degrees(2 * np.arctan2(np.abs(proj), np.abs(err[..., 3])))
    return swing, twist


def test_skeleton_names_and_parents():
    assert len(hh.FINGER_BONES) == 30 and len(hh.ALL_BONES) == len(hh.ALL_PARENTS) == 52
    assert hh.ALL_BONES[:22] == hu.BONES
    b = {n: i for i, n in enumerate(hh.ALL_BONES)}
    for side in ("Left", "Right"):
        for f in hh.FINGERS:
            assert hh.ALL_PARENTS[b[f"{side}{f}Proximal"]] == b[f"{side}Hand"]
            assert hh.ALL_PARENTS[b[f"{side}{f}Intermediate"]] == b[f"{side}{f}Proximal"]
            assert hh.ALL_PARENTS[b[f"{side}{f}Distal"]] == b[f"{side}{f}Intermediate"]
    assert all(0 <= hh.ALL_PARENTS[i] < i for i in range(1, 52))


def test_rest_is_the_vrm_t_pose():
    """Fingers along the arm (+X left, -X right) with nails up, the thumb 45 degrees forward and level."""
    for side, x in (("left", 1.0), ("right", -1.0)):
        rest = hh._REST_FINGERS[side]
        np.testing.assert_allclose(rest[3:, :, 0], np.tile([x, 0, 0], (12, 1)), atol=1e-12)
        np.testing.assert_allclose(rest[3:, :, 1], np.tile([0, 1.0, 0], (12, 1)), atol=1e-12)
        np.testing.assert_allclose(rest[:3, :, 0], np.tile([x * 0.5 ** 0.5, 0, 0.5 ** 0.5], (3, 1)), atol=1e-12)
        assert abs(rest[0, 1, 1]) < 1e-12  # the thumb nail is horizontal


def synthetic_hand(rng, side: str, n: int, max_angle: float = 1.2):
    """Random finger locals and Hand world rotations -> joints and twist-pair vertices by forward kinematics
    on the standard hand (camera frame, hand-relative)."""
    local = _random_quats(rng, (n, 15), max_angle)
    hand = Rotation.random(n, random_state=int(rng.integers(1 << 30))).as_matrix()
    rest = hh._REST_FINGERS[side]
    offsets = hh.default_offsets(side)
    joints = np.zeros((n, 21, 3))
    verts = np.zeros((n, 778, 3))
    m = hu.quat_to_matrix(local)
    world = np.empty_like(m)
    for k in range(15):
        parent = hand if k % 3 == 0 else world[:, k - 1]
        world[:, k] = parent @ m[:, k]
        base = hh.FINGER_BASE[k]
        pj = 0 if k % 3 == 0 else base - 1
        joints[:, base] = joints[:, pj] + (parent @ offsets[k])
        length = np.linalg.norm(offsets[k + 1]) if k % 3 != 2 else 0.02
        mid = joints[:, base] + world[:, k] @ (0.5 * length * rest[k, :, 0])
        nail, pad = hh.TWIST_PAIRS[k]
        verts[:, nail] = mid + world[:, k] @ (0.008 * rest[k, :, 1])
        verts[:, pad] = mid - world[:, k] @ (0.007 * rest[k, :, 1]) + world[:, k] @ (0.002 * rest[k, :, 0])
        if k % 3 == 2:
            joints[:, base + 1] = joints[:, base] + world[:, k] @ (length * rest[k, :, 0])
    return joints * FLIP, verts * FLIP, local, hand, offsets


def _random_quats(rng, shape, max_angle):
    axis = rng.normal(size=shape + (3,))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    angle = rng.uniform(0, max_angle, shape + (1,))
    return np.concatenate([axis * np.sin(angle / 2), np.cos(angle / 2)], -1)


@pytest.mark.parametrize("side", ["left", "right"])
def test_random_finger_rotations_come_back_from_points(side):
    """Known finger locals and Hand -> joints and vertices by forward kinematics -> solve -> the same (1e-4)."""
    joints, verts, local, hand, offsets = synthetic_hand(np.random.default_rng(3), side, 32)
    got = hh.solve_hand(joints, verts, side)
    assert angle_between(got.local, local).max() < 1e-4
    assert np.abs(got.hand_world - hand).max() < 1e-6
    np.testing.assert_allclose(got.offsets, np.broadcast_to(offsets, got.offsets.shape), atol=1e-9)


def test_a_left_hand_mirrored_from_a_right_one_gives_mirrored_rotations():
    joints, verts, _, _, _ = synthetic_hand(np.random.default_rng(4), "right", 16)
    right = hh.solve_hand(joints, verts, "right")
    left = hh.solve_hand(joints * [-1.0, 1, 1], verts * [-1.0, 1, 1], "left")  # a mirror image: x negated
    assert angle_between(left.local, hh.mirror_quat(right.local)).max() < 1e-6  # arccos resolves ~1e-8
    m = np.diag([-1.0, 1, 1])
    np.testing.assert_allclose(left.hand_world, m @ right.hand_world @ m, atol=1e-12)
    np.testing.assert_allclose(left.offsets, right.offsets * [-1.0, 1, 1], atol=1e-12)


@pytest.fixture(scope="module")
def hands(mano_dir):
    return {side: PosedHand(mano_dir, side) for side in ("left", "right")}


def test_twist_vertices_sit_where_their_names_say(hands):
    """Each (nail, pad) pair on the template: both on the bone they serve, near its middle, the nail on the
    back of the hand (the thumb's away from the palm)."""
    h = hands["right"]
    rest = hh._REST_FINGERS["right"]
    for k, (nail, pad) in enumerate(hh.TWIST_PAIRS):
        assert h.bone_of_vertex[nail] == k and h.bone_of_vertex[pad] == k, (k, nail, pad)
        assert 0.2 < h.along[nail] < 0.8 and 0.2 < h.along[pad] < 0.8
        across = h.v[nail] - h.v[pad]
        axis = h.j[hh.FINGER_BASE[k] + 1] - h.j[hh.FINGER_BASE[k]]
        across -= axis * (across @ axis) / (axis @ axis)
        assert across @ h.world0[k] @ rest[k, :, 1] > 0.7 * np.linalg.norm(across), k
    # the nails of the four fingers are on the back of the hand (+Y at rest, palm down)
    assert h.v[hh.TWIST_PAIRS[3:, 0], 1].mean() > h.v[hh.TWIST_PAIRS[3:, 1], 1].mean() + 0.008


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_curled_mano_hand_is_solved(hands, side):
    """The MANO template curled by known angles per joint (and twisted by known angles), each vertex moving
    with the segment nearest to it: every bone within 3 degrees of its direction and 5 of its twist."""
    h = hands[side]
    rng = np.random.default_rng(11)
    for trial in range(4):
        curl = np.tile([10.0, 25, 15], 5) if trial == 0 else rng.uniform(0, 70, 15)
        curl[:3] *= 0.5  # the thumb bends less
        twist = rng.uniform(-15, 15, 15)
        local = hu.quat_multiply(h.local0, flexion(side, curl, twist))
        hand = Rotation.random(random_state=trial).as_matrix()
        joints, verts = h.posed(hand, local)
        got = hh.solve_hand(joints[None], verts[None], side)
        axis = hh._REST_FINGERS[side][:, :, 0]
        _, world_got = _worlds(got.hand_world[0], got.local[0])
        _, world_want = _worlds(hand, local)
        swing, tw = swing_twist_errors(world_got, world_want, axis)
        assert swing.max() < 3 and tw.max() < 5, (trial, swing.round(2), tw.round(2))
        np.testing.assert_allclose(got.hand_world[0], hand, atol=1e-9)


def _worlds(hand: np.ndarray, local: np.ndarray):
    m = hu.quat_to_matrix(local)
    out = np.empty_like(m)
    for k in range(15):
        out[k] = (hand if k % 3 == 0 else out[k - 1]) @ m[k]
    return out, hu.quat_from_matrix(out)


@pytest.fixture(scope="module")
def template(assets_dir) -> PosedTemplate:
    return PosedTemplate(assets_dir)


def hand_of(joints, verts):
    return SimpleNamespace(joints3d=joints.astype(np.float32), vertices=verts.astype(np.float32))


@pytest.mark.parametrize("limbs", [False, True])
def test_the_hand_bone_from_the_hand_mesh_agrees_with_the_body_solve(template, hands, limbs):
    """The template body turned as a whole (the body solve is exact there) and, with `limbs`, posed with random
    rotations (regressed joints then move a little off rigid); MANO hands placed at the body's hands, rigid
    with them: the Hand bone from the hand mesh, through the policy, against the body solve's."""
    rng = np.random.default_rng(2)
    n = 6
    q = np.tile(template.pose.rotations, (n, 1, 1))
    q[:, 0] = Rotation.random(n, random_state=2).as_quat()
    if limbs:
        q = hu.quat_multiply(q, random_rotations(rng, n, max_angle=0.4))
    _, verts, joints = template.posed(q)
    body = hu.solve(to_camera(verts), to_camera(joints))
    _, truth = hu.forward_kinematics(hu.HumanoidPose(q, body.offsets, body.root))
    persons = []
    for i in range(n):
        persons.append({side: hand_of(*hands[side].posed(hu.quat_to_matrix(truth[i, hh.HAND_BONE[side]]),
                                                          hands[side].local0)) for side in hh.SIDES})
    pose, seen = HandPolicy().apply(body, list(range(n)), persons, 0.0)
    assert seen.all() and pose.rotations.shape == (n, 52, 4)
    bare = hu.HumanoidPose(body.rotations, body.offsets, body.root)  # no world rotations: the chain is multiplied
    np.testing.assert_allclose(HandPolicy().apply(bare, list(range(n)), persons, 0.0)[0].rotations, pose.rotations,
                               atol=1e-9)
    _, world = hu.forward_kinematics(pose)
    _, world_body = hu.forward_kinematics(body)
    for side in hh.SIDES:
        b = hh.HAND_BONE[side]
        np.testing.assert_allclose(world[:, b], truth[:, b] * np.sign((world[:, b] * truth[:, b]).sum(-1))[:, None],
                                   atol=1e-6)  # the hand mesh gives the hand's own orientation
        err = np.degrees(angle_between(world[:, b], world_body[:, b]))
        assert err.max() < (5.0 if limbs else 1.2), (side, err.round(2))  # 1.1: the symmetric rest
    others = [i for i in range(22) if i not in hh.HAND_BONE.values()]
    np.testing.assert_array_equal(pose.rotations[:, others], body.rotations[:, others])  # the rest untouched


def test_the_policy_blends_holds_and_relaxes(template, hands):
    """30 fps: seen for 1 s, gone for 1.5 s, back. While seen the hand mesh drives Hand and fingers (taken at
    once on the person's first frame); gone: held for `hold`, eased to the body's Hand and a relaxed hand
    over `ease`; back: blended in over `blend`. No frame jumps."""
    timing = HandTiming(blend=0.2, hold=0.5, ease=0.5)
    policy = HandPolicy(timing)
    body = hu.solve(to_camera(template.v)[None], to_camera(template.regressor @ template.v)[None])
    _, world = hu.forward_kinematics(body)
    b = hh.HAND_BONE["right"]
    turned = hu.quat_to_matrix(world[0, b]) @ Rotation.from_euler("xz", [40, 30], degrees=True).as_matrix()
    curled = hu.quat_multiply(hands["right"].local0, flexion("right", np.full(15, 40.0)))
    joints, verts = hands["right"].posed(turned, curled)
    measured = hh.solve_hand(joints[None], verts[None], "right")
    out = []
    times = np.arange(0, 3.5, 1 / 30)
    for t in times:
        present = t < 1.0 or t >= 2.5
        pose, seen = policy.apply(body, ["track"], [{"right": hand_of(joints, verts)} if present else {}], t)
        assert seen[0, 1] == present and not seen[0, 0]
        out.append(pose.rotations[0].copy())
    out = np.array(out)
    f0 = hh.FIRST["right"]
    fingers, hand = out[:, f0:f0 + 15], out[:, b]
    mesh_hand = pose.rotations[0, b]  # the last frame: fully blended in
    seen_now = times < 1.0
    assert angle_between(fingers[seen_now], measured.local[0]).max() < 1e-6  # taken at once, no blend at first
    held = (times >= 1.0) & (times < 1.5 - 1e-9)
    assert angle_between(fingers[held], measured.local[0]).max() < 1e-6
    assert angle_between(hand[held], mesh_hand).max() < 1e-6
    relaxed = (times >= 2.0 + 1e-9) & (times < 2.5)
    assert angle_between(fingers[relaxed], hh.relaxed_fingers("right")).max() < 1e-6
    assert angle_between(hand[relaxed], body.rotations[0, b]).max() < 1e-6
    back = times >= 2.5 + 0.2 + 1e-9
    assert angle_between(fingers[back], measured.local[0]).max() < 1e-6
    assert angle_between(hand[back], mesh_hand).max() < 1e-6
    assert np.degrees(angle_between(hand[back][0], body.rotations[0, b])) > 30  # the mesh's Hand differs
    # no jumps: the largest step between frames is the largest change spread over the blend or the ease
    step = np.degrees(angle_between(out[1:], out[:-1])).max(axis=0)
    total = np.degrees(angle_between(out[-1], out[70]))  # mesh-driven (t 3.5) against relaxed (t 2.33), per bone
    bad = step > total / (0.2 * 30) * 1.6 + 1e-3
    assert not bad.any(), (np.flatnonzero(bad), step[bad].round(2), total[bad].round(2))


def test_degenerate_hands_still_give_unit_rotations():
    """An untrained hand network's output can collapse: every joint on one point, a twist pair on one point.
    The frames stay orthonormal: finite unit quaternions, and the policy passes them on."""
    rng = np.random.default_rng(0)
    joints = rng.normal(scale=0.05, size=(3, 21, 3))
    verts = rng.normal(scale=0.05, size=(3, 778, 3))
    joints[0] = 0.01
    verts[0] = 0.01
    verts[1, hh.TWIST_PAIRS[4, 0]] = verts[1, hh.TWIST_PAIRS[4, 1]]
    joints[2, 6] = joints[2, 5]  # a zero-length bone
    got = hh.solve_hand(joints, verts, "left")
    assert np.isfinite(got.local).all() and np.allclose(np.linalg.norm(got.local, axis=-1), 1)
    assert np.isfinite(got.hand_world).all() and np.isfinite(got.offsets).all()
    body = hu.HumanoidPose(np.tile([0, 0, 0, 1.0], (3, 22, 1)), np.zeros((3, 22, 3)), np.zeros((3, 3)))
    pose, seen = HandPolicy().apply(body, [0, 1, 2], [{"left": hand_of(j, v)} for j, v in zip(joints, verts)], 0.0)
    assert seen[:, 0].all() and np.isfinite(pose.rotations).all()
    with pytest.raises(ValueError, match="side"):
        hh.solve_hand(joints, verts, "middle")
    with pytest.raises(ValueError, match="expected joints"):
        hh.solve_hand(joints[:, :20], verts, "left")
