"""`fastmetro-stream export REC -o DIR --format ...`, and the pieces `run --export DIR` shares with it."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from pipeline.wire import stream_file_name

from .exporter import (FORMATS, VERTEX_OPTIONS, ExportError, ExportOptions, check_blender, export_recording,
                       parse_formats)
from .blender import BlenderFailed
from .rigs import RIGS
from .tracks import RecordingError

DEFAULT_FORMATS = ("npz", "bvh", "gltf")


def _frame_range(text: str) -> tuple:
    try:
        a, b = (int(x) if x else None for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIRST:LAST frame indices, got {text!r}") from None
    return (a or 0, b if b is not None else 2**62)


def add_export_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """The options shared by `export` and `run --export`."""
    p.add_argument(f"--{prefix}format", dest="export_formats", action="append", metavar="FMT",
                   help=f"{', '.join(FORMATS)} (repeat or comma-separate; default {','.join(DEFAULT_FORMATS)})")
    p.add_argument(f"--{prefix}vertices", dest="export_vertices", choices=VERTEX_OPTIONS, default="none",
                   help="mesh vertices in the npz files (default none)")
    p.add_argument(f"--{prefix}gltf-mesh", dest="export_gltf_mesh", action="store_true",
                   help="the mesh itself in the .glb files, one mesh per frame (about 83 KB per frame)")
    p.add_argument(f"--{prefix}body", dest="export_body", action="store_true",
                   help="each track's skinned body in the .glb and .fbx files (a .blend always has it)")
    p.add_argument(f"--{prefix}rig", dest="export_rig", choices=RIGS, default="unity",
                   help="bone names and rest pose of bvh/gltf/fbx/blend: unity (default), mixamo, ue5, smpl")
    p.add_argument(f"--{prefix}video", dest="export_video", metavar="FILE",
                   help="blend: the source video, shown behind the characters in the camera view")
    p.add_argument(f"--{prefix}frames", dest="export_frames", type=_frame_range, metavar="FIRST:LAST",
                   help="only these source frames (inclusive)")
    p.add_argument(f"--{prefix}world", dest="export_world", action=argparse.BooleanOptionalAction, default=None,
                   help="the world frame (floor y = 0, metres), foot contact and foot locking, camera.json beside "
                        "tracks.json (default: when the recording can be calibrated; --no-world: the camera frame)")
    p.add_argument(f"--{prefix}camera", dest="export_camera", metavar="FILE",
                   help="the camera over the floor (a camera.json of `fastmetro-stream calibrate`) instead of "
                        "calibrating from the recording")


def options_from(args: argparse.Namespace) -> ExportOptions:
    formats = parse_formats(args.export_formats or DEFAULT_FORMATS)
    check_blender(formats)
    return ExportOptions(formats=formats,
                         vertices=args.export_vertices, gltf_mesh=args.export_gltf_mesh, frames=args.export_frames,
                         stream=getattr(args, "stream", None), body=args.export_body, video=args.export_video,
                         rig=args.export_rig, world=getattr(args, "export_world", None),
                         camera=getattr(args, "export_camera", None))


def stream_jobs(out_dir, options: ExportOptions, stream_ids) -> list:
    """`run --export DIR` of several streams: (DIR/<id>, options for that stream) per stream id, the id made
    one safe file name (`wire.stream_file_name`: an id is never a path, ".." stays inside DIR)."""
    return [(Path(out_dir) / stream_file_name(sid), dataclasses.replace(options, stream=sid)) for sid in stream_ids]


def export_and_report(recording, out_dir, options: ExportOptions, show_progress: bool = True) -> int:
    """Run an export and print its outcome; 0 done, 1 a problem the user can fix (one line on stderr)."""
    last = [0.0]

    def progress(frames: int, person_frames: int, tracks: int) -> None:
        if show_progress and time.monotonic() - last[0] > 1.0:
            last[0] = time.monotonic()
            print(f"\rexport: {frames} frames, {person_frames} person-frames, {tracks} tracks written",
                  end="", file=sys.stderr, flush=True)

    try:
        summary = export_recording(recording, out_dir, options, progress)
    except (ExportError, RecordingError, BlenderFailed) as e:
        print(f"\nerror: export: {e}" if last[0] else f"error: export: {e}", file=sys.stderr)
        return 1
    if last[0]:
        print(file=sys.stderr)
    if summary.note:
        print(f"warning: {summary.note}", file=sys.stderr)
    for line in summary.warnings:
        print(f"warning: {line}", file=sys.stderr)
    rate = summary.person_frames / summary.seconds if summary.seconds > 0 else float("inf")
    print(f"export: {len(summary.tracks)} tracks, {summary.files} files in {summary.directory} "
          f"({summary.frames} frames, {summary.person_frames} person-frames, {rate:.0f} person-frames/s); "
          f"index: {summary.directory / 'tracks.json'}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    try:
        options = options_from(args)
    except ExportError as e:
        print(f"error: export: {e}", file=sys.stderr)
        return 2
    return export_and_report(args.recording, args.output, options, show_progress=sys.stderr.isatty())


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("export", help="a recording to per-track files: npz, BVH, glTF (.glb), OBJ, FBX; a .blend scene")
    p.add_argument("recording", help="a --record file")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the files (created)")
    p.add_argument("--stream", help="which stream of the recording (default: the first with frames)")
    add_export_options(p)
    p.set_defaults(func=export_command)


