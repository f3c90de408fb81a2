"""A humanoid skeleton (Unity HumanBodyBones) for every person: local bone rotations, bone offsets and root.

    from fastmetro import humanoid
    pose = humanoid.solve(vertices, joints_h36m, cam_t)          # (N, 6890, 3), (N, 17, 3), (N, 3), camera frame
    pose = humanoid.solve_persons(frame.persons)                 # the same from the subscriber's PersonData
    pos, rot = humanoid.forward_kinematics(pose)                 # (N, B, 3), (N, B, 4) in the y-up frame

The frame: right-handed, +Y up, metres; the rest skeleton is a T-pose facing +Z, arms along +-X, +X the
character's LEFT (glTF's convention), every rest rotation identity. The stream's camera frame (x right,
y down, z forward) maps to it by a 180 degree turn about X: (x, y, z) -> (x, -y, -z).

Two ways to the rotations, same skeleton, same offsets:
- from the mesh (every variant): each bone's orientation (swing and twist) is the frame of three or more
  points on it: its joint, the next joint (or a tip vertex) and a pair of vertices across it (front/back,
  left/right). Closed form, vectorised over persons. The vertices are listed in `MARKERS`.
- from the SMPL head's `rotmat` (the -smpl variants): SMPL's 24 parent-relative rotations map one-to-one
  onto the 22 bones (same tree); a fixed per-bone correction (`_TEMPLATE_ROT`, the rotation of the SMPL
  template's own segments away from the ideal T-pose) puts them on the same rest.
Offsets are measured on the person's own mesh, so forward kinematics lands on the person's joints.
Numpy only; quaternions are (x, y, z, w) (`fastmetro.rotations`, re-exported here). The finger bones,
solved from the hand network's output, are `fastmetro.humanoid_hands`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .humanoid_rest import TEMPLATE_KEY_POINTS as _TEMPLATE_KEY_POINTS
from .rotations import (cross, frames, quat_conjugate, quat_from_matrix, quat_multiply,  # noqa: F401  (API)
                        quat_rotate, quat_slerp, quat_to_matrix)

__all__ = [
    "BONES", "PARENTS", "SMPL_JOINT", "MARKERS", "HumanoidPose", "solve", "solve_persons", "solve_points",
    "key_points", "forward_kinematics", "rest_height", "CAMERA_TO_YUP", "quat_from_matrix", "quat_to_matrix",
    "quat_multiply", "quat_rotate", "quat_conjugate", "KEYPOINT_BONE",
]

BONES: tuple[str, ...] = (
    "Hips", "Spine", "Chest", "UpperChest", "Neck", "Head",
    "LeftShoulder", "LeftUpperArm", "LeftLowerArm", "LeftHand",
    "RightShoulder", "RightUpperArm", "RightLowerArm", "RightHand",
    "LeftUpperLeg", "LeftLowerLeg", "LeftFoot", "LeftToes",
    "RightUpperLeg", "RightLowerLeg", "RightFoot", "RightToes",
)
_I = {name: i for i, name in enumerate(BONES)}
PARENTS: np.ndarray = np.array([
    -1, 0, 1, 2, 3, 4,
    3, 6, 7, 8,
    3, 10, 11, 12,
    0, 14, 15, 16,
    0, 18, 19, 20,
], dtype=np.int64)
# The skeleton with hands: the 30 Unity finger bones after the body's 22 (Left then Right x Thumb ... Little x
# Proximal, Intermediate, Distal), each Proximal under its Hand; fastmetro.humanoid_hands solves them.
FINGERS = ("Thumb", "Index", "Middle", "Ring", "Little")
PHALANGES = ("Proximal", "Intermediate", "Distal")
FINGER_BONES: tuple[str, ...] = tuple(f"{s}{f}{p}" for s in ("Left", "Right") for f in FINGERS for p in PHALANGES)
ALL_BONES: tuple[str, ...] = BONES + FINGER_BONES
ALL_PARENTS: np.ndarray = np.array(list(PARENTS) + [
    BONES.index(f"{side}Hand") if k % 3 == 0 else len(BONES) + 15 * s + k - 1
    for s, side in enumerate(("Left", "Right")) for k in range(15)], dtype=np.int64)
# The SMPL joint driving each bone (SMPL order: 0 pelvis, 1/2 L/R hip, 3 spine1, 4/5 knees, 6 spine2, 7/8 ankles,
# 9 spine3, 10/11 feet, 12 neck, 13/14 collars, 15 head, 16/17 shoulders, 18/19 elbows, 20/21 wrists, 22/23 hands).
SMPL_JOINT: np.ndarray = np.array([0, 3, 6, 9, 12, 15, 13, 16, 18, 20, 14, 17, 19, 21, 1, 4, 7, 10, 2, 5, 8, 11])
_SMPL_PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21])

CAMERA_TO_YUP = np.diag([1.0, -1.0, -1.0])  # 180 degrees about X: camera frame (y down, z forward) -> y-up
_FLIP = np.array([1.0, -1.0, -1.0])

# SMPL vertices used (6,890-vertex topology). The first group are the public keypoint vertices of
# SPIN/VIBE/SMPL-X (`vertex_ids`); the second were picked on the SMPL template for this module (front/back
# of a segment at its middle, right side the mirror of the left). Each is checked on the template in
# tests/test_humanoid.py (side, height, front/back).
MARKERS: dict[str, int] = {
    "lear": 583, "rear": 4071, "nose": 332,
    "lindex": 2319, "lmiddle": 2445, "lpinky": 2673, "rindex": 5782, "rmiddle": 5905, "rpinky": 6133,
    "lbigtoe": 3216, "lsmalltoe": 3226, "rbigtoe": 6617, "rsmalltoe": 6624,
    "head_top": 411,
    "belly_front": 3511, "belly_back": 6287, "chest_front": 4737, "chest_back": 6476,
    "sternum_front": 3078, "upper_back": 1216, "throat": 3050, "nape": 829,
    "lclavicle_top": 744, "rclavicle_top": 4231,
    "lbiceps": 1428, "ltriceps": 2900, "lforearm_front": 1557, "lforearm_back": 1689,
    "rbiceps": 4902, "rtriceps": 6359, "rforearm_front": 5028, "rforearm_back": 5159,
    "lthigh_front": 873, "lthigh_back": 852, "lshin_front": 1103, "lshin_back": 1466,
    "rthigh_front": 4358, "rthigh_back": 4340, "rshin_front": 4589, "rshin_back": 4940,
}
_MARKER_NAMES = tuple(k for k in MARKERS if k != "nose")
_MARKER_IDS = np.array([MARKERS[k] for k in _MARKER_NAMES])
# Key points: the 22 bone joints, then the markers (in _MARKER_NAMES order).
_K = {name: len(BONES) + i for i, name in enumerate(_MARKER_NAMES)}
_NK = len(BONES) + len(_MARKER_NAMES)

# Human3.6M joints (the stream's joints_h36m order).
_H = {n: i for i, n in enumerate((
    "Pelvis", "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "Torso", "Neck", "Nose",
    "Head", "L_Shoulder", "L_Elbow", "L_Wrist", "R_Shoulder", "R_Elbow", "R_Wrist"))}

# Each bone: the key point its primary axis points to, and the pair (a, b) whose difference a - b fixes the twist.
_TIP = {
    "Hips": "Spine", "Spine": "Chest", "Chest": "UpperChest", "UpperChest": "Neck", "Neck": "Head", "Head": "head_top",
    "LeftShoulder": "LeftUpperArm", "LeftUpperArm": "LeftLowerArm", "LeftLowerArm": "LeftHand", "LeftHand": "lmiddle",
    "RightShoulder": "RightUpperArm", "RightUpperArm": "RightLowerArm", "RightLowerArm": "RightHand",
    "RightHand": "rmiddle", "LeftUpperLeg": "LeftLowerLeg", "LeftLowerLeg": "LeftFoot", "LeftFoot": "LeftToes",
    "RightUpperLeg": "RightLowerLeg", "RightLowerLeg": "RightFoot", "RightFoot": "RightToes",
}
_SIDE = {
    "Hips": ("LeftUpperLeg", "RightUpperLeg"), "Spine": ("belly_front", "belly_back"),
    "Chest": ("chest_front", "chest_back"), "UpperChest": ("sternum_front", "upper_back"),
    "Neck": ("throat", "nape"), "Head": ("lear", "rear"),
    "LeftShoulder": ("lclavicle_top", "LeftShoulder"), "LeftUpperArm": ("lbiceps", "ltriceps"),
    "LeftLowerArm": ("lforearm_front", "lforearm_back"), "LeftHand": ("lindex", "lpinky"),
    "RightShoulder": ("rclavicle_top", "RightShoulder"), "RightUpperArm": ("rbiceps", "rtriceps"),
    "RightLowerArm": ("rforearm_front", "rforearm_back"), "RightHand": ("rindex", "rpinky"),
    "LeftUpperLeg": ("lthigh_front", "lthigh_back"), "LeftLowerLeg": ("lshin_front", "lshin_back"),
    "LeftFoot": ("lbigtoe", "lsmalltoe"), "RightUpperLeg": ("rthigh_front", "rthigh_back"),
    "RightLowerLeg": ("rshin_front", "rshin_back"), "RightFoot": ("rbigtoe", "rsmalltoe"),
}
# Toes have no points beyond them: their local rotation is identity (they follow the foot).
_SOLVED = np.array([_I[b] for b in _TIP])


def _kp(name: str) -> int:
    return _I[name] if name in _I else _K[name]


_TIP_K = np.array([_kp(_TIP[BONES[b]]) for b in _SOLVED])
_SIDE_A = np.array([_kp(_SIDE[BONES[b]][0]) for b in _SOLVED])
_SIDE_B = np.array([_kp(_SIDE[BONES[b]][1]) for b in _SOLVED])
# The bone each key point moves with (a joint moves with its parent bone; the Hips joint with the Hips).
KEYPOINT_BONE = np.concatenate([np.maximum(PARENTS, 0), np.zeros(len(_MARKER_NAMES), np.int64)])
for _b in _SOLVED:
    for _k in (_kp(_TIP[BONES[_b]]), _kp(_SIDE[BONES[_b]][0]), _kp(_SIDE[BONES[_b]][1])):
        if _k >= len(BONES):
            KEYPOINT_BONE[_k] = _b


# ------------------------------------------------------------------------------------------------ pose
@dataclass
class HumanoidPose:
    """N persons on the humanoid skeleton, in the y-up frame (see the module docstring)."""

    rotations: np.ndarray  # (N, B, 4) local rotations (x, y, z, w), relative to the parent bone
    offsets: np.ndarray  # (N, B, 3) rest offset of each bone from its parent, in the parent's frame, metres
    root: np.ndarray  # (N, 3) Hips position
    # (N, B, 3, 3) each bone's world rotation where the solve had it (the finger bones' policy reads the
    # LowerArms'); None otherwise. Not kept in step with `rotations` if those are changed afterwards.
    world: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.root)


def _joint_weights() -> np.ndarray:
    """(22, 17 + markers): each bone joint as a weighted sum of the Human3.6M joints and the markers."""
    w = np.zeros((len(BONES), len(_H) + len(_MARKER_NAMES)))
    mk = {n: len(_H) + i for i, n in enumerate(_MARKER_NAMES)}
    recipe = {
        "Hips": {"Pelvis": 1}, "Spine": {"Pelvis": 0.5, "Torso": 0.5}, "Chest": {"Torso": 1},
        "UpperChest": {"Torso": 0.5, "Neck": 0.5}, "Neck": {"Neck": 1}, "Head": {"lear": 0.5, "rear": 0.5},
        "LeftShoulder": {"Neck": 0.75, "L_Shoulder": 0.25}, "LeftUpperArm": {"L_Shoulder": 1},
        "LeftLowerArm": {"L_Elbow": 1}, "LeftHand": {"L_Wrist": 1},
        "RightShoulder": {"Neck": 0.75, "R_Shoulder": 0.25}, "RightUpperArm": {"R_Shoulder": 1},
        "RightLowerArm": {"R_Elbow": 1}, "RightHand": {"R_Wrist": 1},
        "LeftUpperLeg": {"L_Hip": 1}, "LeftLowerLeg": {"L_Knee": 1}, "LeftFoot": {"L_Ankle": 1},
        "LeftToes": {"lbigtoe": 0.5, "lsmalltoe": 0.5},
        "RightUpperLeg": {"R_Hip": 1}, "RightLowerLeg": {"R_Knee": 1}, "RightFoot": {"R_Ankle": 1},
        "RightToes": {"rbigtoe": 0.5, "rsmalltoe": 0.5},
    }
    for bone, parts in recipe.items():
        for name, weight in parts.items():
            w[_I[bone], _H[name] if name in _H else mk[name]] = weight
    return w


_JOINT_W = _joint_weights()


def key_points(vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """(N, K, 3) key points (the 22 bone joints, then the markers) from vertices (N, 6890, 3) and the
    Human3.6M joints (N, 17, 3) regressed from them, in whatever frame those are given. The bone joints:
    Hips = Pelvis, Spine = mid Pelvis-Torso, Chest = Torso, UpperChest = mid Torso-Neck, Neck = Neck (the
    thorax), Head = mid of the ears, shoulders a quarter of the way from Neck to the shoulder joints,
    arms and legs on their Human3.6M joints, Toes = mid of the big and small toe."""
    v = np.asarray(vertices)
    src = np.concatenate([np.asarray(joints, dtype=np.float64), v[..., _MARKER_IDS, :]], axis=-2)
    return np.concatenate([_JOINT_W @ src, src[..., len(_H):, :]], axis=-2)

def _rest_reference(tkp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rest frames of the solved bones and the template's world rotation of every bone, from the
    template's key points: the rest primary axis is ideal (arms and shoulders +-X, legs -Y, the rest the
    template's direction in the mid-sagittal plane), the twist reference is the template's."""
    a_t = tkp[_TIP_K] - tkp[_SOLVED]
    s_t = tkp[_SIDE_A] - tkp[_SIDE_B]
    a0 = a_t.copy()
    for n, b in enumerate(_SOLVED):
        name = BONES[b]
        if "Shoulder" in name or "Arm" in name or "Hand" in name:
            a0[n] = [1.0 if name.startswith("Left") else -1.0, 0.0, 0.0]
        elif "Leg" in name:
            a0[n] = [0.0, -1.0, 0.0]
        else:
            a0[n, 0] = 0.0
    rest = frames(a0, s_t)
    world = np.tile(np.eye(3), (len(BONES), 1, 1))
    world[_SOLVED] = frames(a_t, s_t) @ np.swapaxes(rest, -1, -2)
    for toes, foot in (("LeftToes", "LeftFoot"), ("RightToes", "RightFoot")):
        world[_I[toes]] = world[_I[foot]]
    return rest, world


