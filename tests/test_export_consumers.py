"""The exported BVH and glTF files judged by the programs that read them: Blender (Debian's package, run
headless) imports each BVH and GLB, the Khronos glTF validator checks every GLB, and bvhio (an independent
BVH reader) reads every BVH; their bone positions must match the forward kinematics of the motion written.

The motion: random local rotations on the humanoid skeleton, a wandering root, fixed bone lengths.
Where a consumer is missing the test skips, except in CI (FASTMETRO_REQUIRE_EXPORT_TOOLS=1), where it fails.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tools.export.bvh import write_bvh
from tools.export.gltf import MeshFrames, write_glb

REPO = Path(__file__).resolve().parents[1]
JS = REPO / "tests" / "js"
FPS = 30.0
T = 12


def require(what: str, ok: bool, how: str) -> None:
    if not ok:
        why = f"{what} not available: {how}"
        if os.environ.get("FASTMETRO_REQUIRE_EXPORT_TOOLS"):  # CI installs them all: never skip there
            pytest.fail(why)
        pytest.skip(why)


def skeleton():
    """Humanoid bone names, parents, and rest offsets (metres, y up, T-pose facing +z, +x the left side)."""
    bones = [("Hips", -1, (0, 0, 0)), ("Spine", 0, (0, 0.1, 0)), ("Chest", 1, (0, 0.15, 0)),
             ("Neck", 2, (0, 0.25, 0)), ("Head", 3, (0, 0.1, 0)),
             ("LeftUpperArm", 2, (0.18, 0.2, 0)), ("LeftLowerArm", 5, (0.28, 0, 0)), ("LeftHand", 6, (0.25, 0, 0)),
             ("RightUpperArm", 2, (-0.18, 0.2, 0)), ("RightLowerArm", 8, (-0.28, 0, 0)),
             ("RightHand", 9, (-0.25, 0, 0)),
             ("LeftUpperLeg", 0, (0.09, -0.08, 0)), ("LeftLowerLeg", 11, (0, -0.42, 0)),
             ("LeftFoot", 12, (0, -0.41, 0)), ("RightUpperLeg", 0, (-0.09, -0.08, 0)),
             ("RightLowerLeg", 14, (0, -0.42, 0)), ("RightFoot", 15, (0, -0.41, 0))]
    names = [b[0] for b in bones]
    parents = np.array([b[1] for b in bones])
    offsets = np.array([b[2] for b in bones], np.float64)
    return names, parents, offsets


def forward_kinematics(parents, offsets, rotations, root):
    """World positions (T, B, 3) of every bone: the reference the consumers are compared with."""
    t, b = rotations.shape[:2]
    pos = np.zeros((t, b, 3))
    world = [None] * b
    for i, p in enumerate(parents):
        local = Rotation.from_quat(rotations[:, i])
        if p < 0:
            world[i], pos[:, i] = local, root
        else:
            world[i], pos[:, i] = world[p] * local, pos[:, p] + world[p].apply(offsets[i])
    return pos


@pytest.fixture(scope="module")
def motion():
    names, parents, offsets = skeleton()
    rng = np.random.default_rng(7)
    # rotations within about 60 degrees of rest, so the poses look like poses (any would do)
    rotvec = rng.normal(scale=0.5, size=(T, len(names), 3))
    rotations = Rotation.from_rotvec(rotvec.reshape(-1, 3)).as_quat().reshape(T, len(names), 4)
    root = np.cumsum(rng.normal(scale=0.05, size=(T, 3)), 0) + np.array([0.3, 0.9, -4.0])
    return names, parents, offsets, rotations, root, forward_kinematics(parents, offsets, rotations, root)


@pytest.fixture(scope="module")
def files(motion, tmp_path_factory):
    names, parents, offsets, rotations, root, _ = motion
    d = tmp_path_factory.mktemp("export")
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    verts = np.random.default_rng(1).normal(size=(3, 4, 3)).astype(np.float32)
    write_bvh(d / "m.bvh", names, parents, offsets, rotations, root, FPS)
    write_glb(d / "m.glb", names, parents, offsets, rotations, root, np.arange(T) / FPS)
    write_glb(d / "mesh.glb", names, parents, offsets, rotations, root, np.arange(T) / FPS,
              mesh=MeshFrames(faces, np.array([0, 5, 11]), verts), extras={"track_id": 1})
    return d


def test_bvhio_reads_the_bvh_and_its_kinematics_match(motion, files):
    bvhio = pytest.importorskip("bvhio")
    names, parents, offsets, rotations, root, expected = motion
    hierarchy = bvhio.readAsHierarchy(str(files / "m.bvh"))
    joints = {j.Name: j for j, _, _ in hierarchy.layout()}
    assert sorted(joints) == sorted(names)
    for f in range(T):
        hierarchy.loadPose(f)
        got = np.array([list(joints[n].PositionWorld) for n in names])
        np.testing.assert_allclose(got, expected[f], atol=2e-4)


def validate(paths) -> list[dict]:
    require("node and the glTF validator", shutil.which("node") is not None and (JS / "node_modules").is_dir(),
            "install Node.js and run `npm ci --prefix tests/js`")
    proc = subprocess.run(["node", str(JS / "validate.js"), *map(str, paths)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_glb_files_pass_the_khronos_validator(files, tmp_path):
    reports = validate([files / "m.glb", files / "mesh.glb"])
    for r in reports:
        assert r["errors"] == 0 and r["warnings"] == 0, r
    # the validator does find errors: the same file with one byte of its binary chunk's length changed
    bad = bytearray((files / "m.glb").read_bytes())
    json_len = int.from_bytes(bad[12:16], "little")
    bad[20 + json_len] ^= 0x04
    (tmp_path / "bad.glb").write_bytes(bytes(bad))
    assert validate([tmp_path / "bad.glb"])[0]["errors"] > 0


def blender_import(path: Path, frames, tmp_path: Path) -> dict:
    require("blender", shutil.which("blender") is not None, "apt-get install blender python3-numpy")
    out = tmp_path / f"{path.stem}.{path.suffix[1:]}.json"
    proc = subprocess.run(
        ["blender", "-b", "--factory-startup", "--python-exit-code", "1", "--python",
         str(REPO / "tests" / "blender_import.py"), "--", str(path), str(out), str(FPS), *map(str, frames)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def blender_to_y_up(p) -> np.ndarray:
    """Blender's frame (z up) back to the files' (y up): both importers turn (x, y, z) into (x, -z, y)."""
    x, y, z = np.asarray(p, np.float64).T
    return np.stack([x, z, -y], -1)


@pytest.mark.slow  # Blender starts in 3-10 s per file
@pytest.mark.parametrize("name", ["m.bvh", "m.glb", "mesh.glb"])
def test_blender_imports_with_the_frames_bones_and_positions(name, motion, files, tmp_path):
    names, parents, offsets, rotations, root, expected = motion
    frames = [0, 3, 7, T - 1]
    report = blender_import(files / name, frames, tmp_path)
    assert sorted(report["bones"]) == sorted(names)
    start, end = report["frame_range"]
    assert end - start + 1 == T
    assert report["keys"][f'pose.bones["{names[1]}"].rotation_{"euler" if name.endswith("bvh") else "quaternion"}'] == T
    for k in frames:
        got = report["positions"][str(k)]
        for bone in ("Hips", "Head", "LeftHand", "RightFoot", "RightLowerArm"):
            np.testing.assert_allclose(blender_to_y_up(got[bone]), expected[k, names.index(bone)], atol=1e-3,
                                       err_msg=f"{name}: {bone} at frame {k}")
    if name == "mesh.glb":  # armature, stick figure, the mesh group and its three frames
        assert report["objects"] == 6
