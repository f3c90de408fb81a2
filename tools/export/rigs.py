"""Rig presets (`--rig`): the humanoid skeleton's bones renamed to what a target expects, and its rest pose
turned to the target's (T-pose or A-pose), with the animation re-expressed so that every bone still lands
where it did. The npz keeps the project's own names and rest; BVH, glTF, FBX and .blend take the preset.

| preset | names | rest pose | for |
|---|---|---|---|
| unity | Unity HumanBodyBones (Hips, LeftUpperArm, ...) | T-pose | Unity humanoid, VRM, our own tools |
| mixamo | Mixamo's `mixamorig:` names (Hips, Spine, Spine1, Spine2, LeftArm, LeftForeArm, LeftUpLeg, ...) | T-pose | Mixamo characters, retargeters that know Mixamo |
| ue5 | UE5 mannequin (pelvis, spine_01, spine_03, spine_05, neck_01, clavicle_l, upperarm_l, thigh_l, ball_l, ...) | A-pose (upper arms 45 degrees down) | Unreal's IK Retargeter onto Manny/Quinn |
| smpl | SMPL joint names in SMPL's joint order (pelvis, left_hip, right_hip, spine1, ...) | T-pose | SMPL-based tools |

Axes stay the files' own (+Y up, the character facing +Z): FBX and glTF importers convert to their
engine's axes (Unreal's FBX import does). The UE5 mannequin has bones we have no motion for (root, spine_02,
spine_04, neck_02, fingers, twist bones): the files hold the subset we drive, each under its nearest driven
ancestor, as retargeting expects.
"""
from __future__ import annotations

import numpy as np

RIGS = ("unity", "mixamo", "ue5", "smpl")

# Our bone -> the target's name, in our bone order (fastmetro.humanoid.BONES).
_OURS = ("Hips", "Spine", "Chest", "UpperChest", "Neck", "Head",
         "LeftShoulder", "LeftUpperArm", "LeftLowerArm", "LeftHand",
         "RightShoulder", "RightUpperArm", "RightLowerArm", "RightHand",
         "LeftUpperLeg", "LeftLowerLeg", "LeftFoot", "LeftToes",
         "RightUpperLeg", "RightLowerLeg", "RightFoot", "RightToes")
NAMES = {
    "unity": _OURS,
    "mixamo": tuple("mixamorig:" + n for n in (
        "Hips", "Spine", "Spine1", "Spine2", "Neck", "Head",
        "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand",
        "RightShoulder", "RightArm", "RightForeArm", "RightHand",
        "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase",
        "RightUpLeg", "RightLeg", "RightFoot", "RightToeBase")),
    "ue5": ("pelvis", "spine_01", "spine_03", "spine_05", "neck_01", "head",
            "clavicle_l", "upperarm_l", "lowerarm_l", "hand_l",
            "clavicle_r", "upperarm_r", "lowerarm_r", "hand_r",
            "thigh_l", "calf_l", "foot_l", "ball_l",
            "thigh_r", "calf_r", "foot_r", "ball_r"),
    "smpl": ("pelvis", "spine1", "spine2", "spine3", "neck", "head",
             "left_collar", "left_shoulder", "left_elbow", "left_wrist",
             "right_collar", "right_shoulder", "right_elbow", "right_wrist",
             "left_hip", "left_knee", "left_ankle", "left_foot",
             "right_hip", "right_knee", "right_ankle", "right_foot"),
}
# SMPL's own joint order (the first 22 of its 24 joints; the two hand joints have no bone here).
SMPL_ORDER = ("pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
              "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
              "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist")
A_POSE_DEGREES = 45.0  # ue5: the upper arms this far below horizontal at rest


