"""The exported BVH, glTF and FBX files judged by the programs that read them: Blender 4.5 (bpy from PyPI,
stock importers, default options, nothing patched) imports each BVH, GLB and FBX; the Open Asset Import
Library (assimp) reads them too; three.js's GLTFLoader in Chromium plays each GLB; the Khronos glTF
validator checks every GLB, and bvhio (an independent BVH reader) reads every BVH. Their bone positions must
match the forward kinematics of the motion written (1 mm), and a skinned body the recorded vertices.

The motion: random local rotations on the humanoid skeleton, a wandering root, fixed bone lengths; then a
recording of posed SMPL template meshes taken through `fastmetro-stream export` (the skeleton solved from
the mesh, tracks with a gap and an end) into the same consumers.
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

from fastmetro import humanoid as hu
from humanoid_data import PosedTemplate, random_rotations
import assimp_reader
import browser_gltf
from export_helpers import POSED_FPS, POSED_SEEN, bpy_python, require, write_posed_recording
from tools.export.bvh import write_bvh
from tools.export.gltf import MeshFrames, write_glb

REPO = Path(__file__).resolve().parents[1]
JS = REPO / "tests" / "js"
FPS = 30.0
T = 12
BONES_CHECKED = ("Hips", "Head", "LeftHand", "RightFoot", "RightLowerArm")


def import_bvhio():
    try:
        import bvhio
    except ImportError:
        require("bvhio", False, "pip install bvhio (in the test extra)")
    return bvhio


@pytest.fixture(scope="module")
def motion(assets_dir):
    """Random local rotations on the humanoid skeleton (the SMPL template's bone lengths), a wandering
    root, and the forward kinematics of fastmetro.humanoid: the positions the consumers must find."""
    template = PosedTemplate(assets_dir)
    names, parents = list(hu.BONES), hu.PARENTS
    offsets = template.pose.offsets[0]
    rng = np.random.default_rng(7)
    rotations = random_rotations(rng, T, max_angle=1.5)
    root = np.cumsum(rng.normal(scale=0.05, size=(T, 3)), 0) + np.array([0.3, 0.9, -4.0])
    pos, _ = hu.forward_kinematics(hu.HumanoidPose(rotations, np.tile(offsets, (T, 1, 1)), root))
    return names, parents, offsets, rotations, root, pos


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
    bvhio = import_bvhio()
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


def blender_import(path: Path, frames, tmp_path: Path, fps: float = FPS) -> dict:
    """Blender's stock importer, default options (tests/blender_import.py); deformed body vertices, where
    the file has a skinned mesh, in report["meshes"]."""
    out = tmp_path / f"{path.stem}.{path.suffix[1:]}.json"
    proc = subprocess.run([bpy_python(), str(REPO / "tests" / "blender_import.py"), str(path), str(out), str(fps),
                           *map(str, frames)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    meshes = out.with_suffix(".npz")
    report["meshes"] = dict(np.load(meshes)) if meshes.is_file() else {}
    return report


def blender_to_y_up(p) -> np.ndarray:
    """Blender's frame (z up) back to the files' (y up): both importers turn (x, y, z) into (x, -z, y)."""
    x, y, z = np.asarray(p, np.float64).T
    return np.stack([x, z, -y], -1)


def _fbx_file(motion, folder: Path) -> Path:
    from tools.export.fbx import write_fbx

    bpy_python()
    names, parents, offsets, rotations, root, _ = motion
    path = folder / "m.fbx"
    if not path.is_file():
        work = folder / "fbx-work"
        work.mkdir(exist_ok=True)
        write_fbx(path, "track_0001", 1, names, parents, offsets, np.arange(T), rotations, root, FPS, None, work)
    return path


def assert_bones_at(got: dict, expected: np.ndarray, names, what: str, atol: float = 1e-3) -> None:
    """Every bone's world position (y up) against the expected (B, 3)."""
    for b, bone in enumerate(names):
        np.testing.assert_allclose(got[bone], expected[b], atol=atol, err_msg=f"{what}: {bone}")


@pytest.mark.slow  # Blender starts in 1-5 s per file
@pytest.mark.parametrize("name", ["m.bvh", "m.glb", "mesh.glb", "m.fbx"])
def test_blender_imports_with_the_frames_bones_and_positions(name, motion, files, tmp_path):
    names, parents, offsets, rotations, root, expected = motion
    path = _fbx_file(motion, files) if name == "m.fbx" else files / name
    frames = [0, 3, 7, T - 1]
    report = blender_import(path, frames, tmp_path)
    assert sorted(report["bones"]) == sorted(names)
    assert {b: report["parents"][b] for b in names} == {
        n: (names[p] if p >= 0 else None) for n, p in zip(names, parents)}
    start, end = report["frame_range"]
    assert end - start + 1 == T
    mode = "euler" if name.endswith("bvh") else "quaternion"
    assert report["keys"][f'pose.bones["{names[1]}"].rotation_{mode}'] == T
    # keys on whole frames at the file's rate (the scene set to it before the import)
    assert report["key_frames"][f'pose.bones["{names[0]}"].location'] == [start + k for k in range(T)]
    for k in frames:
        got = {b: blender_to_y_up(p) for b, p in report["positions"][str(k)].items()}
        assert_bones_at(got, expected[k], names, f"Blender, {name} at frame {k}")
    if name == "mesh.glb":  # the mesh group and its three frames, beside the armature and its stick figure
        assert [o for o in report["objects"] if o.startswith("track_mesh")] == [
            "track_mesh", "track_mesh_0", "track_mesh_11", "track_mesh_5"]
    if name != "m.bvh":  # Blender draws the bones along the limbs: upper arm to elbow, thigh to knee
        for bone, child in (("LeftUpperArm", "LeftLowerArm"), ("RightUpperLeg", "RightLowerLeg")):
            head, tail = (blender_to_y_up(p) for p in report["rest"][bone])
            limb = offsets[names.index(child)]
            assert np.dot(tail - head, limb) / (np.linalg.norm(tail - head) * np.linalg.norm(limb)) > 0.99, bone


@pytest.mark.parametrize("name", ["m.bvh", "m.glb", "mesh.glb", "m.fbx"])
def test_assimp_reads_each_format_with_the_bones_where_they_were_written(name, motion, files, tmp_path):
    """The Open Asset Import Library, every frame, every bone (FBX: Blender writes centimetres)."""
    require("assimp", assimp_reader.available(), "apt-get install assimp-utils")
    names, parents, offsets, rotations, root, expected = motion
    path = _fbx_file(motion, files) if name == "m.fbx" else files / name
    scene = assimp_reader.read(path, tmp_path)
    scale = 0.01 if name.endswith("fbx") else 1.0
    assert set(names) <= set(scene.names)
    for k in range(T):
        got = {b: p * scale for b, p in scene.world_positions(k / FPS).items()}
        assert_bones_at(got, expected[k], names, f"assimp, {name} at frame {k}")


def browser_positions(paths, times) -> dict:
    require("three.js in Chromium", not browser_gltf.missing(), browser_gltf.missing())
    return browser_gltf.bone_positions(paths, times)


@pytest.mark.slow  # Chromium starts in a few seconds
def test_three_js_in_chromium_plays_each_glb_with_the_bones_where_they_were_written(motion, files):
    names, parents, offsets, rotations, root, expected = motion
    reports = browser_positions([files / "m.glb", files / "mesh.glb"], np.arange(T) / FPS)
    for name, report in reports.items():
        assert sorted(report["bones"]) == sorted(names)
        assert report["duration"] == pytest.approx((T - 1) / FPS, abs=1e-5)
        for k in range(T):
            assert_bones_at(report["positions"][k], expected[k], names, f"three.js, {name} at frame {k}")


# ------------------------------------------------------------------ through a recording and the export command
SEEN = POSED_SEEN


@pytest.fixture(scope="module")
def exported(assets_dir, tmp_path_factory):
    """A recording of posed template meshes exported to npz, BVH and glTF (with the mesh); returns (dir,
    {(track, frame): the person's joints as the mesh gives them (y-up)})."""
    from fastmetro_stream.cli import main

    d = tmp_path_factory.mktemp("exported")
    joints, _, _ = write_posed_recording(d / "run.msgpack", assets_dir)
    assert main(["export", str(d / "run.msgpack"), "-o", str(d / "out"), "--format", "npz,bvh,gltf",
                 "--gltf-mesh"]) == 0
    return d / "out", joints


@pytest.fixture(scope="module")
def exported_bodies(assets_dir, tmp_path_factory):
    """The same kind of recording (a small frame, for a quick render) and a video of it exported with bodies
    to glTF, FBX and a .blend; returns (dir, {(track, frame): recorded vertices, y-up world})."""
    from fastmetro_stream.cli import main

    bpy_python()
    d = tmp_path_factory.mktemp("bodies")
    _, vertices, _ = write_posed_recording(d / "run.msgpack", assets_dir, size=VIDEO_SIZE, focal=VIDEO_FOCAL)
    write_video(d / "video.mp4", 10)
    assert main(["export", str(d / "run.msgpack"), "-o", str(d / "out"), "--format", "npz,gltf,fbx,blend",
                 "--body", "--video", str(d / "video.mp4")]) == 0
    return d / "out", vertices


VIDEO_SIZE, VIDEO_FOCAL = (120, 160), 140.0  # height, width; pixels


def write_video(path: Path, frames: int) -> None:
    """A small video: a blue-to-red ramp, a white square moving right one step per frame."""
    import av

    h, w = VIDEO_SIZE
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=int(POSED_FPS))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = np.linspace(0, 255, w)[None].astype(np.uint8)
            img[..., 2] = 160
            img[h - 30:h - 10, 8 * i:8 * i + 12] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
