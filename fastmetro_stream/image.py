"""`fastmetro-stream image PICTURE -o out.png [--obj DIR]`: detect, infer and draw one picture (docs/render.md).

A small application of its own (the detect stage's tracker, the network, the crop contract, the infer
stage's hand pass, the drawing), so it sits in the composition layer beside `run`. Hands follow
`infer.hands` as in a run (`--set infer.hands=true`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from draw.obj import write_obj
from draw.raster import MeshRenderer, RenderError, mesh_items
from fastmetro.hand_crops import mirror_faces


def run_image(picture: Path, output: Path, obj_dir: Optional[Path] = None, config=None, seed: int = 0) -> dict:
    """Detect, infer and draw one picture; `config` is the root Config (its detect and infer sections).
    Without a checkpoint the untrained weights are drawn with torch's generator seeded by `seed`, so the
    same command gives the same picture. With hands on (`infer.hands`, the infer stage's rule when unset)
    each visible hand goes through the infer stage's own hand pass (stages/infer_hands.py) and is drawn
    like the overlay draws it, and written as an OBJ with the bodies'.

    Returns {"persons": n, "pretrained": bool, "objs": [paths], "unplaced": [track ids whose camera scale
    was not positive: drawn at a point far away], "hands_on": bool, "hands_pretrained": bool or None,
    "hands": [(track id, side) drawn], "hands_skipped": [(track id, side, reason)]}."""
    import torch

    import fastmetro
    from fastmetro import camera
    from fastmetro.assets import load_hand_faces
    from fastmetro.crops import make_crops, place
    from fastmetro.engine import Engine
    from pipeline.messages import Frame, MeshFrame, PersonMesh
    from pipeline.subscriber import person_data
    from stages.infer_hands import build_hand_pass, hands_on
    from stages.sources import IMAGE_FORMATS, read_image
    from stages.tracking import PersonTracker

    from .config import Config

    picture, output = Path(picture), Path(output)
    if not picture.is_file():
        raise RenderError(f"picture {picture} not found")
    rgb = read_image(picture)
    if rgb is None:
        raise RenderError(f"picture {picture} cannot be read as an image ({IMAGE_FORMATS})")
    if not output.parent.is_dir():
        raise RenderError(f"output directory {output.parent} does not exist (-o {output})")
    config = config if config is not None else Config()
    persons, _ = PersonTracker(config.detect).update(rgb)
    c = config.infer
    if c.checkpoint is None:
        torch.manual_seed(seed)
    engine = Engine(c.engine_options())
    with_hands = hands_on(c, engine.device)
    hand_pass = build_hand_pass(c, lambda name, n=1: None) if with_hands else None
    h, w = rgb.shape[:2]
    focal = float(c.focal or camera.default_focal((w, h)))
    mesh = MeshFrame(Frame(picture.stem, 0, None, -1, h, w), [], focal=focal)
    if persons:
        r = engine(make_crops(rgb, persons))
        cam_t, joints2d = place(r, persons, (w, h), focal)
        mesh.persons = [PersonMesh(
            person=p, cam=r["cam"][i], cam_t=cam_t[i].astype(np.float32), joints3d=r["joints3d"][i],
            joints_h36m=r["joints_h36m"][i], joints2d=joints2d[i].astype(np.float32), vertices=r["vertices"][i])
            for i, p in enumerate(persons)]
        if hand_pass is not None:
            hand_pass.run([mesh], [rgb])
    faces = fastmetro.load_mesh_data(c.assets_dir).faces
    hand_faces = load_hand_faces(c.hand_assets_dir) if with_hands else None
    unplaced = [pm.person.track_id for pm in mesh.persons if not pm.cam[0] > 0]  # no camera has it in front
    hands = [(pm.person.track_id, side) for pm in mesh.persons for side in sorted(pm.hands)]
    skipped = [(pm.person.track_id, side, why) for pm in mesh.persons for side, why in sorted(pm.hand_skips.items())]
    objs = []
    if obj_dir is not None and mesh.persons:
        obj_dir = Path(obj_dir)
        obj_dir.mkdir(parents=True, exist_ok=True)
        for pm in mesh.persons:
            path = obj_dir / f"{picture.stem}_id{pm.person.track_id}.obj"
            write_obj(path, pm.vertices, faces, pm.cam_t)
            objs.append(path)
            for side, hand in sorted(pm.hands.items()):  # a left hand is a mirror image: winding reversed
                path = obj_dir / f"{picture.stem}_id{pm.person.track_id}_{side}_hand.obj"
                write_obj(path, hand.vertices, mirror_faces(hand_faces) if side == "left" else hand_faces, hand.cam_t)
                objs.append(path)
    items = mesh_items([person_data(pm) for pm in mesh.persons], {}, (), hand_faces)
    out = MeshRenderer(faces).draw(rgb, items, focal)
    if not cv2.imwrite(str(output), np.ascontiguousarray(out[..., ::-1])):
        raise RenderError(f"cannot write {output}: use a .png or .jpg name in a writable directory")
    return {"persons": len(persons), "pretrained": engine.pretrained, "objs": objs, "unplaced": unplaced,
            "hands_on": with_hands, "hands_pretrained": hand_pass.engine.pretrained if hand_pass else None,
            "hands": hands, "hands_skipped": skipped}


def image_command(args: argparse.Namespace) -> int:
    import fastmetro

    from .config import ConfigError, load_config

    overrides = list(args.overrides)
    if args.checkpoint:
        overrides.append(f"infer.checkpoint={args.checkpoint}")
    if args.detector:
        overrides.append(f"detect.detector={args.detector}")
    try:
        config = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        result = run_image(args.picture, args.output, args.obj, config, seed=args.seed)
    except (RenderError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not result["pretrained"]:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]WARNING: {fastmetro.UNTRAINED_MESSAGE}[/]")
    if result["hands_pretrained"] is False:
        from rich.console import Console

        Console(stderr=True).print("[bold red]WARNING: the hand network runs UNTRAINED weights (set "
                                   "infer.hand_checkpoint): its hand meshes are meaningless[/]")
    hands = ""
    if result["hands_on"]:
        why = {}
        for _, _, reason in result["hands_skipped"]:
            why[reason] = why.get(reason, 0) + 1
        hands = f", {len(result['hands'])} hand(s)" + (
            f" ({', '.join(f'{n} skipped: {r}' for r, n in sorted(why.items()))})" if why else "")
    print(f"wrote {args.output}: {result['persons']} person(s){hands}"
          + (f"; meshes: {', '.join(str(p) for p in result['objs'])}" if result["objs"] else ""))
    if result["unplaced"]:
        print(f"warning: the network's camera scale is not positive for ID {result['unplaced']}: "
              "their meshes sit far away (a point on the picture)", file=sys.stderr)
    if not result["persons"]:
        print("no person found in the picture (try --detector hog, or a picture with whole, upright people)",
              file=sys.stderr)
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("image", help="detect, infer and draw the meshes of one picture (PNG, OBJ)")
    p.add_argument("picture", type=Path, help="an image file (JPEG, PNG, ...)")
    p.add_argument("-o", "--output", required=True, type=Path, help="overlay picture to write (.png)")
    p.add_argument("--obj", type=Path, default=None, metavar="DIR", help="also write one OBJ mesh per person (and per hand, with hands on) into DIR")
    p.add_argument("--checkpoint", help="FastMETRO checkpoint: a name from `weights` or a file path")
    p.add_argument("--detector", choices=["auto", "yolo", "hog"], default=None,
                   help="person detector (default: the config's detect.detector, auto)")
    p.add_argument("--config", "-c", metavar="FILE", help="YAML settings: its detect and infer sections are used")
    p.add_argument("--seed", type=int, default=0,
                   help="without a checkpoint: seed of the untrained weights, for a repeatable picture (default 0)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override one setting, e.g. --set infer.focal=1200 or --set infer.hands=true (repeatable)")
    p.set_defaults(func=image_command)