def _quat(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    return np.concatenate([axis * np.sin(angle / 2), [np.cos(angle / 2)]])


def rest_turns(rig: str, bones, parents) -> np.ndarray:
    """(B, 4) each bone's world rest rotation in the target's rest relative to ours (identity: T-pose); a
    turned bone's descendants (forearm, hand, fingers where the skeleton has them) turn with it."""
    bones, parents = list(bones), [int(p) for p in parents]
    turns = np.tile([0.0, 0.0, 0.0, 1.0], (len(bones), 1))
    if rig == "ue5":
        a = np.radians(A_POSE_DEGREES)
        for side, sign in (("Left", -1.0), ("Right", 1.0)):  # +X is the character's left: left arm down = -Z turn
            top = bones.index(side + "UpperArm")
            for b in range(len(bones)):
                p = b
                while p >= 0 and p != top:
                    p = parents[p]
                if p == top:
                    turns[b] = _quat([0, 0, 1], sign * a)
    return turns


def apply(rig: str, bones, parents, offsets: np.ndarray, rotations: np.ndarray):
    """The skeleton and motion for a preset: (names, parents, order, offsets (B, 3), rotations (T, B, 4)).
    `order` lists our bone indices in the file's order (SMPL's joint order for smpl, ours otherwise);
    parents are in that order. World positions are unchanged: offsets turn by the parent's rest turn and
    local rotations become A_parent q A_bone^-1."""
    from fastmetro.humanoid import quat_conjugate, quat_multiply, quat_rotate

    if rig not in RIGS:
        raise ValueError(f"unknown rig {rig!r}: choose from {', '.join(RIGS)}")
    bones, parents = list(bones), np.asarray(parents)
    turns = rest_turns(rig, bones, parents)
    parent_turn = np.where(parents[:, None] >= 0, turns[np.maximum(parents, 0)], [0.0, 0.0, 0.0, 1.0])
    new_offsets = quat_rotate(parent_turn, np.asarray(offsets, np.float64))
    new_rot = quat_multiply(quat_multiply(np.broadcast_to(parent_turn, np.shape(rotations)),
                                          np.asarray(rotations, np.float64)),
                            np.broadcast_to(quat_conjugate(turns), np.shape(rotations)))
    names = list(NAMES[rig]) + bones[len(NAMES[rig]):]  # bones beyond the 22 (fingers) keep their names
    order = list(range(len(bones)))
    if rig == "smpl":
        order = [names.index(n) for n in SMPL_ORDER] + order[len(SMPL_ORDER):]
    where = {b: i for i, b in enumerate(order)}
    new_parents = np.array([where[parents[b]] if parents[b] >= 0 else -1 for b in order])
    return ([names[b] for b in order], new_parents, order, new_offsets[order],
            new_rot[:, order].astype(np.float32))


def apply_to_body(body, rig: str, bones, parents, offsets: np.ndarray, root0: np.ndarray, order):
    """The skinned body moved to the preset's rest pose (linear blend skinning from our rest to it), its
    joint indices in the file's bone order."""
    from dataclasses import replace

    from fastmetro.humanoid import HumanoidPose, forward_kinematics, quat_conjugate

    from .skin import bone_transforms, pose_vertices, rest_pose

    parents = np.asarray(parents)
    turns = rest_turns(rig, bones, parents)
    rest = rest_pose(parents, offsets, root0)
    # our skeleton posed into the preset's rest: world rotation of each bone = its rest turn
    parent_turn = np.where(parents[:, None] >= 0, turns[np.maximum(parents, 0)], [0.0, 0.0, 0.0, 1.0])
    from fastmetro.humanoid import quat_multiply

    local = quat_multiply(quat_conjugate(parent_turn), turns)
    pos, q = forward_kinematics(HumanoidPose(local[None], np.asarray(offsets, np.float64)[None],
                                             np.asarray(root0, np.float64)[None]))
    vertices = pose_vertices(body, bone_transforms(rest, pos, q))[0].astype(np.float32)
    where = np.empty(len(order), np.int64)
    where[np.asarray(order)] = np.arange(len(order))
    return replace(body, vertices=vertices, joints=where[np.asarray(body.joints)])
