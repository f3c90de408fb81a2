"""The world-grounded export (tools/export/world.py): walkers seen by a tilted camera (tests/walk_scene.py),
published at a wrong focal as an uncalibrated run would, exported with the camera: the npz's world fields, the
feet's contacts and locks; the BVH and GLB read back by bvhio and by Blender (bpy) stand upright on the floor."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fastmetro import feet
from fastmetro import humanoid as hu
from fastmetro.world import CameraModel, camera_to_world
from tests import walk_scene as ws
from tests.export_helpers import bpy_python
from tools.export.exporter import ExportError, ExportOptions, export_recording

REPO = Path(__file__).resolve().parents[1]
FRAMES = 90
FPS = 30.0


@pytest.fixture(scope="module")
def scene(assets_dir, tmp_path_factory):
    """A recording of three walkers under a camera 3 m up, 20 degrees down, 2 degrees of roll, focal 0.8 x the
    diagonal; published at the diagonal (depth 25 % too far) with 1 % depth noise."""
    from tests.humanoid_data import PosedTemplate

    folder = tmp_path_factory.mktemp("world")
    camera = ws.scene_camera()
    walks = [ws.walk(FRAMES, start=(-1.5, -6.0), heading=0.5),
             ws.walk(FRAMES, start=(1.5, -8.0), heading=-2.0, phase=0.4),
             ws.walk(FRAMES, start=(0.0, -4.5), heading=1.7, phase=0.2)]
    frames = ws.walker_frames(PosedTemplate(assets_dir), camera, walks, published_focal=float(np.hypot(1280, 720)),
                              depth_noise=0.01, rng=np.random.default_rng(2))
    rec = ws.write_recording(folder / "walk.msgpack", frames)
    camera.save(folder / "camera.json")
    out = folder / "out"
    export_recording(rec, out, ExportOptions(formats=("npz", "bvh", "gltf"), camera=str(folder / "camera.json")))
    return dict(folder=folder, rec=rec, camera=camera, walks=walks, out=out, frames=frames)


def _sole(positions: np.ndarray) -> np.ndarray:
    return feet.sole_height(positions[:, list(feet.FOOT_BONES)], positions[:, list(feet.TOES_BONES)])


def _lean_deg(positions: np.ndarray) -> np.ndarray:
    """Angle (degrees) between +Y and the line from the Hips to the Neck, per frame."""
    d = positions[:, hu.BONES.index("Neck")] - positions[:, 0]
    return np.degrees(np.arccos(d[:, 1] / np.linalg.norm(d, axis=1)))


def test_npz_holds_the_world(scene):
    out, camera = scene["out"], scene["camera"]
    index = json.loads((out / "tracks.json").read_text())
    assert index["world"]["source"] == "file" and (out / "camera.json").is_file()
    assert CameraModel.load(out / "camera.json").height == pytest.approx(camera.height)
    for k, walk in enumerate(scene["walks"]):
        z = np.load(out / f"track_{k + 1:04d}.npz")
        assert z["world_joints_h36m"].shape == (FRAMES, 17, 3) and z["world_root"].shape == (FRAMES, 3)
        assert z["foot_contact"].shape == (FRAMES, 2) and z["foot_contact"].dtype == bool
        np.testing.assert_allclose(z["world_from_camera"], camera.world_from_camera())
        assert (z["foot_contact"] == walk.contact).mean() >= 0.8
        # placed at the camera's focal, not the published one: the pelvis where the walker's is
        dist = np.linalg.norm(walk.positions[:, 0] - camera.position(), axis=1)
        assert (np.linalg.norm(z["world_root"] - walk.positions[:, 0], axis=1) / dist).max() < 0.06
        # the published joints, placed without the camera's focal, are 25 % too far: the world fixes that
        naive = camera_to_world(z["joints_h36m"] + z["cam_t"][:, None], camera)[:, 0]
        assert (np.linalg.norm(naive - walk.positions[:, 0], axis=1) / dist).mean() > 0.15


def test_locked_feet_stand_on_the_floor_and_stay_put(scene):
    """The skeleton the files hold: upright, the feet in contact on the floor (2 cm) and still (slide cut 5x
    against the same skeleton placed in the world without locking), the bone lengths the track's own."""
    out, camera = scene["out"], scene["camera"]
    for k, walk in enumerate(scene["walks"]):
        z = np.load(out / f"track_{k + 1:04d}.npz")
        pos, contact = z["humanoid_positions"], z["foot_contact"]
        assert np.abs(_sole(pos)[contact]).max() < 0.02
        assert _sole(pos).min() > -0.005
        assert np.abs(_lean_deg(pos) - _lean_deg(walk.positions)).max() < 6.0
        # the same skeleton unlocked: the published pose placed in the world by the camera alone
        k_depth = camera.focal / z["focal"]
        cam_t = z["cam_t"] * np.stack([np.ones(FRAMES), np.ones(FRAMES), k_depth], 1)
        ankles = camera_to_world(z["joints_h36m"][:, list(feet.H36M_ANKLES)] + cam_t[:, None], camera)
        before = feet.slide_speed(ankles, walk.contact, walk.times)
        assert feet.slide_speed(pos[:, list(feet.FOOT_BONES)], walk.contact, walk.times) * 5 < before
        assert feet.slide_speed(z["world_joints_h36m"][:, list(feet.H36M_ANKLES)], walk.contact, walk.times) * 5 < before
        bones = lambda p: np.linalg.norm(p[:, 1:] - p[:, hu.PARENTS[1:]], axis=-1)  # noqa: E731
        np.testing.assert_allclose(bones(pos), np.tile(np.linalg.norm(z["skeleton_offsets"][1:], axis=-1),
                                                       (FRAMES, 1)), atol=1e-4)


