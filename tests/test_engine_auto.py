"""Engine "auto" (fastmetro/engine_auto.py): the choice honours its deviation bound, is cached and read back,
the infer settings turn it on and off, and compiled fp32 packages are reused by a later engine."""
from __future__ import annotations

import functools
import json
import logging
import warnings

import numpy as np
import pytest
import torch

import fastmetro
from fastmetro.engine import Engine, EngineOptions
from fastmetro.engine_auto import choose, fixed_crops
from stages.infer import InferConfig


def _model():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)
        return fastmetro.build_model("fastmetro-s-r50")


def test_infer_engine_setting(monkeypatch):
    monkeypatch.delenv("FASTMETRO_ENGINE", raising=False)
    assert InferConfig().engine_options().engine == "auto"  # the default
    assert InferConfig(precision="bf16").engine_options().engine == "manual"  # a setting given: the user's choice
    assert InferConfig(compile=True).engine_options().engine == "manual"
    assert InferConfig(engine="manual").engine_options().engine == "manual"
    monkeypatch.setenv("FASTMETRO_ENGINE", "manual")
    assert InferConfig().engine == "manual"
    monkeypatch.setenv("FASTMETRO_ENGINE", "fastest")
    with pytest.raises(ValueError, match="FASTMETRO_ENGINE"):
        InferConfig()


def test_fixed_crops_repeat():
    a, b = fixed_crops(3), fixed_crops(3)
    assert a.shape == (3, 224, 224, 3) and a.dtype == np.uint8 and np.array_equal(a, b) and a.std() > 20


CPU = {"build": Engine, "device": torch.device("cpu")}  # how Engine itself calls choose on the CPU


@pytest.mark.slow
def test_auto_bound_and_cache(tmp_path, monkeypatch, assets_dir):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the ONNX export and inductor cache
    model = _model()
    opts = EngineOptions(device="cpu", max_batch=1, engine="auto")
    # a bound no reduced or reordered arithmetic meets: only eager fp32 itself qualifies
    strict = choose(opts, model, tolerance_mm=1e-9, directory=tmp_path / "a", rounds=2, names=("onnxruntime",), **CPU)
    assert strict.name == "fp32" and not strict.cached
    assert 0 < strict.results["onnxruntime"]["deviation_mm"] < 0.05  # exact up to float round-off
    assert "mm off" in strict.reason and "onnxruntime" in strict.reason
    saved = json.loads(strict.path.read_text())
    assert saved["choice"] == "fp32" and set(saved["results"]) == {"fp32", "onnxruntime"}

    again = choose(opts, model, tolerance_mm=1e-9, directory=tmp_path / "a", names=("onnxruntime",), **CPU)
    assert again.cached and again.name == "fp32" and again.path == strict.path and "read from" in again.reason

    loose = choose(opts, model, directory=tmp_path / "b", rounds=2, names=("onnxruntime",), **CPU)
    faster = max(loose.results, key=lambda n: loose.results[n]["score"])
    assert loose.name == faster  # both within 5 mm: the faster one wins
    assert (loose.options.backend == "onnxruntime") == (loose.name == "onnxruntime")

    # an engine built with engine auto (trying the same candidates, in the same cache) reads the cached
    # choice and runs it
    monkeypatch.setattr("fastmetro.engine_auto.choose",
                        functools.partial(choose, directory=tmp_path / "b", names=("onnxruntime",)))
    engine = Engine(EngineOptions(device="cpu", max_batch=1, engine="auto"), model=_model())
    assert engine.choice is not None and engine.choice.cached and engine.choice.name == loose.name
    crops = fixed_crops(2)
    ref = Engine(EngineOptions(device="cpu", max_batch=1), model=_model())(crops)
    assert np.abs(engine(crops)["vertices"] - ref["vertices"]).max() < 5e-3


@pytest.mark.slow
def test_compiled_packages_reused(tmp_path, monkeypatch, caplog, assets_dir):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    crops = fixed_crops(2)
    ref = Engine(EngineOptions(device="cpu", max_batch=1), model=_model())(crops)
    with caplog.at_level(logging.INFO, logger="fastmetro.engine"):
        first = Engine(EngineOptions(device="cpu", max_batch=1, compile=True), model=_model())
    assert "compiling the network ahead of time" in caplog.text
    assert all(p.endswith(".pt2") for p in first.compiled_paths)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fastmetro.engine"):
        second = Engine(EngineOptions(device="cpu", max_batch=1, compile=True), model=_model())
    assert "compiling the network ahead of time" not in caplog.text  # loaded from the cache
    assert second.compiled_paths == first.compiled_paths
    for engine in (first, second):
        assert np.abs(engine(crops)["vertices"] - ref["vertices"]).max() < 1e-4