def _locals_from_world(world: np.ndarray) -> np.ndarray:
    parent = world[..., np.maximum(PARENTS, 0), :, :]
    local = np.swapaxes(parent, -1, -2) @ world
    local[..., 0, :, :] = world[..., 0, :, :]
    return local


def _offsets(world: np.ndarray, kp: np.ndarray) -> np.ndarray:
    j = kp[..., : len(BONES), :]
    d = j - j[..., np.maximum(PARENTS, 0), :]
    off = (np.swapaxes(world[..., np.maximum(PARENTS, 0), :, :], -1, -2) @ d[..., None])[..., 0]
    off[..., 0, :] = 0.0
    return off


def solve_points(kp: np.ndarray, root: Optional[np.ndarray] = None, rotmat: Optional[np.ndarray] = None,
                 scale: float = 1.0) -> HumanoidPose:
    """The pose from key points (N, K, 3) in the y-up frame (`key_points`, or forward kinematics of a
    skeleton in tests). root: (N, 3) Hips position (default: the Hips key point). rotmat: (N, 24, 3, 3)
    SMPL rotations (camera frame) to use instead of the mesh's for the rotations."""
    kp = np.asarray(kp, dtype=np.float64)
    if rotmat is not None:
        world = _world_from_smpl(np.asarray(rotmat, dtype=np.float64))
    else:
        a = kp[..., _TIP_K, :] - kp[..., _SOLVED, :]
        s = kp[..., _SIDE_A, :] - kp[..., _SIDE_B, :]
        world = np.tile(np.eye(3), kp.shape[:-2] + (len(BONES), 1, 1))
        world[..., _SOLVED, :, :] = frames(a, s) @ _REST_T
        world[..., _TOES, :, :] = world[..., _FEET, :, :]
    local = _locals_from_world(world)
    root = kp[..., 0, :] if root is None else np.asarray(root, dtype=np.float64)
    return HumanoidPose(quat_from_matrix(local), _offsets(world, kp) * scale, root * scale, world)


