"""Frames that change size mid-stream (a broadcast switching resolution, a folder of photos from several
cameras): every frame travels with its own width and height, its pixels fill exactly that much of a slot
that a frame of another size used before, and detection, tracking and crops work on each frame's own size."""
from __future__ import annotations

import io
import json
import multiprocessing
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import ultralytics

from pipeline.messages import Detections, EndOfStream
from pipeline.shm import FrameStore
from stages.decode import DecodeConfig, DecodeStage
from stages.detect import DetectConfig, DetectStage, make_crops

FPS = 25
BUS = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
LABELS = json.loads((Path(__file__).parents[1] / "data" / "person_boxes.json").read_text())["images"]["bus.jpg"]


def _store(max_pixels: int, max_persons: int = 1, slots: int = 2) -> FrameStore:
    return FrameStore.create(multiprocessing.get_context("spawn"), slots, max_pixels, max_persons)


def _decode(store, source, **cfg):
    stage = DecodeStage(DecodeConfig(**cfg), source=str(source), source_id="t", mode="offline")
    stage.store = store
    stage.setup()
    return stage


def _ts_segment(w: int, h: int, n: int, value: int, first: int) -> bytes:
    """n frames of one grey level as MPEG-TS, timed from frame `first` on (the stream's clock goes on)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mpegts") as out:
        s = out.add_stream("mpeg4", rate=FPS)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.time_base = Fraction(1, FPS)
        for i in range(n):
            vf = av.VideoFrame.from_ndarray(np.full((h, w, 3), value, np.uint8), format="rgb24")
            vf.pts, vf.time_base = first + i, Fraction(1, FPS)
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return buf.getvalue()


def test_a_video_stream_that_changes_size_delivers_each_frame_at_its_own_size(tmp_path):
    plan = [(320, 240, 10, 50), (160, 208, 10, 200), (320, 240, 5, 120)]  # large, small, large again
    data, first = b"", 0
    for w, h, n, v in plan:
        data += _ts_segment(w, h, n, v, first)
        first += n
    path = tmp_path / "switch.ts"
    path.write_bytes(data)
    expected = [(w, h, v) for w, h, n, v in plan for _ in range(n)]
    store = _store(320 * 240)
    try:
        stage = _decode(store, path)
        got = []
        for f in stage.frames():
            rgb = store.frame(f)
            assert rgb.shape == (f.height, f.width, 3)
            got.append((f.width, f.height, float(rgb.mean()), float(rgb.std()), f.pts))
            store.release(f)
    finally:
        store.close()
        store.unlink()
    assert [(w, h) for w, h, *_ in got] == [(w, h) for w, h, _ in expected]
    for (w, h, mean, std, _), (_, _, v) in zip(got, expected):
        assert abs(mean - v) < 3 and std < 3, f"{w}x{h} frame: mean {mean:.1f} std {std:.1f}, expected {v} flat"
    pts = [p for *_, p in got]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)


def test_an_image_folder_of_mixed_sizes_keeps_each_image_size_and_pixels(tmp_path):
    rng = np.random.default_rng(1)
    sizes = [(320, 240), (97, 131), (40, 300), (321, 239), (640, 480), (33, 17)]  # odd sides, one too large
    images = []
    for i, (w, h) in enumerate(sizes):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), img[..., ::-1])
        images.append(img)
    store = _store(320 * 240)  # the 640 x 480 image is fitted to the slots: 320 x 240
    try:
        stage = _decode(store, tmp_path)
        got = []
        for f in stage.frames():
            got.append((f.index, f.width, f.height, store.frame(f).copy()))
            store.release(f)
    finally:
        store.close()
        store.unlink()
    assert [g[0] for g in got] == list(range(len(sizes)))
    for (i, w, h, rgb), (sw, sh), img in zip(got, sizes, images):
        if sw * sh <= 320 * 240:
            assert (w, h) == (sw, sh)
            np.testing.assert_array_equal(rgb, img, err_msg=f"image {i} ({sw}x{sh})")
        else:
            assert (w, h) == (320, 240)
            want = cv2.resize(img, (320, 240), interpolation=cv2.INTER_AREA)
            assert np.abs(rgb.astype(int) - want).max() <= 1


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("tracker", ["bytetrack", "botsort"])
def test_detect_and_crops_follow_each_frames_size(tmp_path, tracker):
    """bus.jpg (810 x 1080) and the same photo at half size, alternating, through the decode and detect
    stages sharing one store: every box lies in its own frame, the people found in the half-size frames
    are the labelled people at half scale, each crop is cut from its own frame, and the tracks go on
    across the size changes (the same people keep their ids)."""
    bus = cv2.imread(str(BUS))
    half = cv2.resize(bus, (bus.shape[1] // 2, bus.shape[0] // 2), interpolation=cv2.INTER_AREA)
    for i in range(6):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), bus if i % 2 == 0 else half)
    scales = [1.0 if i % 2 == 0 else 0.5 for i in range(6)]
    store = _store(bus.shape[0] * bus.shape[1], max_persons=4, slots=2)
    detect = DetectStage(DetectConfig(detector="hog", max_persons=4, tracker=tracker))
    detect.store = store
    detect.setup()
    try:
        decode = _decode(store, tmp_path)
        out = []
        for f in decode.frames():
            for d in detect.process(f):
                assert isinstance(d, Detections)
                rgb = store.frame(d.frame)
                assert rgb.shape[:2] == (d.frame.height, d.frame.width)
                s = scales[d.frame.index]
                assert (d.frame.width, d.frame.height) == (round(810 * s), round(1080 * s))
                assert d.persons, f"nobody found in frame {d.frame.index} ({d.frame.width}x{d.frame.height})"
                for p in d.persons:
                    x0, y0, x1, y1 = p.box
                    assert 0 <= x0 < x1 <= d.frame.width and 0 <= y0 < y1 <= d.frame.height
                expected = make_crops(rgb, d.persons)
                crops = store.crops(d.frame)
                for p in d.persons:
                    np.testing.assert_array_equal(crops[p.crop_index], expected[p.crop_index])
                out.append((s, [p.box for p in d.persons], [p.track_id for p in d.persons], d.lost))
                store.release(d.frame)
        detect.process(EndOfStream(source="t", frames=6))
    finally:
        detect.close()
        store.close()
        store.unlink()
    assert len(out) == 6
    people = [lab["box"] for lab in LABELS if lab["hog"]]
    for s, boxes, ids, lost in out:
        for lab in people:
            scaled = [v * s for v in lab]
            best = max(_iou(scaled, b) for b in boxes)
            assert best >= 0.4, f"labelled person {lab} at scale {s}: best IoU {best:.2f}"
        assert lost == []

    def id_of(frame, lab):  # the track id of the person best matching a labelled box in that frame
        s, boxes, ids, _ = out[frame]
        return ids[int(np.argmax([_iou([v * s for v in lab], b) for b in boxes]))]

    for lab in people:
        assert len({id_of(k, lab) for k in range(6)}) == 1, f"{lab}: track ids change with the frame size"


def test_the_overlay_draws_each_frame_at_its_own_size(assets_dir, tmp_path):
    """Frames of 1280 x 720 and 640 x 360 alternating, the same body in the same place of the picture (the
    focal length follows the frame size, as infer sets it): the overlay video keeps the first frame's size,
    and the body covers the same part of every written frame."""
    from fastmetro.camera import default_focal
    from pipeline import wire
    from stages.overlay import OverlayConfig, OverlayStage

    sizes = [(1280, 720), (640, 360)] * 2
    store = _store(1280 * 720, max_persons=1, slots=4)
    stage = OverlayStage(OverlayConfig(path=tmp_path / "o.mp4", mesh="fine"))
    stage.store = store
    greys = [40, 90, 140, 190]
    try:
        stage.setup()
        for i, (w, h) in enumerate(sizes):
            mf = wire.synthetic_mesh_frame(1, index=i, rng=np.random.default_rng(0))
            mf.frame.width, mf.frame.height = w, h
            mf.focal = float(default_focal((w, h)))
            mf.frame.slot = store.acquire(block=False)
            store.frame(mf.frame)[:] = greys[i]
            stage.process(mf)
        stage.process(EndOfStream("default", len(sizes)))
        assert stage.counters["overlay_frames"] == len(sizes)
    finally:
        stage.close()
        store.close()
        store.unlink()
    with av.open(str(tmp_path / "o.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
    assert len(frames) == len(sizes) and all(f.shape == (720, 1280, 3) for f in frames)
    masks = [np.abs(f - g).max(axis=2) > 12 for f, g in zip(frames, greys)]  # the drawn body
    assert 0.005 < masks[0].mean() < 0.9
    for i, m in enumerate(masks[1:], 1):
        iou = (m & masks[0]).sum() / (m | masks[0]).sum()
        assert iou > 0.9, f"frame {i} ({sizes[i][0]}x{sizes[i][1]}): the body drawn elsewhere (IoU {iou:.2f})"


@pytest.mark.slow
def test_a_run_over_photos_of_several_sizes_records_each_at_its_own_size(tmp_path, assets_dir):
    """`fastmetro-stream run` over a folder of bus.jpg at three sizes, with the overlay: every recorded
    frame has its picture's size, its people's boxes inside it, and the overlay video has every frame."""
    import subprocess
    import sys

    from conftest import REPO, child_env, free_port
    from pipeline.recording import recording_frames

    bus = cv2.imread(str(BUS))
    scales = [1.0, 0.5, 0.75, 1.0, 0.5, 0.75]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, s in enumerate(scales):
        img = bus if s == 1.0 else cv2.resize(bus, (round(810 * s), round(1080 * s)), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{i:02d}.png"), img)
    rec, overlay = tmp_path / "run.msgpack", tmp_path / "overlay.mp4"
    p = subprocess.run([sys.executable, "-m", "fastmetro_stream.cli", "run", "--source", str(folder), "--record",
                        str(rec), "--overlay", str(overlay), "--set", "detect.detector=hog",
                        "--set", f"publish.endpoint=tcp://127.0.0.1:{free_port()}"],
                       env=child_env(), cwd=str(REPO), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    frames = list(recording_frames(rec))
    assert [f.index for f in frames] == list(range(len(scales)))
    for f, s in zip(frames, scales):
        assert (f.width, f.height) == (round(810 * s), round(1080 * s)), (f.index, f.width, f.height)
        assert f.persons, f"nobody in frame {f.index}"
        for person in f.persons:
            x0, y0, x1, y1 = person.box
            assert 0 <= x0 < x1 <= f.width and 0 <= y0 < y1 <= f.height, (f.index, person.box)
    with av.open(str(overlay)) as c:
        assert sum(1 for _ in c.decode(video=0)) == len(scales)
