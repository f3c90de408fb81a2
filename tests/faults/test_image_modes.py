"""Pictures in every pixel layout a folder of photos or scans may hold: grey (L, 1-bit), grey with alpha,
RGBA, palette (P), 16-bit grey (I;16) and 16-bit RGB (PNG and TIFF). An image folder and the `image`
command read each as 8-bit RGB (a grey pixel stays grey, 16 bits scaled to 8, not clipped); what cannot
be read (32-bit float samples) is skipped and counted in a folder, and refused with one line by `image`."""
from __future__ import annotations

import logging
import multiprocessing
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import ultralytics
from PIL import Image

from conftest import REPO, child_env
from pipeline.shm import FrameStore
from stages.decode import DecodeConfig, DecodeStage

H, W = 24, 32
BUS = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"


def _pattern(rng) -> np.ndarray:
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def make_pictures(d: Path) -> dict[str, np.ndarray]:
    """Files in d, each with the 8-bit RGB picture it must read as (None: must be refused)."""
    rng = np.random.default_rng(3)
    want: dict[str, np.ndarray] = {}
    grey = rng.integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(grey).save(d / "a_L.png")
    want["a_L.png"] = np.dstack([grey] * 3)
    Image.fromarray(grey).save(d / "b_L.tif")
    want["b_L.tif"] = np.dstack([grey] * 3)
    Image.fromarray(np.dstack([grey, np.full_like(grey, 255)]), "LA").save(d / "c_LA.png")
    want["c_LA.png"] = np.dstack([grey] * 3)
    bits = grey > 127
    Image.fromarray(bits).save(d / "d_1bit.png")
    want["d_1bit.png"] = np.dstack([bits.astype(np.uint8) * 255] * 3)
    rgb = _pattern(rng)
    Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (H, W), dtype=np.uint8)])).save(d / "e_rgba.png")
    want["e_rgba.png"] = rgb  # the colour as stored; alpha dropped
    palette = np.array([[0, 0, 0], [200, 30, 60], [10, 250, 90], [128, 128, 128]], np.uint8)
    idx = rng.integers(0, 4, (H, W), dtype=np.uint8)
    p = Image.fromarray(idx, "P")
    p.putpalette(palette.flatten().tolist())
    p.save(d / "f_P.png")
    want["f_P.png"] = palette[idx]
    g16 = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    g16[0, :4] = [0, 257 * 100, 40000, 65535]  # 0 -> 0, 25700 -> 100, 40000 -> 156, 65535 -> 255
    Image.fromarray(g16).save(d / "g_I16.png")
    assert Image.open(d / "g_I16.png").mode.startswith("I")
    want["g_I16.png"] = np.dstack([np.round(g16 / 257).astype(np.uint8)] * 3)
    rgb16 = rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    for name in ("h_rgb16.png", "i_rgb16.tif"):
        assert cv2.imwrite(str(d / name), rgb16[..., ::-1])  # OpenCV writes 16-bit RGB PNG and TIFF
        want[name] = np.round(rgb16 / 257).astype(np.uint8)
    Image.fromarray(np.full((H, W), 0.5, np.float32)).save(d / "j_float.tif")
    want["j_float.tif"] = None
    return want


def test_an_image_folder_reads_every_layout_as_8_bit_rgb(tmp_path, caplog):
    want = make_pictures(tmp_path)
    assert want["g_I16.png"][0, :4, 0].tolist() == [0, 100, 156, 255]
    store = FrameStore.create(multiprocessing.get_context("spawn"), 2, 640 * 480, 1)
    caplog.set_level(logging.WARNING)
    try:
        stage = DecodeStage(DecodeConfig(), source=str(tmp_path), source_id="t", mode="offline")
        stage.store = store
        stage.setup()
        got = []
        for f in stage.frames():
            got.append(store.frame(f).copy())
            store.release(f)
    finally:
        store.close()
        store.unlink()
    names = sorted(want)
    readable = [n for n in names if want[n] is not None]
    assert len(got) == len(readable)
    for name, rgb in zip(readable, got):
        assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3), name
        assert np.abs(rgb.astype(int) - want[name]).max() <= 1, f"{name} read wrongly"
    assert stage.counters.get("corrupt_frames") == 1
    assert "j_float.tif is not a readable image" in caplog.text


def test_the_image_command_refuses_an_unreadable_picture_with_one_line(tmp_path):
    Image.fromarray(np.full((H, W), 0.5, np.float32)).save(tmp_path / "float.tif")
    p = subprocess.run([sys.executable, "-m", "fastmetro_stream.cli", "image", str(tmp_path / "float.tif"), "-o",
                        str(tmp_path / "out.png"), "--detector", "hog"], env=child_env(), cwd=str(REPO),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: picture ") and "cannot be read" in lines[0], p.stderr
    assert not (tmp_path / "out.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["L", "I16", "P", "RGBA"])
def test_the_image_command_reads_each_layout(tmp_path, assets_dir, layout):
    """bus.jpg saved in another layout: the people are found as in the 8-bit RGB picture it holds, and the
    written overlay keeps the picture's own (grey or reduced) colours around the meshes."""
    from fastmetro_stream.config import Config
    from fastmetro_stream.image import run_image
    from stages.tracking import PersonTracker

    rgb = cv2.cvtColor(cv2.imread(str(BUS)), cv2.COLOR_BGR2RGB)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    pic = tmp_path / f"bus_{layout}.png"
    if layout == "L":
        Image.fromarray(grey).save(pic)
        expected = np.dstack([grey] * 3)
    elif layout == "I16":
        Image.fromarray(grey.astype(np.uint16) * 257).save(pic)
        expected = np.dstack([grey] * 3)
    elif layout == "P":
        p = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        p.save(pic)
        expected = np.asarray(p.convert("RGB"))
    else:
        Image.fromarray(np.dstack([rgb, np.full_like(grey, 255)])).save(pic)
        expected = rgb
    config = Config()
    config.detect.detector = "hog"
    out = tmp_path / "out.png"
    found, _ = PersonTracker(config.detect).update(expected)  # the people in the picture as it should read
    result = run_image(pic, out, config=config)
    assert result["persons"] == len(found) > 0
    drawn = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert drawn.shape == rgb.shape
    same = (np.abs(drawn.astype(int) - expected).max(axis=2) <= 1)
    assert same.mean() > 0.5, "the picture around the meshes is not the picture read"
