"""`fastmetro-stream image PICTURE -o out.png [--obj DIR]`: detect, infer and draw one picture (docs/render.md).

A small application of its own (the detect stage's tracker, the network, the crop contract, the drawing),
so it sits in the composition layer beside `run`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from draw.obj import write_obj
from draw.raster import MeshItem, MeshRenderer, RenderError


def run_image(picture: Path, output: Path, obj_dir: Optional[Path] = None, config=None, seed: int = 0) -> dict:
    """Detect, infer and draw one picture; `config` is the root Config (its detect and infer sections).
    Without a checkpoint the untrained weights are drawn with torch's generator seeded by `seed`, so the
    same command gives the same picture. Returns {"persons": n, "pretrained": bool, "objs": [paths],
    "unplaced": [track ids whose camera scale was not positive: drawn at a point far away]}."""
    import torch

    import fastmetro
    from fastmetro import camera
    from fastmetro.crops import make_crops, place
    from fastmetro.engine import Engine
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
    h, w = rgb.shape[:2]
    focal = c.focal or camera.default_focal((w, h))
    items, objs, unplaced = [], [], []
    faces = fastmetro.load_mesh_data(c.assets_dir).faces
    if persons:
        r = engine(make_crops(rgb, persons))
        cam_t, _ = place(r, persons, (w, h), focal)
        for i, p in enumerate(persons):
            items.append(MeshItem(r["vertices"][i], cam_t[i], p.track_id, p.box))
            if not r["cam"][i][0] > 0:  # no perspective camera has the body in front of it
                unplaced.append(p.track_id)
        if obj_dir is not None:
            obj_dir = Path(obj_dir)
            obj_dir.mkdir(parents=True, exist_ok=True)
            for i, p in enumerate(persons):
                path = obj_dir / f"{picture.stem}_id{p.track_id}.obj"
                write_obj(path, r["vertices"][i], faces, cam_t[i])
                objs.append(path)
    out = MeshRenderer(faces).draw(rgb, items, focal)
    if not cv2.imwrite(str(output), np.ascontiguousarray(out[..., ::-1])):
        raise RenderError(f"cannot write {output}: use a .png or .jpg name in a writable directory")
    return {"persons": len(persons), "pretrained": engine.pretrained, "objs": objs, "unplaced": unplaced}


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
    print(f"wrote {args.output}: {result['persons']} person(s)"
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
    p.add_argument("--obj", type=Path, default=None, metavar="DIR", help="also write one OBJ mesh per person into DIR")
    p.add_argument("--checkpoint", help="FastMETRO checkpoint: a name from `weights` or a file path")
    p.add_argument("--detector", choices=["auto", "yolo", "hog"], default=None,
                   help="person detector (default: the config's detect.detector, auto)")
    p.add_argument("--config", "-c", metavar="FILE", help="YAML settings: its detect and infer sections are used")
    p.add_argument("--seed", type=int, default=0,
                   help="without a checkpoint: seed of the untrained weights, for a repeatable picture (default 0)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override one setting, e.g. --set infer.focal=1200 (repeatable)")
    p.set_defaults(func=image_command)
