"""A track's own body bound to its skeleton: a rest-pose mesh made from the recording's vertices, smooth skin
weights computed here, and linear blend skinning to pose it (what glTF viewers, Blender and FBX tools do).

How (docs/export.md, "Skinned body"):
1. Rigid first guess: every vertex of a few recorded frames (`RIGID_FRAMES`) goes with the bone whose
   segment (its joint to its child's joint) is nearest in that frame, and is moved back to the rest pose by
   that bone's transform; averaged.
2. Weights on that rest mesh: each vertex starts one-hot on its nearest rest bone segment, then the weights
   diffuse over the mesh's own edges (`DIFFUSION_STEPS` steps of averaging with the neighbours), so they
   blend only across the surface around a joint (an elbow's weights do not leak to the chest through the
   air); at most four bones per vertex (glTF's JOINTS_0/WEIGHTS_0), renormalised.
3. The rest mesh again, with those weights: each recorded frame's vertices moved back by the inverse of
   their blended transform, the median over up to `REST_FRAMES` frames spread over the track.
Posing the rest mesh with the track's animation (`pose_vertices`) then follows the recorded vertices up to
what a skeleton of rigid bones with blended joints can express; `skinning_error` measures it.
Numpy and scipy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import sparse

INFLUENCES = 4
DIFFUSION_STEPS = 12
REST_FRAMES = 64
RIGID_FRAMES = 8
_LEAF_LENGTH = 0.5  # a leaf bone's segment: half its own offset further on (as the BVH End Site)


@dataclass
class SkinnedBody:
    """A mesh at the skeleton's rest pose bound to it: vertices (V, 3) in the rest frame (y up, metres,
    the same frame as the skeleton's rest positions), faces (F, 3), and per vertex the `INFLUENCES` bones
    (V, 4) int and weights (V, 4) float (rows sum to 1)."""

    vertices: np.ndarray
    faces: np.ndarray
    joints: np.ndarray
    weights: np.ndarray


def bone_segments(parents: Sequence[int], joints: np.ndarray, offsets: np.ndarray,
                  rotations=None) -> tuple[np.ndarray, np.ndarray]:
    """For every bone, the segments it moves: (S,) bone index and (S, 2, 3) end points, a segment from its
    joint to each child's joint (a leaf: along its own offset, turned by its world rotation matrix
    (B, 3, 3) where the joints are posed)."""
    parents = np.asarray(parents)
    owner, ends = [], []
    for b in range(len(parents)):
        children = np.flatnonzero(parents == b)
        leaf = _LEAF_LENGTH * np.asarray(offsets[b], np.float64)
        if rotations is not None:
            leaf = rotations[b] @ leaf
        tips = [joints[c] for c in children] or [joints[b] + leaf]
        for tip in tips:
            owner.append(b)
            ends.append((joints[b], tip))
    return np.asarray(owner), np.asarray(ends, np.float64)


def _nearest_bone(points: np.ndarray, owner: np.ndarray, ends: np.ndarray) -> np.ndarray:
    a, b = ends[:, 0], ends[:, 1]
    ab = b - a
    rel = points[:, None] - a
    t = np.clip((rel * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    d = np.linalg.norm(rel - t[..., None] * ab, axis=-1)
    return owner[np.argmin(d, axis=1)]


def _adjacency(faces: np.ndarray, n: int) -> sparse.csr_matrix:
    f = np.asarray(faces, np.int64)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    a = sparse.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    a.data[:] = 1.0
    a = a + sparse.identity(n, format="csr")
    return sparse.diags(1.0 / np.asarray(a.sum(1)).ravel()) @ a


def smooth_weights(rest_vertices: np.ndarray, faces: np.ndarray, parents: Sequence[int], rest: np.ndarray,
                   offsets: np.ndarray, steps: int = DIFFUSION_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """(V, 4) bones and (V, 4) weights: nearest rest bone segment, diffused over the mesh's edges."""
    v = len(rest_vertices)
    owner, ends = bone_segments(parents, rest, offsets)
    nearest = _nearest_bone(np.asarray(rest_vertices, np.float64), owner, ends)
    w = np.zeros((v, len(parents)))
    w[np.arange(v), nearest] = 1.0
    avg = _adjacency(faces, v)
    for _ in range(steps):
        w = avg @ w
    joints = np.argsort(-w, axis=1)[:, :INFLUENCES]
    weights = np.take_along_axis(w, joints, axis=1)
    weights /= weights.sum(1, keepdims=True)
    return joints.astype(np.int64), weights


