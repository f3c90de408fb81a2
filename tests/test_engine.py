"""The batched inference engine: same results as the plain network, clear errors for bad settings."""
import copy

import numpy as np
import pytest
import torch

import fastmetro
from fastmetro.engine import Engine, EngineError, EngineOptions, fold_batchnorm
from filled_models import filled_model


@pytest.fixture(scope="module")
def filled(assets_dir, parity_dir):
    return filled_model("fastmetro-s-r50", assets_dir, parity_dir)


@pytest.fixture(scope="module")
def crops():
    return np.random.default_rng(0).integers(0, 256, (7, 224, 224, 3), dtype=np.uint8)


def test_batched_engine_equals_per_crop_network(filled, crops):
    engine = Engine(EngineOptions(max_batch=4), model=copy.deepcopy(filled))
    got = engine(crops)  # chunks of 4 + 3, folded BN, channels_last
    with torch.inference_mode():
        for i in range(len(crops)):
            ref = filled(fastmetro.normalize_crops(torch.from_numpy(crops[i : i + 1])))
            assert np.abs(got["cam"][i] - ref["pred_cam"][0].numpy()).max() < 1e-4
            assert np.abs(got["joints3d"][i] - ref["pred_3d_joints"][0].numpy()).max() < 1e-4
            assert np.abs(got["vertices"][i] - ref["pred_3d_vertices_fine"][0].numpy()).max() < 1e-4
            h36m = filled.h36m_joints(ref["pred_3d_vertices_fine"])[0].numpy()
            assert np.abs(got["joints_h36m"][i] - h36m).max() < 1e-4


@pytest.mark.slow
def test_compiled_engine_runs_fixed_sizes_only_and_equals_the_network(filled, crops):
    """torch.compile with frozen weights, made ready for batch sizes 1 and 2 at construction; 7 crops with
    max_batch 3 run as 2 + 1, 2 + 1, 1 on the CPU (pieces of the fixed sizes, never a new shape)."""
    eager = Engine(EngineOptions(max_batch=3), model=copy.deepcopy(filled))
    engine = Engine(EngineOptions(max_batch=3, compile=True, graph_batch_sizes=(1, 2)), model=copy.deepcopy(filled))
    assert engine._sizes == (1, 2)
    seen = []
    run = engine._run
    engine._run = lambda x: seen.append(len(x)) or run(x)
    got, ref = engine(crops), eager(crops)
    assert seen == [2, 1, 2, 1, 1]
    for k in ("cam", "joints3d", "joints_h36m", "vertices"):
        assert np.abs(got[k] - ref[k]).max() < 1e-4, k


def test_empty_input_gives_empty_arrays(filled):
    engine = Engine(EngineOptions(), model=copy.deepcopy(filled))
    out = engine(np.zeros((0, 224, 224, 3), np.uint8))
    assert out["vertices"].shape == (0, 6890, 3) and out["cam"].shape == (0, 3)


def test_settings_the_device_cannot_honour(filled):
    with pytest.raises(EngineError, match="fp16"):
        Engine(EngineOptions(device="cpu", precision="fp16"), model=filled)
    with pytest.raises(EngineError, match="cuda_graphs"):
        Engine(EngineOptions(device="cpu", cuda_graphs=True), model=filled)
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="CUDA is not available"):
            Engine(EngineOptions(device="cuda"), model=filled)
    with pytest.raises(EngineError, match="max_batch"):
        Engine(EngineOptions(max_batch=0), model=filled)


def test_bad_crops_are_rejected(filled):
    engine = Engine(EngineOptions(), model=copy.deepcopy(filled))
    with pytest.raises(EngineError, match="uint8"):
        engine(np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(EngineError, match="224"):
        engine(np.zeros((1, 100, 100, 3), np.uint8))


def test_batchnorm_folding_is_exact(filled):
    backbone = copy.deepcopy(filled.backbone)
    n = fold_batchnorm(backbone)
    assert n == 53  # ResNet-50: stem + 16 blocks x 3 + 4 downsample convs
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert (backbone(x) - filled.backbone(x)).abs().max() < 1e-3 * filled.backbone(x).abs().max()
