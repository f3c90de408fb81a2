"""VMC in the world frame (tools/vmc_world.py), judged by python-osc's own server: walkers seen by a tilted camera
(tests/walk_scene.py) go through the wire into the sender, the bundles come back over UDP, the avatar is
rebuilt by forward kinematics and found upright on the floor, walking where the walker walked."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("pythonosc")

from fastmetro import feet  # noqa: E402
from fastmetro import humanoid as hu  # noqa: E402
from pipeline.messages import WorldInfo  # noqa: E402
from tests import walk_scene as ws  # noqa: E402
from tests.test_vmc import Receiver, unity_fk, wire_frame  # noqa: E402
from tools.vmc import VmcSender, VmcSettings  # noqa: E402

FRAMES = 90
SETTLED = 30  # frames after which the live floor correction has settled (one second)


@pytest.fixture(scope="module")
def scene(assets_dir):
    from tests.humanoid_data import PosedTemplate

    camera = ws.scene_camera(pitch_deg=25.0, roll_deg=3.0, height=3.2)
    walks = [ws.walk(FRAMES, start=(-1.0, -6.0), heading=0.4), ws.walk(FRAMES, start=(1.0, -7.5), heading=-2.3, phase=0.5)]
    return dict(camera=camera, walks=walks, template=PosedTemplate(assets_dir))


def _send(frames, settings_kw) -> list[list[dict]]:
    """Every frame through the wire and the sender to one python-osc server per walker; the bundles back."""
    receivers = [Receiver(), Receiver()]
    try:
        sender = VmcSender(VmcSettings(select="first", slots=2, destinations=[f"127.0.0.1:{r.port}" for r in receivers],
                                       **settings_kw))
        for mf in frames:
            sender.send_frame(wire_frame(mf))
        sender.close()
        deadline = time.monotonic() + 5
        while min(len(r.bundles) for r in receivers) < len(frames) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        for r in receivers:
            r.close()
    return [r.bundles for r in receivers]


def _world_positions(bundle: dict) -> np.ndarray:
    """The avatar's bone positions (B, 3) in the world frame: Unity's mirrored back (x -> -x)."""
    pos = unity_fk(bundle)
    return np.array([pos[b] for b in hu.BONES]) * [-1.0, 1.0, 1.0]


def _lean_deg(p: np.ndarray) -> np.ndarray:
    d = p[..., hu.BONES.index("Neck"), :] - p[..., 0, :]
    return np.degrees(np.arccos(d[..., 1] / np.linalg.norm(d, axis=-1)))


def _check(bundles, walks, camera) -> dict:
    """Upright (the Hips-to-Neck line as the walker's, within 6 degrees), the feet in (true) contact on the floor
    within 2 cm once settled, the pelvis where the walker's is (within 6 % of its distance)."""
    worst = dict(lean=0.0, sole=0.0, place=0.0)
    for walk, got in zip(walks, bundles):
        assert len(got) == FRAMES
        pos = np.stack([_world_positions(b) for b in got])
        worst["lean"] = max(worst["lean"], np.abs(_lean_deg(pos) - _lean_deg(walk.positions)).max())
        sole = feet.sole_height(pos[:, list(feet.FOOT_BONES)], pos[:, list(feet.TOES_BONES)])
        worst["sole"] = max(worst["sole"], np.abs(sole[SETTLED:][walk.contact[SETTLED:]]).max())
        dist = np.linalg.norm(walk.positions[:, 0] - camera.position(), axis=1)
        worst["place"] = max(worst["place"], (np.linalg.norm(pos[:, 0] - walk.positions[:, 0], axis=1) / dist).max())
    return worst


def test_stream_camera_stands_the_avatars_upright_on_the_floor(scene):
    """The stream carries its calibrated camera (here 6 cm too high: the persons float); the avatars stand on
    the floor and walk where the walkers walk. Without the world the same avatars lean with the camera."""
    camera, walks = scene["camera"], scene["walks"]
    off = ws.scene_camera(pitch_deg=25.0, roll_deg=3.0, height=3.26)  # the calibration's height 6 cm off
    info = WorldInfo(state="calibrated", world_from_camera=off.world_from_camera(), focal_estimated=True)
    frames = ws.walker_frames(scene["template"], camera, walks, depth_noise=0.005, world_info=info,
                              rng=np.random.default_rng(1))
    worst = _check(_send(frames, {}), walks, camera)
    assert worst["lean"] < 6.0 and worst["sole"] < 0.02 and worst["place"] < 0.06, worst
    # the camera frame (--no-world): tilted by the camera's pitch, nowhere near a floor
    bundles = _send(frames, {"world": False})
    pos = np.stack([_world_positions(b) for b in bundles[0]])
    assert np.abs(_lean_deg(pos) - _lean_deg(walks[0].positions)).min() > 15.0


def test_camera_file_places_a_stream_published_at_another_focal(scene, tmp_path):
    """No world on the wire, persons placed at the frame diagonal (depth 25 % too far): `--camera FILE` puts
    them on the floor where they walk."""
    camera, walks = scene["camera"], scene["walks"]
    frames = ws.walker_frames(scene["template"], camera, walks, published_focal=float(np.hypot(1280, 720)))
    camera.save(tmp_path / "camera.json")
    worst = _check(_send(frames, {"camera": str(tmp_path / "camera.json")}), walks, camera)
    assert worst["lean"] < 6.0 and worst["sole"] < 0.02 and worst["place"] < 0.06, worst


def test_a_calibrating_stream_stays_in_the_camera_frame(scene):
    frames = ws.walker_frames(scene["template"], scene["camera"], scene["walks"][:1] * 2,
                              world_info=WorldInfo(state="calibrating"))[:5]
    sender = VmcSender(VmcSettings(port=9))  # nothing listens there: UDP drops it
    for mf in frames:
        sender.send_frame(wire_frame(mf))
    sender.close()
    assert sender.world.stats == dict(world_frames=0, camera_frames=5)


def test_cli_refuses_a_bad_camera_file(tmp_path, capsys):
    from fastmetro_stream.cli import main

    assert main(["vmc", "--camera", str(tmp_path / "none.json"), "--frames", "1"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: vmc: camera file")
