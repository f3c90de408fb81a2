"""The overlay renderer and the `render` / `image` commands (draw/, tools/render.py, fastmetro_stream/image.py, docs/render.md)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline import wire
from fastmetro_stream.cli import main
from pipeline.messages import EndOfStream, Frame, MeshFrame, Person, PersonMesh
from draw.colours import track_colour
from draw.raster import MeshItem, MeshRenderer, RenderError, mesh_items
from draw.video import VideoWriter
from pipeline.subscriber import person_data
from stages.overlay import OverlayRecorder
from tools.render import render_recording

REPO = Path(__file__).resolve().parents[1]
W, H, F = 320, 240, 500.0

# A unit square in the plane z = 0, two triangles wound counter-clockwise as seen from the camera (-z).
SQUARE_V = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float64)
SQUARE_F = np.array([[0, 2, 1], [0, 3, 2]])
# A cube [-1, 1]^3 with outward-facing triangles.
CUBE_V = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64)


def _cube_faces() -> np.ndarray:
    from scipy.spatial import ConvexHull

    hull = ConvexHull(CUBE_V)
    faces = hull.simplices.copy()
    for k, (a, b, c) in enumerate(faces):  # orient each triangle outward
        n = np.cross(CUBE_V[b] - CUBE_V[a], CUBE_V[c] - CUBE_V[a])
        if n @ CUBE_V[[a, b, c]].mean(0) < 0:
            faces[k] = (a, c, b)
    return faces


CUBE_F = _cube_faces()


def rect_mask(x1: float, y1: float, x2: float, y2: float, w: int = W, h: int = H) -> np.ndarray:
    """Pixels whose centre (i + 0.5, j + 0.5) lies inside the rectangle (continuous frame coordinates)."""
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5
    return ((xs >= x1) & (xs < x2))[None, :] & ((ys >= y1) & (ys < y2))[:, None]


def projected_rect(half: float, cx: float, cy: float, z: float) -> tuple[float, float, float, float]:
    """Where the square [cx +- half] x [cy +- half] at depth z lands in the frame (the stream's camera)."""
    return (F * (cx - half) / z + W / 2, F * (cy - half) / z + H / 2,
            F * (cx + half) / z + W / 2, F * (cy + half) / z + H / 2)


def drawn(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.any(before != after, axis=2)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


METHODS = pytest.mark.parametrize("method", ["zbuffer", "painter"])


@METHODS
def test_square_silhouette_matches_the_projection(method):
    r = MeshRenderer(SQUARE_F, alpha=1.0, method=method)
    bg = np.zeros((H, W, 3), np.uint8)
    half, cam_t = 0.3, np.array([0.2, -0.1, 2.5])
    out = r.draw(bg, [MeshItem(SQUARE_V * half, cam_t, track_id=3)], focal=F)
    expected = rect_mask(*projected_rect(half, 0.2, -0.1, 2.5))
    assert expected.sum() > 1000
    assert iou(drawn(bg, out), expected) >= 0.97
    # the faces carry the track's colour, lit from the camera's side (bright, never brighter than it)
    inside = out[expected & drawn(bg, out)]
    colour = np.array(track_colour(3))
    assert np.all(inside <= colour + 1) and np.all(inside >= 0.6 * colour)


@METHODS
def test_back_faces_are_culled_and_kept_without_culling(method):
    bg = np.zeros((H, W, 3), np.uint8)
    item = MeshItem(SQUARE_V * 0.3, np.array([0.0, 0.0, 2.0]), 1)
    flipped = SQUARE_F[:, ::-1]
    assert not drawn(bg, MeshRenderer(flipped, method=method).draw(bg, [item], F)).any()
    assert drawn(bg, MeshRenderer(flipped, cull=False, method=method).draw(bg, [item], F)).sum() > 1000


@METHODS
def test_cube_silhouette_is_its_front_face_and_culling_follows_the_mesh_orientation(method):
    bg = np.full((H, W, 3), 40, np.uint8)
    cam_t = np.array([0.0, 0.0, 4.0])
    expected = rect_mask(*projected_rect(0.5, 0.0, 0.0, 3.5))  # front face at z = 4 - 0.5
    for faces in (CUBE_F, CUBE_F[:, ::-1]):  # either winding: the enclosed volume tells which side is out
        r = MeshRenderer(faces, alpha=1.0, method=method)
        uv, z, _ = r.triangles(CUBE_V * 0.5, cam_t, F, (W, H), (255, 255, 255))
        assert len(uv) == 2 and np.allclose(z, 3.5)  # only the two front triangles survive culling
        out = r.draw(bg, [MeshItem(CUBE_V * 0.5, cam_t, 2)], focal=F)
        assert iou(drawn(bg, out), expected) >= 0.95


@METHODS
def test_nearer_mesh_paints_over_farther_one_whatever_the_item_order(method):
    bg = np.zeros((H, W, 3), np.uint8)
    near = MeshItem(SQUARE_V * 0.2, np.array([-0.1, 0.0, 2.0]), 1, colour=(255, 0, 0))
    far = MeshItem(SQUARE_V * 0.5, np.array([0.1, 0.0, 3.0]), 2, colour=(0, 0, 255))
    r = MeshRenderer(SQUARE_F, alpha=1.0, method=method)
    overlap = rect_mask(*projected_rect(0.2, -0.1, 0.0, 2.0)) & rect_mask(*projected_rect(0.5, 0.1, 0.0, 3.0))
    assert overlap.sum() > 500
    for items in ([near, far], [far, near]):
        out = r.draw(bg, items, F)
        px = out[overlap]
        assert np.mean(px[:, 0] > 0) > 0.97 and np.mean(px[:, 2] == 0) > 0.97


def test_zbuffer_resolves_crossing_surfaces_per_pixel():
    bg = np.zeros((H, W, 3), np.uint8)
    flat = MeshItem(SQUARE_V * 0.4, np.array([0.0, 0.0, 3.0]), 1, colour=(255, 0, 0))
    tilted_v = SQUARE_V * 0.4
    tilted_v[:, 2] = tilted_v[:, 0]  # z = x: nearer than the flat square on the left, farther on the right
    tilted = MeshItem(tilted_v, np.array([0.0, 0.0, 3.0]), 2, colour=(0, 0, 255))
    out = MeshRenderer(SQUARE_F, alpha=1.0, method="zbuffer").draw(bg, [flat, tilted], F)
    row = out[H // 2]
    left, right = row[W // 2 - 40 : W // 2 - 5], row[W // 2 + 5 : W // 2 + 40]
    assert np.all(left[:, 2] > 0) and np.all(left[:, 0] == 0)
    assert np.all(right[:, 0] > 0) and np.all(right[:, 2] == 0)


@METHODS
def test_alpha_blends_and_box_and_label_are_drawn(method):
    bg = np.full((H, W, 3), 100, np.uint8)
    box = (40.0, 30.0, 200.0, 220.0)
    out = MeshRenderer(SQUARE_F, alpha=0.5, method=method).draw(bg, [MeshItem(SQUARE_V * 0.2, np.array([0, 0, 2.0]), 7, box)], F)
    centre = out[H // 2, W // 2].astype(int)
    from draw.raster import _AMBIENT, _LIGHT

    lit = _AMBIENT + (1 - _AMBIENT) * max(0.0, -_LIGHT[2])  # Lambert of a face turned to the camera
    shaded = np.floor(lit * np.array(track_colour(7)))
    assert np.all(np.abs(centre - (0.5 * 100 + 0.5 * shaded)) <= 1.5)  # half mesh, half frame
    assert drawn(bg, out)[30:33, 60:180].any()  # top edge of the box
    assert drawn(bg, out)[5:28, 40:80].any()  # the "ID 7" label above it


def test_renderer_rejects_bad_input():
    with pytest.raises(RenderError, match="faces"):
        MeshRenderer(np.zeros((4, 2), int))
    with pytest.raises(RenderError, match="vertices"):
        MeshRenderer(CUBE_F).draw(np.zeros((H, W, 3), np.uint8), [MeshItem(np.zeros((3, 3)), np.zeros(3))], F)


# ------------------------------------------------------------------------------------------- render
def write_video(path: Path, frames: int, w: int = W, h: int = H, rate: int = 10) -> np.ndarray:
    """A small H.264 (or MPEG-4) video of flat grey frames; returns the frame colour."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            img = np.full((h, w, 3), 90, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return np.array([90, 90, 90])


def mesh_frame(index: int, with_person: bool = True, focal=F) -> MeshFrame:
    frame = Frame("default", index, index / 10, -1, H, W)
    persons = []
    if with_person:
        person = Person(4, "tracked", (110.0, 60.0, 210.0, 160.0), 0.9, (160.0, 110.0), 125.0, 0)
        z = np.zeros
        persons.append(PersonMesh(person, np.array([1, 0, 0], np.float32), np.array([0, 0, 4.0], np.float32),
                                  z((14, 3), np.float32), z((17, 3), np.float32), z((14, 2), np.float32),
                                  (CUBE_V * 0.4).astype(np.float32)))
    return MeshFrame(frame, persons, focal=focal)


def write_recording(path: Path, indices, vertices_every: int = 1) -> None:
    rec = wire.RecordWriter(path)
    rec.write(0.0, wire.topic("default", "topology"),
              wire.encode_topology("default", 0, CUBE_F, ["j"] * 14, ["h"] * 17, vertices_every=vertices_every))
    for seq, i in enumerate(indices):
        with_v = vertices_every > 0 and seq % vertices_every == 0
        rec.write(0.0, wire.topic("default", "frame"),
                  wire.encode_frame(mesh_frame(i), "default", seq, with_vertices=with_v))
    rec.write(0.0, wire.topic("default", "end"), wire.encode_end(EndOfStream("default", len(indices)), "default", 0))
    rec.close()


def read_video(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_render_a_recording_to_mp4(tmp_path):
    video, rec, out = tmp_path / "src.mp4", tmp_path / "run.rec", tmp_path / "out.mp4"
    write_video(video, 8)
    # frame 3 was dropped (live mode); every other frame message carries vertices (vertices_every = 2)
    write_recording(rec, [0, 1, 2, 4, 5, 6, 7], vertices_every=2)
    # no focal given: the frame messages' focal (F, not the default frame diagonal) places the cube
    stats = render_recording(rec, video, out, progress=False)
    assert stats["frames"] == 8 and stats["frames_with_meshes"] == 7 and stats["persons"] == 7
    frames = read_video(out)
    assert len(frames) == 8 and all(f.shape == (H, W, 3) for f in frames)
    cube = rect_mask(*projected_rect(0.4, 0.0, 0.0, 3.6), W, H)
    for i, f in enumerate(frames):
        changed = np.abs(f.astype(int) - 90).max(axis=2) > 25
        if i == 3:  # no message for this frame: the video frame as it was
            assert changed.mean() < 0.01
        else:  # the mesh (frames without vertices reuse the track's last ones)
            assert iou(changed & ~rect_mask(0, 0, W, 60), cube) >= 0.85


def test_video_writer_keeps_each_frames_time_and_pads_odd_sizes(tmp_path):
    times = [0.0, 0.04, 0.08, 0.2, 0.24]  # a live run that dropped two frames between 0.08 and 0.2
    with VideoWriter(tmp_path / "v.mp4", rate=25) as v:
        for i, t in enumerate(times):
            v.write(np.full((47, 63, 3), 40 * i, np.uint8), t + 10.0)  # times need not start at 0
    with av.open(str(tmp_path / "v.mp4")) as c:
        frames = list(c.decode(video=0))
    assert [round(float(f.pts * f.time_base), 3) for f in frames] == times
    assert (frames[0].width, frames[0].height) == (64, 48)
    with pytest.raises(RenderError, match="does not exist"):
        VideoWriter(tmp_path / "missing" / "v.mp4")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2,
                    reason="needs two CPUs and sched_setaffinity")
def test_video_writer_gives_the_same_video_from_a_thread_pinned_to_one_cpu(tmp_path):
    # `run --overlay` encodes on a thread of the publish process, `render` on the caller's: a thread pinned
    # to fewer CPUs (a thread pool's worker) must still give the same pictures, or the two disagree.
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    frames = [np.roll(base, 7 * i, axis=1) for i in range(12)]

    def encode(path):
        with VideoWriter(path, rate=15) as v:
            for i, f in enumerate(frames):
                v.write(f, i / 15)
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]

    free = encode(tmp_path / "free.mp4")
    out = {}

    def pinned():
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # this thread only
        out["video"] = encode(tmp_path / "pinned.mp4")

    t = threading.Thread(target=pinned)
    t.start()
    t.join()
    assert len(out["video"]) == len(free) == 12
    assert max(np.abs(a - b).max() for a, b in zip(free, out["video"])) == 0


def test_the_coarse_mesh_keeps_the_outline_of_the_fine_one(assets_dir):
    # overlay.mesh coarse draws D[0] @ vertices with F[1]: the two must belong together
    import fastmetro
    from scripts.bench_render import smooth_surface

    mesh = fastmetro.load_mesh_data(assets_dir)
    assert mesh.coarse_faces.shape == (3442, 3) and mesh.downsample.shape == (1723, 6890)
    v = smooth_surface(mesh.faces)  # a smooth closed surface on the body's triangles, about body-sized
    img = np.zeros((720, 1280, 3), np.uint8)
    cam_t = np.array([0.0, 0.0, 2.0])
    fine = MeshRenderer(mesh.faces).draw(img, [MeshItem(v, cam_t, 1)]).any(axis=2)
    coarse = MeshRenderer(mesh.coarse_faces).draw(img, [MeshItem(mesh.downsample @ v, cam_t, 1)]).any(axis=2)
    assert fine.sum() > 5_000
    assert (fine & coarse).sum() / (fine | coarse).sum() > 0.93  # 0.96 here


def test_overlay_recorder_writes_every_frame_offline(tmp_path):
    rec = OverlayRecorder(tmp_path / "o.mp4", CUBE_F, block=True, queue_size=2)
    bg = np.full((H, W, 3), 90, np.uint8)
    for i in range(6):
        mf = mesh_frame(i, with_person=i != 2)
        assert rec.submit(bg.copy(), [person_data(p) for p in mf.persons], mf.focal, i / 10)
    rec.close()
    assert (rec.written, rec.skipped, rec.error) == (6, 0, None)
    frames = read_video(tmp_path / "o.mp4")
    cube = rect_mask(*projected_rect(0.4, 0.0, 0.0, 3.6), W, H)
    for i, f in enumerate(frames):
        changed = np.abs(f.astype(int) - 90).max(axis=2) > 25
        if i == 2:
            assert changed.mean() < 0.01
        else:
            assert iou(changed & ~rect_mask(0, 0, W, 60), cube) >= 0.85
    assert len(frames) == 6


def test_overlay_recorder_skips_frames_live_when_behind_and_counts_them(tmp_path):
    rec = OverlayRecorder(tmp_path / "o.mp4", CUBE_F, block=False, queue_size=1)
    big = np.full((720, 1280, 3), 90, np.uint8)
    mf = mesh_frame(0)
    taken = [rec.submit(big.copy(), [person_data(p) for p in mf.persons], mf.focal, i / 30) for i in range(30)]  # faster than drawing
    rec.close()
    assert rec.skipped == taken.count(False) > 0
    assert rec.written == taken.count(True) == len(read_video(tmp_path / "o.mp4"))


def test_mesh_items_reuse_a_tracks_vertices_until_it_is_lost():
    from pipeline.subscriber import PersonData

    pm = mesh_frame(0).persons[0]  # PersonMesh, track 4
    wire_person = wire.decode(wire.encode_frame(mesh_frame(1), "default", 1, with_vertices=False))["persons"][0]
    data = PersonData(**wire_person)  # a recording's or the subscriber's person, sent without vertices
    last: dict = {}
    (first,) = mesh_items([person_data(pm)], last)  # the pipeline's person, as the overlay stage passes it
    assert first.track_id == 4 and first.vertices is pm.vertices and tuple(first.box) == pm.person.box
    (it,) = mesh_items([data], last)
    assert it.vertices is pm.vertices and np.array_equal(it.cam_t, wire_person["cam_t"])
    (it,) = mesh_items([data], last, lost=[4])  # ends at this frame: drawn, then forgotten
    assert it.vertices is pm.vertices and last == {}
    assert mesh_items([data], last)[0].vertices is None


def test_render_command_errors(tmp_path, capsys):
    video = tmp_path / "src.mp4"
    write_video(video, 2)
    assert main(["render", str(tmp_path / "missing.rec"), "--video", str(video), "-o", str(tmp_path / "o.mp4")]) == 1
    assert "missing.rec not found" in capsys.readouterr().err
    empty = tmp_path / "empty.rec"
    write_recording(empty, [])
    assert main(["render", str(empty), "--video", str(video), "-o", str(tmp_path / "o.mp4")]) == 1
    assert "holds no frame messages" in capsys.readouterr().err
    rec = tmp_path / "run.rec"
    write_recording(rec, [0, 1])
    assert main(["render", str(rec), "--video", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o.mp4")]) == 1
    assert "nope.mp4 not found" in capsys.readouterr().err
    assert main(["render", str(rec), "--video", str(video), "-o", str(tmp_path / "o.mp4"), "-q"]) == 0
    assert len(read_video(tmp_path / "o.mp4")) == 2


@pytest.mark.slow
def test_render_a_recording_of_the_sample(tmp_path, assets_dir):
    rec, out = tmp_path / "sample.rec", tmp_path / "sample.mp4"
    env = {**os.environ, "FASTMETRO_ASSETS": str(assets_dir)}
    run = subprocess.run([sys.executable, "-m", "fastmetro_stream.cli", "run", "--record", str(rec), "--set",
                          "detect.detector=hog", "--set", "decode.max_frames=10", "--set", "progress=false",
                          "--set", "publish.endpoint=tcp://127.0.0.1:0"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "fastmetro_stream.cli", "render", str(rec), "--video",
                        str(REPO / "samples" / "sample.mp4"), "-o", str(out), "-q"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    frames = read_video(out)
    with av.open(str(REPO / "samples" / "sample.mp4")) as c:
        s = c.streams.video[0]
        n, size = sum(1 for _ in c.decode(video=0)), (s.height, s.width)
    assert len(frames) == n and frames[0].shape[:2] == size


# ------------------------------------------------------------------------------------------- image
def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    lines = path.read_text().splitlines()
    v = np.array([[float(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    f = np.array([[int(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("f ")])
    return v, f


@pytest.mark.slow
def test_image_command_on_bus(tmp_path, assets_dir, capsys):
    import cv2
    import ultralytics

    bus = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
    out, objs = tmp_path / "bus.png", tmp_path / "meshes"
    assert main(["image", str(bus), "-o", str(out), "--obj", str(objs), "--detector", "hog"]) == 0
    captured = capsys.readouterr()
    assert "NO FASTMETRO CHECKPOINT LOADED" in captured.err
    png, src = cv2.imread(str(out)), cv2.imread(str(bus))
    assert png.shape == src.shape and np.any(png != src)
    files = sorted(objs.glob("*.obj"))
    assert files and f"{len(files)} person(s)" in captured.out
    for f in files:
        v, faces = read_obj(f)
        assert v.shape == (6890, 3) and np.isfinite(v).all()
        assert faces.shape == (13776, 3) and faces.min() == 1 and faces.max() == 6890
        assert np.all(v[:, 2] < 0)  # in front of the camera (OBJ axes: z towards the viewer)


@pytest.mark.slow
def test_image_command_draws_and_writes_the_hands_with_hands_on(tmp_path, assets_dir, mano_dir, capsys):
    """`image --set infer.hands=true` runs the infer stage's hand pass: every hand in view is drawn over the
    picture (pixels differ from the hands-off picture, and only there where hands are) and written as an OBJ
    of the MANO mesh, named by person and side; hands without a crop are reported with their reason."""
    import cv2
    import ultralytics

    from fastmetro_stream.config import load_config
    from fastmetro_stream.image import run_image

    bus = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
    off = run_image(bus, tmp_path / "off.png", None, load_config(None, ["detect.detector=hog", "infer.hands=false"]))
    assert off["persons"] > 0 and not off["hands_on"] and off["hands"] == [] == off["hands_skipped"]

    objs = tmp_path / "meshes"
    assert main(["image", str(bus), "-o", str(tmp_path / "on.png"), "--obj", str(objs), "--detector", "hog",
                 "--set", "infer.hands=true"]) == 0
    captured = capsys.readouterr()
    assert "hand network runs UNTRAINED weights" in captured.err
    hand_files = sorted(objs.glob("bus_id*_*_hand.obj"))
    assert f"{len(hand_files)} hand(s)" in captured.out and len(sorted(objs.glob("*.obj"))) == off["persons"] + len(hand_files)
    assert hand_files, "no hand in view on the bus picture"
    sides = {f.stem.split("_")[2] for f in hand_files}
    assert sides <= {"left", "right"}
    for f in hand_files:
        v, faces = read_obj(f)
        assert v.shape == (778, 3) and np.isfinite(v).all() and np.all(v[:, 2] < 0)
        assert faces.shape == (1538, 3) and faces.min() == 1 and faces.max() == 778
    on, plain = cv2.imread(str(tmp_path / "on.png")), cv2.imread(str(tmp_path / "off.png"))
    assert on.shape == plain.shape and np.any(on != plain)

    # hands that get no crop are reported, with their reason, and leave the picture as it was without hands
    skipped = run_image(bus, tmp_path / "small.png", None,
                        load_config(None, ["detect.detector=hog", "infer.hands=true", "infer.hand_min_px=10000"]))
    assert skipped["hands_on"] and skipped["hands"] == []
    reasons = skipped["hands_skipped"]
    assert len(reasons) == 2 * off["persons"] and {r for _, _, r in reasons} == {"too_small"}
    assert {(tid, side) for tid, side, _ in reasons} >= {(tid, side) for tid in {t for t, _, _ in reasons}
                                                         for side in ("left", "right")}
    assert np.array_equal(cv2.imread(str(tmp_path / "small.png")), plain)
