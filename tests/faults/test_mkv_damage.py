"""Matroska files that lie: a cut or corrupted MKV ends the pass with a warning naming the damage, every
frame whose data lies before the damage is delivered, and the frame index stays the frame's position in
the source. Matroska keeps no frame count: the stream's DURATION tag says how many frames there were."""
from __future__ import annotations

import logging

import av
import pytest

from test_decode_damage import FPS, decode_all, make_video, store  # noqa: F401 (store: the fixture)

N = 60


@pytest.fixture(scope="module")
def mkv(tmp_path_factory):
    """A 60-frame MKV in clusters of 200 ms (so the demuxer can find its feet again after damage), and
    its packets as (byte position, size, time in seconds) in file order."""
    path = make_video(tmp_path_factory.mktemp("mkv") / "good.mkv", n=N, codec="h264",
                      options={"cluster_time_limit": "200"})
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        packets = [(p.pos, p.size, float(p.pts * p.time_base)) for p in c.demux(s) if p.size]
    assert len(packets) == N
    return path, packets


def _check_positions(frames):
    indices = [i for i, _ in frames]
    assert indices == sorted(set(indices)), "indices must increase"
    for index, pts in frames:
        assert index == round(pts * FPS), f"frame at {pts:.3f} s numbered {index}"


def test_a_whole_mkv_is_not_called_truncated(mkv, store, caplog):
    st, frames = decode_all(store, mkv[0])
    assert len(frames) == N and "truncated" not in st.counters
    assert "ended after" not in caplog.text


@pytest.mark.parametrize("keep", [0.3, 0.75])
def test_a_cut_mkv_delivers_every_whole_frame_and_says_where_it_ended(mkv, store, caplog, tmp_path, keep):
    good, packets = mkv
    data = good.read_bytes()
    cut = int(len(data) * keep)
    path = tmp_path / "cut.mkv"
    path.write_bytes(data[:cut])
    caplog.set_level(logging.WARNING)
    st, frames = decode_all(store, path)
    whole = {round(t * FPS) for pos, size, t in packets if pos + size <= cut}
    got = {i for i, _ in frames}
    assert whole <= got, f"frames lost before the cut: {sorted(whole - got)}"
    _check_positions(frames)
    assert st.counters.get("truncated") == 1 and st.counters.get("frames_missing") == N - len(frames)
    assert f"ended after {len(frames)} of the {N} frames" in caplog.text and str(path) in caplog.text


@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
def test_a_corrupted_mkv_keeps_frames_before_the_damage_and_numbers_the_rest_by_position(tmp_path, store,
                                                                                         caplog, codec):
    good = make_video(tmp_path / "good.mkv", n=N, codec=codec, options={"cluster_time_limit": "200"})
    with av.open(str(good)) as c:
        packets = [(p.pos, p.size, float(p.pts * p.time_base)) for p in c.demux(c.streams.video[0]) if p.size]
    data = bytearray(good.read_bytes())
    at = len(data) * 2 // 5
    data[at:at + 20000] = bytes(20000)  # a few frames' worth of a cluster zeroed
    path = tmp_path / "bad.mkv"
    path.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING)
    st, frames = decode_all(store, path)
    before = {round(t * FPS) for pos, size, t in packets if pos + size <= at}
    got = {i for i, _ in frames}
    assert before <= got, f"frames lost before the damage: {sorted(before - got)}"
    assert len(frames) < N and max(got) > max(before) + 1, "no frame after the damaged cluster"
    _check_positions(frames)
    assert st.counters.get("frames_missing") == N - len(frames)
    assert "truncated or damaged file" in caplog.text and str(path) in caplog.text
