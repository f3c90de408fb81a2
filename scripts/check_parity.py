#!/usr/bin/env python
"""Prove that our FastMETRO is the official network: same state_dict, same outputs.

    python scripts/check_parity.py FIXTURE.json [--assets DIR] [--out OUT.npz] [--fill-rule FILE] [--device cuda]

FIXTURE.json describes the official model (model_name FastMETRO-S/M/L, backbone resnet50 or hrnet-w64,
smpl_param_regressor, fill_seed, state_dict [[key, shape, dtype], ...], num_params, and "network": "hand"
for the official FastMETRO_Hand_Network; body when absent). The .npz with the same stem holds `images` and,
where given, the official outputs for them. The model is filled with the
deterministic fill rule (fill_rule.py beside the fixture unless --fill-rule says otherwise), run in eval
mode on the images, and every output present in the .npz is compared.

Mesh data: --assets DIR (the SMPL files for a body fixture, the MANO files for a hand one; a DIR without
them but with a `smpl`/`mano` folder inside or beside it is taken to mean that folder, so one --assets
serves a mixed set of fixtures); without it, the fixture's own `../../assets/smpl` or `../../assets/mano`
where that exists, else fastmetro.assets' lookup (FASTMETRO_ASSETS / FASTMETRO_MANO_ASSETS, the user
cache, download).

Exit status: 0 when the keys, shapes and parameter count agree and every output is within --tol
(default 1e-4); 1 otherwise; 2 for unusable input. --out writes our outputs (official names).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fastmetro  # noqa: E402
from fastmetro.model import variant_from_official  # noqa: E402

OUTPUTS = (
    "pred_cam", "pred_3d_joints", "pred_3d_vertices_coarse", "pred_3d_vertices_intermediate",
    "pred_3d_vertices_fine", "pred_rotmat", "pred_betas",
)


def load_fill_rule(path: Path):
    spec = importlib.util.spec_from_file_location("fill_rule", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fill_


def mesh_data_dir(given: Path | None, fixture: Path, network: str) -> Path | None:
    """The directory of the network's mesh data files (see the module docstring); None: the usual lookup."""
    kind, probe = ("mano", "mano_downsampling.npz") if network == "hand" else ("smpl", "mesh_downsampling.npz")
    if given is None:  # the layout of the shared fixtures: <root>/fixtures/parity beside <root>/assets/{smpl,mano}
        beside = fixture.resolve().parent.parent.parent / "assets" / kind
        return beside if (beside / probe).is_file() else None
    for d in (given, given / kind, given.parent / kind):
        if (d / probe).is_file():
            return d
    return given  # the lookup then names what is missing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fixture", type=Path, help="fixture JSON (the .npz beside it has the same stem)")
    ap.add_argument("--assets", type=Path, default=None,
                    help="directory of the mesh data files (SMPL for a body fixture, MANO for a hand one)")
    ap.add_argument("--out", type=Path, default=None, help="write our outputs to this .npz")
    ap.add_argument("--fill-rule", type=Path, default=None, help="fill_rule.py (default: beside the fixture)")
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs difference allowed (default 1e-4)")
    ap.add_argument("--batch", type=int, default=0, help="run the images in batches of this size (0: all)")
    ap.add_argument("--device", default="cpu", help="run the network here (cpu, cuda); outputs compared on the CPU")
    args = ap.parse_args(argv)

    try:
        spec = json.loads(args.fixture.read_text())
        npz_path = args.fixture.with_suffix(".npz")
        data = np.load(npz_path)
        images = torch.from_numpy(np.ascontiguousarray(data["images"], dtype=np.float32))
    except (OSError, ValueError, KeyError) as e:
        print(f"error: cannot read the fixture {args.fixture} and its .npz: {e}", file=sys.stderr)
        return 2
    fill_rule = args.fill_rule or args.fixture.parent / "fill_rule.py"
    if not fill_rule.is_file():
        print(f"error: fill rule {fill_rule} not found (give --fill-rule)", file=sys.stderr)
        return 2

    network = str(spec.get("network", "body")).lower()
    try:
        variant = variant_from_official(spec["model_name"], spec["backbone"], bool(spec.get("smpl_param_regressor")),
                                        network)
    except (KeyError, ValueError) as e:
        print(f"error: the fixture {args.fixture} describes no model we build: {e}", file=sys.stderr)
        return 2
    print(f"fixture {args.fixture.name}: {network} network {spec['model_name']} / {spec['backbone']} / "
          f"smpl head {bool(spec.get('smpl_param_regressor'))} -> variant {variant.name}")
    assets = mesh_data_dir(args.assets, args.fixture, network)
    if assets is not None:
        print(f"mesh data: {assets}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)
        try:
            model = fastmetro.build_model(variant.name, assets_dir=assets)
        except fastmetro.AssetError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    ok = True
    ours = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}
    theirs = {k: (tuple(shape), dtype) for k, shape, dtype in spec["state_dict"]}
    missing, extra = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
    shapes = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    for label, ks in (("missing in ours", missing), ("not in the official model", extra),
                      ("different shape or dtype", shapes)):
        if ks:
            ok = False
            print(f"KEYS {label}: {len(ks)}: " + ", ".join(ks[:8]) + (" ..." if len(ks) > 8 else ""))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"state_dict: {len(ours)} keys (official {len(theirs)}); parameters {n_params:,} "
          f"(official {spec.get('num_params', 'n/a'):,})" if "num_params" in spec else
          f"state_dict: {len(ours)} keys (official {len(theirs)}); parameters {n_params:,}")
    if "num_params" in spec and n_params != spec["num_params"]:
        ok = False
        print("PARAMETER COUNT differs")
    if not ok:
        print("FAIL: the state_dicts differ; outputs not compared")
        return 1

    load_fill_rule(fill_rule)(model, spec["fill_seed"])
    model.eval()
    if args.device != "cpu":
        model.to(args.device)
        print(f"running on {args.device}")
    step = args.batch or len(images)
    with torch.inference_mode():
        chunks = [model(images[i : i + step].to(args.device)) for i in range(0, len(images), step)]
    out = {k: torch.cat([c[k] for c in chunks]).cpu().numpy() for k in chunks[0]}

    compared = 0
    for name in OUTPUTS:
        if name not in out:
            continue
        if name not in data.files:
            print(f"  {name:32s} {str(out[name].shape):18s} (no reference)")
            continue
        ref = data[name]
        if ref.shape != out[name].shape:
            ok = False
            print(f"  {name:32s} shape {out[name].shape} != reference {ref.shape}  FAIL")
            continue
        diff = float(np.abs(out[name].astype(np.float64) - ref).max())
        compared += 1
        good = diff <= args.tol
        ok &= good
        print(f"  {name:32s} max abs diff {diff:.3e}  {'ok' if good else 'FAIL'}")
    if args.out:
        np.savez(args.out, images=images.numpy(), **out)
        print(f"wrote our outputs to {args.out}")
    if compared == 0:
        print("no reference outputs in the .npz: nothing compared")
    print("PASS" if ok else f"FAIL (tolerance {args.tol})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