def test_exported_bvh_read_by_bvhio_matches_the_exported_joints(exported):
    """bvhio's forward kinematics of each BVH, every frame, against the npz's humanoid_positions (frames
    the track was not seen hold the last seen pose); those against the person's own joints."""
    bvhio = import_bvhio()
    out, joints = exported
    index = json.loads((out / "tracks.json").read_text())
    assert {t["name"]: (t["gaps"], t["end"]) for t in index["tracks"]} == {
        "track_0001": ([[4, 5]], "the recording ended"), "track_0002": ([], "lost at frame 8")}
    for tid, frames in SEEN.items():
        npz = np.load(out / f"track_{tid:04d}.npz")
        assert npz["humanoid_frame"].tolist() == frames
        hierarchy = bvhio.readAsHierarchy(str(out / f"track_{tid:04d}.bvh"))
        bvh_joints = {j.Name: j for j, _, _ in hierarchy.layout()}
        assert len(bvh_joints) == len(hu.BONES)
        for k in range(frames[-1] - frames[0] + 1):
            f = frames[0] + k
            seen = max(s for s in frames if s <= f)  # a frame not seen holds the last seen pose
            hierarchy.loadPose(k)
            got = np.array([list(bvh_joints[n].PositionWorld) for n in hu.BONES])
            np.testing.assert_allclose(got, npz["humanoid_positions"][frames.index(seen)], atol=2e-4)
            # one skeleton per file, its bone lengths averaged over the track, against the person's joints
            # of each frame: the joints regressed from this rigidly posed template move a few cm against
            # their bones (most at the hips), so per-frame lengths vary that much
            np.testing.assert_allclose(got, joints[tid, seen], atol=0.05, err_msg=f"track {tid} frame {f}")