def bone_transforms(rest: np.ndarray, positions: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """(T, B, 3, 4) affine transforms taking a rest-pose point moving with each bone to the pose:
    x -> R (x - rest) + position. positions (T, B, 3), rotations (T, B, 4) world quaternions (x, y, z, w)."""
    from fastmetro.humanoid import quat_to_matrix

    r = quat_to_matrix(np.asarray(rotations, np.float64))
    t = np.asarray(positions, np.float64) - np.einsum("tbij,bj->tbi", r, rest)
    return np.concatenate([r, t[..., None]], -1)


def pose_vertices(body: SkinnedBody, transforms: np.ndarray) -> np.ndarray:
    """Linear blend skinning: (T, V, 3) posed vertices from transforms (T, B, 3, 4)."""
    m = np.einsum("vk,tvkij->tvij", body.weights, transforms[:, body.joints])  # (T, V, 3, 4)
    return np.einsum("tvij,vj->tvi", m[..., :3], body.vertices) + m[..., 3]


def _unpose(vertices: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Points (T, V, 3) back through affine transforms (T, V, 3, 4)."""
    return np.einsum("tvij,tvj->tvi", np.linalg.inv(m[..., :3]), vertices - m[..., 3])


def fit_body(vertices: np.ndarray, faces: np.ndarray, parents: Sequence[int], rest: np.ndarray,
             offsets: np.ndarray, positions: np.ndarray, rotations: np.ndarray) -> SkinnedBody:
    """The track's skinned body from its recorded vertices (T, V, 3), y-up world frame, and the skeleton's
    rest positions (B, 3) and posed positions (T, B, 3) and world rotations (T, B, 4) at those frames."""
    pick = np.unique(np.linspace(0, len(vertices) - 1, min(len(vertices), REST_FRAMES)).round().astype(int))
    verts = np.asarray(vertices, np.float64)[pick]
    pos = np.asarray(positions, np.float64)[pick]
    transforms = bone_transforms(rest, pos, np.asarray(rotations)[pick])
    owner, _ = bone_segments(parents, rest, offsets)
    # 1. rigid: each vertex with its nearest bone in its own frame (a few frames do for the weights)
    few = np.unique(np.linspace(0, len(verts) - 1, min(len(verts), RIGID_FRAMES)).round().astype(int))
    first = np.empty((len(few),) + verts.shape[1:])
    for i, k in enumerate(few):
        _, ends = bone_segments(parents, pos[k], offsets, transforms[k, :, :, :3])
        bone = _nearest_bone(verts[k], owner, ends)
        first[i] = _unpose(verts[k:k + 1], transforms[k:k + 1, bone])[0]
    first = np.median(first, axis=0)
    # 2. smooth weights on that rest mesh; 3. the rest mesh again through the blended transforms
    joints, weights = smooth_weights(first, faces, parents, rest, offsets)
    blended = np.einsum("vk,tvkij->tvij", weights, transforms[:, joints])
    # the median over frames: a frame where a vertex's blend is near singular (its bones turned far apart)
    # throws it far away, and must not drag its rest place
    rest_vertices = np.median(_unpose(verts, blended), axis=0)
    return SkinnedBody(rest_vertices.astype(np.float32), np.asarray(faces, np.int64), joints,
                       weights.astype(np.float32))


def skinning_error(body: SkinnedBody, transforms: np.ndarray, vertices: np.ndarray) -> dict:
    """Per-vertex distance (metres) between the posed body and the recorded vertices (T, V, 3), over all
    the frames given: median, 95th percentile and maximum."""
    d = np.linalg.norm(pose_vertices(body, transforms) - np.asarray(vertices, np.float64), axis=-1)
    return {"median": float(np.median(d)), "p95": float(np.percentile(d, 95)), "max": float(d.max()),
            "frames": int(len(d))}


def rest_pose(parents: Sequence[int], offsets: np.ndarray, hips_at: np.ndarray) -> np.ndarray:
    """(B, 3) rest joint positions (every rest rotation identity: offsets add up), the root at `hips_at`
    (the files place the rest pose where the track starts)."""
    out = np.zeros((len(parents), 3))
    for i, p in enumerate(parents):
        out[i] = np.asarray(offsets[i], np.float64) + (out[p] if p >= 0 else 0.0)
    return out + (np.asarray(hips_at, np.float64) - out[list(parents).index(-1)])


ERROR_FRAMES = 256


def track_body(store, faces: np.ndarray, humanoid, offsets: np.ndarray) -> tuple[SkinnedBody, dict]:
    """A track's skinned body from its scratch store (vertices at every frame with a skeleton), and how
    far the posed body is from the recorded vertices (`skinning_error` over up to `ERROR_FRAMES` frames)."""
    parents = np.asarray(humanoid.PARENTS)
    offsets = np.asarray(offsets)[: len(parents)]  # the body's 22 bones (a skeleton with fingers has more)
    frames = np.asarray(store.array("humanoid_frame"))
    seen = np.searchsorted(np.asarray(store.array("frame_index")), frames)
    with_v = np.searchsorted(np.asarray(store.array("vertices_frame")), frames)
    rotations, root = store.array("humanoid_rotations"), store.array("humanoid_root")
    rest = rest_pose(parents, offsets, root[0])

    def at(rows):
        verts = (np.asarray(store.array("vertices")[with_v[rows]], np.float64)
                 + np.asarray(store.array("cam_t"))[seen[rows]][:, None]) * np.array([1.0, -1.0, -1.0])
        rot = np.asarray(rotations[rows], np.float64)
        pose = humanoid.HumanoidPose(rot, np.broadcast_to(offsets, rot.shape[:-1] + (3,)),
                                     np.asarray(root[rows], np.float64))
        pos, q = humanoid.forward_kinematics(pose)
        return verts, pos, q

    pick = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), REST_FRAMES)).round().astype(int))
    verts, pos, q = at(pick)
    body = fit_body(verts, faces, parents, rest, offsets, pos, q)
    check = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), ERROR_FRAMES)).round().astype(int))
    verts, pos, q = at(check)
    return body, skinning_error(body, bone_transforms(rest, pos, q), verts)