def _world_from_smpl(rotmat: np.ndarray) -> np.ndarray:
    """SMPL parent-relative rotations (N, 24, 3, 3), root in the camera frame -> humanoid world rotations."""
    g = np.empty_like(rotmat)
    g[..., 0, :, :] = CAMERA_TO_YUP @ rotmat[..., 0, :, :]
    for j in range(1, 24):
        g[..., j, :, :] = g[..., _SMPL_PARENTS[j], :, :] @ rotmat[..., j, :, :]
    return g[..., SMPL_JOINT, :, :] @ _TEMPLATE_ROT


def solve(vertices: np.ndarray, joints: np.ndarray, cam_t: Optional[np.ndarray] = None,
          rotmat: Optional[np.ndarray] = None, scale: float = 1.0) -> HumanoidPose:
    """The humanoid pose of N persons from the stream's arrays, all in the camera frame:
    vertices (N, 6890, 3) and joints (N, 17, 3, the Human3.6M `joints_h36m`) body-relative, cam_t (N, 3)
    (None: root at the body origin), rotmat (N, 24, 3, 3) from the SMPL head (None: rotations from the mesh).
    scale multiplies every length (1.0: the person's own, in metres)."""
    v, j = np.asarray(vertices), np.asarray(joints)
    if v.ndim != 3 or v.shape[1:] != (6890, 3) or j.shape != (len(v), 17, 3):
        raise ValueError(f"solve: expected vertices (N, 6890, 3) and joints (N, 17, 3), got {v.shape} and {j.shape}")
    kp = key_points(v, j) * _FLIP  # key points are means of points: the same in either frame
    root = kp[:, 0, :]
    if cam_t is not None:
        root = root + np.asarray(cam_t, dtype=np.float64).reshape(-1, 3) * _FLIP
    return solve_points(kp, root=root, rotmat=rotmat, scale=scale)


