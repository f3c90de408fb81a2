"""Huge and 1-pixel frames from a source: a frame over `decode.max_pixels` (an 8000x6000 picture, a 4K
video) is downscaled into its slot keeping its aspect and its colours, a 1x1 picture goes through as 1x1,
and nothing between them is stale (each frame carries its own size)."""
from __future__ import annotations

import multiprocessing

import av
import cv2
import numpy as np
import pytest

from pipeline.shm import FrameStore
from stages.decode import DecodeConfig, DecodeStage, fit_size

MAX = 1920 * 1080


@pytest.fixture
def store():
    s = FrameStore.create(multiprocessing.get_context("spawn"), 2, MAX, 1)
    try:
        yield s
    finally:
        s.close()
        s.unlink()


def frames_of(store, source):
    stage = DecodeStage(DecodeConfig(max_pixels=MAX), source=str(source), source_id="cam", mode="offline")
    stage.store = store
    stage.setup()
    out = []
    try:
        for f in stage.frames():
            out.append((f, store.frame(f).copy()))
            store.release(f)
    finally:
        stage.close()
    return out


def test_an_image_folder_of_huge_and_one_pixel_pictures(tmp_path, store):
    pics = [((6000, 8000), (30, 140, 220)), ((1, 1), (250, 10, 10)), ((480, 640), (10, 200, 30)),
            ((9000, 12), (90, 90, 90))]  # a very thin, very tall one
    for i, ((h, w), rgb) in enumerate(pics):
        img = np.empty((h, w, 3), np.uint8)
        img[:] = rgb[::-1]  # OpenCV writes BGR
        assert cv2.imwrite(str(tmp_path / f"{i}.png"), img)
    got = frames_of(store, tmp_path)
    assert [f.index for f, _ in got] == [0, 1, 2, 3]
    for (f, px), ((h, w), rgb) in zip(got, pics):
        fw, fh = fit_size(w, h, MAX)
        assert (f.width, f.height) == (fw, fh) and px.shape == (fh, fw, 3)
        assert fw * fh <= MAX and abs(fw / fh - w / h) <= 0.02 * (w / h) + 1 / fh  # aspect kept
        assert np.abs(px.astype(int) - rgb).max() <= 2, (f.width, f.height)  # its own colours, nothing stale


def test_a_4k_video_is_downscaled_into_its_slot(tmp_path, store):
    path = tmp_path / "uhd.mp4"
    with av.open(str(path), mode="w") as out:
        s = out.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 3840, 2160, "yuv420p"
        for i in range(3):
            img = np.full((2160, 3840, 3), (40 * i + 20, 100, 180), np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    got = frames_of(store, path)
    assert len(got) == 3
    for i, (f, px) in enumerate(got):
        assert (f.width, f.height) == (1920, 1080) and px.shape == (1080, 1920, 3)
        assert np.abs(px[540, 960].astype(int) - (40 * i + 20, 100, 180)).max() <= 8
