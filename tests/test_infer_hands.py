"""Hands in the infer stage: crops cut from the frame where the body mesh puts the hands, one hand network
call for a batch, left hands mirrored back, hands placed in the body's camera, skips counted."""
from __future__ import annotations

import multiprocessing as mp
import warnings
from collections import Counter

import numpy as np
import pytest

import fastmetro
from fastmetro import camera
from fastmetro.hand_crops import HandSquare, Side, mirror_points, smpl_hand_vertices
from pipeline.messages import Detections, EndOfStream, Frame, MeshFrame, Person, PersonMesh
from pipeline.shm import FrameStore
from pipeline.stage import StageContext
from stages.infer import InferConfig, InferStage
from stages.infer_hands import HandPass, cut_hand_crops

W, H = 320, 240
FOCAL = 400.0


@pytest.fixture(scope="module")
def hand_vertices(assets_dir):
    mesh = fastmetro.load_mesh_data(assets_dir)
    return smpl_hand_vertices(mesh.faces, mesh.j_regressor_h36m)


@pytest.fixture(scope="module")
def hand_engine(mano_dir):
    from fastmetro.engine import Engine, EngineOptions

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)
        return Engine(EngineOptions(variant="fastmetro-hand-s-r50", assets_dir=str(mano_dir)))


def body_with_hands_at(hand_vertices, left_xy, right_xy, spread=0.1, depth=3.0):
    """A (6890, 3) body whose hand vertices sit in a spread x spread patch that projects to the given frame
    points (cam_t = 0, focal FOCAL); the other vertices at the origin's depth."""
    rng = np.random.default_rng(0)
    v = np.zeros((6890, 3))
    v[:, 2] = depth
    for side, xy in ((Side.LEFT, left_xy), (Side.RIGHT, right_xy)):
        idx = hand_vertices[side]
        centre = np.array([(xy[0] - W / 2) * depth / FOCAL, (xy[1] - H / 2) * depth / FOCAL, depth])
        v[idx] = centre + np.c_[rng.uniform(-spread, spread, (len(idx), 2)), np.zeros(len(idx))]
    return v


def person_mesh(vertices, track_id, state="tracked"):
    person = Person(track_id, state, (0, 0, 1, 1), 1.0, (0.0, 0.0), 1.0, 0)
    z3 = np.zeros(3, np.float32)
    return PersonMesh(person, z3, z3, np.zeros((14, 3)), np.zeros((17, 3)), np.zeros((14, 2)), vertices)


def test_a_mirrored_hand_crop_is_the_plain_one_flipped_and_large_squares_are_smoothed():
    rgb = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    plain, flipped = cut_hand_crops(rgb, [HandSquare(Side.RIGHT, (100.0, 90.0), 60.0, False),
                                          HandSquare(Side.LEFT, (100.0, 90.0), 60.0, True)])
    assert np.array_equal(flipped, plain[:, ::-1])
    big = cut_hand_crops(rgb, [HandSquare(Side.RIGHT, (160.0, 120.0), 900.0, False)])[0]
    assert big[100:124, 100:124].std() < rgb.std() / 2  # sampled from a pyramid level: noise averaged out


