"""`fastmetro-stream map REC -o map.png`: a bird's-eye floor plan in metres of every track's path in a recording,
with the camera's place and field of view (draw/floor.py). The camera over the floor: `--camera FILE`, else
the recording's own fixed camera, else calibrated from the persons' boxes (as `export` does), else the run's
online calibration.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from draw.floor import floor_plan, write_png
from fastmetro.world import camera_to_world
from pipeline.wire import WireError

SMOOTH = 5  # frames in the moving average of each drawn path (the published depth is noisy)
BREAK_S = 1.0  # a track unseen this long: its path is drawn in two pieces


class MapError(ValueError):
    """Something the user can fix (one line)."""


def floor_points(boxes: np.ndarray, world) -> np.ndarray:
    """(N, 2) world (x, z) where the bottom centres of boxes (N, 4) meet the floor (NaN above the horizon)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    w, h = world.frame_wh
    rays = np.stack([((b[:, 0] + b[:, 2]) / 2 - w / 2) / world.focal, (b[:, 3] - h / 2) / world.focal,
                     np.ones(len(b))], 1) @ world.camera.world_from_camera()[:3, :3].T
    down = rays[:, 1] < -1e-9
    s = np.where(down, world.camera.height / -np.where(down, rays[:, 1], -1.0), np.nan)
    return rays[:, [0, 2]] * s[:, None]


def track_paths(recording, world, stream: Optional[str] = None, source: str = "joints") -> dict[int, list[np.ndarray]]:
    """Each track's floor path: pieces of (N, 2) world (x, z) points, a piece per stretch seen (a track lost
    and its id used again, or unseen over BREAK_S seconds, starts a new piece). source "joints": its pelvis
    (joints_h36m + cam_t at the camera's focal); "boxes": its box's bottom centre cast onto the floor (what
    the calibration itself trusts; for untrained weights, whose meshes are meaningless)."""
    from tools.export.tracks import read_frames

    focal = world.focal
    pieces: dict[int, list[list]] = {}
    last: dict[int, float] = {}
    for frame in read_frames(recording, stream):
        t = frame.pts if frame.pts is not None else frame.index / 30.0
        k = focal / frame.focal if frame.focal else 1.0
        for p in frame.persons:
            if p.predicted or p.state == "coasting":
                continue
            if source == "boxes":
                xz = floor_points(p.box, world)[0]
                if not np.all(np.isfinite(xz)):
                    continue
            else:
                pelvis = np.asarray(p.joints_h36m[0], np.float64) + np.asarray(p.cam_t, np.float64) * [1.0, 1.0, k]
                xz = camera_to_world(pelvis, world.camera)[[0, 2]]
            runs = pieces.setdefault(p.track_id, [[]])
            if runs[-1] and t - last[p.track_id] > BREAK_S:
                runs.append([])
            runs[-1].append(xz)
            last[p.track_id] = t
        for tid in frame.lost:
            if tid in pieces and pieces[tid][-1]:
                pieces[tid].append([])
    out = {}
    for tid, runs in pieces.items():
        smooth = []
        for r in runs:
            if not r:
                continue
            a = np.array(r)
            if len(a) >= SMOOTH:
                kernel = np.ones(SMOOTH) / SMOOTH
                pad = np.pad(a, ((SMOOTH // 2, SMOOTH // 2), (0, 0)), mode="edge")
                a = np.stack([np.convolve(pad[:, i], kernel, mode="valid") for i in range(2)], 1)
            smooth.append(a)
        if smooth:
            out[tid] = smooth
    return out


def make_map(recording, output, camera: Optional[str] = None, stream: Optional[str] = None,
             size: int = 1000, source: str = "joints") -> dict:
    """Write the floor plan PNG; returns what it drew."""
    from tools.export.world import WorldError, WorldExport

    recording, output = Path(recording), Path(output)
    if not recording.is_file():
        raise MapError(f"recording {recording} not found")
    if not output.parent.is_dir():
        raise MapError(f"output directory {output.parent} does not exist (-o {output})")
    if not 200 <= size <= 8000:
        raise MapError(f"--size must lie in 200..8000 pixels, got {size}")
    try:
        world = WorldExport.prepare(recording, stream, True, camera)
    except WorldError as e:
        raise MapError(str(e)) from None
    if world is None:
        raise MapError(f"{recording} holds no frames")
    paths = track_paths(recording, world, stream, source)
    cam = world.camera
    title = (f"{recording.name}: camera {cam.height:.2f} m up, pitch {cam.pitch_deg:.1f} deg, roll {cam.roll_deg:.1f} "
             f"deg, focal {world.focal:.0f} px ({'estimated' if cam.focal_estimated else 'kept'}; {world.source})")
    img = floor_plan(paths, cam.world_from_camera(), world.focal, world.frame_wh, size=size, title=title)
    write_png(output, img)
    length = sum(float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) for ps in paths.values() for p in ps)
    return dict(tracks=len(paths), metres=length, camera=cam, source=world.source)


def map_command(args: argparse.Namespace) -> int:
    try:
        info = make_map(args.recording, args.output, camera=args.camera, stream=args.stream, size=args.size,
                        source=args.source)
    except (MapError, ValueError, WireError) as e:
        print(f"error: map: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: map: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    cam = info["camera"]
    print(f"map: {info['tracks']} tracks, {info['metres']:.1f} m of paths; camera {cam.height:.2f} m up, pitch "
          f"{cam.pitch_deg:.1f} deg ({info['source']}); wrote {args.output}")
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("map", help="a bird's-eye floor plan (PNG, metres) of every track's path in a recording")
    p.add_argument("recording", type=Path, help="a file written by `run --record FILE`")
    p.add_argument("-o", "--output", required=True, type=Path, help="PNG file to write")
    p.add_argument("--camera", default=None, metavar="FILE",
                   help="camera.json (fastmetro-stream calibrate); default: calibrated from the recording")
    p.add_argument("--stream", default=None, help="stream id (default: the recording's first)")
    p.add_argument("--size", type=int, default=1000, help="image side in pixels (default 1000)")
    p.add_argument("--from", dest="source", choices=["joints", "boxes"], default="joints",
                   help="where a person stands: its pelvis (joints + cam_t, default) or its box's bottom on the floor "
                        "(for untrained weights)")
    p.set_defaults(func=map_command)
