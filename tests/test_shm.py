"""The shared-memory frame ring: pixels visible across processes, slots recycled, segment removed."""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from pipeline.messages import CROP_SIZE, Frame
from pipeline.shm import FrameStore


def _child_writes(spec, slot, value):
    store = FrameStore.attach(spec)
    f = Frame("t", 0, None, slot, 4, 6)
    store.frame(f)[:] = value
    store.crops(f)[1] = value + 1
    store.close()


@pytest.fixture
def store():
    ctx = mp.get_context("spawn")
    s = FrameStore.create(ctx, slots=3, max_pixels=6 * 4, max_persons=2)
    yield s, ctx
    s.close()
    s.unlink()


def test_pixels_written_in_a_child_are_seen_by_the_parent(store):
    s, ctx = store
    slot = s.acquire(timeout=5)
    p = ctx.Process(target=_child_writes, args=(s.spec, slot, 7))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    f = Frame("t", 0, None, slot, 4, 6)
    assert s.frame(f).shape == (4, 6, 3) and (s.frame(f) == 7).all()
    assert s.crops(f).shape == (2, CROP_SIZE, CROP_SIZE, 3) and (s.crops(f)[1] == 8).all()


def test_slots_are_handed_out_once_and_recycled(store):
    s, _ = store
    got = [s.acquire(timeout=5) for _ in range(3)]
    assert sorted(got) == [0, 1, 2]
    assert s.acquire(timeout=0.2) is None  # ring full: live decode drops the frame here
    f = Frame("t", 0, None, got[1], 4, 6)
    s.release(f)
    assert f.slot == -1
    s.release(f)  # releasing twice gives nothing back twice
    assert s.acquire(timeout=5) == got[1]
    assert s.acquire(timeout=0.2) is None


def test_slots_do_not_overlap(store):
    s, _ = store
    frames = [Frame("t", i, None, s.acquire(timeout=5), 4, 6) for i in range(3)]
    for i, f in enumerate(frames):
        s.frame(f)[:] = i
        s.crops(f)[:] = 10 + i
    for i, f in enumerate(frames):
        assert (s.frame(f) == i).all() and (s.crops(f) == 10 + i).all()


def test_too_large_or_released_frames_are_refused(store):
    s, _ = store
    with pytest.raises(ValueError, match="exceeds"):
        s.frame(Frame("t", 0, None, 0, 8, 8))
    assert not s.fits(8, 8) and s.fits(4, 6)
    with pytest.raises(ValueError, match="no slot"):
        s.crops(Frame("t", 3, None, -1, 4, 6))


def test_unlink_removes_the_segment():
    s = FrameStore.create(mp.get_context("spawn"), slots=2, max_pixels=4, max_persons=1)
    path = Path("/dev/shm", s.spec.name.lstrip("/"))
    assert path.exists()
    s.close()
    s.unlink()
    s.unlink()  # safe twice
    assert not path.exists()
