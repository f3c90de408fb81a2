"""The FastMETRO hand network: parity with the official FastMETRO_Hand_Network, MANO data, checkpoints."""
from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import fastmetro
from fastmetro import CheckpointError, UntrainedWeightsWarning
from fastmetro.assets import find_asset, load_hand_mesh_data, read_mesh_downsampling
from fastmetro.checkpoints import CHECKPOINTS, infer_variant, load_into
from fastmetro.model import VARIANTS, FastMETROBody, FastMETROHand, network_class

REPO = Path(__file__).resolve().parents[1]
CHECK = [sys.executable, str(REPO / "scripts" / "check_parity.py")]
HAND_FIXTURE = "fastmetro_hand_s_r50"
HAND_VARIANTS = sorted(v for v in VARIANTS if VARIANTS[v].network == "hand")


def build(variant="fastmetro-hand-s-r50", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        return fastmetro.build_model(variant, **kw)


@pytest.fixture(scope="module")
def filled_hand(mano_dir, parity_dir):
    sys.path.insert(0, str(parity_dir))
    from fill_rule import fill_

    return fill_(build(assets_dir=mano_dir), 11).eval()


def _hand_fixture(parity_dir, tmp_path, edit_json=None, edit_npz=None):
    spec = json.loads((parity_dir / f"{HAND_FIXTURE}.json").read_text())
    data = dict(np.load(parity_dir / f"{HAND_FIXTURE}.npz"))
    if edit_json:
        edit_json(spec)
    if edit_npz:
        edit_npz(data)
    (tmp_path / "hx.json").write_text(json.dumps(spec))
    np.savez(tmp_path / "hx.npz", **data)
    return tmp_path / "hx.json"


def _check(fixture, mano_dir, parity_dir, *extra):
    return subprocess.run(CHECK + [str(fixture), "--assets", str(mano_dir),
                                   "--fill-rule", str(parity_dir / "fill_rule.py"), *extra],
                          capture_output=True, text=True)


# --- parity -------------------------------------------------------------------------------------

def test_check_parity_passes_on_the_shared_hand_fixture(mano_dir, parity_dir, tmp_path):
    out = tmp_path / "ours.npz"
    r = _check(parity_dir / f"{HAND_FIXTURE}.json", mano_dir, parity_dir, "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "variant fastmetro-hand-s-r50" in r.stdout and "PASS" in r.stdout
    ref, ours = np.load(parity_dir / f"{HAND_FIXTURE}.npz"), np.load(out)
    names = ("pred_cam", "pred_3d_joints", "pred_3d_vertices_coarse", "pred_3d_vertices_fine")
    for name in names:  # every official output compared and written under its official name
        assert f"{name} " in r.stdout
        assert ours[name].shape == ref[name].shape
        assert np.abs(ours[name] - ref[name]).max() < 1e-4, name
    assert "pred_3d_vertices_intermediate" not in ours.files  # the hand network has none


def test_check_parity_finds_the_mano_files_from_a_parent_directory(mano_dir, parity_dir, tmp_path):
    # one --assets for a mixed set of body and hand fixtures: the folder holding smpl/ and mano/
    r = _check(parity_dir / f"{HAND_FIXTURE}.json", mano_dir.parent, parity_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"mesh data: {mano_dir}" in r.stdout


def test_check_parity_fails_on_a_hand_key_mismatch(mano_dir, parity_dir, tmp_path):
    def more_joints(spec):  # the hand fixture with a body-sized joint table: shapes differ
        for entry in spec["state_dict"]:
            if entry[0] == "joint_token_embed.weight":
                entry[1] = [14, 512]

    r = _check(_hand_fixture(parity_dir, tmp_path, edit_json=more_joints), mano_dir, parity_dir)
    assert r.returncode == 1
    assert "joint_token_embed.weight" in r.stdout and "FAIL" in r.stdout


def test_check_parity_fails_when_a_hand_output_differs(mano_dir, parity_dir, tmp_path):
    def perturb(data):
        data["pred_3d_vertices_fine"] = data["pred_3d_vertices_fine"] + 2e-4

    r = _check(_hand_fixture(parity_dir, tmp_path, edit_npz=perturb), mano_dir, parity_dir)
    assert r.returncode == 1
    assert "pred_3d_vertices_fine" in r.stdout and "FAIL" in r.stdout


def test_check_parity_reads_any_hand_fixture_of_the_form(mano_dir, parity_dir, tmp_path):
    # another size of the same form (what the kept fixtures vary): FastMETRO-M, images only, so our
    # outputs are written with the official names and shapes and nothing is compared
    spec = json.loads((parity_dir / f"{HAND_FIXTURE}.json").read_text())
    model = build("fastmetro-hand-m-r50", assets_dir=mano_dir)
    spec["model_name"] = "FastMETRO-M"
    spec["state_dict"] = [[k, list(v.shape), str(v.dtype).replace("torch.", "")]
                          for k, v in sorted(model.state_dict().items())]
    spec["num_params"] = sum(p.numel() for p in model.parameters())
    data = {"images": np.load(parity_dir / f"{HAND_FIXTURE}.npz")["images"][:1]}
    (tmp_path / "m.json").write_text(json.dumps(spec))
    np.savez(tmp_path / "m.npz", **data)
    out = tmp_path / "out.npz"
    r = _check(tmp_path / "m.json", mano_dir, parity_dir, "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "variant fastmetro-hand-m-r50" in r.stdout
    got = np.load(out)
    assert got["pred_3d_joints"].shape == (1, 21, 3) and got["pred_3d_vertices_fine"].shape == (1, 778, 3)


# --- structure ----------------------------------------------------------------------------------

def _meta_hand(variant, mano_dir):
    mesh = load_hand_mesh_data(mano_dir)  # (outside: the cache must not hold meta tensors)
    with torch.device("meta"):
        return FastMETROHand(fastmetro.get_variant(variant), mesh)


def _meta_body(assets_dir):
    mesh = fastmetro.load_mesh_data(assets_dir)
    with torch.device("meta"):
        return FastMETROBody(fastmetro.get_variant("fastmetro-s-r50"), mesh)


@pytest.mark.parametrize("variant", HAND_VARIANTS)
def test_hand_variant_is_inferred_from_its_keys(variant, mano_dir):
    model = _meta_hand(variant, mano_dir)
    assert infer_variant(model.state_dict().keys()).name == variant
    assert network_class(VARIANTS[variant]) is FastMETROHand


def test_hand_shares_the_body_network_and_differs_only_on_the_mesh_side(mano_dir, assets_dir):
    hand = _meta_hand("fastmetro-hand-s-r50", mano_dir)
    body = _meta_body(assets_dir)
    h, b = hand.state_dict(), body.state_dict()
    assert set(b) - set(h) == {"coarse2intermediate_upsample.weight", "coarse2intermediate_upsample.bias"}
    assert set(h) <= set(b)
    differ = sorted(k for k in h if h[k].shape != b[k].shape)
    assert differ == ["joint_token_embed.weight", "vertex_token_embed.weight"]
    assert h["joint_token_embed.weight"].shape == (21, 512) and h["vertex_token_embed.weight"].shape == (195, 512)
    # the official parameter count of the shared fixture's network
    assert sum(p.numel() for p in hand.parameters()) == 32_687_814


def test_hand_attention_mask_follows_the_mano_adjacency(filled_hand, mano_dir):
    allowed = filled_hand.attention_allowed
    assert allowed.shape == (216, 216)
    assert allowed[:21].all() and allowed[:, :21].all()  # joints see and are seen by everything
    adj = load_hand_mesh_data(mano_dir).adjacency_195
    assert torch.equal(allowed[21:, 21:], adj) and int(adj.sum()) == 1331 and adj.diagonal().all()


# --- MANO data ----------------------------------------------------------------------------------

def test_hand_mesh_data(mano_dir):
    mesh = load_hand_mesh_data(mano_dir)
    assert mesh.upsample.shape == (778, 195)
    assert mesh.faces.shape == (1538, 3) and mesh.faces.min() == 0 and mesh.faces.max() == 777


def test_hand_upsampling_equals_the_sparse_matrix(filled_hand, mano_dir):
    u = read_mesh_downsampling(find_asset("mano_downsampling.npz", mano_dir))["U"][0]
    x = np.random.default_rng(0).standard_normal((2, 195, 3)).astype(np.float32)
    ours = filled_hand.upsample_fine(torch.from_numpy(x)).numpy()
    assert np.abs(ours - np.stack([u @ x[0], u @ x[1]])).max() < 1e-5


def test_mano_files_are_pinned_and_looked_up_on_their_own(mano_dir, tmp_path, monkeypatch):
    from fastmetro import assets

    for name, digest in assets.MANO_SHA256.items():
        assert assets.sha256_of(mano_dir / name) == digest, name
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("FASTMETRO_ASSETS", str(tmp_path / "smpl-only"))
    monkeypatch.setenv("FASTMETRO_MANO_ASSETS", str(mano_dir))
    assert assets.find_asset("mano_downsampling.npz", fetch=False) == mano_dir / "mano_downsampling.npz"
    monkeypatch.delenv("FASTMETRO_MANO_ASSETS")
    with pytest.raises(assets.AssetError, match="FASTMETRO_MANO_ASSETS"):
        assets.find_asset("mano_downsampling.npz", fetch=False)


def test_mano_download_is_checked_against_the_pin(mano_dir, tmp_path):
    from fastmetro import assets

    src = mano_dir / "mano_195_adjmat_size.pt"
    got = assets.download(src.as_uri(), tmp_path / src.name, assets.MANO_SHA256[src.name])
    assert got.read_bytes() == src.read_bytes()
    with pytest.raises(assets.AssetError, match="SHA-256"):
        assets.download((mano_dir / "mano_195_adjmat_values.pt").as_uri(), tmp_path / "x.pt",
                        assets.MANO_SHA256[src.name])


# --- checkpoints --------------------------------------------------------------------------------

def test_freihand_checkpoint_is_in_the_registry():
    c = CHECKPOINTS["fastmetro-hand-l-h64-freihand"]
    assert c.variant == "fastmetro-hand-l-h64" and c.dataset == "FreiHAND" and c.pa_mpjpe_mm == 6.5
    assert c.filename == "FastMETRO-L-H64_freihand_state_dict.bin"


def test_hand_checkpoint_round_trip_reads_the_variant_off_the_keys(filled_hand, mano_dir, tmp_path):
    path = tmp_path / "FastMETRO-S-R50_freihand_custom_state_dict.bin"
    torch.save(filled_hand.state_dict(), path)
    loaded = fastmetro.build_model(checkpoint=path, assets_dir=mano_dir)
    assert isinstance(loaded, FastMETROHand) and loaded.variant.name == "fastmetro-hand-s-r50" and loaded.pretrained
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        a, b = filled_hand(x), loaded(x)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_hand_checkpoint_into_a_body_variant_is_a_clear_error(filled_hand, mano_dir, tmp_path):
    path = tmp_path / "hand.bin"
    torch.save(filled_hand.state_dict(), path)
    with pytest.raises(CheckpointError, match="fastmetro-hand-s-r50"):
        fastmetro.build_model("fastmetro-s-r50", checkpoint=path, assets_dir=mano_dir)


def test_body_weights_do_not_load_into_a_hand_network(filled_hand, assets_dir):
    body = _meta_body(assets_dir)
    with pytest.raises(CheckpointError) as e:
        load_into(filled_hand, body.state_dict(), "body.bin")
    msg = str(e.value)
    assert "unexpected keys: coarse2intermediate_upsample" in msg and "fits the variant 'fastmetro-s-r50'" in msg
    assert "wrong shapes: joint_token_embed.weight" in msg


# --- forward ------------------------------------------------------------------------------------

def test_hand_batch_invariance(filled_hand):
    x = torch.randn(6, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        alone, batch = filled_hand(x[4:5]), filled_hand(x)
    assert set(batch) == {"pred_cam", "pred_3d_joints", "pred_3d_vertices_coarse", "pred_3d_vertices_fine"}
    for k in alone:
        assert (alone[k][0] - batch[k][4]).abs().max().item() < 1e-5, k


def test_engine_runs_the_hand_network(filled_hand):
    from fastmetro.engine import Engine, EngineError, EngineOptions

    engine = Engine(EngineOptions(device="cpu", max_batch=2), model=copy.deepcopy(filled_hand))
    crops = np.random.default_rng(2).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    out = engine(crops)
    assert out["vertices"].shape == (3, 778, 3) and out["joints3d"].shape == (3, 21, 3)
    assert "joints_h36m" not in out
    with torch.inference_mode():
        ref = filled_hand(fastmetro.normalize_crops(torch.from_numpy(crops)))["pred_3d_vertices_fine"].numpy()
    assert np.abs(out["vertices"] - ref).max() < 1e-4  # batch norm folded: equal up to round-off
    assert engine(crops[:0])["vertices"].shape == (0, 778, 3)
    if importlib.util.find_spec("onnxruntime"):
        with pytest.raises(EngineError, match="body networks only"):
            Engine(EngineOptions(device="cpu", backend="onnxruntime"), model=copy.deepcopy(filled_hand))


def test_hand_joint_names():
    assert len(fastmetro.HAND_JOINT_NAMES) == 21 and fastmetro.HAND_JOINT_NAMES[0] == "Wrist"