def solve_persons(persons: Sequence, scale: float = 1.0, use_rotmat: bool = True) -> HumanoidPose:
    """`solve` for a list of the subscriber's PersonData (every one must carry vertices). With
    use_rotmat, persons from the SMPL-head variants use their rotmat (all of them or none)."""
    if any(p.vertices is None for p in persons):
        raise ValueError("solve_persons: a person without vertices (publish.vertices_every skips some frames)")
    if not persons:
        z = np.zeros((0, len(BONES)))
        return HumanoidPose(np.zeros((0, len(BONES), 4)), np.zeros((0, len(BONES), 3)), z[:, :3])
    rot = None
    if use_rotmat and all(getattr(p, "rotmat", None) is not None for p in persons):
        rot = np.stack([p.rotmat for p in persons])
    return solve(np.stack([p.vertices for p in persons]), np.stack([p.joints_h36m for p in persons]),
                 np.stack([p.cam_t for p in persons]), rotmat=rot, scale=scale)


def forward_kinematics(pose: HumanoidPose, parents: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """World positions (N, B, 3) and rotations (N, B, 4) of every bone in the y-up frame. parents: (B,)
    parent indices, parents first (default: `PARENTS` for the 22 bones, `ALL_PARENTS` for the 52 with
    fingers)."""
    local = quat_to_matrix(pose.rotations)
    if parents is None:
        parents = PARENTS if local.shape[1] == len(BONES) else ALL_PARENTS
    parents = np.asarray(parents)
    world = np.empty_like(local)
    pos = np.empty(pose.offsets.shape)
    world[:, 0], pos[:, 0] = local[:, 0], pose.root
    for b in range(1, local.shape[1]):
        p = parents[b]
        world[:, b] = world[:, p] @ local[:, b]
        pos[:, b] = pos[:, p] + (world[:, p] @ pose.offsets[:, b, :, None])[..., 0]
    return pos, quat_from_matrix(world)


def _ancestors() -> np.ndarray:
    a = np.zeros((len(BONES), len(BONES)))
    for b in range(len(BONES)):
        k = b
        while k >= 0:
            a[b, k] = 1.0
            k = PARENTS[k]
    return a


_ANCESTORS = _ancestors()  # (B, B): 1 where the column is the row bone or one of its ancestors


def rest_height(pose: HumanoidPose) -> np.ndarray:
    """(N,) height of the Hips above the lowest joint of the rest skeleton (identity rotations); the body's
    22 bones (finger bones, when the pose has them, come after and hang at the hands)."""
    rest = _ANCESTORS @ pose.offsets[..., : len(BONES), :]  # rest positions relative to the Hips: offset sums
    return -rest[..., 1].min(axis=-1)


_TOES = np.array([_I["LeftToes"], _I["RightToes"]])
_FEET = np.array([_I["LeftFoot"], _I["RightFoot"]])
_REST, _TEMPLATE_ROT = _rest_reference(_TEMPLATE_KEY_POINTS)
_REST_T = np.swapaxes(_REST, -1, -2)
