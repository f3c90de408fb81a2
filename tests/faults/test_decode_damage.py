"""Files that lie: after damaged data the frame index still names the frame's position in the source
(so time order holds), and a cut file is warned about and counted, losing no decodable frame."""
from __future__ import annotations

import multiprocessing

import av
import numpy as np
import pytest

from pipeline.shm import FrameStore
from stages.decode import DecodeConfig, DecodeStage

FPS = 25


def make_video(path, n=60, w=160, h=120, codec="mpeg4", options=None):
    with av.open(str(path), mode="w", options=options or {}) as out:
        s = out.add_stream(codec, rate=FPS)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(n):
            img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)  # noisy: many bytes per frame
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@pytest.fixture
def store():
    s = FrameStore.create(multiprocessing.get_context("spawn"), 4, 640 * 480, 1)
    yield s
    s.close()
    s.unlink()


def decode_all(store, path):
    st = DecodeStage(DecodeConfig(), source=str(path), source_id="t", mode="offline")
    st.store = store
    st.setup()
    out = []
    for f in st.frames():
        out.append((f.index, f.pts))
        store.release(f)
    return st, out


def mdat(data: bytes) -> tuple[int, int]:
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        if data[pos + 4:pos + 8] == b"mdat":
            return pos, pos + size
        pos += size
    raise AssertionError("no mdat")


def test_after_damage_the_index_is_the_source_position(tmp_path, store):
    path = make_video(tmp_path / "bad.mp4")
    data = bytearray(path.read_bytes())
    start, end = mdat(bytes(data))
    at = start + (end - start) * 2 // 5
    data[at:at + 40000] = bytes(40000)  # several frames' worth of coded data zeroed
    path.write_bytes(bytes(data))
    st, frames = decode_all(store, path)
    assert st.counters.get("corrupt_frames", 0) > 0 and len(frames) < 60
    indices = [i for i, _ in frames]
    assert indices == sorted(set(indices)), "indices must increase"
    for index, pts in frames:
        assert index == round(pts * FPS), f"frame at {pts:.3f} s numbered {index}"


def test_a_cut_faststart_mp4_is_warned_and_counted(tmp_path, store, caplog):
    path = make_video(tmp_path / "cut.mp4", codec="h264", options={"movflags": "faststart"})
    data = path.read_bytes()
    start, end = mdat(data)
    path.write_bytes(data[: start + (end - start) * 6 // 10])
    st, frames = decode_all(store, path)
    assert 0 < len(frames) < 60
    assert st.counters.get("truncated") == 1 and st.counters.get("frames_missing") == 60 - len(frames)
    assert "ended after" in caplog.text


@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
@pytest.mark.parametrize("keep", [0.35, 0.6, 0.9])
def test_a_cut_mp4_delivers_every_frame_whose_data_is_whole(tmp_path, store, codec, keep):
    """Decoded with frame threads (as the stage does): the packet cut off by the end of the data is
    dropped, not given to the decoder, whose threads would otherwise lose the frames they still hold."""
    path = make_video(tmp_path / "cut.mp4", codec=codec, options={"movflags": "faststart"})
    with av.open(str(path)) as c:
        packets = [(p.pos, p.size, float(p.pts * p.time_base)) for p in c.demux(c.streams.video[0]) if p.size]
    data = path.read_bytes()
    start, end = mdat(data)
    cut = start + int((end - start) * keep)
    path.write_bytes(data[:cut])
    st, frames = decode_all(store, path)
    whole = {round(t * FPS) for pos, size, t in packets if pos + size <= cut}
    got = {index for index, _ in frames}
    assert whole <= got, f"whole frames not delivered: {sorted(whole - got)}"
    assert st.counters.get("truncated") == 1