def test_exported_glb_files_pass_the_validator(exported):
    out, _ = exported
    reports = validate(sorted(out.glob("*.glb")))
    assert len(reports) == 2 and all(r["errors"] == 0 and r["warnings"] == 0 for r in reports), reports


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["bvh", "glb", "fbx"])
def test_blender_imports_an_exported_track(suffix, request, tmp_path):
    out, _ = request.getfixturevalue("exported_bodies" if suffix == "fbx" else "exported")
    frames = SEEN[1]
    check = [0, 3, 6, 9]  # offsets from the track's first frame (0); 4 and 5 were not seen
    report = blender_import(out / f"track_0001.{suffix}", check, tmp_path)
    assert sorted(report["bones"]) == sorted(hu.BONES)
    start, end = report["frame_range"]
    assert end - start + 1 == 10  # the track's frame range, at its rate
    hips_keys = report["keys"]['pose.bones["Hips"].location']
    # glTF: keys only where the track was seen; BVH a row per frame; Blender's FBX exporter bakes every frame
    assert hips_keys == (len(frames) if suffix == "glb" else 10)
    exported_joints = np.load(out / "track_0001.npz")["humanoid_positions"]
    for k in check:
        got = {b: blender_to_y_up(p) for b, p in report["positions"][str(k)].items()}
        assert_bones_at(got, exported_joints[frames.index(k)], hu.BONES, f"Blender, {suffix} at frame {k}")


