"""Hand crops from a body mesh: which SMPL vertices are the hands, a square crop per hand, mirroring.

Pure functions on numpy arrays (no torch, no OpenCV); the stage that cuts crops warps with
`hand_crop_matrix` and runs the hand network on them. Conventions are those of the body crops
(docs/crops.md): continuous frame coordinates with pixel centres at integers, and crop pixel (u, v) of a
square of side `size` centred on `center`, resampled to `crop_size` pixels, is

    x = center[0] + (u + 0.5 - crop_size / 2) * size / crop_size - 0.5        (the same for y, v)

**Which vertices are the hands.** Derived from the official SMPL data files, not from a hand-made list:
on the 6890-vertex mesh (faces F[0] of mesh_downsampling.npz) take the vertices the Human3.6M regressor
(J_regressor_h36m_correct.npy) uses for a wrist and for the elbow of the same arm, and count hops along
mesh edges. For a vertex beyond the wrist, the shortest path from the elbow runs through the wrist, so
    hops(elbow, v) - hops(wrist, v) >= L,   L = hops(elbow vertices, wrist vertices);
along the forearm that difference falls by 2 per hop towards the elbow, and on every other body part it
is negative (their paths from the wrist run back through the elbow). Those vertices, palm and fingers
with the wrist ring, are the hand: 775 (left) and 740 (right) of the 6890, each one connected patch
(SMPL's own part segmentation has about 800 per hand including the wrist). A crop is sized from the
hand's projected extent with a generous `scale`, so a vertex more or less at the wrist does not move it.

**Mirroring.** The released network (FreiHAND) is a right-hand model. A left hand is mirrored in: its
crop is the horizontal flip of the plain crop (`mirrored=True` in the matrix and the mappings below), so
the network sees a right hand. Its outputs are mirrored back exactly: x of every vertex and joint is
negated (a mirror about the camera's y-z plane) and the camera's tx too, (s, tx, ty) -> (s, -tx, ty),
because a point at crop abscissa n of the flipped crop is at -n in the plain one:
    -s (X + tx) = s (-X + (-tx)).
Mirroring turns the triangles' winding, so a left-hand mesh is drawn with `mirror_faces(faces)`. After
un-mirroring, a left hand's (s, tx, ty) is a camera of the plain crop, so fastmetro.camera's
crop_to_frame_translation places it in the body's camera frame exactly as the body's cam_t is made.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union

import numpy as np

CROP_SIZE = 224

# Human3.6M joint rows (J_regressor_h36m_correct order, fastmetro.H36M_JOINT_NAMES) of each arm.
_WRIST_ELBOW = {"left": (13, 12), "right": (16, 15)}


class Side(str, enum.Enum):
    """The person's own left and right (SMPL's), not the image's."""

    LEFT = "left"
    RIGHT = "right"


class HandSkip(str, enum.Enum):
    """Why a hand has no crop (and so no mesh) this frame; the values are what gets counted."""

    BODY_COASTING = "body_coasting"  # the body itself was predicted, not measured, this frame
    BEHIND_CAMERA = "behind_camera"  # part of the hand is at or behind the camera plane
    OUT_OF_FRAME = "out_of_frame"  # less than `min_inside` of the projected hand is inside the frame
    TOO_SMALL = "too_small"  # the projected hand spans fewer than `min_hand_px` pixels


@dataclass(frozen=True)
class HandSquare:
    """The crop of one hand: the frame square (as a body crop's) and whether it is flipped."""

    side: Side
    center: tuple[float, float]
    size: float
    mirrored: bool  # True for left hands: the network sees the flipped crop


def _edges(faces: np.ndarray, n: int):
    import scipy.sparse

    f = np.asarray(faces, dtype=np.int64)
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    return scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))


