"""The OpenVINO backend of the engine: the ONNX export compiled by OpenVINO, same results as the torch engine."""
import copy
import sys
import warnings

import numpy as np
import pytest
import torch

import fastmetro
from fastmetro.engine import Engine, EngineError, EngineOptions
from filled_models import filled_model

pytest.importorskip("openvino", reason="openvino not installed (pip install openvino)")
pytest.importorskip("onnx", reason="onnx not installed (pip install onnx)")


@pytest.fixture(scope="module")
def cache(user_cache):
    """A fresh user cache: the export and OpenVINO's compiled blobs go there."""
    return user_cache


@pytest.fixture(scope="module")
def filled(assets_dir, parity_dir):
    return filled_model("fastmetro-s-r50", assets_dir, parity_dir)


@pytest.fixture(scope="module")
def crops():
    return np.random.default_rng(1).integers(0, 256, (6, 224, 224, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def torch_ref(filled, crops):
    return Engine(EngineOptions(max_batch=8), model=copy.deepcopy(filled))(crops)


@pytest.fixture(scope="module")
def ov_engine(filled, cache):
    return Engine(EngineOptions(backend="openvino", max_batch=8, threads=2), model=copy.deepcopy(filled))


@pytest.mark.parametrize("n", [1, 3, 6])
def test_openvino_engine_equals_torch_engine(ov_engine, torch_ref, crops, n):
    """fp32 is asked for explicitly (OpenVINO would run bf16 on an AMX CPU): float round-off only. 3 and 6
    crops run in pieces of the fixed sizes 1 and 4."""
    got = ov_engine(crops[:n])
    assert set(got) == set(torch_ref)
    for k in ("cam", "joints3d", "joints_h36m", "vertices"):
        assert got[k].shape == torch_ref[k][:n].shape and got[k].dtype == np.float32, k
        err = np.abs(got[k] - torch_ref[k][:n]).max()
        assert err < 1e-4, f"{k}: {err}"


def test_repeated_calls_give_the_same_result(ov_engine, torch_ref, crops):
    """Each call, not only the first: with OpenVINO's subgraph JIT on, calls after the first drifted 0.1 m."""
    for _ in range(3):
        for n in (1, 4):
            got = ov_engine(crops[:n])
            assert np.abs(got["vertices"] - torch_ref["vertices"][:n]).max() < 1e-4


def test_fixed_shapes_and_compiled_blobs_cached(ov_engine, cache):
    assert sorted(ov_engine._onnx.requests) == [1, 4]
    assert list((cache / "openvino").iterdir()), "OpenVINO's compiled blobs are not cached"
    assert ov_engine.onnx_path.parent == cache / "onnx"


def test_runner_takes_its_compiled_sizes_only(ov_engine):
    """The engine cuts other sizes into pieces of them (fixed_size_pieces); the runner says so if asked."""
    from fastmetro.engine import fixed_size_pieces

    assert fixed_size_pieces(6, (1, 4)) == [(0, 4), (4, 1), (5, 1)] and fixed_size_pieces(0, (1, 4)) == []
    with pytest.raises(ValueError, match=r"batch of 3: compiled for batch sizes \(1, 4\) only"):
        ov_engine._onnx(np.zeros((3, 3, 224, 224), np.float32))


def test_empty_input(ov_engine):
    out = ov_engine(np.zeros((0, 224, 224, 3), np.uint8))
    assert out["vertices"].shape == (0, 6890, 3) and out["joints_h36m"].shape == (0, 17, 3)


@pytest.mark.slow
def test_openvino_engine_smpl_variant(assets_dir, parity_dir, cache, crops):
    model = filled_model("fastmetro-s-r50-smpl", assets_dir, parity_dir)
    ref = Engine(EngineOptions(), model=copy.deepcopy(model))(crops[:2])
    got = Engine(EngineOptions(backend="openvino", graph_batch_sizes=(1, 2)), model=model)(crops[:2])
    assert set(got) == set(ref)
    for k in ("cam", "joints3d", "joints_h36m", "vertices", "rotmat", "betas"):
        assert np.abs(got[k] - ref[k]).max() < 1e-4, k


def test_settings_it_cannot_honour_are_refused(filled, monkeypatch):
    for opts, name in ((dict(quantize="int8-dynamic"), "quantize"), (dict(compile=True), "compile")):
        with pytest.raises(EngineError, match=name):
            Engine(EngineOptions(backend="openvino", device="cpu", **opts), model=filled)
    monkeypatch.setattr("fastmetro.engine.cpu_has_native_bf16", lambda: False)
    with pytest.raises(EngineError, match="native bf16"):
        Engine(EngineOptions(backend="openvino", device="cpu", precision="bf16"), model=filled)


def test_hand_network_refused(mano_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)
        hand = fastmetro.build_model("fastmetro-hand-s-r50", assets_dir=mano_dir)
    with pytest.raises(EngineError, match="body networks only"):
        Engine(EngineOptions(backend="openvino", device="cpu"), model=hand)


def test_missing_openvino_is_a_clear_error(filled, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` sees when absent
    with pytest.raises(EngineError, match="pip install openvino"):
        Engine(EngineOptions(backend="openvino", device="cpu"), model=filled)


def test_engine_auto_tries_openvino(monkeypatch):
    from fastmetro.engine_auto import candidates

    names = dict(candidates(torch.device("cpu"), hand=False, smpl_head=False))
    assert names["openvino"] == {"backend": "openvino"}
    monkeypatch.setattr("fastmetro.engine_auto.cpu_native_bf16", lambda: True)
    assert dict(candidates(torch.device("cpu"), hand=False, smpl_head=False))["openvino-bf16"] == {
        "backend": "openvino", "precision": "bf16"}
    assert "openvino" not in dict(candidates(torch.device("cpu"), hand=True, smpl_head=False))
