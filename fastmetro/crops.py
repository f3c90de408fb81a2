"""The crop contract of the network, in one place: square crops made from a frame, and results mapped back.

A person's crop is the square of side `size` frame pixels centred on `center`, resampled to
CROP_SIZE x CROP_SIZE (the network's input). A crop pixel (u, v) maps to the frame pixel
    x = center[0] + (u + 0.5 - CROP_SIZE / 2) * size / CROP_SIZE - 0.5
    y = center[1] + (v + 0.5 - CROP_SIZE / 2) * size / CROP_SIZE - 0.5
(pixel centres at integer coordinates). See docs/crops.md. Used by the detect stage (making crops), the
infer stage and the `image` command (results placed in the frame's camera: `place`).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence

import cv2
import numpy as np

from . import CROP_SIZE


def crop_square(box: Sequence[float], scale: float = 1.25) -> tuple[tuple[float, float], float]:
    """Centre and side (frame pixels) of the crop square of a tight box x1, y1, x2, y2."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * scale
    return ((x1 + x2) / 2.0, (y1 + y2) / 2.0), side


def crop_matrix(center: Sequence[float], size: float, crop_size: int = CROP_SIZE) -> np.ndarray:
    """(2, 3) affine matrix taking frame pixel indices to crop pixel indices (the crop contract, inverted):
    u = (x + 0.5 - cx) * crop_size / size + crop_size / 2 - 0.5."""
    k = crop_size / float(size)
    h = crop_size / 2.0 - 0.5
    return np.array([[k, 0.0, (0.5 - center[0]) * k + h], [0.0, k, (0.5 - center[1]) * k + h]], np.float64)


def crop_to_frame(points: np.ndarray, center: Sequence[float], size: float, crop_size: int = CROP_SIZE) -> np.ndarray:
    """Crop pixel coordinates (..., 2) -> frame pixel coordinates (pixel centres at integers)."""
    p = np.asarray(points, np.float64)
    c = np.asarray(center, np.float64)
    return c + (p + 0.5 - crop_size / 2.0) * (float(size) / crop_size) - 0.5


def frame_to_crop(points: np.ndarray, center: Sequence[float], size: float, crop_size: int = CROP_SIZE) -> np.ndarray:
    """Frame pixel coordinates (..., 2) -> crop pixel coordinates; the inverse of `crop_to_frame`."""
    p = np.asarray(points, np.float64)
    c = np.asarray(center, np.float64)
    return (p + 0.5 - c) * (crop_size / float(size)) + crop_size / 2.0 - 0.5



def _squares(persons: Iterable[Any]) -> list[tuple[tuple[float, float], float]]:
    out = []
    for p in persons:
        if hasattr(p, "center") and hasattr(p, "size"):  # a pipeline.messages.Person
            out.append((tuple(p.center), float(p.size)))
        else:
            c, s = p
            out.append((tuple(c), float(s)))
    return out


def make_crops(rgb: np.ndarray, persons: Iterable[Any], out: Optional[np.ndarray] = None,
               crop_size: int = CROP_SIZE) -> np.ndarray:
    """The crops of a frame: one `cv2.warpAffine` per person, written straight into `out` (N, S, S, 3).

    `persons`: `Person`s or (center, size) pairs. Parts of the square outside the frame are black. Squares
    more than twice the crop size are sampled from a Gaussian pyramid level of the frame (cv2.pyrDown,
    shared by all persons) so that shrinking does not alias; the mapping to frame pixels is unchanged.
    """
    sq = _squares(persons)
    if out is None:
        out = np.empty((len(sq), crop_size, crop_size, 3), np.uint8)
    elif len(out) < len(sq):
        raise ValueError(f"crop buffer holds {len(out)} crops, {len(sq)} persons given (detect.max_persons)")
    pyramid = [rgb]
    for i, (center, size) in enumerate(sq):
        m = crop_matrix(center, size, crop_size)
        level = min(int(math.floor(math.log2(max(size / crop_size, 1.0)))), 4)  # each level halves the frame
        while len(pyramid) <= level:
            pyramid.append(cv2.pyrDown(pyramid[-1]))
        src = pyramid[level]
        if level:  # pyrDown keeps every other pixel: level pixel j sits at frame pixel 2^level * j
            m = m.copy()
            m[:, :2] *= 2 ** level
        cv2.warpAffine(src, m, (crop_size, crop_size), dst=out[i], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return out


def make_crops_roi_align(rgb: Any, persons: Iterable[Any], crop_size: int = CROP_SIZE, device: str = "cpu") -> Any:
    """All crops of a frame in one `torchvision.ops.roi_align` call (the batched way for a GPU).

    Same crop contract as `make_crops`; returns a (N, S, S, 3) uint8 torch tensor on `device`. roi_align
    averages ceil(size / S)^2 samples per output pixel, its own anti-aliasing.
    """
    import torch
    from torchvision.ops import roi_align

    sq = _squares(persons)
    img = torch.as_tensor(rgb, device=device)
    if not sq:
        return torch.empty((0, crop_size, crop_size, 3), dtype=torch.uint8, device=device)
    x = img.permute(2, 0, 1).unsqueeze(0).float()
    boxes = torch.tensor([[0.0, c[0] - s / 2, c[1] - s / 2, c[0] + s / 2, c[1] + s / 2] for c, s in sq],
                         dtype=torch.float32, device=device)
    y = roi_align(x, boxes, (crop_size, crop_size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()



def place(result: dict, persons: Sequence[Any], frame_wh: tuple[int, int], focal: float) -> tuple[np.ndarray, np.ndarray]:
    """The network's results for the crops of `persons` (their `center`, `size`) placed in the frame's
    perspective camera of focal length `focal` (frame pixels): (cam_t (N, 3) body translations, metres;
    joints2d (N, J, 2) the joints projected to frame pixels). See fastmetro.camera."""
    from . import camera

    center = np.array([p.center for p in persons], dtype=np.float64)
    size = np.array([p.size for p in persons], dtype=np.float64)
    cam_t = camera.crop_to_frame_translation(result["cam"], center, size, frame_wh, focal)
    return cam_t, camera.project(result["joints3d"], cam_t, focal, frame_wh)