def smpl_hand_vertices(faces: np.ndarray, j_regressor_h36m: np.ndarray) -> dict[Side, np.ndarray]:
    """The SMPL vertex indices of each hand, sorted (see the module docstring for the rule).

    faces: (13776, 3) triangles of the 6890-vertex mesh (fastmetro MeshData.faces);
    j_regressor_h36m: (17, 6890) (MeshData.j_regressor_h36m)."""
    from scipy.sparse.csgraph import dijkstra

    reg = np.asarray(j_regressor_h36m)
    graph = _edges(faces, reg.shape[1])
    out = {}
    for side, (wrist, elbow) in _WRIST_ELBOW.items():
        w, e = np.flatnonzero(reg[wrist]), np.flatnonzero(reg[elbow])
        hops_w = dijkstra(graph, indices=w, unweighted=True, min_only=True)
        hops_e = dijkstra(graph, indices=e, unweighted=True, min_only=True)
        reach = hops_e[w].min()
        out[Side(side)] = np.flatnonzero(hops_e - hops_w >= reach)
    return out


def project_hands(
    vertices: np.ndarray, cam_t: np.ndarray, focal: float, frame_wh: tuple[int, int],
    hand_vertices: Mapping[Side, np.ndarray],
) -> dict[Side, tuple[np.ndarray, np.ndarray]]:
    """Each hand's vertices of one body mesh (6890, 3), placed by cam_t (3,) and seen by the pipeline's
    perspective camera (fastmetro.camera): side -> (frame points (K, 2), depths (K,))."""
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(cam_t, dtype=np.float64).reshape(3)
    w, h = frame_wh
    out = {}
    for side, idx in hand_vertices.items():
        p = v[idx] + t
        z = p[:, 2]
        xy = focal * p[:, :2] / np.maximum(z, 1e-9)[:, None] + np.array([w / 2.0, h / 2.0])
        out[Side(side)] = (xy, z)
    return out


def hand_square(
    side: Union[Side, str], points: np.ndarray, frame_wh: tuple[int, int], depths: Optional[np.ndarray] = None,
    scale: float = 2.0, min_hand_px: float = 16.0, min_inside: float = 0.5, coasting: bool = False,
) -> Union[HandSquare, HandSkip]:
    """The crop square of one hand from its projected vertices (K, 2) in frame coordinates, or the reason
    it gets none. Centre: the centre of the points' bounding box; side: scale x its longer side (the hand
    then fills about 1/scale of the crop, near the framing of FreiHAND's crops). depths (K,), when given,
    rule out hands at or behind the camera."""
    side = Side(side)
    if coasting:
        return HandSkip.BODY_COASTING
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if depths is not None and (len(p) == 0 or np.min(depths) <= 1e-6):
        return HandSkip.BEHIND_CAMERA
    if len(p) == 0 or not np.isfinite(p).all():
        return HandSkip.OUT_OF_FRAME
    w, h = frame_wh
    inside = (p[:, 0] >= 0) & (p[:, 0] <= w) & (p[:, 1] >= 0) & (p[:, 1] <= h)
    if inside.mean() < min_inside:
        return HandSkip.OUT_OF_FRAME
    lo, hi = p.min(axis=0), p.max(axis=0)
    extent = float((hi - lo).max())
    if extent < min_hand_px:
        return HandSkip.TOO_SMALL
    c = (lo + hi) / 2.0
    return HandSquare(side, (float(c[0]), float(c[1])), scale * extent, mirrored=side is Side.LEFT)


def hand_squares(
    vertices: np.ndarray, cam_t: np.ndarray, focal: float, frame_wh: tuple[int, int],
    hand_vertices: Mapping[Side, np.ndarray], coasting: bool = False, **kw,
) -> dict[Side, Union[HandSquare, HandSkip]]:
    """Both hands of one person: side -> its square or the reason it has none (hand_square's keywords)."""
    if coasting:
        return {Side(s): HandSkip.BODY_COASTING for s in hand_vertices}
    projected = project_hands(vertices, cam_t, focal, frame_wh, hand_vertices)
    return {s: hand_square(s, xy, frame_wh, depths=z, **kw) for s, (xy, z) in projected.items()}