@pytest.mark.parametrize("suffix", ["bvh", "glb", "fbx"])
def test_assimp_reads_an_exported_track(suffix, request, tmp_path):
    require("assimp", assimp_reader.available(), "apt-get install assimp-utils")
    out, _ = request.getfixturevalue("exported_bodies" if suffix == "fbx" else "exported")
    frames = SEEN[1]
    npz = np.load(out / "track_0001.npz")
    scene = assimp_reader.read(out / f"track_0001.{suffix}", tmp_path)
    scale = 0.01 if suffix == "fbx" else 1.0
    for f in frames:
        got = {b: p * scale for b, p in scene.world_positions((f - frames[0]) / POSED_FPS).items()}
        assert_bones_at(got, npz["humanoid_positions"][frames.index(f)], hu.BONES, f"assimp, {suffix} at {f}")
    if suffix == "fbx":  # the skinned body: one mesh, its 22 bones
        assert scene.meshes == 1 and scene.bones_in_meshes == len(hu.BONES)


# ------------------------------------------------------------------------------------------- skinned bodies
# The posed template moves each vertex rigidly with one bone, and the files' skeleton has the track's mean
# bone lengths: a skinned body (smooth weights, one rest shape) follows it to within these bounds (metres).
BODY_MEDIAN, BODY_P95 = 0.015, 0.040


def recorded(vertices: dict, tid: int, frames) -> np.ndarray:
    return np.stack([vertices[tid, f] for f in frames])


def test_exported_bodies_follow_the_recorded_vertices(exported_bodies):
    out, _ = exported_bodies
    index = json.loads((out / "tracks.json").read_text())
    for track in index["tracks"]:
        err = track["body_error_mm"]
        assert err["median"] < BODY_MEDIAN * 1000 and err["p95"] < BODY_P95 * 1000, (track["name"], err)
        assert track["files"] == [f"{track['name']}.{s}" for s in ("npz", "glb", "fbx")]
    assert (out / "run.blend").is_file()


def test_exported_bodies_pass_the_validator(exported_bodies):
    out, _ = exported_bodies
    reports = validate(sorted(out.glob("*.glb")))
    assert len(reports) == 2 and all(r["errors"] == 0 and r["warnings"] == 0 for r in reports), reports


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["glb", "fbx"])
def test_blender_deforms_the_exported_body_onto_the_recorded_vertices(suffix, exported_bodies, tmp_path):
    out, vertices = exported_bodies
    frames = SEEN[1]
    check = [0, 3, 6, 9]
    report = blender_import(out / f"track_0001.{suffix}", check, tmp_path)
    assert report["skinned_meshes"] and "track_0001_body" in report["skinned_meshes"][-1]
    body = report["skinned_meshes"][-1]
    got = np.stack([blender_to_y_up(report["meshes"][f"{body}@{k}"]) for k in check])
    expected = recorded(vertices, 1, check)
    assert got.shape == expected.shape
    d = np.linalg.norm(got - expected, axis=-1)
    assert np.median(d) < BODY_MEDIAN and np.percentile(d, 95) < BODY_P95, (np.median(d), np.percentile(d, 95))


@pytest.mark.slow
def test_three_js_plays_the_exported_tracks_and_bodies(exported, exported_bodies):
    for out, _ in (exported, exported_bodies):
        names = sorted(p.name for p in out.glob("*.glb"))
        reports = browser_positions([out / n for n in names], (np.array(SEEN[1]) - SEEN[1][0]) / POSED_FPS)
        report = reports["track_0001.glb"]
        npz = np.load(out / "track_0001.npz")
        for k, f in enumerate(SEEN[1]):
            assert_bones_at(report["positions"][k], npz["humanoid_positions"][k], hu.BONES, f"three.js at {f}")
        assert report["skinnedMeshes"] == (2 if out == exported_bodies[0] else 1)  # sticks (+ body)


