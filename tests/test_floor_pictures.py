"""The floor in pictures (draw/floor.py): the grid over a frame lands where the camera puts the floor, the
overlay and `render` draw it when the camera is known, and `map` draws each track's path where it walked."""
from __future__ import annotations

import numpy as np
import pytest

from draw.colours import track_colour
from draw.floor import draw_floor_grid, floor_plan, plan_view, visible_floor, write_png
from fastmetro.world import world_to_camera
from tests import walk_scene as ws

WH = (640, 360)


def _project(camera, focal, points_w):
    c = world_to_camera(np.asarray(points_w, np.float64), camera)
    return focal * c[:, :2] / c[:, 2:3] + np.array(WH) / 2


def test_grid_lines_land_on_the_floor_metres():
    camera = ws.scene_camera(pitch_deg=12.0, roll_deg=4.0, height=2.5, wh=WH)
    f = camera.focal
    img = draw_floor_grid(np.zeros((WH[1], WH[0], 3), np.uint8), camera.world_from_camera(), f, alpha=1.0)
    # every whole-metre crossing in view is drawn (bright), the middle of a square is not
    crossings = [(x, 0.0, z) for x in range(-3, 4) for z in range(-12, -3)]
    mids = [(x + 0.5, 0.0, z + 0.5) for x in range(-3, 3) for z in range(-12, -4)]
    for points, lit in ((crossings, True), (mids, False)):
        for p in _project(camera, f, points):
            u, v = np.rint(p - 0.5).astype(int)
            if 2 <= u < WH[0] - 2 and 2 <= v < WH[1] - 2:
                value = img[v - 1:v + 2, u - 1:u + 2].max()
                assert (value > 100) if lit else (value == 0), (points, p, value)
    # nothing above the horizon: the sky rows stay untouched
    horizon = _project(camera, f, [(0.0, 0.0, -1e4)])[0][1]
    assert 0 < horizon < WH[1] and img[: int(horizon) - 8].max() == 0


def test_visible_floor_is_what_the_frame_sees():
    camera = ws.scene_camera(pitch_deg=30.0, roll_deg=0.0, height=3.0, wh=WH)
    poly = visible_floor(camera.world_from_camera(), camera.focal, WH, max_distance=25.0)
    # the bottom middle of the frame sees the floor at height / tan(pitch + half the vertical field of view)
    near = 3.0 / np.tan(np.radians(30.0) + np.arctan(WH[1] / 2 / camera.focal))
    assert np.min(np.linalg.norm(poly, axis=1)) == pytest.approx(near, rel=0.02)
    assert np.max(np.linalg.norm(poly, axis=1)) <= 25.0 + 1e-6
    assert np.all(poly[:, 1] < 0)  # all of it in front of the camera (-Z)


def test_floor_plan_puts_each_path_where_it_walked(tmp_path):
    camera = ws.scene_camera(wh=WH)
    walks = {1: ws.walk(60, start=(-1.5, -6.0), heading=0.5), 4: ws.walk(60, start=(1.5, -8.0), heading=-2.0)}
    paths = {tid: [w.positions[:, 0][:, [0, 2]]] for tid, w in walks.items()}
    img = floor_plan(paths, camera.world_from_camera(), camera.focal, WH, size=600)
    view = plan_view(paths, camera.world_from_camera(), camera.focal, WH, size=600)
    assert img.shape == (600, 600, 3)
    for tid, (path,) in paths.items():
        want = np.array(track_colour(tid)) * 0.8
        for p in view.pixels(path[10:-10:10]):
            u, v = np.rint(p).astype(int)
            patch = img[v - 1:v + 2, u - 1:u + 2].reshape(-1, 3).astype(float)
            assert np.min(np.abs(patch - want).max(1)) < 40, (tid, p)
    # one metre is `scale` pixels both ways: the camera (0, 0) and a point 5 m ahead
    a, b = view.pixels([[0.0, 0.0], [0.0, -5.0]])
    assert a[1] - b[1] == pytest.approx(5 * view.scale) and a[0] == pytest.approx(b[0])
    assert img[int(a[1]) - 3, int(a[0])].max() < 100  # the camera's dark triangle
    write_png(tmp_path / "plan.png", img)
    import cv2

    back = cv2.imread(str(tmp_path / "plan.png"))[..., ::-1]
    np.testing.assert_array_equal(back, img)


@pytest.fixture(scope="module")
def walk_recording(assets_dir, tmp_path_factory):
    from tests.humanoid_data import PosedTemplate

    folder = tmp_path_factory.mktemp("map")
    camera = ws.scene_camera()
    walks = [ws.walk(45, start=(-1.5, -6.0), heading=0.5), ws.walk(45, start=(1.5, -8.0), heading=-2.0, phase=0.4),
             ws.walk(45, start=(0.0, -4.5), heading=1.7, phase=0.2)]
    frames = ws.walker_frames(PosedTemplate(assets_dir), camera, walks, published_focal=float(np.hypot(1280, 720)))
    camera.save(folder / "camera.json")
    return dict(rec=ws.write_recording(folder / "walk.msgpack", frames), camera=camera, walks=walks, folder=folder,
                frames=frames)


