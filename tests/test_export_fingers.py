"""The finger bones in the exported files: npz fields (hand rotations, per-frame per-side `hand_seen`),
tracks.json's unseen-hand frames, the 52-joint BVH and glTF of a track with hands, and Blender (bpy from
PyPI, its own importers, unpatched) placing every finger bone where the npz says, within 1 mm."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fastmetro import humanoid as hu
from fastmetro import humanoid_hands as hh
from pipeline import wire
from pipeline.messages import EndOfStream, HandMesh
from tests.export_helpers import bpy_python
from tests.hand_data import flexion
from tests.humanoid_data import random_rotations, to_camera
from tools.export import ExportOptions, export_recording

FPS = 25.0
N = 24
LEFT_GONE = range(8, 13)  # frames without the left hand


@pytest.fixture(scope="module")
def exported(template, hands, tmp_path_factory):
    """A recording of two persons over N frames: track 1 with both hands (the left one gone in LEFT_GONE),
    track 2 without hands; exported to npz, bvh and gltf."""
    tmp = tmp_path_factory.mktemp("fingers")
    rng = np.random.default_rng(3)
    rec = wire.RecordWriter(tmp / "run.msgpack")
    faces = np.stack([np.arange(6888), np.arange(6888) + 1, np.arange(6888) + 2], 1).astype(np.int32)
    rec.write(0.0, wire.topic("default", "topology"),
              wire.encode_topology("default", 0, faces, [f"j{i}" for i in range(14)], [f"h{i}" for i in range(17)]))
    published = []
    for i in range(N):
        mf = wire.synthetic_mesh_frame(2, index=i, rng=np.random.default_rng(i))
        mf.frame.pts = i / FPS
        seen = {}
        for k, pm in enumerate(mf.persons):
            q = random_rotations(rng, 1, 0.4)
            _, verts, joints = template.posed(q, root=np.zeros((1, 3)))
            pm.vertices = to_camera(verts[0]).astype(np.float32)
            pm.joints_h36m = to_camera(joints[0]).astype(np.float32)
            pm.cam_t = np.array([0.5 * k, 0.1, 3.0], np.float32)
        for side in hh.SIDES:
            if side == "left" and i in LEFT_GONE:
                continue
            h = hands[side]
            local = hu.quat_multiply(h.local0, flexion(side, rng.uniform(0, 60, 15), rng.uniform(-10, 10, 15)))
            joints, verts = h.posed(Rotation.random(random_state=10 * i + len(side)).as_matrix(), local)
            mf.persons[0].hands[side] = HandMesh(side, np.array([5.0, 0, 0], np.float32), mf.persons[0].cam_t,
                                                 joints.astype(np.float32), verts.astype(np.float32), (0.0, 0.0), 50.0)
            seen[side] = joints
        published.append(seen)
        rec.write(100.0 + i, wire.topic("default", "frame"), wire.encode_frame(mf, "default", i))
    rec.write(200.0, wire.topic("default", "end"), wire.encode_end(EndOfStream("default", N), "default", N))
    rec.close()
    out = tmp / "out"
    export_recording(tmp / "run.msgpack", out, ExportOptions(formats=("npz", "bvh", "gltf")))
    return out, published


def test_npz_and_index_of_a_track_with_hands(exported):
    out, published = exported
    z = np.load(out / "track_0001.npz")
    n = len(z["humanoid_frame"])
    assert n == N and z["hand_rotations"].shape == (N, 30, 4) and z["hand_offsets"].shape == (N, 30, 3)
    assert list(z["finger_bones"]) == list(hh.FINGER_BONES) and z["finger_positions"].shape == (N, 30, 3)
    seen = z["hand_seen"]
    assert seen.shape == (N, 2) and seen.dtype == bool
    assert seen[:, 1].all() and [f for f in range(N) if not seen[f, 0]] == list(LEFT_GONE)
    index = json.loads((out / "tracks.json").read_text())
    track = {t["name"]: t for t in index["tracks"]}
    assert track["track_0001"]["hands_unseen"] == {"left": [[8, 12]], "right": []}
    assert "hands_unseen" not in track["track_0002"]
    z2 = np.load(out / "track_0002.npz")
    assert "hand_rotations" not in z2 and "hand_seen" not in z2
    # the files' skeleton: each finger segment points where the published joints do in every frame the hand
    # was seen and not blending back in (0.15 s after frame 13); directions, the hand's own bone lengths
    pos = np.concatenate([z["humanoid_positions"], z["finger_positions"]], axis=1)
    for f in range(N):
        for s, side in enumerate(hh.SIDES):
            if side not in published[f] or (side == "left" and 13 <= f < 13 + 4):
                continue
            j = published[f][side] * [1.0, -1, -1]  # camera -> y-up
            for k in range(15):
                if k % 3 == 2:
                    continue  # the distal bone has no child joint in the skeleton
                b = hh.FIRST[side] + k
                got = pos[f, b + 1] - pos[f, b]
                want = j[hh.FINGER_BASE[k] + 1] - j[hh.FINGER_BASE[k]]
                cos = got @ want / np.linalg.norm(got) / np.linalg.norm(want)
                assert np.degrees(np.arccos(min(cos, 1.0))) < 1.0, (f, side, k)


def bvh_joints(path) -> list[str]:
    return [line.split()[1] for line in path.read_text().split("MOTION")[0].splitlines()
            if line.strip().startswith(("ROOT", "JOINT"))]


def test_bvh_and_glb_carry_the_finger_joints_of_a_track_with_hands(exported):
    import pygltflib

    out, _ = exported
    assert sorted(bvh_joints(out / "track_0001.bvh")) == sorted(hh.ALL_BONES)
    assert sorted(bvh_joints(out / "track_0002.bvh")) == sorted(hu.BONES)  # no hands: the body alone
    doc = pygltflib.GLTF2().load(str(out / "track_0001.glb"))
    names = [doc.nodes[j].name for j in doc.skins[0].joints]
    assert names == list(hh.ALL_BONES)
    assert len([c for c in doc.animations[0].channels if c.target.path == "rotation"]) == 52


BLENDER = r'''
import json, sys
import bpy
path, out, fps = sys.argv[1], sys.argv[2], float(sys.argv[3])
frames = [int(f) for f in sys.argv[4:]]
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.fps = round(fps)
scene.render.fps_base = 1.0
if path.endswith(".bvh"):
    bpy.ops.import_anim.bvh(filepath=path, update_scene_fps=False, update_scene_duration=True)
else:
    bpy.ops.import_scene.gltf(filepath=path)
arm = [o for o in scene.objects if o.type == "ARMATURE"][0]
start = int(round(arm.animation_data.action.frame_range[0]))
report = {"version": list(bpy.app.version), "bones": [b.name for b in arm.data.bones], "positions": {}}
for k in frames:
    scene.frame_set(start + k)
    bpy.context.view_layer.update()
    report["positions"][str(k)] = {pb.name: list(arm.matrix_world @ pb.head) for pb in arm.pose.bones}
json.dump(report, open(out, "w"))
'''


def blender_import(path, frames, tmp_path) -> dict:
    out = tmp_path / (path.name + ".json")
    proc = subprocess.run([bpy_python(), "-c", BLENDER, str(path), str(out), str(FPS), *map(str, frames)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow  # bpy starts in a few seconds per file
@pytest.mark.parametrize("suffix", ["bvh", "glb"])
def test_blender_places_every_finger_bone_where_the_npz_says(exported, suffix, tmp_path):
    out, _ = exported
    z = np.load(out / "track_0001.npz")
    frames = [0, 9, 14, N - 1]
    report = blender_import(out / f"track_0001.{suffix}", frames, tmp_path)
    assert report["version"][:2] == [4, 5]
    assert sorted(report["bones"]) == sorted(hh.ALL_BONES)
    want = np.concatenate([z["humanoid_positions"], z["finger_positions"]], axis=1)
    for k in frames:
        got = report["positions"][str(k)]
        for b, name in enumerate(hh.ALL_BONES):
            if b < len(hu.BONES) and "Hand" not in name:
                continue
            x, y, zz = got[name]
            np.testing.assert_allclose([x, zz, -y], want[k, b], atol=1e-3, err_msg=f"{suffix}: {name} at frame {k}")
