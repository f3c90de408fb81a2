"""The VMC sender's finger bones, judged by python-osc's own server: a recording with hands replayed into
the sender, the bundles received on 127.0.0.1, the avatar's hands rebuilt by forward kinematics from the
received local transforms, and every finger segment laid against the published hand joints."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

pytest.importorskip("pythonosc")
from fastmetro import humanoid as hu  # noqa: E402
from fastmetro import humanoid_hands as hh  # noqa: E402
from pipeline.messages import HandMesh  # noqa: E402
from tests.hand_data import flexion  # noqa: E402
from tests.test_vmc import (UNITY_PARENT, Receiver, mesh_frame, posed_person, replay_into_vmc,  # noqa: E402
                            write_recording)

FINGERS = ("Thumb", "Index", "Middle", "Ring", "Little")
# The receiver's side of the finger bones, written out (docs/engines.md): Unity HumanBodyBones names and
# parents, and each finger's rest direction in Unity's frame (the character's left is -X there).
UNITY_FINGER_PARENT = {}
for _side in ("Left", "Right"):
    for _f in FINGERS:
        UNITY_FINGER_PARENT[f"{_side}{_f}Proximal"] = f"{_side}Hand"
        UNITY_FINGER_PARENT[f"{_side}{_f}Intermediate"] = f"{_side}{_f}Proximal"
        UNITY_FINGER_PARENT[f"{_side}{_f}Distal"] = f"{_side}{_f}Intermediate"
REST_DIRECTION = {("Left", "Thumb"): np.array([-1.0, 0, 1]) / 2 ** 0.5,
                  ("Right", "Thumb"): np.array([1.0, 0, 1]) / 2 ** 0.5, ("Left", None): np.array([-1.0, 0, 0]), ("Right", None): np.array([1.0, 0, 0])}
PARENT = {**UNITY_PARENT, **UNITY_FINGER_PARENT}


def unity_world(bundle: dict) -> dict:
    """World rotation and position of every received bone (Unity's frame), parents first."""
    root = bundle["root"]
    world = {"root": (Rotation.from_quat(root[4:8]), np.array(root[1:4]))}
    names = list(bundle["bones"])
    assert names[:22] == list(hu.BONES)
    for name in names:
        pr, pp = world[PARENT.get(name, "root")]
        v = bundle["bones"][name]
        world[name] = (pr * Rotation.from_quat(v[3:7]), pp + pr.apply(v[0:3]))
    return world


def camera_to_unity(d: np.ndarray) -> np.ndarray:
    return np.array([-d[0], -d[1], -d[2]])  # camera -> y-up (x, -y, -z) -> Unity (-x, y, z)


def segment_errors(bundle: dict, side: str, joints: np.ndarray) -> np.ndarray:
    """Degrees between each finger segment of the avatar (wrist -> base, base -> next ..., the distal bone's
    rest direction turned by its world rotation) and the same segment of the published joints."""
    w = unity_world(bundle)
    s = side.capitalize()
    errs = []
    for f, name in enumerate(FINGERS):
        chain = [f"{s}Hand"] + [f"{s}{name}{p}" for p in ("Proximal", "Intermediate", "Distal")]
        pts = [w[b][1] for b in chain]
        segs = [pts[1] - pts[0], pts[2] - pts[1], pts[3] - pts[2],
                w[chain[3]][0].apply(REST_DIRECTION[(s, "Thumb" if f == 0 else None)])]
        idx = [0, 1 + 4 * f, 2 + 4 * f, 3 + 4 * f, 4 + 4 * f]
        for k, seg in enumerate(segs):
            want = camera_to_unity(joints[idx[k + 1]] - joints[idx[k]])
            cos = seg @ want / np.linalg.norm(seg) / np.linalg.norm(want)
            errs.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    return np.array(errs)


def test_a_recording_with_hands_drives_the_avatars_fingers_through_python_osc(template, hands, tmp_path):
    """Frames 0-19 of one person with both hands curled differently each frame; the left hand missing in
    frames 8-12 (held there, its last pose). Every received bundle carries the 52 bones, and wherever a hand
    is seen (after its blend back in) every finger segment points where the published joints do (1 degree)."""
    rng = np.random.default_rng(5)
    frames, published = [], []
    for i in range(20):
        person = posed_person(template, rng, 1, [0.2, 0.1, 3.0], angle=0.4)
        mf = mesh_frame(i, [person])
        seen = {}
        for side in hh.SIDES:
            if side == "left" and 8 <= i <= 12:
                continue
            h = hands[side]
            local = hu.quat_multiply(h.local0, flexion(side, rng.uniform(0, 60, 15), rng.uniform(-10, 10, 15)))
            hand_world = Rotation.random(random_state=100 * i + len(side)).as_matrix()
            joints, verts = h.posed(hand_world, local)
            mf.persons[0].hands[side] = HandMesh(side, np.array([5.0, 0, 0], np.float32),
                                                 np.asarray(person["cam_t"], np.float32), joints.astype(np.float32),
                                                 verts.astype(np.float32), (100.0, 100.0), 50.0)
            seen[side] = joints.astype(np.float32)
        frames.append(mf)
        published.append(seen)
    rec = write_recording(tmp_path / "hands.msgpack", frames)

    receiver = Receiver()
    result = replay_into_vmc(rec, [receiver], 20, slots=1)
    got = receiver.bundles
    assert result["frames"] == 20 and len(got) == 20, (result, len(got))
    checked = 0
    for i, bundle in enumerate(got):
        assert list(bundle["bones"]) == list(hh.ALL_BONES)
        for side in hh.SIDES:
            if side in published[i] and not (side == "left" and 13 <= i < 13 + 5):  # 0.15 s blend at 30 fps
                err = segment_errors(bundle, side, published[i][side])
                assert err.max() < 1.0, (i, side, err.round(3))
                checked += 1
    assert checked == 2 * 20 - 5 - 5
    held = [{k: v[3:7] for k, v in got[i]["bones"].items() if k.startswith("LeftIndex")} for i in (7, 8, 12)]
    assert held[0] == held[1] == held[2]  # the missing left hand holds its last pose (hold: 0.5 s)
