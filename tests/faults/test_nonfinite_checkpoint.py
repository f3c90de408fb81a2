"""A checkpoint that loads but makes the network output NaN (bit rot in a weight) is named as the cause
by the infer stage, in one line, instead of a later stage failing on NaN."""
from __future__ import annotations

import multiprocessing as mp
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import fastmetro
from pipeline.messages import Detections, Frame, Person
from pipeline.shm import FrameStore
from pipeline.stage import StageError
from stages.infer import InferConfig, InferStage


@pytest.mark.slow
def test_a_checkpoint_giving_nan_is_named(tmp_path, assets_dir):
    model = fastmetro.build_model("fastmetro-s-r50", assets_dir=str(assets_dir))
    sd = model.state_dict()
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 100 and "weight" in k)
    sd[key] = torch.full_like(sd[key], float("nan"))
    path = tmp_path / "rotten.bin"
    torch.save(sd, path)
    del model
    store = FrameStore.create(mp.get_context("spawn"), slots=2, max_pixels=64 * 64, max_persons=1)
    try:
        stage = InferStage(SimpleNamespace(infer=InferConfig(assets_dir=str(assets_dir), checkpoint=str(path),
                                                             max_batch=1), mode="offline"))
        stage.store = store
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stage.setup()
        slot = store.acquire(block=False)
        frame = Frame("t", 0, 0.0, slot, 64, 64)
        store.crops(frame)[0] = 128
        det = Detections(frame, [Person(1, "new", (10, 10, 40, 50), 0.9, (25.0, 30.0), 48.0, 0)])
        with pytest.raises(StageError, match="not finite.*rotten.bin"):
            stage.process(det)
            stage.finish()
        stage.close()
    finally:
        store.close()
        store.unlink()
