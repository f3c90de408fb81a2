"""The crop contract (pipeline/messages.py Person, docs/crops.md): squares, warps and the mapping back."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.messages import CROP_SIZE, Person
from fastmetro.crops import crop_matrix, crop_square, crop_to_frame, frame_to_crop, make_crops, make_crops_roi_align


def _dot_frame(h: int, w: int, x: int, y: int, r: int) -> np.ndarray:
    """A black frame with a white disc of radius r centred on pixel (x, y)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[(xx - x) ** 2 + (yy - y) ** 2 <= r * r] = 255
    return img


def _centroid(crop: np.ndarray) -> np.ndarray:
    m = crop[..., 0].astype(np.float64)
    vv, uu = np.mgrid[0:m.shape[0], 0:m.shape[1]]
    return np.array([(uu * m).sum() / m.sum(), (vv * m).sum() / m.sum()])


def test_crop_square_centres_the_box_and_scales_its_longer_side():
    center, size = crop_square((100, 50, 180, 250), scale=1.25)
    assert center == (140.0, 150.0)
    assert size == pytest.approx(250.0)  # 1.25 x the 200-pixel height


def test_frame_to_crop_inverts_crop_to_frame_and_matches_the_warp_matrix():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-50, 300, size=(100, 2))
    center, size = (123.4, 210.7), 317.9
    back = crop_to_frame(frame_to_crop(pts, center, size), center, size)
    np.testing.assert_allclose(back, pts, atol=1e-9)
    m = crop_matrix(center, size)
    np.testing.assert_allclose(pts @ m[:, :2].T + m[:, 2], frame_to_crop(pts, center, size), atol=1e-9)
    # the crop's centre (between pixels 111 and 112) is the square's centre in continuous coordinates
    mid = crop_to_frame(np.array([(CROP_SIZE - 1) / 2, (CROP_SIZE - 1) / 2]), center, size)
    np.testing.assert_allclose(mid + 0.5, center, atol=1e-9)


@pytest.mark.parametrize("size", [120.0, 224.0, 400.0, 900.0, 1700.0])  # up- and down-scaling, pyramid levels
@pytest.mark.parametrize("offset", [(0.0, 0.0), (37.3, -21.8)])
def test_a_dot_in_the_crop_maps_back_to_its_frame_pixel_within_a_pixel(size, offset):
    h, w, x, y = 1080, 1920, 950, 530
    r = max(3, int(size / 60))
    frame = _dot_frame(h, w, x, y, r)
    center = (x + 0.5 + offset[0], y + 0.5 + offset[1])
    crop = make_crops(frame, [(center, size)])[0]
    found = crop_to_frame(_centroid(crop), center, size)
    assert np.abs(found - (x, y)).max() < 1.0, found


def test_parts_outside_the_frame_are_black_and_the_inside_is_kept():
    frame = np.full((200, 300, 3), 200, np.uint8)
    p = Person(track_id=1, state="new", box=(0, 0, 10, 10), score=1.0, center=(0.0, 100.0), size=200.0)
    crop = make_crops(frame, [p])[0]
    left = crop[:, : CROP_SIZE // 2 - 2]  # frame x < -1: outside
    right = crop[4:-4, CROP_SIZE // 2 + 2:]  # top and bottom rows blend with the border
    assert left.max() == 0
    assert right.min() == 200


def test_crops_are_written_into_the_given_buffer_in_order():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    squares = [((100.0, 100.0), 150.0), ((400.0, 300.0), 260.0), ((600.0, 50.0), 500.0)]
    buf = np.zeros((8, CROP_SIZE, CROP_SIZE, 3), np.uint8)
    out = make_crops(frame, squares, out=buf)
    assert out is buf
    for i, sq in enumerate(squares):
        np.testing.assert_array_equal(buf[i], make_crops(frame, [sq])[0])
    assert buf[3:].max() == 0
    with pytest.raises(ValueError, match="max_persons"):
        make_crops(frame, squares, out=buf[:2])


@pytest.mark.parametrize("size", [180.0, 600.0])
def test_roi_align_crops_follow_the_same_contract(size):
    frame = _dot_frame(720, 1280, 700, 300, max(3, int(size / 50)))
    center = (690.0, 310.0)
    warp = make_crops(frame, [(center, size)])[0]
    roi = make_crops_roi_align(frame, [(center, size)])[0].numpy()
    for crop in (warp, roi):
        assert np.abs(crop_to_frame(_centroid(crop), center, size) - (700, 300)).max() < 1.0
    assert make_crops_roi_align(frame, []).shape == (0, CROP_SIZE, CROP_SIZE, 3)
    assert isinstance(make_crops_roi_align(frame, [(center, size)]), torch.Tensor)
