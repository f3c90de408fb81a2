"""The 30 finger bones of the humanoid skeleton (Unity HumanBodyBones), solved from the hand network's 21
joints and 778 MANO vertices, and the Hand bone's orientation from the hand mesh.

    from fastmetro import humanoid_hands as hh
    solved = hh.solve_hand(joints3d, vertices, "left")      # (N, 21, 3), (N, 778, 3), hand-relative, camera frame
    solved.hand_world, solved.local, solved.offsets          # (N, 3, 3) Hand, (N, 15, 4) finger locals, (N, 15, 3)
    positions, rotations = humanoid.forward_kinematics(pose52)   # a pose of ALL_BONES (52): the body's 22, then these

Bones, parents first: for Left then Right, Thumb, Index, Middle, Ring, Little, each Proximal, Intermediate,
Distal (`FINGER_BONES`; `ALL_BONES` = the body's 22 + these 30). A finger's Proximal hangs from the Hand.
The thumb's three are MANO's thumb joints: Proximal = the metacarpal (CMC to MCP), Intermediate = MCP to IP,
Distal = IP to the tip.

The rest pose (every rest rotation identity, the frame of `fastmetro.humanoid`: +Y up, facing +Z, +X the
character's left), as the VRM 1.0 T-pose defines it: the four fingers straight along the hand (+-X), nails
up (+Y); the thumb level, halfway between +-X and +Z (45 degrees forward), its nail facing horizontally
away from the palm. The Hand bone's rest, from the hand mesh, is the body skeleton's (+-X, palm down), made
exactly left/right symmetric (the SMPL template's two hands differ by 2 degrees of roll; each side here is
within 1.1 degrees of the body solve's rest).

The solve (closed form, vectorised, numpy only), as the body's: a bone's world orientation is the frame of
its joint -> next joint and a pair of vertices across it (nail side minus pad side, `TWIST_PAIRS`) times
the transpose of the same frame at rest. The Hand from the hand mesh: wrist -> middle knuckle and index
knuckle - little knuckle (the palm plane). Finger locals are relative to that Hand; offsets are the hand's
own bone lengths. A left hand is a mirror image of a right one (MANO topology, x negated): its rotations
are the right's mirrored, (x, y, z, w) -> (x, -y, -z, w).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import humanoid as hu
from .rotations import frames, quat_from_matrix, quat_to_matrix

__all__ = ["FINGERS", "PHALANGES", "FINGER_BONES", "ALL_BONES", "ALL_PARENTS", "HAND_BONE", "TWIST_PAIRS",
           "HandSolve", "solve_hand", "relaxed_fingers", "default_offsets", "mirror_quat", "FINGER_BASE",
           "SIDES"]

SIDES = ("left", "right")
FINGERS, PHALANGES, FINGER_BONES = hu.FINGERS, hu.PHALANGES, hu.FINGER_BONES  # the skeleton with hands
ALL_BONES, ALL_PARENTS = hu.ALL_BONES, hu.ALL_PARENTS
HAND_BONE = {"left": hu.BONES.index("LeftHand"), "right": hu.BONES.index("RightHand")}
LOWER_ARM = {"left": hu.BONES.index("LeftLowerArm"), "right": hu.BONES.index("RightLowerArm")}
FIRST = {"left": len(hu.BONES), "right": len(hu.BONES) + 15}  # the side's first finger bone in ALL_BONES

# The hand network's joints (fastmetro.HAND_JOINT_NAMES): 0 wrist, then per finger 4 joints base to tip.
FINGER_BASE = np.array([1 + 4 * f + p for f in range(5) for p in range(3)])  # each bone's joint
_NEXT = FINGER_BASE + 1  # the joint its primary axis points to
_PARENT_JOINT = np.array([0 if p == 0 else 1 + 4 * f + p - 1 for f in range(5) for p in range(3)])
_WRIST, _INDEX_1, _MIDDLE_1, _PINKY_1 = 0, 5, 9, 17
_PARENT_K = np.array([-1 if k % 3 == 0 else k - 1 for k in range(15)])  # within a side's 15
_PARENT_IN_BOTH = _PARENT_K + 1  # the same, in the solve's 16 frames (0: the Hand)

# MANO vertices (778-vertex topology, the same for left hands) across each bone at its middle: (nail side,
# pad side). Picked on the MANO template for this module (the vertices nearest each segment, between 30%
# and 70% along it, furthest along the back-of-hand normal; for the thumb, halfway between that normal and
# away from the index knuckle); tests/test_humanoid_hands.py checks each on the template.
TWIST_PAIRS = np.array([
    [41, 27], [253, 60], [731, 756],  # thumb
    [261, 132], [86, 47], [316, 343],  # index
    [399, 288], [405, 357], [430, 438],  # middle
    [509, 141], [476, 513], [541, 573],  # ring
    [627, 595], [584, 602], [658, 683],  # little
])

_FLIP = np.array([1.0, -1.0, -1.0])  # camera frame <-> y-up (a 180 degree turn about X)
_MIRROR = np.array([-1.0, 1.0, 1.0])


def mirror_quat(q: np.ndarray) -> np.ndarray:
    """The rotation mirrored about the y-z plane (x -> -x): (x, y, z, w) -> (x, -y, -z, w)."""
    return np.asarray(q, dtype=np.float64) * np.array([1.0, -1.0, -1.0, 1.0])


def _rests() -> tuple[dict, dict]:
    """Rest frames (columns: primary, secondary, their cross) of the Hand from the hand mesh, per side,
    and of the 15 finger bones, per side."""
    solved = list(hu._SOLVED)
    roll = [np.arctan2(hu._REST[solved.index(HAND_BONE[s])][1, 1], abs(hu._REST[solved.index(HAND_BONE[s])][2, 1]))
            for s in SIDES]
    a = float(np.mean(roll))  # the body rest's index-to-little direction, tilted this much up from +Z
    across = np.array([0.0, np.sin(a), np.cos(a)])
    c = np.sqrt(0.5)
    hand, fingers = {}, {}
    for side, x in (("left", 1.0), ("right", -1.0)):
        hand[side] = frames(np.array([x, 0.0, 0.0]), across)
        d = np.tile([x, 0.0, 0.0], (15, 1))
        n = np.tile([0.0, 1.0, 0.0], (15, 1))
        d[:3] = [x * c, 0.0, c]  # thumb: level, 45 degrees forward
        n[:3] = [-x * c, 0.0, c]  # its nail horizontal, away from the palm
        fingers[side] = frames(d, n)
    return hand, fingers


_REST_HAND, _REST_FINGERS = _rests()
_REST_HAND_T = {s: np.swapaxes(m, -1, -2) for s, m in _REST_HAND.items()}
_REST_FINGERS_T = {s: np.swapaxes(m, -1, -2) for s, m in _REST_FINGERS.items()}
_REST_ALL_T_BY_SIDE = np.stack([np.concatenate([_REST_HAND_T[s][None], _REST_FINGERS_T[s]]) for s in SIDES])


@dataclass
class HandSolve:
    """N hands of one side, in the y-up frame."""

    hand_world: np.ndarray  # (N, 3, 3) the Hand bone's world rotation, from the hand mesh
    local: np.ndarray  # (N, 15, 4) finger bones' local rotations (x, y, z, w), relative to that Hand
    offsets: np.ndarray  # (N, 15, 3) each finger bone's offset from its parent, in the parent's frame, metres

    def __len__(self) -> int:
        return len(self.local)


def solve_hand(joints: np.ndarray, vertices: np.ndarray, side) -> HandSolve:
    """The finger bones of N hands from the stream's arrays (docs/schema.md, `hands`): joints (N, 21, 3) and
    vertices (N, 778, 3), hand-relative, camera frame (y down); side "left" or "right" for all of them, or a
    sequence of N sides. Left hands as published (real left hands, already mirrored back)."""
    j = np.asarray(joints, dtype=np.float64)
    v = np.asarray(vertices)
    if j.ndim != 3 or j.shape[1:] != (21, 3) or v.shape != (len(j), 778, 3):
        raise ValueError(f"solve_hand: expected joints (N, 21, 3) and vertices (N, 778, 3), "
                         f"got {j.shape} and {v.shape}")
    sides = [side] * len(j) if isinstance(side, str) else list(side)
    if len(sides) != len(j) or any(s not in SIDES for s in sides):
        raise ValueError(f"solve_hand: side must be 'left' or 'right' (one, or one per hand), got {side!r}")
    rest = _REST_ALL_T_BY_SIDE[[SIDES.index(s) for s in sides]]  # (N, 16, 3, 3): the Hand, then the fingers
    j = j * _FLIP
    pairs = v[:, TWIST_PAIRS.reshape(-1), :].astype(np.float64).reshape(len(j), 15, 2, 3) * _FLIP
    primary = np.concatenate([j[:, None, _MIDDLE_1] - j[:, None, _WRIST], j[:, _NEXT] - j[:, FINGER_BASE]], axis=1)
    across = np.concatenate([j[:, None, _INDEX_1] - j[:, None, _PINKY_1], pairs[:, :, 0] - pairs[:, :, 1]], axis=1)
    both = frames(primary, across) @ rest  # (N, 16, 3, 3) world rotations: the Hand, then the 15 finger bones
    hand, world = both[:, 0], both[:, 1:]
    parent_t = np.swapaxes(both[:, _PARENT_IN_BOTH], -1, -2)  # each finger bone's parent: the Hand or a bone
    local = parent_t @ world
    d = j[:, FINGER_BASE] - j[:, _PARENT_JOINT]
    offsets = (parent_t @ d[..., None])[..., 0]
    return HandSolve(hand, quat_from_matrix(local), offsets)


# A standard hand (the MANO template's joints, estimated for this module) for a side never seen: each
# finger's base from the wrist in the rest Hand frame, and each finger's three bone lengths (right hand).
_DEFAULT_BASE_RIGHT = np.array([
    [-0.0282, -0.0126, 0.0057], [-0.0908, 0.0013, 0.0273], [-0.0929, 0.0, 0.0],
    [-0.0834, -0.0072, -0.0200], [-0.0718, -0.0053, -0.0400]])
_DEFAULT_LENGTHS = np.array([[0.035, 0.0421, 0.0367], [0.039, 0.026, 0.0268], [0.043, 0.027, 0.0275],
                             [0.040, 0.0254, 0.027], [0.031, 0.0188, 0.0221]])


def default_offsets(side: str) -> np.ndarray:
    """(15, 3) finger offsets of a standard adult hand on the rest skeleton, for a side never seen (its palm
    turned so that its frame is exactly the rest Hand's)."""
    bases = _DEFAULT_BASE_RIGHT * (_MIRROR if side == "left" else 1.0)
    palm = frames(bases[2], bases[1] - bases[4])  # middle base from the wrist; index base - little base
    bases = bases @ (_REST_HAND[side] @ palm.T).T
    out = np.zeros((15, 3))
    for f in range(5):
        out[3 * f] = bases[f]
        for p in (1, 2):
            out[3 * f + p] = _DEFAULT_LENGTHS[f, p - 1] * _REST_FINGERS[side][3 * f + p, :, 0]
    return out


def relaxed_fingers(side: str, curl_degrees: float = 15.0) -> np.ndarray:
    """(15, 4) local rotations of a relaxed hand: every finger joint flexed `curl_degrees` toward the palm
    (about nail x primary of the bone's rest: the primary turns toward the pad), the thumb half as much."""
    rest = _REST_FINGERS[side]
    axis = np.cross(rest[:, :, 1], rest[:, :, 0])
    angle = np.radians(curl_degrees) * np.where(np.arange(15) < 3, 0.5, 1.0)
    q = np.concatenate([axis * np.sin(angle / 2)[:, None], np.cos(angle / 2)[:, None]], axis=1)
    return quat_from_matrix(quat_to_matrix(q))
