"""Test data for the humanoid skeleton: the SMPL template mesh from the shared mesh data files, and that
template posed with known bone rotations (rigid skinning), in the y-up frame or the stream's camera frame."""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from fastmetro import humanoid as hu


class _Mesh:  # stands in for psbody.mesh.Mesh: only its attributes (v, f) are read
    def __setstate__(self, state):
        self.__dict__.update(state)


class _TemplateUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in {("psbody.mesh.mesh", "Mesh"), ("__main__", "MyMesh")}:
            return _Mesh
        if module.startswith("numpy") and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module.startswith("numpy") and name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's own _reconstruct, whatever its module
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def load_template(assets_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 6,890-vertex SMPL template (T-pose, y up, facing +Z, left at +X: SMPL's own frame, which is the
    humanoid frame) stored in mesh_downsampling.npz's `M`, and J_regressor_h36m_correct (17, 6890)."""
    with zipfile.ZipFile(assets_dir / "mesh_downsampling.npz") as z:
        f = io.BytesIO(z.read("M.npy"))
    version = np.lib.format.read_magic(f)
    (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
    meshes = _TemplateUnpickler(f, encoding="latin1").load()
    return np.asarray(meshes[0].v, dtype=np.float64), np.load(assets_dir / "J_regressor_h36m_correct.npy")


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(p[:, None] - (a + t[..., None] * ab), axis=-1)


class PosedTemplate:
    """Poses the template with known local rotations: every vertex moves rigidly with the bone nearest
    to it (marker vertices with the bone they serve)."""

    def __init__(self, assets_dir: Path):
        self.v, self.regressor = load_template(assets_dir)
        self.kp = hu.key_points(self.v[None], (self.regressor @ self.v)[None])[0]
        self.pose = hu.solve_points(self.kp[None])
        _, q = hu.forward_kinematics(self.pose)
        self.world = hu.quat_to_matrix(q[0])  # the template's own bone rotations
        j = self.kp[: len(hu.BONES)]
        tips = j.copy()  # each bone's segment: joint -> tip (toes: a point)
        tips[hu._SOLVED] = self.kp[hu._TIP_K]
        self.bone_of_vertex = np.argmin(_segment_distance(self.v, j, tips), axis=1)
        for k, b in enumerate(hu.KEYPOINT_BONE[len(hu.BONES):]):
            self.bone_of_vertex[hu._MARKER_IDS[k]] = b
        self.kp_bone = hu.KEYPOINT_BONE

    def posed(self, rotations: np.ndarray, root=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """rotations (N, B, 4) local -> key points (N, K, 3), vertices (N, 6890, 3), Human3.6M joints
        (N, 17, 3), y-up frame, root at the template's Hips unless given."""
        n = len(rotations)
        root = np.tile(self.kp[0], (n, 1)) if root is None else root
        pose = hu.HumanoidPose(rotations, np.tile(self.pose.offsets, (n, 1, 1)), root)
        pos, q = hu.forward_kinematics(pose)
        rel = hu.quat_to_matrix(q) @ np.swapaxes(self.world, -1, -2)  # (N, B, 3, 3) template -> posed
        j0 = self.kp[: len(hu.BONES)]

        def move(points, bones):
            return pos[:, bones] + np.einsum("nkij,kj->nki", rel[:, bones], points - j0[bones])

        kp = np.concatenate([pos, move(self.kp[len(hu.BONES):], self.kp_bone[len(hu.BONES):])], axis=1)
        verts = move(self.v, self.bone_of_vertex)
        return kp, verts, np.einsum("jv,nvc->njc", self.regressor, verts)


def random_rotations(rng: np.random.Generator, n: int, max_angle: float = np.pi) -> np.ndarray:
    """(n, B, 4) random local rotations (toes identity: nothing beyond them fixes their rotation)."""
    axis = rng.normal(size=(n, len(hu.BONES), 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    angle = rng.uniform(0, max_angle, (n, len(hu.BONES), 1))
    q = np.concatenate([axis * np.sin(angle / 2), np.cos(angle / 2)], -1)
    q[:, [hu.BONES.index("LeftToes"), hu.BONES.index("RightToes")]] = [0, 0, 0, 1]
    return q


def to_camera(points: np.ndarray) -> np.ndarray:
    """y-up frame -> the stream's camera frame (and back: the turn is its own inverse)."""
    return points * np.array([1.0, -1.0, -1.0])