def test_map_command(walk_recording, tmp_path, capsys):
    from fastmetro_stream.cli import main
    from tools.export.world import WorldExport
    from tools.map import track_paths

    rec, cam_file = walk_recording["rec"], walk_recording["folder"] / "camera.json"
    assert main(["map", str(rec), "-o", str(tmp_path / "map.png"), "--camera", str(cam_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("map: 3 tracks") and "camera 3.00 m up, pitch 20.0 deg (file)" in out
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the paths, placed with the camera's focal (the recording's is the diagonal), are where the walkers walked
    paths = track_paths(rec, WorldExport.prepare(rec, camera_file=cam_file))
    for tid, walk in enumerate(walk_recording["walks"], 1):
        (path,) = paths[tid]
        truth = walk.positions[:, 0][:, [0, 2]]
        dist = np.linalg.norm(truth, axis=1)
        assert (np.linalg.norm(path - truth, axis=1) / dist)[3:-3].max() < 0.06
    # calibrated from the boxes when no camera is given
    assert main(["map", str(rec), "-o", str(tmp_path / "auto.png")]) == 0
    assert "(calibrated)" in capsys.readouterr().out
    # one line for what the user can fix
    assert main(["map", str(tmp_path / "none.msgpack"), "-o", str(tmp_path / "x.png")]) == 1
    assert capsys.readouterr().err.strip() == f"error: map: recording {tmp_path / 'none.msgpack'} not found"
    short = ws.write_recording(tmp_path / "short.msgpack", walk_recording["frames"][:3])
    assert main(["map", str(short), "-o", str(tmp_path / "x.png")]) == 1
    assert "cannot be calibrated" in capsys.readouterr().err


def test_overlay_and_render_draw_the_floor(walk_recording, tmp_path):
    """The overlay recorder with a frame's camera, and `render` with a camera file: the grid is there (bright
    pixels where the floor's metre crossings project), and not without."""
    import av

    from draw.video import VideoWriter
    from stages.overlay import OverlayRecorder
    from tools.render import render_recording

    camera = walk_recording["camera"]
    f = camera.focal
    black = np.zeros((720, 1280, 3), np.uint8)
    rec = OverlayRecorder(tmp_path / "o.mp4", np.zeros((1, 3), np.int64), rate=30)
    for i in range(3):
        rec.submit(black.copy(), [], f, i / 30, floor=camera.world_from_camera())
    rec.close()
    video = tmp_path / "black.mp4"
    with VideoWriter(video, 30) as w:
        for _ in range(len(walk_recording["frames"])):
            w.write(black)
    render_recording(walk_recording["rec"], video, tmp_path / "r.mp4", camera=walk_recording["folder"] / "camera.json",
                     progress=False, alpha=0.0)
    render_recording(walk_recording["rec"], video, tmp_path / "n.mp4", floor=False, progress=False, alpha=0.0)
    spots = _project_full(camera, [(x, 0.0, -6.0) for x in (-2, -1, 0, 1, 2)])

    def first_frame(path):
        with av.open(str(path)) as c:
            return next(c.decode(video=0)).to_ndarray(format="rgb24")

    for path, lit in (("o.mp4", True), ("r.mp4", True), ("n.mp4", False)):
        img = first_frame(tmp_path / path)
        values = [img[int(v) - 1:int(v) + 2, int(u) - 1:int(u) + 2].max() for u, v in spots]
        assert (min(values) > 40) if lit else (max(values) < 20), (path, values)


def _project_full(camera, points_w):
    c = world_to_camera(np.asarray(points_w, np.float64), camera)
    return camera.focal * c[:, :2] / c[:, 2:3] + np.array([camera.width, camera.height_px]) / 2


def test_map_from_boxes_finds_the_feet_on_the_floor(walk_recording):
    """`map --from boxes`: the boxes' bottom centres cast onto the floor land near the walkers' feet."""
    from tools.export.world import WorldExport
    from tools.map import track_paths

    rec, cam_file = walk_recording["rec"], walk_recording["folder"] / "camera.json"
    paths = track_paths(rec, WorldExport.prepare(rec, camera_file=cam_file), source="boxes")
    for tid, walk in enumerate(walk_recording["walks"], 1):
        (path,) = paths[tid]
        feet_mid = walk.positions[:, [16, 20]].mean(1)[:, [0, 2]]  # between the ankles
        err = np.linalg.norm(path - feet_mid, axis=1) / np.linalg.norm(feet_mid, axis=1)
        assert np.median(err) < 0.08, np.median(err)
