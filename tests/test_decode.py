"""The decode stage on real files made here with PyAV and OpenCV (no mocks)."""
from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.shm import FrameStore
from stages.decode import DecodeConfig, DecodeStage, SourceError, fit_size, is_live_source, sample_path

W, H = 64, 48


def colour(i: int) -> tuple[int, int, int]:
    return (40 + 20 * (i % 10), 200 - 15 * (i % 10), (i * 37) % 256)


def make_video(path: Path, n: int = 20, fps: int = 30, w: int = W, h: int = H, codec: str = "mpeg4") -> Path:
    """n frames, frame i a flat colour with a moving white square; codec mpeg4 (always in PyAV)."""
    with av.open(str(path), mode="w") as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[:] = colour(i)
            x = (i * 3) % (w - 8)
            img[8:16, x:x + 8] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@pytest.fixture
def store():
    s = FrameStore.create(multiprocessing.get_context("spawn"), 4, 1920 * 1080, 1)
    try:
        yield s
    finally:
        s.close()
        s.unlink()


def stage_for(store, source, mode="offline", **decode) -> DecodeStage:
    st = DecodeStage(DecodeConfig(**decode), source=None if source is None else str(source),
                     source_id="cam1", mode=mode)
    st.store = store
    st.setup()
    return st


def drain(stage, store, keep_pixels=False):
    """Iterate frames(), copy what is needed and give each slot back (as infer would)."""
    out = []
    for f in stage.frames():
        px = store.frame(f).copy() if keep_pixels else None
        out.append((f, px))
        store.release(f)
    stage.close()
    return out


def test_file_frames_count_pts_and_pixels(tmp_path, store):
    path = make_video(tmp_path / "a.mp4", n=20, fps=25)
    st = stage_for(store, path)
    got = drain(st, store, keep_pixels=True)
    frames = [f for f, _ in got]
    assert len(frames) == 20
    assert [f.index for f in frames] == list(range(20))
    pts = [f.pts for f in frames]
    assert all(p is not None for p in pts) and all(b > a for a, b in zip(pts, pts[1:]))
    assert pts[1] - pts[0] == pytest.approx(1 / 25, abs=1e-3)
    assert all((f.width, f.height, f.source) == (W, H, "cam1") for f in frames)
    assert all("decode" in f.times and f.slot == -1 for f in frames)  # released by drain
    # pixels: the flat colour of frame i (lossy codec: within a few levels)
    for f, px in got:
        assert np.abs(px[40, 4].astype(int) - colour(f.index)).max() < 16
    assert st.counters["frames"] == 20 and st.counters.get("corrupt_frames", 0) == 0
    assert store.acquire(block=False) is not None  # every slot came back: nothing leaked


def test_shipped_sample_is_the_default_source(store):
    assert sample_path().is_file() and sample_path().stat().st_size < 1_000_000
    st = stage_for(store, None, max_frames=5)
    frames = [f for f, _ in drain(st, store)]
    assert len(frames) == 5 and (frames[0].width, frames[0].height) == (640, 480)


def test_max_pixels_downscales_keeping_aspect(tmp_path, store):
    path = make_video(tmp_path / "big.mp4", n=3, w=160, h=120)
    st = stage_for(store, path, max_pixels=64 * 64)
    for f, px in drain(st, store, keep_pixels=True):
        assert f.width * f.height <= 64 * 64 and px.shape == (f.height, f.width, 3)
        assert f.width / f.height == pytest.approx(4 / 3, rel=0.05)
    assert fit_size(1920, 1080, 1920 * 1080) == (1920, 1080)
    w, h = fit_size(3840, 2160, 1920 * 1080)
    assert w * h <= 1920 * 1080 and w >= 1900


@pytest.mark.parametrize("name", ["a.mp4", "a.ts"])  # MPEG-TS: pts do not start at 0
def test_start_max_frames_and_loop(tmp_path, store, name):
    path = make_video(tmp_path / name, n=10, fps=10)
    frames = [f for f, _ in drain(stage_for(store, path, start_frame=3, max_frames=4), store)]
    assert [f.index for f in frames] == [3, 4, 5, 6]
    frames = [f for f, _ in drain(stage_for(store, path, loop=True, max_frames=25), store)]
    assert [f.index for f in frames] == list(range(25))
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))  # keeps increasing across the restart
    assert np.diff(pts) == pytest.approx(np.full(24, 0.1), abs=1e-3)  # one frame apart at the restart too


