"""Crop weak-perspective camera -> full-frame perspective camera, checked by projecting known points."""
import numpy as np

from fastmetro import camera


def test_translation_reproduces_the_weak_perspective_projection_at_zero_depth():
    rng = np.random.default_rng(0)
    frame_wh = (1280, 720)
    focal = camera.default_focal(frame_wh)
    n = 5
    cam = np.stack([rng.uniform(0.5, 1.2, n), rng.uniform(-0.2, 0.2, n), rng.uniform(-0.2, 0.2, n)], 1)
    center = np.stack([rng.uniform(100, 1180, n), rng.uniform(100, 620, n)], 1)
    size = rng.uniform(80, 500, n)
    pts = rng.uniform(-0.8, 0.8, (n, 20, 3))
    pts[..., 2] = 0.0  # on the plane the two cameras share exactly
    cam_t = camera.crop_to_frame_translation(cam, center, size, frame_wh, focal)
    persp = camera.project(pts, cam_t, focal, frame_wh)
    weak = camera.weak_perspective_to_frame(pts, cam, center, size)
    assert np.abs(persp - weak).max() < 1e-6
    # and it is a real perspective camera: farther points shrink toward the principal point
    assert np.all(cam_t[:, 2] > 0)


def test_depth_follows_box_size_and_known_point_lands_on_its_pixel():
    frame_wh = (640, 480)
    f = 1000.0
    # a person root at X = (0.5, -0.2, 5.0) m; an ideal detector box centred on its projection
    root = np.array([0.5, -0.2, 5.0])
    u = f * root[0] / root[2] + 320
    v = f * root[1] / root[2] + 240
    s, size = 0.9, 200.0
    t = camera.crop_to_frame_translation(np.array([[s, 0.0, 0.0]]), np.array([[u, v]]), np.array([size]), frame_wh, f)
    assert np.isclose(t[0, 2], 2 * f / (s * size))
    px = camera.project(np.zeros((1, 1, 3)), t, f, frame_wh)[0, 0]
    assert np.allclose(px, [u, v], atol=1e-9)
    # twice the box, half the depth
    t2 = camera.crop_to_frame_translation(np.array([[s, 0.0, 0.0]]), np.array([[u, v]]), np.array([2 * size]), frame_wh, f)
    assert np.isclose(t2[0, 2], t[0, 2] / 2)
