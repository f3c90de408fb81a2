"""`fastmetro-stream`: run the pipeline, and the tools around it.

    fastmetro-stream run [--config FILE] [--source [ID=]S ...] [--record FILE] [--set key=value ...]
    fastmetro-stream config [--config FILE] [--set ...]     print the effective settings
    fastmetro-stream weights                                 official checkpoints on this machine
    fastmetro-stream listen | replay FILE | keys DIR         see tools/stream.py
    fastmetro-stream render REC --video V -o out.mp4          see tools/render.py
    fastmetro-stream image PICTURE -o out.png                see fastmetro_stream/image.py
    fastmetro-stream view                                    see tools/viewer.py
    fastmetro-stream vmc                                     avatars over the VMC protocol, see tools/vmc.py
    fastmetro-stream export REC -o DIR --format npz,bvh,gltf,obj     per-track files, see tools/export/
    fastmetro-stream calibrate REC_OR_SOURCE [-o camera.json]  the camera over the floor, see docs/world.md
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE", help="YAML settings (see configs/)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override one setting, e.g. --set detect.detector=hog (repeatable)")
    p.add_argument("--source", "-s", action="append", default=[], metavar="[ID=]SOURCE",
                   help="video file, image folder, camera (/dev/video0 or 0), rtsp/http URL; repeat it for "
                        "several sources in one run, each its own stream (ids cam0, cam1, ... or ID=SOURCE)")
    p.add_argument("--checkpoint", help="FastMETRO checkpoint: a name from `weights` or a file path")
    p.add_argument("--record", metavar="FILE", help="also write every published message to FILE")
    p.add_argument("--overlay", metavar="FILE.mp4", help="also write the video with the meshes drawn over it")
    p.add_argument("--mode", choices=["auto", "live", "offline"])


def _load(args):
    from .config import load_config, parse_sources

    overrides = list(args.overrides)
    if args.checkpoint:
        overrides.append(f"infer.checkpoint={args.checkpoint}")
    if args.record:
        overrides.append(f"publish.record={args.record}")
    if args.overlay:
        overrides.append(f"overlay.path={args.overlay}")
    if getattr(args, "export", None) and not args.record:  # run --export DIR: record into DIR, then export
        overrides.append(f"publish.record={Path(args.export) / 'run.msgpack'}")
    return load_config(args.config, overrides, mode=args.mode, **parse_sources(args.source))


def run_command(args) -> int:
    from .api import run
    from .config import ConfigError

    export = None
    try:
        if args.export:
            from tools.export.cli import options_from
            from tools.export.exporter import ExportError, output_dir

            try:
                export = (output_dir(args.export), options_from(args))
            except ExportError as e:
                print(f"error: export: {e}", file=sys.stderr)
                return 2
        config = _load(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        summary = run(config, export=export)
    except Exception as e:  # a problem found before the stages start (e.g. a missing file)
        logging.getLogger("fastmetro-stream").debug("run failed", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        return 1
    return summary.exit_code


def config_command(args) -> int:
    from .config import ConfigError

    try:
        config = _load(args).resolved()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastmetro-stream", description="Video to per-person 3D human meshes (FastMETRO), streamed over ZeroMQ.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the pipeline (default source: the shipped sample)")
    _add_config_args(p)
    from tools.export.cli import add_export_options

    p.add_argument("--export", metavar="DIR", help="when the run ends, export its recording to per-track files "
                   "in DIR (see `export`; records to DIR/run.msgpack unless --record is given)")
    add_export_options(p, prefix="export-")
    p.set_defaults(func=run_command)

    p = sub.add_parser("config", help="print the effective settings of a run")
    _add_config_args(p)
    p.set_defaults(func=config_command)

    from fastmetro.cli import add_commands as add_weights
    from tools.render import add_commands as add_render
    from tools.stream import add_commands as add_stream
    from tools.viewer import add_commands as add_viewer

    from .image import add_commands as add_image

    add_weights(sub)
    add_stream(sub)
    add_render(sub)
    add_image(sub)
    add_viewer(sub)
    from tools.vmc import add_commands as add_vmc

    add_vmc(sub)
    from tools.export.cli import add_commands as add_export

    add_export(sub)
    from tools.map import add_commands as add_map

    add_map(sub)
    from .batch import add_commands as add_batch

    add_batch(sub)
    from .calibrate import add_commands as add_calibrate

    add_calibrate(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
