"""The FastMETRO network: parity with the official outputs, checkpoints, batching, helpers."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import fastmetro
from fastmetro import CheckpointError, UntrainedWeightsWarning
from fastmetro.assets import AssetError, MeshData, _RestrictedUnpickler, load_mesh_data
from fastmetro.checkpoints import infer_variant, load_into, read_state_dict
from fastmetro.model import VARIANTS, FastMETROBody

REPO = Path(__file__).resolve().parents[1]
CHECK = [sys.executable, str(REPO / "scripts" / "check_parity.py")]


def build(variant="fastmetro-s-r50", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        return fastmetro.build_model(variant, **kw)


@pytest.fixture(scope="module")
def filled_s_r50(assets_dir, parity_dir):
    sys.path.insert(0, str(parity_dir))
    from fill_rule import fill_

    return fill_(build(assets_dir=assets_dir), 0).eval()


# --- parity -------------------------------------------------------------------------------------

def test_check_parity_passes_on_the_shipped_fixture(assets_dir, parity_dir, tmp_path):
    out = tmp_path / "ours.npz"
    r = subprocess.run(CHECK + [str(parity_dir / "fastmetro_s_r50.json"), "--assets", str(assets_dir),
                                "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS" in r.stdout
    for name in ("pred_cam", "pred_3d_joints", "pred_3d_vertices_coarse",
                 "pred_3d_vertices_intermediate", "pred_3d_vertices_fine"):
        assert f"{name}" in r.stdout
    ref = np.load(parity_dir / "fastmetro_s_r50.npz")
    ours = np.load(out)
    assert np.abs(ours["pred_3d_vertices_fine"] - ref["pred_3d_vertices_fine"]).max() < 1e-4


def _copy_fixture(parity_dir, tmp_path, edit_json=None, edit_npz=None):
    spec = json.loads((parity_dir / "fastmetro_s_r50.json").read_text())
    data = dict(np.load(parity_dir / "fastmetro_s_r50.npz"))
    if edit_json:
        edit_json(spec)
    if edit_npz:
        edit_npz(data)
    (tmp_path / "fx.json").write_text(json.dumps(spec))
    np.savez(tmp_path / "fx.npz", **data)
    return tmp_path / "fx.json"


def test_check_parity_fails_on_a_key_mismatch(assets_dir, parity_dir, tmp_path):
    def rename(spec):
        spec["state_dict"][0][0] = "backbone.0.weight_renamed"

    fx = _copy_fixture(parity_dir, tmp_path, edit_json=rename)
    r = subprocess.run(CHECK + [str(fx), "--assets", str(assets_dir),
                                "--fill-rule", str(parity_dir / "fill_rule.py")], capture_output=True, text=True)
    assert r.returncode == 1
    assert "backbone.0.weight_renamed" in r.stdout


def test_check_parity_fails_when_an_output_differs(assets_dir, parity_dir, tmp_path):
    def perturb(data):
        data["pred_cam"] = data["pred_cam"] + 1e-3

    fx = _copy_fixture(parity_dir, tmp_path, edit_npz=perturb)
    r = subprocess.run(CHECK + [str(fx), "--assets", str(assets_dir),
                                "--fill-rule", str(parity_dir / "fill_rule.py")], capture_output=True, text=True)
    assert r.returncode == 1
    assert "pred_cam" in r.stdout and "FAIL" in r.stdout


def test_check_parity_with_images_only_writes_outputs(assets_dir, parity_dir, tmp_path):
    def images_only(data):
        for k in list(data):
            if k != "images":
                del data[k]

    fx = _copy_fixture(parity_dir, tmp_path, edit_npz=images_only)
    out = tmp_path / "out.npz"
    r = subprocess.run(CHECK + [str(fx), "--assets", str(assets_dir), "--out", str(out),
                                "--fill-rule", str(parity_dir / "fill_rule.py")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert np.load(out)["pred_3d_vertices_fine"].shape == (2, 6890, 3)


# --- structure ----------------------------------------------------------------------------------

def _meta_model(variant, mesh):
    with torch.device("meta"):
        return FastMETROBody(fastmetro.get_variant(variant), mesh)


@pytest.mark.parametrize("variant", sorted(v for v in VARIANTS if VARIANTS[v].network == "body"))
def test_variant_is_inferred_from_its_keys(variant, assets_dir):
    model = _meta_model(variant, load_mesh_data(assets_dir))
    assert infer_variant(model.state_dict().keys()).name == variant


def test_official_parameter_counts(assets_dir):
    # published by the official code: S-R50 33,549,398; M-R50 41,368,662; L-H64 + SMPL head 163,474,208
    mesh = load_mesh_data(assets_dir)
    counts = {v: sum(p.numel() for p in _meta_model(v, mesh).parameters())
              for v in ("fastmetro-s-r50", "fastmetro-m-r50", "fastmetro-l-h64-smpl")}
    assert counts == {"fastmetro-s-r50": 33_549_398, "fastmetro-m-r50": 41_368_662,
                      "fastmetro-l-h64-smpl": 163_474_208}


def test_no_constant_buffers_in_the_state_dict(assets_dir):
    keys = _meta_model("fastmetro-s-r50", load_mesh_data(assets_dir)).state_dict().keys()
    assert not any("attention" in k or "upsample_" in k or k.startswith("pos_") for k in keys)


# --- checkpoints --------------------------------------------------------------------------------

def test_checkpoint_round_trip(filled_s_r50, assets_dir, tmp_path):
    path = tmp_path / "FastMETRO-S-R50_custom_state_dict.bin"
    torch.save(filled_s_r50.state_dict(), path)  # what the official training script writes
    loaded = fastmetro.build_model(checkpoint=path, assets_dir=assets_dir)
    assert loaded.variant.name == "fastmetro-s-r50" and loaded.pretrained
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        a, b = filled_s_r50(x), loaded(x)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_wrong_variant_is_a_clear_error(filled_s_r50, assets_dir, tmp_path):
    path = tmp_path / "ckpt.bin"
    torch.save(filled_s_r50.state_dict(), path)
    with pytest.raises(CheckpointError, match="fastmetro-s-r50"):
        fastmetro.build_model("fastmetro-m-r50", checkpoint=path, assets_dir=assets_dir)


def test_load_mismatch_names_keys_and_the_fitting_variant(filled_s_r50, assets_dir):
    sd = filled_s_r50.state_dict()
    target = _meta_model("fastmetro-m-r50", load_mesh_data(assets_dir))
    with pytest.raises(CheckpointError) as e:
        load_into(target, sd, "a.bin")
    msg = str(e.value)
    assert "missing keys: transformer_1.decoder.layers.1." in msg
    assert "fits the variant 'fastmetro-s-r50'" in msg
    sd = dict(sd)
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected keys: extra.weight"):
        load_into(filled_s_r50, sd, "b.bin")


def test_corrupt_and_truncated_files_give_clear_errors(filled_s_r50, tmp_path):
    good = tmp_path / "good.bin"
    torch.save(filled_s_r50.state_dict(), good)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"<html>quota exceeded</html>")
    for bad in (truncated, garbage):
        with pytest.raises(CheckpointError, match="corrupt, truncated or not a PyTorch state_dict"):
            read_state_dict(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "missing.bin")


def test_checkpoints_with_pickled_code_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.bin"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError):
        read_state_dict(path)


def test_unknown_checkpoint_name(assets_dir):
    with pytest.raises(CheckpointError, match="known: fastmetro-s-r50-h36m"):
        fastmetro.build_model(checkpoint="fastmetro-xl", assets_dir=assets_dir)


def test_untrained_model_warns_loudly(assets_dir):
    with pytest.warns(UntrainedWeightsWarning, match="meaningless"):
        model = fastmetro.build_model("fastmetro-s-r50", assets_dir=assets_dir)
    assert model.pretrained is False


def test_weights_command_lists_registry(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    ckdir = tmp_path / "fastmetro-stream" / "checkpoints"
    ckdir.mkdir(parents=True)
    (ckdir / "FastMETRO-S-R50_3dpw_state_dict.bin").write_bytes(b"x")
    r = subprocess.run([sys.executable, "-m", "fastmetro.cli", "weights"], capture_output=True, text=True,
                       cwd=REPO, env={**env, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert "fastmetro-l-h64-smpl-3dpw" in r.stdout
    lines = {l.split()[1]: l for l in r.stdout.splitlines() if "fastmetro-" in l and len(l.split()) > 1}
    assert "missing" in lines["fastmetro-s-r50-h36m"]
    assert "missing" not in lines["fastmetro-s-r50-3dpw"]  # the file we put in the cache is found


# --- forward ------------------------------------------------------------------------------------

def test_batch_invariance(filled_s_r50):
    x = torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        alone = filled_s_r50(x[7:8])
        batch = filled_s_r50(x)
    for k in alone:
        assert (alone[k][0] - batch[k][7]).abs().max().item() < 1e-5, k


def test_smpl_head_gives_rotations(assets_dir):
    model = build("fastmetro-s-r50-smpl", assets_dir=assets_dir)
    with torch.inference_mode():
        out = model(torch.randn(3, 3, 224, 224))
    r = out["pred_rotmat"].reshape(-1, 3, 3).double()
    assert out["pred_betas"].shape == (3, 10)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand_as(r), atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(len(r), dtype=torch.float64), atol=1e-5)


def test_h36m_joints_helper(filled_s_r50):
    v = torch.randn(2, 6890, 3)
    j = filled_s_r50.h36m_joints(v)
    reg = filled_s_r50.j_regressor_h36m
    assert j.shape == (2, 17, 3)
    assert torch.allclose(j[1], reg @ v[1], atol=1e-5)
    assert len(fastmetro.H36M_JOINT_NAMES) == 17 and len(fastmetro.JOINT_NAMES) == 14


def test_fine_upsampling_equals_the_sparse_matrix(filled_s_r50, assets_dir):
    from fastmetro.assets import find_asset, read_mesh_downsampling

    u = read_mesh_downsampling(find_asset("mesh_downsampling.npz", assets_dir))["U"][0]
    x = np.random.default_rng(0).standard_normal((2, 1723, 3)).astype(np.float32)
    ours = filled_s_r50.upsample_fine(torch.from_numpy(x)).numpy()
    assert np.abs(ours - np.stack([u @ x[0], u @ x[1]])).max() < 1e-5


def test_normalize_crops():
    crops = torch.full((2, 224, 224, 3), 255, dtype=torch.uint8)
    x = fastmetro.normalize_crops(crops)
    assert x.shape == (2, 3, 224, 224)
    assert torch.allclose(x[0, :, 0, 0], (1 - torch.tensor(fastmetro.IMAGENET_MEAN)) / torch.tensor(fastmetro.IMAGENET_STD))
    with pytest.raises(ValueError):
        fastmetro.normalize_crops(torch.zeros(2, 3, 224, 224))


# --- mesh data ----------------------------------------------------------------------------------

def test_mesh_data(assets_dir):
    mesh: MeshData = load_mesh_data(assets_dir)
    assert mesh.faces.shape == (13776, 3) and mesh.faces.max() == 6889
    assert mesh.adjacency_431.shape == (431, 431) and int(mesh.adjacency_431.sum()) == 3005
    assert mesh.upsample.shape == (6890, 1723)


def test_restricted_unpickler_refuses_code():
    payload = pickle.dumps(Exception("x"), protocol=2)
    import io

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _RestrictedUnpickler(io.BytesIO(payload)).load()


def test_missing_assets_name_the_file_and_the_url(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTMETRO_ASSETS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from fastmetro import assets

    monkeypatch.setattr(assets, "download", lambda *a, **k: (_ for _ in ()).throw(AssetError("offline")))
    with pytest.raises(AssetError) as e:
        assets.find_asset("mesh_downsampling.npz", tmp_path / "nowhere")
    assert "mesh_downsampling.npz" in str(e.value) and assets.OFFICIAL_BASE_URL in str(e.value)


def test_assets_download_checks_sha256(tmp_path, assets_dir):
    from fastmetro import assets

    src = assets_dir / "J_regressor_h36m_correct.npy"
    ok = assets.download(src.as_uri(), tmp_path / "a.npy", assets.ASSET_SHA256[src.name])
    assert ok.read_bytes() == src.read_bytes()
    with pytest.raises(AssetError, match="SHA-256"):
        assets.download(src.as_uri(), tmp_path / "b.npy", "0" * 64)
    assert not (tmp_path / "b.npy").exists()
