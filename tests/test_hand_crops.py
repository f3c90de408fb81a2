"""Hand crop geometry (fastmetro.hand_crops): hand vertices, squares, skip reasons, crop and mirror round trips."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fastmetro import camera
from fastmetro.hand_crops import (
    CROP_SIZE, HandSkip, HandSquare, Side, frame_to_hand_crop, hand_crop_matrix, hand_crop_to_frame, hand_square,
    hand_square_in_frame, hand_squares, mirror_camera, mirror_faces, mirror_points, smpl_hand_vertices,
    unmirror_result,
)


@pytest.fixture(scope="module")
def smpl(assets_dir):
    from fastmetro.assets import load_mesh_data

    return load_mesh_data(assets_dir)


@pytest.fixture(scope="module")
def hands(smpl):
    return smpl_hand_vertices(smpl.faces, smpl.j_regressor_h36m)


def _dot_frame(h, w, x, y, r):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[(xx - x) ** 2 + (yy - y) ** 2 <= r * r] = 255
    return img


def _centroid(crop):
    m = crop[..., 0].astype(np.float64)
    vv, uu = np.mgrid[0:m.shape[0], 0:m.shape[1]]
    return np.array([(uu * m).sum() / m.sum(), (vv * m).sum() / m.sum()])


# --- which vertices are the hands -----------------------------------------------------------------

def test_smpl_hands_are_two_disjoint_connected_patches_around_the_wrist_vertices(smpl, hands):
    from scipy.sparse.csgraph import connected_components

    from fastmetro.hand_crops import _edges

    graph = _edges(smpl.faces, 6890)
    assert set(hands) == {Side.LEFT, Side.RIGHT}
    assert np.intersect1d(hands[Side.LEFT], hands[Side.RIGHT]).size == 0
    for side, wrist, elbow in ((Side.LEFT, 13, 12), (Side.RIGHT, 16, 15)):
        idx = hands[side]
        assert 600 < len(idx) < 900, len(idx)  # palm and fingers: about an eighth of SMPL's vertices
        assert connected_components(graph[idx][:, idx], directed=False)[0] == 1
        assert set(np.flatnonzero(smpl.j_regressor_h36m[wrist])) <= set(idx)  # the wrist ring is in
        assert not set(np.flatnonzero(smpl.j_regressor_h36m[elbow])) & set(idx)  # the elbow is not
        other = 16 if side is Side.LEFT else 13
        assert not set(np.flatnonzero(smpl.j_regressor_h36m[other])) & set(idx)  # nor the other wrist


# --- squares and reasons ----------------------------------------------------------------------

def _hand_points(center, extent, n=50, seed=0):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-0.5, 0.5, size=(n, 2)) * extent + center
    pts[0], pts[1] = np.add(center, -extent / 2), np.add(center, extent / 2)  # the bounding box is exact
    return pts


def test_a_hand_square_is_centred_on_the_hand_and_sized_from_it():
    sq = hand_square("right", _hand_points((300.0, 200.0), 40.0), (640, 480), scale=2.0)
    assert isinstance(sq, HandSquare) and sq.side is Side.RIGHT and not sq.mirrored
    assert sq.center == pytest.approx((300.0, 200.0)) and sq.size == pytest.approx(80.0)
    left = hand_square(Side.LEFT, _hand_points((100.0, 100.0), 30.0), (640, 480), scale=2.5)
    assert left.mirrored and left.size == pytest.approx(75.0)


def test_hands_get_no_square_with_a_countable_reason():
    frame = (640, 480)
    assert hand_square("left", _hand_points((300.0, 200.0), 10.0), frame, min_hand_px=16) is HandSkip.TOO_SMALL
    assert hand_square("left", _hand_points((660.0, 200.0), 60.0), frame) is HandSkip.OUT_OF_FRAME
    assert hand_square("left", _hand_points((620.0, 200.0), 60.0), frame, min_inside=0.5) is not HandSkip.OUT_OF_FRAME
    pts = _hand_points((300.0, 200.0), 60.0)
    assert hand_square("left", pts, frame, depths=np.full(len(pts), -1.0)) is HandSkip.BEHIND_CAMERA
    assert hand_square("left", pts, frame, coasting=True) is HandSkip.BODY_COASTING
    assert {r.value for r in HandSkip} == {"body_coasting", "behind_camera", "out_of_frame", "too_small"}


def test_hand_squares_from_a_placed_body_mesh(hands):
    # a body mesh stand-in: each hand a 10 cm blob, 3 m in front of a 1000-pixel focal camera
    verts = np.zeros((6890, 3))
    rng = np.random.default_rng(1)
    verts[hands[Side.LEFT]] = rng.uniform(-0.05, 0.05, (len(hands[Side.LEFT]), 3)) + (0.4, 0.0, 0.0)
    verts[hands[Side.RIGHT]] = rng.uniform(-0.05, 0.05, (len(hands[Side.RIGHT]), 3)) + (-0.4, 0.0, 0.0)
    cam_t = np.array([0.0, 0.0, 3.0])
    out = hand_squares(verts, cam_t, 1000.0, (1280, 720), hands, scale=2.0)
    left, right = out[Side.LEFT], out[Side.RIGHT]
    assert left.center[0] == pytest.approx(640 + 1000 * 0.4 / 3, abs=3) and left.mirrored
    assert right.center[0] == pytest.approx(640 - 1000 * 0.4 / 3, abs=3) and not right.mirrored
    assert 2 * 1000 * 0.1 / 3.05 * 0.9 < right.size < 2 * 1000 * 0.1 / 2.95 * 1.1
    far = hand_squares(verts, np.array([0.0, 0.0, 60.0]), 1000.0, (1280, 720), hands)
    assert far == {Side.LEFT: HandSkip.TOO_SMALL, Side.RIGHT: HandSkip.TOO_SMALL}
    assert hand_squares(verts, cam_t, 1000.0, (1280, 720), hands, coasting=True)[Side.LEFT] is HandSkip.BODY_COASTING


# --- frame <-> crop round trips --------------------------------------------------------------------

@pytest.mark.parametrize("mirrored", [False, True])
def test_the_mappings_invert_each_other_and_match_the_warp_matrix(mirrored):
    rng = np.random.default_rng(0)
    pts = rng.uniform(-50, 300, size=(100, 2))
    center, size = (123.4, 210.7), 91.3
    uv = frame_to_hand_crop(pts, center, size, mirrored)
    np.testing.assert_allclose(hand_crop_to_frame(uv, center, size, mirrored), pts, atol=1e-9)
    m = hand_crop_matrix(center, size, mirrored)
    np.testing.assert_allclose(pts @ m[:, :2].T + m[:, 2], uv, atol=1e-9)
    plain = frame_to_hand_crop(pts, center, size, False)
    if mirrored:  # the mirrored crop is the plain one flipped left-right, exactly
        np.testing.assert_allclose(uv[:, 0], CROP_SIZE - 1 - plain[:, 0], atol=1e-9)
        np.testing.assert_array_equal(uv[:, 1], plain[:, 1])


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("size", [40.0, 96.0, 224.0, 380.0])  # hands are small: mostly upsampled
def test_a_dot_in_a_hand_crop_maps_back_to_its_frame_pixel_within_a_pixel(mirrored, size):
    h, w, x, y = 720, 1280, 611, 347
    frame = _dot_frame(h, w, x, y, max(2, int(size / 40)))
    center = (x + 0.5 + 7.3, y + 0.5 - 4.1)
    crop = cv2.warpAffine(frame, hand_crop_matrix(center, size, mirrored), (CROP_SIZE, CROP_SIZE),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    found = hand_crop_to_frame(_centroid(crop), center, size, mirrored)
    assert np.abs(found - (x, y)).max() < 1.0, found


def test_a_mirrored_warp_is_the_plain_crop_flipped():
    rng = np.random.default_rng(3)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (5, 5), 2)
    center, size = (300.2, 240.7), 150.0
    plain = cv2.warpAffine(frame, hand_crop_matrix(center, size, False), (CROP_SIZE, CROP_SIZE))
    flipped = cv2.warpAffine(frame, hand_crop_matrix(center, size, True), (CROP_SIZE, CROP_SIZE))
    assert np.abs(flipped.astype(int) - plain[:, ::-1].astype(int)).max() <= 1  # OpenCV's fixed-point sampling


# --- mirroring the results back -----------------------------------------------------------------

def test_mirroring_round_trips_are_exact():
    rng = np.random.default_rng(4)
    pts = rng.standard_normal((5, 778, 3)).astype(np.float32)
    cam = rng.standard_normal((5, 3)).astype(np.float32)
    faces = rng.integers(0, 778, (1538, 3))
    np.testing.assert_array_equal(mirror_points(mirror_points(pts)), pts)
    np.testing.assert_array_equal(mirror_camera(mirror_camera(cam)), cam)
    np.testing.assert_array_equal(mirror_faces(mirror_faces(faces)), faces)
    m = mirror_points(pts)
    np.testing.assert_array_equal(m[..., 0], -pts[..., 0])
    np.testing.assert_array_equal(m[..., 1:], pts[..., 1:])
    assert not np.shares_memory(m, pts)
    sq = HandSquare(Side.LEFT, (10.0, 20.0), 50.0, True)
    res = {"pred_cam": cam[0], "pred_3d_vertices_fine": pts[0], "pred_3d_joints": pts[0, :21]}
    back = unmirror_result(sq, unmirror_result(sq, res))
    for k in res:
        np.testing.assert_array_equal(back[k], res[k])
    right = HandSquare(Side.RIGHT, (10.0, 20.0), 50.0, False)
    assert unmirror_result(right, res)["pred_cam"] is res["pred_cam"]


def test_a_mirrored_result_projects_where_the_network_saw_it():
    # what the network predicts for the flipped crop of a left hand, projected by its own weak-perspective
    # camera and mapped through the flipped crop, lands on the same frame points as the un-mirrored result
    # through the plain crop; and the un-mirrored camera places it like a body (camera.crop_to_frame_translation)
    rng = np.random.default_rng(5)
    verts = rng.uniform(-0.08, 0.08, (778, 3))
    cam = np.array([6.0, 0.03, -0.02])
    sq = HandSquare(Side.LEFT, (400.0, 260.0), 90.0, True)
    seen_ndc = cam[0] * (verts[:, :2] + cam[1:])
    in_frame = hand_square_in_frame(sq, seen_ndc)
    back = unmirror_result(sq, {"pred_cam": cam, "pred_3d_vertices_fine": verts})
    c, v = back["pred_cam"], back["pred_3d_vertices_fine"]
    plain = camera.weak_perspective_to_frame(v[None], c[None], np.array([sq.center]), np.array([sq.size]))[0]
    np.testing.assert_allclose(plain, in_frame, atol=1e-9)
    wh, focal = (1280, 720), 1000.0
    t = camera.crop_to_frame_translation(c[None], np.array([sq.center]), np.array([sq.size]), wh, focal)
    flat = v.copy()
    flat[:, 2] = 0.0  # the contract of fastmetro.camera: exact for points at Z = 0 (depth adds perspective)
    persp = camera.project(flat[None], t, focal, wh)[0]
    np.testing.assert_allclose(persp, in_frame, atol=1e-6)
