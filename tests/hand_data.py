"""Test data for the finger bones: the MANO template hand (778 vertices of mano_downsampling.npz `V`, a right
hand: fingers along -x, back of the hand +y, thumb +z), 21 joints estimated on it (the MANO model's own joint
regressor is licensed and not here), and that hand posed with known bone rotations by rigid skinning (each
vertex moves with the bone segment nearest to it), in the stream's camera frame."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from fastmetro import humanoid as hu
from fastmetro import humanoid_hands as hh
from fastmetro.assets import _read_pickled_npy, read_mesh_downsampling
from fastmetro.rotations import frames, quat_from_matrix, quat_to_matrix

TIPS = (744, 320, 443, 554, 671)  # thumb, index, middle, ring, little fingertip vertices (public MANO ids)
# Per finger: the lengths (m) of its three bones, tip inward: distal, intermediate, proximal.
_LENGTHS = ((0.028, 0.031, 0.035), (0.022, 0.023, 0.039), (0.024, 0.026, 0.043), (0.023, 0.025, 0.040),
            (0.021, 0.019, 0.031))


def load_mano_template(mano_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The MANO template's vertices (778, 3) and faces (1538, 3)."""
    path = Path(mano_dir) / "mano_downsampling.npz"
    with zipfile.ZipFile(path) as z:
        v = np.asarray(list(_read_pickled_npy(z.read("V.npy")))[0], dtype=np.float64)
    return v, np.asarray(read_mesh_downsampling(path)["F"][0], dtype=np.int64)


def template_joints(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """21 joints (fastmetro.HAND_JOINT_NAMES order) on the template: the wrist at the centre of the open
    wrist boundary; per finger the tip vertex, then the centres of the finger's vertices (those nearest its
    tip along the surface) at the joints' distances from the tip along the finger's axis, the base one
    continued straight from the last two."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import dijkstra

    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    w = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    graph = sp.csr_matrix((np.r_[w, w], (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(len(v),) * 2)
    edges, count = np.unique(np.sort(e, 1), axis=0, return_counts=True)
    joints = [v[np.unique(edges[count == 1])].mean(0)]
    g = dijkstra(graph, indices=list(TIPS))
    own = np.argmin(g, 0)
    for k, tip in enumerate(TIPS):
        m = (own == k) & (g[k] < 0.045)
        c0 = v[m].mean(0)
        axis = np.linalg.svd(v[m] - c0)[2][0]
        axis = axis if axis @ (c0 - v[tip]) > 0 else -axis  # from the tip inward
        pts, s = [v[tip]], 0.0
        for length in _LENGTHS[k][:2]:
            s += length
            pts.append(v[(own == k) & (np.abs((v - v[tip]) @ axis - s) < 0.004)].mean(0))
        d = (pts[2] - pts[1]) / np.linalg.norm(pts[2] - pts[1])
        pts.append(pts[2] + _LENGTHS[k][2] * d)
        joints += pts[::-1]
    return np.array(joints)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ab = b - a
    t = np.clip(((p[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(p[:, None] - (a + t[..., None] * ab), axis=-1), t


class PosedHand:
    """The template hand of one side at the rest of the skeleton (its palm frame the rest Hand's), posed
    with known finger locals and a known Hand world rotation."""

    def __init__(self, mano_dir: Path, side: str = "right"):
        v, faces = load_mano_template(mano_dir)
        j = template_joints(v, faces)
        if side == "left":  # a left hand is the mirror image (x negated), same topology
            v, j = v * [-1.0, 1, 1], j * [-1.0, 1, 1]
        self.side = side
        palm = frames(j[9] - j[0], j[5] - j[17])
        align = hh._REST_HAND[side] @ palm.T  # the template's palm onto the rest Hand
        self.v = (v - j[0]) @ align.T
        self.j = (j - j[0]) @ align.T
        rest = hh.solve_hand(self.j[None] * [1.0, -1, -1], self.v[None] * [1.0, -1, -1], side)
        self.local0, self.offsets0 = rest.local[0], rest.offsets[0]
        self.world0 = self._worlds(np.eye(3), self.local0)  # (15, 3, 3)
        # segments: the palm (wrist -> each finger base, bone -1) and the 15 finger bones
        a = np.concatenate([np.tile(self.j[0], (5, 1)), self.j[hh.FINGER_BASE]])
        b = np.concatenate([self.j[hh.FINGER_BASE[::3]], self.j[hh.FINGER_BASE + 1]])
        label = np.concatenate([-np.ones(5, int), np.arange(15)])
        dist, t = _segment_distance(self.v, a, b)
        near = np.argmin(dist, 1)
        self.bone_of_vertex = label[near]
        self.along = t[np.arange(len(self.v)), near]

    @staticmethod
    def _worlds(hand: np.ndarray, local: np.ndarray) -> np.ndarray:
        m = quat_to_matrix(local)
        out = np.empty_like(m)
        for k in range(15):
            out[k] = (hand if k % 3 == 0 else out[k - 1]) @ m[k]
        return out

    def posed(self, hand_world: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joints (21, 3) and vertices (778, 3), hand-relative, camera frame, of the hand with this Hand
        world rotation (3, 3) and finger locals (15, 4) (y-up frame)."""
        world = self._worlds(hand_world, local)
        rel = world @ np.swapaxes(self.world0, -1, -2)  # each bone: template -> posed
        j = np.zeros((21, 3))
        for k in range(15):
            base, parent = hh.FINGER_BASE[k], (0 if k % 3 == 0 else hh.FINGER_BASE[k] - 1)
            j[base] = j[parent] + (hand_world if k % 3 == 0 else world[k - 1]) @ self.offsets0[k]
        for f in range(5):
            k = 3 * f + 2
            j[4 * f + 4] = j[4 * f + 3] + rel[k] @ (self.j[4 * f + 4] - self.j[4 * f + 3])
        v = np.empty_like(self.v)
        palm = self.bone_of_vertex < 0
        v[palm] = self.v[palm] @ hand_world.T
        for k in range(15):
            m = self.bone_of_vertex == k
            base = hh.FINGER_BASE[k]
            v[m] = j[base] + (self.v[m] - self.j[base]) @ rel[k].T
        return j * [1.0, -1, -1], v * [1.0, -1, -1]


def flexion(side: str, degrees: np.ndarray, twist_degrees: np.ndarray = None) -> np.ndarray:
    """(15, 4) local rotations (in each bone's rest frame) flexing each bone toward the pad by `degrees`
    and twisting it about its own axis by `twist_degrees`."""
    rest = hh._REST_FINGERS[side]
    flex_axis = np.cross(rest[:, :, 1], rest[:, :, 0])
    a = np.radians(np.broadcast_to(degrees, (15,)))
    q = np.concatenate([flex_axis * np.sin(a / 2)[:, None], np.cos(a / 2)[:, None]], 1)
    if twist_degrees is not None:
        b = np.radians(np.broadcast_to(twist_degrees, (15,)))
        tw = np.concatenate([rest[:, :, 0] * np.sin(b / 2)[:, None], np.cos(b / 2)[:, None]], 1)
        q = hu.quat_multiply(q, tw)
    return quat_from_matrix(quat_to_matrix(q))
