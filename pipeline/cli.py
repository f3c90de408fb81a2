"""`fastmetro-stream`: run the pipeline, and the tools around it.

    fastmetro-stream run [--config FILE] [--source S] [--record FILE] [--set key=value ...]
    fastmetro-stream config [--config FILE] [--set ...]     print the effective settings
    fastmetro-stream weights                                 official checkpoints on this machine
    fastmetro-stream listen | replay FILE | keys DIR         see stages/publish.py
    fastmetro-stream render REC --video V -o out.mp4 | image PICTURE -o out.png   see pipeline/render.py
"""
from __future__ import annotations

import argparse
import logging
import sys

import yaml


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE", help="YAML settings (see configs/)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override one setting, e.g. --set detect.detector=hog (repeatable)")
    p.add_argument("--source", "-s", help="video file, image folder, camera (/dev/video0 or 0), rtsp/http URL")
    p.add_argument("--checkpoint", help="FastMETRO checkpoint: a name from `weights` or a file path")
    p.add_argument("--record", metavar="FILE", help="also write every published message to FILE")
    p.add_argument("--overlay", metavar="FILE.mp4", help="also write the video with the meshes drawn over it")
    p.add_argument("--mode", choices=["auto", "live", "offline"])


def _load(args):
    from .config import load_config

    overrides = list(args.overrides)
    if args.checkpoint:
        overrides.append(f"infer.checkpoint={args.checkpoint}")
    if args.record:
        overrides.append(f"publish.record={args.record}")
    if args.overlay:
        overrides.append(f"publish.overlay={args.overlay}")
    return load_config(args.config, overrides, source=args.source, mode=args.mode)


def run_command(args) -> int:
    from .api import run
    from .config import ConfigError

    try:
        config = _load(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        summary = run(config)
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
    p.set_defaults(func=run_command)

    p = sub.add_parser("config", help="print the effective settings of a run")
    _add_config_args(p)
    p.set_defaults(func=config_command)

    from fastmetro.cli import add_commands as add_weights
    from stages.publish import add_commands as add_publish

    add_weights(sub)
    add_publish(sub)
    from .render import add_commands as add_render

    add_render(sub)
    from .viewer import add_commands as add_viewer

    add_viewer(sub)
    from .batch import add_commands as add_batch

    add_batch(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
