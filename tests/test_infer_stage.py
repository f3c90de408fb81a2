"""The infer stage: dynamic batching keeps frame order and per-frame grouping, honours its deadline, and
gives every crop the result it would get alone."""
from __future__ import annotations

import multiprocessing as mp
import time
import warnings

import numpy as np
import pytest

import fastmetro
from pipeline.messages import Detections, EndOfStream, Frame, MeshFrame, Person
from pipeline.shm import FrameStore
from pipeline.stage import StageContext
from stages.infer import DynamicBatcher, InferConfig, InferStage, _Pending


@pytest.fixture(scope="module")
def store():
    s = FrameStore.create(mp.get_context("spawn"), slots=64, max_pixels=64 * 64, max_persons=3)
    yield s
    s.close()
    s.unlink()


def make_stage(store, assets_dir, mode="offline", **cfg):
    stage = InferStage(InferConfig(assets_dir=str(assets_dir), **cfg), StageContext(mode=mode))
    stage.store = store
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)
        stage.setup()
    return stage


def detections(store, index, n_persons, rng):
    slot = store.acquire(block=False)
    assert slot is not None
    frame = Frame("t", index, index / 30, slot, 64, 64)
    persons = []
    for i in range(n_persons):
        store.crops(frame)[i] = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
        persons.append(Person(track_id=10 * index + i, state="tracked", box=(10, 10, 40, 50), score=0.9,
                              center=(25.0 + i, 30.0), size=48.0, crop_index=i))
    return Detections(frame, persons), store.crops(frame)[:n_persons].copy()


def test_random_arrivals_keep_order_grouping_and_per_crop_results(store, assets_dir):
    stage = make_stage(store, assets_dir, mode="live", max_batch=5, max_wait_ms=30)
    rng = np.random.default_rng(1)
    sent, crops_of, out = [], {}, []
    for index in range(14):
        det, crops = detections(store, index, int(rng.integers(0, 4)), rng)
        crops_of[index] = crops
        sent.append(det)
        out += stage.process(det)
        time.sleep(float(rng.uniform(0, 0.04)))
        if stage.next_deadline() is not None and time.monotonic() >= stage.next_deadline():
            out += stage.tick()
    out += stage.process(EndOfStream("t", 14))
    assert isinstance(out[-1], EndOfStream)
    frames = [m for m in out if isinstance(m, MeshFrame)]
    assert [m.frame.index for m in frames] == list(range(14))  # in order, each once
    assert store.spec.free.qsize() == store.spec.slots  # every slot released
    assert stage.counters["forwards"] < sum(len(c) > 0 for c in crops_of.values())  # it did batch
    for m in frames:
        assert [p.person.track_id for p in m.persons] == [10 * m.frame.index + i for i in range(len(m.persons))]
        assert len(m.persons) == len(crops_of[m.frame.index])
        if m.persons:
            alone = stage.engine(crops_of[m.frame.index])  # the same crops in a batch of their own
            got = np.stack([p.vertices for p in m.persons])
            assert np.abs(got - alone["vertices"]).max() < 1e-4
            assert np.abs(np.stack([p.cam for p in m.persons]) - alone["cam"]).max() < 1e-4
            assert all(p.joints2d.shape == (14, 2) and p.joints_h36m.shape == (17, 3) for p in m.persons)


def test_a_lone_crop_waits_at_most_the_deadline(store, assets_dir):
    stage = make_stage(store, assets_dir, mode="live", max_batch=16, max_wait_ms=80)
    det, _ = detections(store, 0, 1, np.random.default_rng(0))
    t0 = time.monotonic()
    assert stage.process(det) == []  # the batch is not full: held
    deadline = stage.next_deadline()
    assert deadline == pytest.approx(t0 + 0.080, abs=0.02)
    assert stage.tick() == []  # not due yet
    time.sleep(max(0.0, deadline - time.monotonic()))
    out = stage.tick()
    assert [m.frame.index for m in out] == [0] and len(out[0].persons) == 1
    assert stage.next_deadline() is None


def test_a_full_batch_runs_at_once(store, assets_dir):
    stage = make_stage(store, assets_dir, mode="offline", max_batch=2)
    rng = np.random.default_rng(2)
    assert stage.process(detections(store, 0, 1, rng)[0]) == []
    out = stage.process(detections(store, 1, 1, rng)[0])
    assert [m.frame.index for m in out] == [0, 1]


def test_live_frames_handed_over_together_run_at_once_as_one_batch(store, assets_dir):
    # live, the runtime hands over every frame that waited (process_many): none waits for a batch to fill
    stage = make_stage(store, assets_dir, mode="live", max_batch=16)
    rng = np.random.default_rng(3)
    out = stage.process_many([detections(store, i, 1, rng)[0] for i in range(3)])
    assert [m.frame.index for m in out] == [0, 1, 2]
    assert stage.counters["forwards"] == 1 and stage.next_deadline() is None
    assert stage.timings["service"] and stage.timings["forward per crop"]


def test_batcher_never_splits_a_frame():
    b = DynamicBatcher(max_batch=4, max_wait_s=1.0)
    for i, n in enumerate([3, 3, 5, 1]):
        b.add(_Pending(Detections(Frame("t", i, None, -1, 1, 1), []), np.zeros((n, 1)), 0.0))
    batches = b.take(force=True)
    assert [[p.det.frame.index for p in batch] for batch in batches] == [[0], [1], [2], [3]]
    assert [sum(len(p.crops) for p in batch) for batch in batches] == [3, 3, 5, 1]


def test_bad_settings_are_named(store, assets_dir):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_batch"):
        InferConfig(max_batch=0)
    with pytest.raises(ValidationError, match="precision"):
        InferConfig(precision="fp8")


def test_engine_options_carry_every_shared_setting():
    from dataclasses import fields

    from fastmetro.engine import EngineOptions

    opts = InferConfig(precision="bf16", backend="onnxruntime", max_batch=3, quantize="int8-dynamic",
                       threads=1, channels_last=False).engine_options()
    assert (opts.precision, opts.backend, opts.max_batch, opts.quantize, opts.threads, opts.channels_last) == (
        "bf16", "onnxruntime", 3, "int8-dynamic", 1, False)
    # an engine setting the infer section lacks would be unreachable from configs: only this one is
    assert {f.name for f in fields(EngineOptions)} - set(InferConfig.model_fields) == {"graph_batch_sizes"}