def test_hand_pass_gives_placed_hands_and_counts_skips(hand_vertices, hand_engine):
    rgb = np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)
    seen = hand_vertices
    visible = person_mesh(body_with_hands_at(seen, (100, 120), (220, 120)), 1)
    outside = person_mesh(body_with_hands_at(seen, (-300, 120), (220, 120)), 2)
    tiny = person_mesh(body_with_hands_at(seen, (100, 120), (220, 120), spread=0.002), 3)
    coasting = person_mesh(body_with_hands_at(seen, (100, 120), (220, 120)), 4, state="coasting")
    mf = MeshFrame(Frame("t", 0, 0.0, -1, H, W), [visible, outside, tiny, coasting], focal=FOCAL)
    counts = Counter()
    calls = []

    def engine(crops):
        calls.append(crops.copy())
        return hand_engine(crops)

    HandPass(engine, hand_vertices, lambda name, n=1: counts.update({name: n})).run([mf], [rgb])
    assert len(calls) == 1 and len(calls[0]) == 3  # one call: both hands of person 1, the right of person 2
    assert set(visible.hands) == {"left", "right"} and set(outside.hands) == {"right"}
    assert outside.hand_skips == {"left": "out_of_frame"}
    assert tiny.hand_skips == {"left": "too_small", "right": "too_small"} and not tiny.hands
    assert coasting.hand_skips == {"left": "body_coasting", "right": "body_coasting"} and not coasting.hands
    assert counts == {"hand_crops": 3, "hand_forwards": 1, "hands_skipped_out_of_frame": 1,
                      "hands_skipped_too_small": 2, "hands_skipped_body_coasting": 2}
    raw = hand_engine(calls[0])
    left, right = visible.hands["left"], visible.hands["right"]
    for h in (left, right):
        assert h.vertices.shape == (778, 3) and h.joints3d.shape == (21, 3) and h.cam_t.shape == (3,)
    # the crops sit on the hands; the left one went in flipped and came back mirrored
    assert left.center == pytest.approx((100, 120), abs=1) and right.center == pytest.approx((220, 120), abs=1)
    assert np.allclose(right.vertices, raw["vertices"][1], atol=1e-5)
    assert np.allclose(left.vertices, mirror_points(raw["vertices"][0]), atol=1e-5)
    assert left.cam == pytest.approx(raw["cam"][0] * np.array([1, -1, 1]), abs=1e-5)
    # placed in the body's camera like a body: cam_t is the crop's camera made perspective
    for h in (left, right):
        want = camera.crop_to_frame_translation(h.cam[None], np.array([h.center]), np.array([h.size]), (W, H), FOCAL)
        assert np.allclose(h.cam_t, want[0], rtol=1e-5)


@pytest.fixture(scope="module")
def store():
    s = FrameStore.create(mp.get_context("spawn"), slots=8, max_pixels=W * H, max_persons=2)
    yield s
    s.close()
    s.unlink()


def test_hands_are_off_by_default_on_a_cpu(store, assets_dir):
    stage = InferStage(InferConfig(assets_dir=str(assets_dir)), StageContext())
    stage.store = store
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)
        stage.setup()
    assert stage.hands is None and "untrained_hand_weights" not in stage.counters


def test_the_stage_runs_hands_on_every_person_and_releases_the_frames(store, assets_dir, mano_dir):
    stage = InferStage(InferConfig(assets_dir=str(assets_dir), hands=True, hand_assets_dir=str(mano_dir),
                                   max_batch=4, hand_min_px=1.0), StageContext())
    stage.store = store
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)
        stage.setup()
    assert stage.counters["untrained_hand_weights"] == 1
    rng = np.random.default_rng(3)
    out = []
    for i in range(3):
        frame = Frame("t", i, i / 30, store.acquire(block=False), H, W)
        store.frame(frame)[:] = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        persons = []
        for k in range(2):
            store.crops(frame)[k] = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
            persons.append(Person(k, "tracked", (100, 40, 220, 230), 0.9, (160.0, 135.0), 240.0, k))
        out += stage.process(Detections(frame, persons))
    out += stage.process(EndOfStream("t", 3))
    frames = [m for m in out if isinstance(m, MeshFrame)]
    assert [m.frame.index for m in frames] == [0, 1, 2]
    assert store.spec.free.qsize() == store.spec.slots
    sides = 0
    for m in frames:
        for p in m.persons:
            assert set(p.hands) | set(p.hand_skips) == {"left", "right"} and not set(p.hands) & set(p.hand_skips)
            sides += 2
            for h in p.hands.values():
                assert h.vertices.shape == (778, 3) and h.joints3d.shape == (21, 3)
    skipped = sum(v for k, v in stage.counters.items() if k.startswith("hands_skipped_"))
    assert stage.counters.get("hand_crops", 0) + skipped == sides == 12
