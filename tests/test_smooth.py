"""The smooth stage: filtering against filterpy, track lifecycle, no shared state, order of frames."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from filterpy.common import Q_discrete_white_noise
from filterpy.kalman import KalmanFilter
from pydantic import ValidationError

from pipeline.messages import EndOfStream, Frame, MeshFrame, Person, PersonMesh
from pipeline.stage import StageContext, run_stage
from stages.smooth import SmoothConfig, SmoothStage, rot6d_to_rotmat, rotmat_to_6d

FPS = 30.0
V = 20  # vertices per test mesh: the stage does not care how many


def mesh(tid, v, state="tracked", rotmat=None, betas=None):
    v = np.asarray(v, dtype=np.float32).reshape(V, 3)
    person = Person(track_id=tid, state=state, box=(0, 0, 10, 10), score=0.9, center=(5, 5), size=10)
    return PersonMesh(person=person, cam=np.array([1.0, 0.0, 0.0], np.float32),
                      cam_t=(v.mean(0) + [0, 0, 5]).astype(np.float32), joints3d=v[:14].copy(),
                      joints_h36m=v[:17].copy(), joints2d=(v[:14, :2] * 100).copy(), vertices=v,
                      rotmat=rotmat, betas=betas)


def frame(i, persons, lost=(), source="cam", pts=True):
    return MeshFrame(frame=Frame(source, i, i / FPS if pts else None, -1, 480, 640), persons=list(persons),
                     lost=list(lost))


def stage(mode="live", **settings):
    return SmoothStage(SmoothConfig(**settings), context=StageContext(mode=mode))


def run(st, frames):
    return run_stage(st, frames)


def walk(rng, n, start=0.0, speed=0.5):
    """A body moving at `speed` m/s plus 1 cm noise: (n, V, 3)."""
    base = rng.normal(scale=0.3, size=(V, 3))
    t = np.arange(n)[:, None, None] / FPS
    return start + base[None] + speed * t * np.array([1.0, 0.3, 0.0]) + rng.normal(scale=0.01, size=(n, V, 3))


def by_track(out):
    tracks = {}
    for mf in out:
        for p in mf.persons:
            tracks.setdefault(p.person.track_id, []).append((mf.frame.index, p))
    return tracks


def _kf(z0, noise, dt):
    kf = KalmanFilter(dim_x=2, dim_z=1)
    kf.x = np.array([[z0], [0.0]])
    kf.H = np.array([[1.0, 0.0]])
    kf.R = np.array([[noise.measurement ** 2]])
    kf.P = np.diag([noise.measurement ** 2, noise.initial_speed ** 2])
    kf.F = np.array([[1.0, dt], [0.0, 1.0]])
    kf.Q = Q_discrete_white_noise(dim=2, dt=dt, var=noise.process ** 2)
    return kf


def _filterpy_vertex(vs, k, c, cfg, smooth=False):
    """What the stage must output for vertex k, coordinate c: the body (vertex minus pelvis = vertex 0)
    and the root filtered by filterpy, one coordinate at a time, then added back."""
    dt = 1 / FPS
    result = 0
    for series, noise in ((vs[:, k, c] - vs[:, 0, c], cfg.body), (vs[:, 0, c], cfg.root_noise)):
        kf = _kf(series[0], noise, dt)
        xs, Ps = [kf.x.copy()], [kf.P.copy()]
        for z in series[1:]:
            kf.predict()
            kf.update(z)
            xs.append(kf.x.copy())
            Ps.append(kf.P.copy())
        xs = np.array(xs)
        if smooth:
            xs = kf.rts_smoother(xs, np.array(Ps))[0]
        result = result + xs[:, 0, 0]
    return result


# ---------------------------------------------------------------------------------------- filtering
def test_online_output_equals_filterpy_per_coordinate():
    rng = np.random.default_rng(0)
    vs = walk(rng, 40).astype(np.float32).astype(np.float64)
    out = run(stage("live"), [frame(i, [mesh(7, vs[i], "new" if i == 0 else "tracked")]) for i in range(40)])
    got = np.stack([mf.persons[0].vertices for mf in out])
    cfg = SmoothConfig()
    for k, c in [(3, 0), (11, 2), (19, 1)]:
        np.testing.assert_allclose(got[:, k, c], _filterpy_vertex(vs, k, c, cfg), atol=1e-5)
    assert np.abs(got - vs).max() > 1e-3  # it did filter


def test_offline_whole_track_equals_filterpy_rts_smoother():
    rng = np.random.default_rng(1)
    n = 25  # shorter than rts_lag + rts_window: the backward pass runs once, over the whole track
    vs = walk(rng, n).astype(np.float32).astype(np.float64)
    out = run(stage("offline"), [frame(i, [mesh(1, vs[i])]) for i in range(n)])
    got = np.stack([mf.persons[0].vertices for mf in out])
    cfg = SmoothConfig()
    for k, c in [(2, 0), (16, 1)]:
        np.testing.assert_allclose(got[:, k, c], _filterpy_vertex(vs, k, c, cfg, smooth=True), atol=1e-5)
    online = np.stack([mf.persons[0].vertices for mf in run(stage("live"), [frame(i, [mesh(1, vs[i])])
                                                                            for i in range(n)])])
    assert np.abs(got[:-1] - online[:-1]).max() > 1e-4  # offline is not the online filter


def test_offline_fixed_lag_sees_exactly_rts_lag_future_frames():
    rng = np.random.default_rng(2)
    n, lag = 30, 4
    vs = walk(rng, n).astype(np.float32).astype(np.float64)
    out = run(stage("offline", rts_lag=lag, rts_window=1), [frame(i, [mesh(1, vs[i])]) for i in range(n)])
    got = np.stack([mf.persons[0].vertices for mf in out])
    cfg = SmoothConfig()
    for t in (0, 10, 20):  # frame t was smoothed with frames up to t + lag
        ref = _filterpy_vertex(vs[:t + lag + 1], 5, 0, cfg, smooth=True)
        np.testing.assert_allclose(got[t, 5, 0], ref[t], atol=1e-5)
    full = _filterpy_vertex(vs, 5, 0, cfg, smooth=True)
    assert abs(got[10, 5, 0] - full[10]) > 1e-7  # and not with the whole track


def test_time_step_from_frame_indices_when_pts_is_missing():
    rng = np.random.default_rng(13)
    vs = walk(rng, 30, speed=1.0)
    keep = [i for i in range(30) if i not in (7, 8, 20)]  # frames dropped upstream
    with_pts = run(stage("live"), [frame(i, [mesh(1, vs[i])]) for i in keep])
    no_pts = run(stage("live", fps=FPS), [frame(i, [mesh(1, vs[i])], pts=False) for i in keep])
    for a, b in zip(with_pts, no_pts):
        np.testing.assert_allclose(a.persons[0].vertices, b.persons[0].vertices, atol=1e-6)
    # the gaps count: renumbering the frames as if none were dropped gives another result
    packed = run(stage("live"), [frame(j, [mesh(1, vs[i])], pts=False) for j, i in enumerate(keep)])
    assert np.abs(packed[-1].persons[0].vertices - no_pts[-1].persons[0].vertices).max() > 1e-4


@pytest.mark.parametrize("mode", ["live", "offline"])
def test_constant_acceleration_model_runs_the_lifecycle(mode):
    rng = np.random.default_rng(14)
    vs = walk(rng, 30, speed=1.0)
    out = run(stage(mode, model="constant_acceleration", max_coast=2),
              [frame(i, [mesh(1, vs[i])] if i < 25 else []) for i in range(30)])
    assert [mf.frame.index for mf in out] == list(range(30))
    assert [bool(mf.persons and mf.persons[0].predicted) for mf in out[24:28]] == [False, True, True, False]
    assert out[27].lost == [1]
    got = np.stack([mf.persons[0].vertices for mf in out[5:25]])
    assert np.abs(got - vs[5:25]).mean() < 0.01  # follows the walk within the noise


def test_benchmark_runs_and_reports_its_targets(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_smooth.py"
    spec = importlib.util.spec_from_file_location("bench_smooth", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--frames", "90", "--vertices", "40"]) == 0
    text = capsys.readouterr().out
    assert "online cuts the vertex accel error" in text and "offline / online" in text
    assert "cost per person-frame" in text


# ---------------------------------------------------------------------------------------- lifecycle
def test_birth_coasting_and_loss_reported_once():
    rng = np.random.default_rng(3)
    vs = walk(rng, 30, speed=1.0)
    st = stage("live", max_coast=3)
    frames = [frame(i, [mesh(5, vs[i])] if i < 10 else []) for i in range(20)]
    out = run(st, frames)
    assert [mf.frame.index for mf in out] == list(range(20))
    assert out[0].persons[0].person.state == "new"  # first sight of an id is a birth
    assert out[1].persons[0].person.state == "tracked" and not out[1].persons[0].predicted
    coasting = [mf for mf in out if mf.persons and mf.persons[0].predicted]
    assert [mf.frame.index for mf in coasting] == [10, 11, 12]
    assert all(mf.persons[0].person.state == "coasting" for mf in coasting)
    # coasting follows the motion (constant velocity): it keeps moving in +x
    xs = [mf.persons[0].vertices[:, 0].mean() for mf in out[9:13]]
    assert np.all(np.diff(xs) > 0.01)
    lost = [(mf.frame.index, mf.lost) for mf in out if mf.lost]
    assert lost == [(13, [5])]  # once, the frame after the last coasting one
    assert all(not mf.persons for mf in out[13:])
    assert st.counters["coasted"] == 3 and st.counters["tracks_expired"] == 1


def test_input_lost_ends_track_at_once_and_is_not_repeated():
    rng = np.random.default_rng(4)
    vs = walk(rng, 30)
    st = stage("live", max_coast=2)
    out = []
    for i in range(5):
        out += st.process(frame(i, [mesh(1, vs[i]), mesh(2, vs[i] + 1)]))
    out += st.process(frame(5, [mesh(2, vs[5] + 1)], lost=[1]))  # detect ends track 1
    assert [p.person.track_id for p in out[-1].persons] == [2] and out[-1].lost == [1]  # no coasting of 1
    for i in range(6, 9):  # track 2 disappears: coasts twice, then we report it lost
        out += st.process(frame(i, []))
    assert [mf.lost for mf in out[6:9]] == [[], [], [2]]
    out += st.process(frame(9, [], lost=[2]))  # detect reports it later: not a second time
    assert out[-1].lost == []
    assert sum(mf.lost.count(2) for mf in out) == 1 and sum(mf.lost.count(1) for mf in out) == 1


def test_reused_id_starts_over_instead_of_blending():
    rng = np.random.default_rng(5)
    a, b = walk(rng, 10), walk(rng, 10, start=3.0)
    # the same id, now a different person far away, flagged new by the tracker: state starts over
    out = run(stage("live"), [frame(i, [mesh(1, a[i])]) for i in range(10)] + [frame(10, [mesh(1, b[0], "new")])])
    np.testing.assert_allclose(out[-1].persons[0].vertices, b[0].astype(np.float32), atol=1e-6)
    assert out[-1].persons[0].person.state == "new"
    # not flagged new: the filter blends it with the old person (what the reset prevents)
    blended = run(stage("live"), [frame(i, [mesh(1, a[i])]) for i in range(10)] + [frame(10, [mesh(1, b[0])])])
    assert np.abs(blended[-1].persons[0].vertices - b[0]).max() > 0.1


def test_id_back_after_reported_lost_is_a_new_track():
    rng = np.random.default_rng(6)
    a = walk(rng, 20)
    st = stage("live", max_coast=0)
    out = run(st, [frame(0, [mesh(4, a[0])]), frame(1, [mesh(4, a[1])]), frame(2, []),
                   frame(3, [mesh(4, a[3] + 2)])])
    assert out[2].lost == [4]
    assert out[3].persons[0].person.state == "new"
    np.testing.assert_allclose(out[3].persons[0].vertices, (a[3] + 2).astype(np.float32), atol=1e-6)


@pytest.mark.parametrize("mode", ["live", "offline"])
def test_tracks_never_share_state(mode):
    rng = np.random.default_rng(7)
    a, b = walk(rng, 40, speed=0.5), walk(rng, 40, start=2.0, speed=-1.0)
    both = run(stage(mode), [frame(i, [mesh(1, a[i]), mesh(2, b[i])]) for i in range(40)])
    alone_a = run(stage(mode), [frame(i, [mesh(1, a[i])]) for i in range(40)])
    alone_b = run(stage(mode), [frame(i, [mesh(2, b[i])]) for i in range(40)])
    for tid, alone in ((1, alone_a), (2, alone_b)):
        got = np.stack([p.vertices for _, p in by_track(both)[tid]])
        ref = np.stack([mf.persons[0].vertices for mf in alone])
        np.testing.assert_array_equal(got, ref)
    # the same id in two sources is two people
    two = run(stage(mode), [frame(i, [mesh(1, a[i] if s == "x" else b[i])], source=s)
                            for i in range(40) for s in ("x", "y")])
    got_y = np.stack([mf.persons[0].vertices for mf in two if mf.frame.source == "y"])
    np.testing.assert_array_equal(got_y, np.stack([mf.persons[0].vertices for mf in alone_b]))


@pytest.mark.parametrize("lag,window", [(3, 2), (0, 1), (15, 15)])
def test_offline_frames_leave_in_order_once_with_every_person(lag, window):
    rng = np.random.default_rng(8)
    n = 80
    paths = {tid: walk(rng, n, start=tid) for tid in (1, 2, 3)}
    present = {tid: rng.random(n) > 0.3 for tid in paths}  # people come and go
    frames = []
    for i in range(n):
        persons = [mesh(tid, paths[tid][i]) for tid in paths if present[tid][i]]
        frames.append(frame(i, persons, pts=i % 7 != 0))  # some frames without PTS
    st = stage("offline", rts_lag=lag, rts_window=window, max_coast=2)
    out = []
    for f in frames:
        got = st.process(f)
        out.extend(got)
        # bounded memory: nothing is held for longer than lag + window frames of a track
        assert len(st._queue) <= lag + window + 1
        assert all(len(t.history) < lag + window for t in st._tracks.values())
    out.extend(st.finish())
    assert [mf.frame.index for mf in out] == list(range(n))
    assert len({id(mf) for mf in out}) == n
    for mf, f in zip(out, frames):
        assert all(p is not None for p in mf.persons)
        measured = [p.person.track_id for p in mf.persons if not p.predicted]
        assert measured == [p.person.track_id for p in f.persons]
        assert all(p.person.state == "coasting" for p in mf.persons if p.predicted)


def test_end_of_stream_flushes_and_follows_the_last_frame():
    rng = np.random.default_rng(9)
    a = walk(rng, 10)
    st = stage("offline")
    out = []
    for i in range(10):
        out += st.process(frame(i, [mesh(1, a[i])]))
    assert out == []  # offline holds the frames until it has seen enough of the future
    out += st.process(EndOfStream(source="cam", frames=10))
    assert [type(m).__name__ for m in out] == ["MeshFrame"] * 10 + ["EndOfStream"]
    assert st.finish() == []


# ------------------------------------------------------------------------------ what a mesh carries
def _rot(rng, n):
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                     2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                     2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], 1).reshape(n, 3, 3)


def test_rotations_and_betas_are_smoothed_and_stay_rotations():
    rng = np.random.default_rng(10)
    base = _rot(rng, 24)
    betas = rng.normal(size=10)
    vs = walk(rng, 30)
    frames = []
    for i in range(30):
        noise = _rot(np.random.default_rng(100 + i), 24)
        # a small random rotation (about 3 degrees) on top of the true one
        small = rot6d_to_rotmat(rotmat_to_6d(np.eye(3)[None] + 0.05 * (noise - np.eye(3)[None])))
        frames.append(frame(i, [mesh(1, vs[i], rotmat=(base @ small).astype(np.float32),
                                     betas=(betas + rng.normal(scale=0.1, size=10)).astype(np.float32))]))
    for mode in ("live", "offline"):
        out = run(stage(mode), frames)
        R = np.stack([mf.persons[0].rotmat for mf in out]).astype(np.float64)
        assert R.shape == (30, 24, 3, 3) and out[0].persons[0].rotmat.dtype == np.float32
        np.testing.assert_allclose(R @ R.swapaxes(-1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
        np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)
        raw = np.stack([f.persons[0].rotmat for f in frames])
        err_raw = np.abs(raw[10:] - base).mean()
        err_out = np.abs(R[10:] - base).mean()
        assert err_out < 0.8 * err_raw  # closer to the true rotations than the noisy input
        b = np.stack([mf.persons[0].betas for mf in out])
        assert np.abs(b[10:] - betas).mean() < 0.5 * np.abs(np.stack([f.persons[0].betas for f in frames])[10:]
                                                             - betas).mean()


def test_6d_round_trip():
    R = _rot(np.random.default_rng(11), 50)
    np.testing.assert_allclose(rot6d_to_rotmat(rotmat_to_6d(R)), R, atol=1e-12)


def test_one_euro_method_same_interface_and_lifecycle():
    rng = np.random.default_rng(12)
    vs = walk(rng, 40, speed=0.0)
    out = run(stage("offline", method="one_euro", max_coast=1), [frame(i, [mesh(3, vs[i])] if i < 30 else [])
                                                                for i in range(40)])
    assert [mf.frame.index for mf in out] == list(range(40))
    got = np.stack([mf.persons[0].vertices for mf in out[:30]])
    truth = vs[:30].mean(0)
    assert np.abs(got[10:] - truth).mean() < 0.7 * np.abs(vs[10:30] - truth).mean()
    assert out[30].persons[0].predicted and out[31].lost == [3]


def test_method_none_passes_frames_through():
    f = frame(0, [mesh(1, np.zeros((V, 3)))])
    assert stage("live", method="none").process(f) == [f]


def test_settings_are_validated_with_clear_errors():
    with pytest.raises(ValidationError, match="mthod"):
        SmoothConfig(mthod="kalman")
    with pytest.raises(ValidationError, match="process"):
        SmoothConfig(body={"process": -1})
    with pytest.raises(ValidationError, match="max_coast"):
        SmoothConfig(max_coast=-1)
    with pytest.raises(ValueError, match="mode"):
        SmoothStage(SimpleNamespace(smooth=SmoothConfig(), mode="sometimes"))


def test_stage_is_picklable_and_stamps_its_time():
    import pickle

    st = pickle.loads(pickle.dumps(stage("offline", rts_lag=0, rts_window=1)))
    out = st.process(frame(0, [mesh(1, np.zeros((V, 3)))]))
    assert len(out) == 1 and out[0].frame.times["smooth"] > 0


def test_bad_input_is_a_clear_error():
    st = stage("live")
    with pytest.raises(ValueError, match="twice"):
        st.process(frame(0, [mesh(1, np.zeros((V, 3))), mesh(1, np.ones((V, 3)))]))
    bad = mesh(2, np.zeros((V, 3)))
    bad.vertices[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        stage("live").process(frame(0, [bad]))