def test_bvh_read_by_bvhio_walks_on_the_floor(scene):
    bvhio = pytest.importorskip("bvhio")
    out = scene["out"]
    for k, walk in enumerate(scene["walks"]):
        z = np.load(out / f"track_{k + 1:04d}.npz")
        root = bvhio.readAsHierarchy(str(out / f"track_{k + 1:04d}.bvh"))
        joints = {j.Name: j for j, _, _ in root.layout()}
        pos = np.zeros((FRAMES, len(hu.BONES), 3))
        for f in range(FRAMES):
            root.loadPose(f)
            for b, name in enumerate(hu.BONES):
                pos[f, b] = np.asarray(joints[name].PositionWorld)
        np.testing.assert_allclose(pos, z["humanoid_positions"], atol=1e-3)
        contact = z["foot_contact"]
        assert np.abs(_sole(pos)[contact]).max() < 0.02
        assert np.abs(_lean_deg(pos) - _lean_deg(walk.positions)).max() < 6.0


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["bvh", "glb"])
def test_blender_imports_a_person_upright_on_the_floor(scene, suffix, tmp_path):
    """Blender's own importers (default options): the Hips upright in the world, the feet in contact at
    height 0 (Blender's z) within 2 cm, the person where the walker was."""
    python = bpy_python()
    out = scene["out"]
    walk = scene["walks"][0]
    z = np.load(out / "track_0001.npz")
    report = tmp_path / f"{suffix}.npz"
    proc = subprocess.run([python, str(REPO / "tests" / "blender_world.py"), str(out / f"track_0001.{suffix}"),
                           str(report), str(FPS)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and report.is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    r = np.load(report)
    names = list(r["names"])
    blender = r["positions"][:, [names.index(b) for b in hu.BONES]]
    assert len(blender) == FRAMES
    x, y, zz = np.moveaxis(blender, -1, 0)
    pos = np.stack([x, zz, -y], -1)  # Blender's z up -> the files' y up (both importers: (x, y, z) -> (x, -z, y))
    np.testing.assert_allclose(pos, z["humanoid_positions"], atol=2e-3)
    assert np.abs(_sole(pos)[z["foot_contact"]]).max() < 0.02
    assert np.abs(_lean_deg(pos) - _lean_deg(walk.positions)).max() < 6.0


def test_the_world_is_the_default_and_can_be_turned_off(scene, tmp_path):
    out = tmp_path / "auto"
    export_recording(scene["rec"], out, ExportOptions(formats=("npz",)))  # no camera: calibrated from the boxes
    index = json.loads((out / "tracks.json").read_text())
    assert index["world"]["source"] == "calibrated" and (out / "camera.json").is_file()
    assert abs(index["world"]["height"] - scene["camera"].height) < 0.5
    assert "world_joints_h36m" in np.load(out / "track_0001.npz")
    off = tmp_path / "off"
    export_recording(scene["rec"], off, ExportOptions(formats=("npz",), world=False))
    index = json.loads((off / "tracks.json").read_text())
    assert index["world"] is None and not (off / "camera.json").exists()
    z = np.load(off / "track_0001.npz")
    assert "world_joints_h36m" not in z
    # camera frame as before: the humanoid root is the published pelvis, turned y-up
    np.testing.assert_allclose(z["humanoid_root"], (z["joints_h36m"][:, 0] + z["cam_t"]) * [1, -1, -1], atol=1e-5)


def test_world_asked_of_a_recording_that_cannot_be_calibrated(scene, tmp_path):
    rec = ws.write_recording(tmp_path / "short.msgpack", scene["frames"][:5])  # 15 person-frames
    with pytest.raises(ExportError, match="cannot be calibrated.*--camera FILE"):
        export_recording(rec, tmp_path / "o", ExportOptions(formats=("npz",), world=True))
    export_recording(rec, tmp_path / "o2", ExportOptions(formats=("npz",)))  # auto: no world, no error
    assert json.loads((tmp_path / "o2" / "tracks.json").read_text())["world"] is None
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ExportError, match="camera file .*bad.json.* lacks"):
        export_recording(rec, tmp_path / "o3", ExportOptions(formats=("npz",), camera=str(tmp_path / "bad.json")))


def test_cli_world_options(scene, tmp_path, capsys):
    from fastmetro_stream.cli import main

    camera = scene["folder"] / "camera.json"
    assert main(["export", str(scene["rec"]), "-o", str(tmp_path / "a"), "--format", "npz",
                 "--camera", str(camera)]) == 0
    assert (tmp_path / "a" / "camera.json").is_file()
    assert main(["export", str(scene["rec"]), "-o", str(tmp_path / "b"), "--format", "npz", "--no-world"]) == 0
    assert not (tmp_path / "b" / "camera.json").exists()
    assert main(["export", str(scene["rec"]), "-o", str(tmp_path / "c"), "--camera", str(tmp_path / "none.json")]) == 1
    assert "camera file" in capsys.readouterr().err


BLEND_PROJECT = r'''
import json, sys
import bpy
from bpy_extras.object_utils import world_to_camera_view
path, out = sys.argv[1], sys.argv[2]
frames = [int(f) for f in sys.argv[3:]]
bpy.ops.wm.open_mainfile(filepath=path)
scene = bpy.context.scene
arm = bpy.data.objects["track_0001"]
uv = []
for f in frames:
    scene.frame_set(f)
    p = world_to_camera_view(scene, scene.camera, arm.matrix_world @ arm.pose.bones["Hips"].head)
    uv.append([p.x * scene.render.resolution_x, (1.0 - p.y) * scene.render.resolution_y])
json.dump({"uv": uv, "camera": list(scene.camera.location)}, open(out, "w"))
'''


@pytest.mark.slow
def test_blend_camera_sees_the_world_as_the_calibration_does(scene, tmp_path):
    """A .blend of a world export: its camera stands where the calibration puts it, so the characters (in
    the world frame) are over the video where the camera sees them: the Hips projected by Blender's camera
    land within 2 px of the npz's world root projected by the camera model."""
    python = bpy_python()
    out = tmp_path / "blend"
    export_recording(scene["rec"], out, ExportOptions(formats=("npz", "blend"), camera=str(scene["folder"] / "camera.json")))
    z, camera = np.load(out / "track_0001.npz"), scene["camera"]
    rows = [0, FRAMES // 2, FRAMES - 1]
    frames = [int(z["frame_index"][r]) for r in rows]
    report = tmp_path / "blend.json"
    proc = subprocess.run([python, "-c", BLEND_PROJECT, str(out / "walk.blend"), str(report), *map(str, frames)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and report.is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads(report.read_text())
    # the world's (0, height, 0) is Blender's (0, 0, height): the importers' y-up to z-up turn
    np.testing.assert_allclose(r["camera"], [0.0, 0.0, camera.height], atol=1e-4)
    root = np.asarray(z["world_root"], np.float64)[rows]
    c = (camera.camera_from_world() @ np.c_[root, np.ones(len(root))].T).T[:, :3]
    f = camera.focal_for(1280, 720)
    expect = np.c_[f * c[:, 0] / c[:, 2] + 640.0, f * c[:, 1] / c[:, 2] + 360.0]
    np.testing.assert_allclose(np.asarray(r["uv"]), expect, atol=2.0)
