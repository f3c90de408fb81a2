"""The ONNX Runtime backend of the engine: same results as the torch engine, exported once per checkpoint."""
import copy
import os
import sys

import numpy as np
import pytest
import torch

from fastmetro.engine import Engine, EngineError, EngineOptions
from filled_models import filled_model

pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install onnxruntime)")

from fastmetro import onnx_export  # noqa: E402


@pytest.fixture(scope="module")
def cache(user_cache):
    """Where the export goes: <a fresh user cache>/onnx."""
    return user_cache / "onnx"


@pytest.fixture(scope="module")
def filled(assets_dir, parity_dir):
    return filled_model("fastmetro-s-r50", assets_dir, parity_dir)


@pytest.fixture(scope="module")
def crops():
    return np.random.default_rng(1).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def onnx_engine(filled, cache):
    return Engine(EngineOptions(backend="onnxruntime", max_batch=4, threads=2), model=copy.deepcopy(filled))


def _assert_close(got, ref, keys):
    for k in keys:
        assert got[k].shape == ref[k].shape, k
        assert got[k].dtype == np.float32, k
        err = np.abs(got[k] - ref[k]).max()
        assert err < 1e-4, f"{k}: {err}"


@pytest.fixture(scope="module")
def torch_ref(filled, crops):
    return Engine(EngineOptions(max_batch=4), model=copy.deepcopy(filled))(crops[:3])


@pytest.mark.parametrize("n", [1, 3])
def test_onnx_engine_equals_torch_engine(onnx_engine, torch_ref, crops, n):
    ref = {k: v[:n] for k, v in torch_ref.items()}  # every crop's result is independent of its batch
    got = onnx_engine(crops[:n])  # the graph was exported with batch 2: 1 and 3 use the dynamic axis
    assert set(got) == set(ref)
    _assert_close(got, ref, ["cam", "joints3d", "joints_h36m", "vertices"])


def test_export_is_cached_per_weights(filled, onnx_engine, cache):
    files = sorted(cache.glob("*.onnx"))
    assert files == [onnx_engine.onnx_path]
    stamp = os.stat(files[0]).st_mtime_ns
    again = Engine(EngineOptions(backend="onnxruntime"), model=copy.deepcopy(filled))
    assert again.onnx_path == files[0] and os.stat(files[0]).st_mtime_ns == stamp  # not exported again
    assert sorted(cache.glob("*")) == files  # no temporary files left behind
    # other weights: another key (no export needed to check that)
    other = copy.deepcopy(filled)
    with torch.no_grad():
        other.cam_predictor.bias.add_(1.0)
    assert onnx_export.weights_hash(other) != onnx_export.weights_hash(filled)


def test_smpl_head_without_svd_matches_torch(assets_dir, parity_dir):
    """The exported SMPL head stops before the SVD; numpy finishes it with the same result."""
    head = filled_model("fastmetro-s-r50-smpl", assets_dir, parity_dir).smpl_parameter_regressor
    verts = torch.randn(3, 1723, 3)
    with torch.no_grad():
        rot, betas = head(verts)
        raw = torch.cat(onnx_export._RawSMPLHead(head)(verts), dim=1).numpy()
    got_rot, got_betas = onnx_export.nearest_rotations(raw)
    assert np.abs(got_rot - rot.numpy()).max() < 1e-4
    assert np.abs(got_betas - betas.numpy()).max() < 1e-6
    assert np.allclose(np.linalg.det(got_rot), 1.0, atol=1e-4)


@pytest.mark.slow
def test_onnx_engine_smpl_variant(assets_dir, parity_dir, cache, crops):
    model = filled_model("fastmetro-s-r50-smpl", assets_dir, parity_dir)
    ref = Engine(EngineOptions(), model=copy.deepcopy(model))(crops[:2])
    got = Engine(EngineOptions(backend="onnxruntime"), model=model)(crops[:2])
    assert set(got) == set(ref)
    _assert_close(got, ref, ["cam", "joints3d", "joints_h36m", "vertices", "rotmat", "betas"])


def test_torch_only_settings_are_refused(filled):
    for opts, name in ((dict(precision="bf16"), "precision"), (dict(quantize="int8-dynamic"), "quantize"),
                       (dict(compile=True), "compile")):
        with pytest.raises(EngineError, match=name):
            Engine(EngineOptions(backend="onnxruntime", device="cpu", **opts), model=filled)
    with pytest.raises(EngineError, match="backend"):
        Engine(EngineOptions(backend="tensorrt"), model=filled)


def test_missing_onnxruntime_is_a_clear_error(filled, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` sees when absent
    with pytest.raises(EngineError, match="pip install onnxruntime"):
        Engine(EngineOptions(backend="onnxruntime", device="cpu"), model=filled)


def test_empty_input(onnx_engine):
    out = onnx_engine(np.zeros((0, 224, 224, 3), np.uint8))
    assert out["vertices"].shape == (0, 6890, 3) and out["joints_h36m"].shape == (0, 17, 3)


def test_missing_onnx_package_is_a_clear_error(filled, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached: the engine must export
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(EngineError, match="pip install onnx"):
        Engine(EngineOptions(backend="onnxruntime", device="cpu"), model=copy.deepcopy(filled))
    assert not list(tmp_path.rglob("*.onnx*"))