def test_image_directory(tmp_path, store):
    d = tmp_path / "imgs"
    d.mkdir()
    names = ["b_02.png", "a_01.jpg", "c_03.PNG"]
    for i, name in enumerate(sorted(names, key=str.lower)):
        img = np.full((30 + i, 40, 3), colour(i), np.uint8)
        cv2.imwrite(str(d / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (d / "notes.txt").write_text("not an image")
    (d / "d_04.png").write_bytes(b"not a png either")  # matches the glob, cannot be read: counted
    st = stage_for(store, d, image_fps=5)
    got = drain(st, store, keep_pixels=True)
    assert [f.index for f, _ in got] == [0, 1, 2]
    assert [f.pts for f, _ in got] == pytest.approx([0.0, 0.2, 0.4])
    for i, (f, px) in enumerate(got):  # name order, right sizes and colours (RGB, not BGR)
        assert (f.height, f.width) == (30 + i, 40)
        assert np.abs(px[5, 5].astype(int) - colour(i)).max() <= 3
    assert st.counters["corrupt_frames"] == 1


def mp4_atoms(data: bytes) -> dict[str, tuple[int, int]]:
    """Top-level MP4 boxes: name -> (start, end) byte offsets."""
    atoms, pos = {}, 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        name = data[pos + 4:pos + 8].decode("latin-1")
        atoms[name] = (pos, pos + size)
        if size < 8:
            break
        pos += size
    return atoms


def test_garbled_file_is_counted_not_fatal(tmp_path, store):
    path = make_video(tmp_path / "bad.mp4", n=40, w=160, h=120)
    data = bytearray(path.read_bytes())
    start, end = mp4_atoms(bytes(data))["mdat"]  # garble the middle of the coded frames, not the index
    mid = (start + end) // 2
    rng = np.random.default_rng(0)
    data[mid - 600:mid + 600] = rng.integers(0, 256, 1200, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    st = stage_for(store, path)
    frames = [f for f, _ in drain(st, store)]  # no exception
    assert st.counters.get("corrupt_frames", 0) > 0 or len(frames) < 40
    assert len(frames) > 0


def test_truncated_stream_is_not_fatal(tmp_path, store):
    path = make_video(tmp_path / "cut.ts", n=40)  # MPEG-TS: readable up to the cut
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 77])  # cut mid-packet
    st = stage_for(store, path)
    frames = [f for f, _ in drain(st, store)]
    assert 0 < len(frames) < 40


def test_realtime_paces_at_the_frame_rate(tmp_path, store):
    path = make_video(tmp_path / "a.mp4", n=12, fps=20)  # 0.6 s
    st = stage_for(store, path, mode="live", realtime=True)
    t0 = time.monotonic()
    frames = [f for f, _ in drain(st, store)]
    assert len(frames) == 12
    assert time.monotonic() - t0 >= 0.7 * (11 / 20)


def test_live_without_free_slot_drops_and_counts(tmp_path):
    store = FrameStore.create(multiprocessing.get_context("spawn"), 1, 64 * 64, 1)
    try:
        path = make_video(tmp_path / "a.mp4", n=10)
        st = stage_for(store, path, mode="live")
        frames = list(st.frames())  # nobody releases: only the first frame gets the one slot
        assert [f.index for f in frames] == [0]
        assert st.counters["dropped_no_slot"] == 9 and st.counters["frames"] == 1
    finally:
        store.close()
        store.unlink()


def test_live_drops_are_reported_on_the_next_frame(tmp_path):
    store = FrameStore.create(multiprocessing.get_context("spawn"), 1, 64 * 64, 1)
    try:
        path = make_video(tmp_path / "a.mp4", n=20, fps=30)
        st = stage_for(store, path, mode="live", realtime=True)
        frames = []
        for f in st.frames():  # hold each slot ~0.15 s (a slow consumer) while decoding goes on
            frames.append(f)
            threading.Timer(0.15, store.release, args=(f.slot,)).start()
        dropped = st.counters["dropped_no_slot"]
        assert dropped > 0 and len(frames) + dropped == 20
        assert 0 < sum(f.dropped for f in frames) <= dropped
        assert frames[0].dropped == 0
    finally:
        time.sleep(0.2)
        store.close()
        store.unlink()


def test_unopenable_sources_give_clear_errors(tmp_path, store):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match="nope.mp4"):
        stage_for(store, missing)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 10)
    st = stage_for(store, junk)
    with pytest.raises(SourceError, match="junk.mp4"):
        list(st.frames())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="image_glob"):
        stage_for(store, empty)


