"""Hands in the smooth stage: filtered per track and side like the body, reset when a hand disappears,
none on a coasting body; offline each run of frames with the hand is smoothed on its own."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.messages import HandMesh
from tests.test_smooth import mesh, frame, stage, run, by_track, walk


def hand(side, offset, rng, noise=0.005):
    """A still hand at `offset` metres plus `noise` of per-frame jitter."""
    base = np.linspace(0, 0.1, 778 * 3).reshape(778, 3) + offset
    v = base + rng.normal(scale=noise, size=base.shape)
    return HandMesh(side=side, cam=np.array([5.0, 0.0, 0.0], np.float32),
                    cam_t=np.array([0.3, 0.1, 3.0], np.float32) + offset, joints3d=v[:21].astype(np.float32),
                    vertices=v.astype(np.float32), center=(100.0, 100.0), size=40.0)


def frames_with_hands(n, left_missing=(), left_offset_after=None, absent=()):
    rng = np.random.default_rng(0)
    body = walk(rng, n)
    out = []
    for i in range(n):
        if i in absent:
            out.append(frame(i, []))
            continue
        pm = mesh(1, body[i])
        off = left_offset_after[1] if left_offset_after and i > left_offset_after[0] else 0.0
        if i in left_missing:
            pm.hand_skips["left"] = "out_of_frame"
        else:
            pm.hands["left"] = hand("left", off, rng)
        pm.hands["right"] = hand("right", 0.0, rng)
        out.append(frame(i, [pm]))
    return out


def jitter(hands):
    v = np.stack([h.vertices for h in hands])
    return float(np.abs(np.diff(v, axis=0)).mean())


@pytest.mark.parametrize("mode", ["live", "offline"])
def test_hands_are_smoothed_per_side(mode):
    inp = frames_with_hands(20)
    out = [p for _, p in by_track(run(stage(mode), inp))[1]]
    assert len(out) == 20 and all(set(p.hands) == {"left", "right"} for p in out)
    for side in ("left", "right"):
        raw = [mf.persons[0].hands[side] for mf in inp]
        got = [p.hands[side] for p in out]
        assert jitter(got[5:]) < jitter(raw[5:]) / 2  # smoothed
        assert got[0].vertices.shape == (778, 3) and got[0].joints3d.shape == (21, 3)
        assert got[0].center == raw[0].center and got[0].side == side


def test_a_hand_that_disappears_restarts_its_filter_live():
    inp = frames_with_hands(12, left_missing=(6,), left_offset_after=(6, 1.0))
    out = [p for _, p in by_track(run(stage("live"), inp))[1]]
    assert "left" not in out[6].hands and out[6].hand_skips == {"left": "out_of_frame"}
    assert "right" in out[6].hands
    # back after the gap 1 m away: the new filter starts at the measurement instead of gliding over
    assert np.allclose(out[7].hands["left"].vertices, inp[7].persons[0].hands["left"].vertices, atol=1e-5)


def test_offline_runs_of_a_hand_are_smoothed_apart():
    inp = frames_with_hands(40, left_missing=(6,), left_offset_after=(6, 1.0))
    out = [p for _, p in by_track(run(stage("offline"), inp))[1]]
    assert [("left" in p.hands) for p in out] == [i != 6 for i in range(40)]
    before = np.stack([p.hands["left"].vertices for p in out[:6]])
    assert np.abs(before - hand("left", 0.0, np.random.default_rng(1), noise=0).vertices).max() < 0.02
    after = np.stack([p.hands["left"].vertices for p in out[7:]])
    assert np.abs(after - hand("left", 1.0, np.random.default_rng(1), noise=0).vertices).max() < 0.02


@pytest.mark.parametrize("mode", ["live", "offline"])
def test_a_coasting_body_has_no_hands(mode):
    inp = frames_with_hands(12, absent=(5,))
    out = dict(by_track(run(stage(mode), inp))[1])
    assert out[5].predicted and not out[5].hands
    assert out[5].hand_skips == {"left": "body_coasting", "right": "body_coasting"}
    assert set(out[6].hands) == {"left", "right"}


@pytest.mark.parametrize("field,keep", [("vertices", 500), ("joints3d", 10)])
@pytest.mark.parametrize("mode", ["live", "offline"])
def test_a_hand_whose_arrays_change_shape_starts_its_filters_afresh(mode, field, keep):
    """No gap between the two shapes: the filters restart at the change (live and offline, where the
    backward pass must not run across the restart) instead of failing the stage."""
    import dataclasses

    inp = frames_with_hands(24)
    for mf in inp[8:]:
        h = mf.persons[0].hands["left"]
        mf.persons[0].hands["left"] = dataclasses.replace(h, **{field: getattr(h, field)[:keep]})
    out = [p for _, p in by_track(run(stage(mode, rts_lag=3, rts_window=2), inp))[1]]
    assert len(out) == 24 and all(set(p.hands) == {"left", "right"} for p in out)
    for i, (p, mf) in enumerate(zip(out, inp)):
        assert getattr(p.hands["left"], field).shape == getattr(mf.persons[0].hands["left"], field).shape, i
    if mode == "live":  # the first frame of the new shape is the measurement itself: a fresh filter
        np.testing.assert_allclose(out[8].hands["left"].vertices, inp[8].persons[0].hands["left"].vertices, atol=1e-6)