@pytest.mark.slow
def test_blend_scene_opens_with_the_recording_and_renders_over_the_video(exported_bodies, tmp_path):
    from PIL import Image

    from tools.export.fbx import linear_colour

    out, _ = exported_bodies
    png = tmp_path / "frame3.png"
    proc = subprocess.run([bpy_python(), str(REPO / "tests" / "blender_scene.py"), str(out / "run.blend"),
                           str(tmp_path / "scene.json"), "3", str(png)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and png.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    scene = json.loads((tmp_path / "scene.json").read_text())
    assert scene["fps"] == pytest.approx(POSED_FPS) and scene["frame_range"] == [0, 9]
    assert scene["resolution"] == [VIDEO_SIZE[1], VIDEO_SIZE[0]]
    assert scene["camera"]["focal_px"] == pytest.approx(VIDEO_FOCAL, rel=1e-5)
    assert scene["camera"]["backgrounds"][0][0] == "MOVIE_CLIP"
    assert sorted(scene["armatures"]) == ["track_0001", "track_0002"]
    for tid in (1, 2):
        name = f"track_{tid:04d}"
        assert scene["armatures"][name]["action_range"] == [SEEN[tid][0], SEEN[tid][-1]]
        assert scene["bodies"][f"{name}_body"]["parent"] == name
        np.testing.assert_allclose(scene["bodies"][f"{name}_body"]["color"][:3], linear_colour(tid), atol=1e-6)
    img = np.asarray(Image.open(png).convert("RGB"), np.int64)
    h, w = VIDEO_SIZE
    assert img.shape == (h, w, 3)
    # the video's frame 3 behind: its white square at x 24-35 near the bottom, the ramp elsewhere
    assert (img[h - 25:h - 15, 26:34] > 200).all()
    assert abs(img[5, w - 5, 0] - 250) < 30 and abs(img[5, 5, 0] - 0) < 30
    # the characters over it: at track 1's projected hips, not the video's colours
    hips = np.load(out / "track_0001.npz")["humanoid_root"][SEEN[1].index(3)]
    u, v = VIDEO_FOCAL * hips[0] / -hips[2] + w / 2, -VIDEO_FOCAL * hips[1] / -hips[2] + h / 2
    ramp = np.array([np.linspace(0, 255, w)[int(u)], 0, 160])
    assert np.abs(img[int(v), int(u)] - ramp).max() > 60, (img[int(v), int(u)], ramp)


# ------------------------------------------------------------------------------------------- rig presets
# The targets' skeletons as their public documentation gives them (bone: parent), for the bones we drive and
# those between them: Mixamo's rig (the `mixamorig:` names of any Mixamo download), Unreal Engine 5's
# mannequin (Manny/Quinn, SK_Mannequin: root at the ground, five spine bones, two neck bones), SMPL's kinematic
# tree (the SMPL paper / smplx's joint names and parents).
MIXAMO = {"Hips": None, "Spine": "Hips", "Spine1": "Spine", "Spine2": "Spine1", "Neck": "Spine2",
          "Head": "Neck", "LeftShoulder": "Spine2", "LeftArm": "LeftShoulder", "LeftForeArm": "LeftArm",
          "LeftHand": "LeftForeArm", "RightShoulder": "Spine2", "RightArm": "RightShoulder",
          "RightForeArm": "RightArm", "RightHand": "RightForeArm", "LeftUpLeg": "Hips", "LeftLeg": "LeftUpLeg",
          "LeftFoot": "LeftLeg", "LeftToeBase": "LeftFoot", "RightUpLeg": "Hips", "RightLeg": "RightUpLeg",
          "RightFoot": "RightLeg", "RightToeBase": "RightFoot"}
UE5 = {"root": None, "pelvis": "root", "spine_01": "pelvis", "spine_02": "spine_01", "spine_03": "spine_02",
       "spine_04": "spine_03", "spine_05": "spine_04", "neck_01": "spine_05", "neck_02": "neck_01",
       "head": "neck_02", "clavicle_l": "spine_05", "upperarm_l": "clavicle_l", "lowerarm_l": "upperarm_l",
       "hand_l": "lowerarm_l", "clavicle_r": "spine_05", "upperarm_r": "clavicle_r", "lowerarm_r": "upperarm_r",
       "hand_r": "lowerarm_r", "thigh_l": "pelvis", "calf_l": "thigh_l", "foot_l": "calf_l", "ball_l": "foot_l",
       "thigh_r": "pelvis", "calf_r": "thigh_r", "foot_r": "calf_r", "ball_r": "foot_r"}
SMPL_TREE = [("pelvis", None), ("left_hip", "pelvis"), ("right_hip", "pelvis"), ("spine1", "pelvis"),
             ("left_knee", "left_hip"), ("right_knee", "right_hip"), ("spine2", "spine1"),
             ("left_ankle", "left_knee"), ("right_ankle", "right_knee"), ("spine3", "spine2"),
             ("left_foot", "left_ankle"), ("right_foot", "right_ankle"), ("neck", "spine3"),
             ("left_collar", "spine3"), ("right_collar", "spine3"), ("head", "neck"),
             ("left_shoulder", "left_collar"), ("right_shoulder", "right_collar"), ("left_elbow", "left_shoulder"),
             ("right_elbow", "right_shoulder"), ("left_wrist", "left_elbow"), ("right_wrist", "right_elbow")]
TARGETS = {"mixamo": ({"mixamorig:" + k: v and "mixamorig:" + v for k, v in MIXAMO.items()}, "mixamorig:Hips"),
           "ue5": (UE5, "pelvis"), "smpl": (dict(SMPL_TREE), "pelvis")}


def nearest_driven_ancestor(table: dict, bone: str, driven) -> str:
    p = table[bone]
    while p is not None and p not in driven:
        p = table[p]
    return p


@pytest.mark.parametrize("rig", ["mixamo", "ue5", "smpl"])
def test_rig_presets_have_the_targets_names_and_hierarchy_and_land_on_the_joints(rig, assets_dir, tmp_path):
    from fastmetro_stream.cli import main

    bvhio = import_bvhio()
    table, hips = TARGETS[rig]
    write_posed_recording(tmp_path / "run.msgpack", assets_dir)
    assert main(["export", str(tmp_path / "run.msgpack"), "-o", str(tmp_path / "out"), "--format", "npz,bvh,gltf",
                 "--rig", rig]) == 0
    out = tmp_path / "out"
    npz = np.load(out / "track_0001.npz")  # the npz keeps the project's names
    hierarchy = bvhio.readAsHierarchy(str(out / "track_0001.bvh"))
    joints = {j.Name: j for j, _, _ in hierarchy.layout()}
    parent_of = {j.Name: (j.Parent.Name if j.Parent is not None else None) for j in joints.values()}
    assert set(joints) <= set(table) and len(joints) == len(hu.BONES) and hierarchy.Name == hips
    for bone in joints:
        assert parent_of[bone] == nearest_driven_ancestor(table, bone, joints), bone
    if rig == "smpl":  # SMPL's joint order, in the file as in the table
        assert [j.Name for j, _, _ in hierarchy.layout()][0] == "pelvis"
    from tools.export.rigs import NAMES

    ours = dict(zip(NAMES[rig], hu.BONES))
    frames = SEEN[1]
    scene = assimp_reader.read(out / "track_0001.glb", tmp_path) if assimp_reader.available() else None
    for k in range(frames[-1] - frames[0] + 1):
        f = frames[0] + k
        seen = max(s for s in frames if s <= f)
        expected = npz["humanoid_positions"][frames.index(seen)]
        hierarchy.loadPose(k)
        got = {n: np.array(list(j.PositionWorld)) for n, j in joints.items()}
        assert_bones_at({ours[n]: p for n, p in got.items()}, expected, hu.BONES, f"bvhio, {rig} at {f}", 2e-4)
        if scene is not None and f == seen:
            got = scene.world_positions((f - frames[0]) / POSED_FPS)
            assert_bones_at({ours[n]: got[n] for n in joints}, expected, hu.BONES, f"assimp glb, {rig} at {f}")
    if rig == "ue5":  # A-pose at rest: the elbow 45 degrees below the shoulder's horizontal (the BVH OFFSET)
        import re

        text = (out / "track_0001.bvh").read_text()
        offset = np.array(re.search(r"JOINT lowerarm_l\s*{\s*OFFSET (\S+) (\S+) (\S+)", text).groups(), float)
        assert np.degrees(np.arctan2(-offset[1], offset[0])) == pytest.approx(45.0, abs=1.0)