def test_unreachable_url_retries_then_errors(store):
    st = stage_for(store, "rtsp://127.0.0.1:9/none", mode="live", reconnect_attempts=1, reconnect_delay_s=0.0,
                   open_timeout_s=1.0)
    with pytest.raises(SourceError, match="127.0.0.1:9"):
        list(st.frames())


class _Server:
    """A local HTTP server for tmp_path; the first `fail_first` requests get 503."""

    def __init__(self, root: Path, fail_first: int = 0):
        import functools
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                if server.requests <= fail_first:
                    self.send_error(503)
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.requests = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_http_url_source(tmp_path, store):
    make_video(tmp_path / "clip.mp4", n=15)
    server = _Server(tmp_path)
    try:
        url = server.url + "/clip.mp4"
        assert is_live_source(url)
        st = stage_for(store, url, mode="live")
        frames = [f for f, _ in drain(st, store)]
        assert [f.index for f in frames] == list(range(15))  # a finite stream ends: no reconnect
        assert st.counters.get("reconnects", 0) == 0
    finally:
        server.close()


def test_url_that_fails_at_first_is_retried(tmp_path, store):
    make_video(tmp_path / "clip.mp4", n=5)
    server = _Server(tmp_path, fail_first=1)
    try:
        st = stage_for(store, server.url + "/clip.mp4", mode="live", reconnect_attempts=2, reconnect_delay_s=0.05)
        frames = [f for f, _ in drain(st, store)]
        assert len(frames) == 5 and server.requests >= 2
    finally:
        server.close()


def test_missing_camera_gives_a_clear_error(store):
    st = stage_for(store, "/dev/video97", mode="live", reconnect_attempts=0)
    with pytest.raises(SourceError, match="video97"):
        list(st.frames())


def test_stop_ends_iteration(tmp_path, store):
    path = make_video(tmp_path / "a.mp4", n=20)
    st = stage_for(store, path)
    got = []
    for f in st.frames():
        got.append(f)
        store.release(f)
        if len(got) == 3:
            st.stop()
    assert len(got) == 3


def test_stop_while_waiting_for_a_slot(tmp_path):
    store = FrameStore.create(multiprocessing.get_context("spawn"), 1, 64 * 64, 1)
    try:
        st = stage_for(store, make_video(tmp_path / "a.mp4", n=5))  # offline: waits for the slot
        threading.Timer(0.3, st.stop).start()
        frames = list(st.frames())  # returns once stopped, though the slot never comes back
        assert len(frames) == 1 and st.counters.get("dropped_no_slot", 0) == 0
    finally:
        store.close()
        store.unlink()


def test_stage_pickles_for_its_process(tmp_path):
    import pickle

    from fastmetro_stream.config import load_config

    cfg = load_config(source=str(tmp_path), overrides=["decode.realtime=true"]).resolved()
    st = pickle.loads(pickle.dumps(DecodeStage(cfg)))
    assert (st.mode, st.source, st.cfg.realtime) == ("live", str(tmp_path), True)
    st.stop()
    assert pickle.loads(pickle.dumps(st))._stop.is_set()


def test_is_live_source():
    for s in ["0", "/dev/video2", "rtsp://cam/stream", "http://host/live.m3u8", "HTTPS://x/y"]:
        assert is_live_source(s), s
    for s in ["video.mp4", "/data/frames", "C:/videos/a.mp4", "file.rtsp"]:
        assert not is_live_source(s), s


def test_config_errors_name_the_setting():
    with pytest.raises(ValidationError, match="max_pixel"):
        DecodeConfig(max_pixel=10)
    with pytest.raises(ValidationError, match="camera_height"):
        DecodeConfig(camera_width=640)
    with pytest.raises(ValidationError, match="rtsp_transport"):
        DecodeConfig(rtsp_transport="carrier-pigeon")


@pytest.mark.parametrize("given, named", [
    (["--source", "{tmp}/nope.mp4"], "error: decode: source '{tmp}/nope.mp4': no such file or directory"),
    (["--checkpoint", "{tmp}/nope.pth"], "error: infer: infer.checkpoint: file {tmp}/nope.pth does not exist"),
])
def test_run_names_a_missing_source_or_checkpoint_at_once(tmp_path, capsys, given, named):
    from fastmetro_stream.cli import main

    t0 = time.monotonic()
    args = [a.format(tmp=tmp_path) for a in given]
    assert main(["run", *args, "--set", "detect.detector=hog", "--set", "progress=false"]) == 1
    text = "".join(capsys.readouterr().err.split())  # (rich wraps long lines)
    assert "".join(named.format(tmp=tmp_path).split()) in text and "Traceback" not in text
    assert time.monotonic() - t0 < 10  # before any stage process starts or any model loads