# --- frame <-> crop -------------------------------------------------------------------------------

def hand_crop_matrix(center: Sequence[float], size: float, mirrored: bool, crop_size: int = CROP_SIZE) -> np.ndarray:
    """The 2 x 3 affine from frame points to crop pixels (for cv2.warpAffine); mirrored flips u."""
    k = crop_size / float(size)
    m = np.array([[k, 0.0, (0.5 - center[0]) * k + crop_size / 2 - 0.5],
                  [0.0, k, (0.5 - center[1]) * k + crop_size / 2 - 0.5]])
    if mirrored:  # u -> crop_size - 1 - u
        m[0] = -m[0]
        m[0, 2] += crop_size - 1
    return m


def frame_to_hand_crop(points: np.ndarray, center: Sequence[float], size: float, mirrored: bool,
                       crop_size: int = CROP_SIZE) -> np.ndarray:
    """Frame points (..., 2) -> crop pixels (..., 2) of the (possibly mirrored) hand crop."""
    p = np.asarray(points, dtype=np.float64)
    uv = (p + 0.5 - np.asarray(center, dtype=np.float64)) * (crop_size / float(size)) + crop_size / 2 - 0.5
    if mirrored:
        uv = uv.copy()
        uv[..., 0] = crop_size - 1 - uv[..., 0]
    return uv


def hand_crop_to_frame(points: np.ndarray, center: Sequence[float], size: float, mirrored: bool,
                       crop_size: int = CROP_SIZE) -> np.ndarray:
    """Crop pixels (..., 2) of the (possibly mirrored) hand crop -> frame points (..., 2)."""
    uv = np.array(points, dtype=np.float64)
    if mirrored:
        uv[..., 0] = crop_size - 1 - uv[..., 0]
    return np.asarray(center, dtype=np.float64) + (uv + 0.5 - crop_size / 2) * (float(size) / crop_size) - 0.5


def hand_square_in_frame(square: HandSquare, points_ndc: np.ndarray) -> np.ndarray:
    """The network's normalised crop coordinates (..., 2) (-1 and 1 at the edges of the crop it saw) ->
    continuous frame points; for a mirrored crop the abscissa is flipped back."""
    n = np.array(points_ndc, dtype=np.float64)
    if square.mirrored:
        n[..., 0] = -n[..., 0]
    return np.asarray(square.center, dtype=np.float64) + n * square.size / 2.0


# --- mirroring the network's results back ------------------------------------------------------

def mirror_points(points: np.ndarray) -> np.ndarray:
    """3D points (..., 3) mirrored about the y-z plane: x negated (exact; its own inverse)."""
    p = np.array(points, copy=True)
    p[..., 0] = -p[..., 0]
    return p


def mirror_camera(cam: np.ndarray) -> np.ndarray:
    """Weak-perspective cameras (..., 3) = (s, tx, ty) of a flipped crop -> those of the plain crop."""
    c = np.array(cam, copy=True)
    c[..., 1] = -c[..., 1]
    return c


def mirror_faces(faces: np.ndarray) -> np.ndarray:
    """Triangles with their winding reversed, for drawing a mirrored mesh with outward normals."""
    return np.ascontiguousarray(np.asarray(faces)[:, ::-1])


def unmirror_result(square: HandSquare, result: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One hand's network outputs (official names, or the engine's cam / joints3d / vertices) in the frame
    of the plain crop: mirrored back for a left hand, unchanged for a right one."""
    out = dict(result)
    if not square.mirrored:
        return out
    for key, value in result.items():
        if key in ("pred_cam", "cam"):
            out[key] = mirror_camera(value)
        elif key.startswith("pred_3d_") or key in ("joints3d", "vertices"):
            out[key] = mirror_points(value)
    return out
