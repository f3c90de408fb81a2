"""`fastmetro-stream render RECORDING --video SOURCE -o out.mp4`: a --record file's meshes drawn over its source
video (docs/render.md). The focal length is each frame message's `focal` (the infer stage's `infer.focal`,
by default the frame diagonal); `--focal` overrides it, and recordings made before frames carried it fall
back to the frame diagonal.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from draw.raster import MeshItem, MeshRenderer, RenderError, mesh_items
from draw.video import VideoWriter
from pipeline import wire
from pipeline.recording import recording_frames
from pipeline.wire import WireError

log = logging.getLogger(__name__)


def video_frames(src, vs, rate) -> "Iterator[tuple[int, object]]":
    """(index, av.VideoFrame) of a video in decode order, numbered as the decode stage numbers them: a
    packet the decoder or demuxer rejects is skipped (said once at the end), and after one (or a frame
    decoded with errors) the index is the frame's position in the source from its time and the frame rate,
    so the frames that follow keep the indices the recording gave them."""
    import av

    skipped = 0
    index, start, damaged = 0, None, False
    demux = src.demux(vs)
    while True:
        try:
            packet = next(demux)
        except (StopIteration, av.error.EOFError):
            break
        except av.error.FFmpegError:  # unreadable data: go on from the next packet
            skipped += 1
            damaged = True
            if skipped > 1000:
                break
            demux = src.demux(vs)
            continue
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            skipped += 1
            damaged = True
            continue
        for vf in frames:
            damaged = damaged or vf.is_corrupt
            if vf.time is not None and start is None:
                start = float(vf.time)
            if damaged and vf.time is not None and rate:
                index = max(index, int(round((float(vf.time) - start) * float(rate))))
            yield index, vf
            index += 1
    if skipped:
        log.warning("render: %d damaged packets of the video skipped (their frames are not in the output)", skipped)


def render_recording(recording: Path, video: Path, output: Path, focal: Optional[float] = None,
                     stream: Optional[str] = None, alpha: float = 0.8, progress: bool = True,
                     method: str = "painter", camera: Optional[Path] = None, floor: bool = True) -> dict:
    """Write `output` (MP4): every frame of `video`, with the meshes of `recording` drawn over the frame of
    the same index, and the floor grid where the camera over the floor is known (`camera`, a camera.json,
    else each frame's own calibrated `world`; floor False: none). Returns counts: frames written, frames
    with meshes, persons drawn, ms per person."""
    import time

    import av

    recording, video, output = Path(recording), Path(video), Path(output)
    if not 0.0 <= alpha <= 1.0:
        raise RenderError(f"--alpha must lie in [0, 1], got {alpha}")
    if method not in ("painter", "zbuffer"):
        raise RenderError(f"--method must be 'painter' or 'zbuffer', got {method!r}")
    if not recording.is_file():
        raise RenderError(f"recording {recording} not found (make one with `fastmetro-stream run --record FILE`)")
    if not video.is_file():
        raise RenderError(f"source video {video} not found (--video: the file the recording was made from)")
    if not output.parent.is_dir():
        raise RenderError(f"output directory {output.parent} does not exist (-o {output})")
    try:
        frames = recording_frames(recording, stream)
        first = next(frames, None)
    except wire.WireError as e:
        raise RenderError(f"recording {recording} cannot be read: {e}") from None
    if first is None:
        raise RenderError(f"recording {recording} holds no frame messages"
                          + (f" of stream {stream!r}" if stream else "")
                          + " (was the run stopped before its first frame?)")
    pending = [first]

    def next_frame():
        return pending.pop() if pending else next(frames, None)

    try:
        src = av.open(str(video))
    except av.error.FFmpegError as e:
        raise RenderError(f"source video {video} cannot be opened: {e}") from None
    if not src.streams.video:
        src.close()
        raise RenderError(f"source video {video} has no video stream")
    vs = src.streams.video[0]
    vs.thread_type = "AUTO"
    rate = vs.average_rate or vs.guessed_rate or 30
    total = vs.frames or None

    renderer: Optional[MeshRenderer] = None
    fixed = None
    if camera is not None and floor:
        from fastmetro.world import CameraModel

        try:
            fixed = CameraModel.load(camera)
        except ValueError as e:
            raise RenderError(str(e)) from None
    last_vertices: dict[int, np.ndarray] = {}  # frames sent without vertices (vertices_every) reuse these
    stats = {"frames": 0, "frames_with_meshes": 0, "persons": 0, "draw_s": 0.0, "resized": False}
    current = next_frame()
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with VideoWriter(output, rate=float(rate)) as dst, Progress(
                TextColumn("render"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                disable=not progress, transient=False) as bar:
            task = bar.add_task("render", total=total)
            for index, vf in video_frames(src, vs, rate):
                rgb = vf.to_ndarray(format="rgb24")
                while current is not None and current.index < index:
                    current = next_frame()
                items: list[MeshItem] = []
                if current is not None and current.index == index:
                    m, faces = current, current.topology.faces
                    wh = (int(m.width), int(m.height))
                    if wh != (rgb.shape[1], rgb.shape[0]):
                        if not stats["resized"]:
                            log.warning("render: recording frames are %dx%d, the video's %dx%d: video resized",
                                        wh[0], wh[1], rgb.shape[1], rgb.shape[0])
                        stats["resized"] = True
                        rgb = cv2.resize(rgb, wh, interpolation=cv2.INTER_AREA)
                    if renderer is None or renderer.faces.shape != faces.shape:
                        renderer = MeshRenderer(faces, alpha=alpha, method=method)
                    hand = current.topology.hand
                    items = mesh_items(m.persons, last_vertices, m.lost, hand.faces_right if hand else None)
                    if floor:
                        rgb = _floor(rgb, current, fixed, focal)
                if items:
                    t0 = time.perf_counter()
                    rgb = renderer.draw(rgb, items, focal or current.focal)
                    stats["draw_s"] += time.perf_counter() - t0
                    stats["frames_with_meshes"] += 1
                    stats["persons"] += sum(it.vertices is not None and it.part == "body" for it in items)
                dst.write(rgb)
                stats["frames"] += 1
                bar.advance(task)
            if dst.frames == 0:
                raise RenderError(f"source video {video} has no frames")
    finally:
        src.close()
    if stats["frames_with_meshes"] == 0:
        log.warning("render: no frame of %s matched a frame index of %s (is it the right video?)", video, recording)
    stats["ms_per_person"] = 1000.0 * stats["draw_s"] / stats["persons"] if stats["persons"] else 0.0
    return stats


def _floor(rgb: np.ndarray, frame, camera, focal: Optional[float]) -> np.ndarray:
    """The frame with the floor grid (draw/floor.py) when the camera over the floor is known."""
    from draw.floor import draw_floor_grid

    h, w = rgb.shape[:2]
    if camera is not None:
        return draw_floor_grid(rgb, camera.world_from_camera(), focal or camera.focal_for(w, h))
    world = getattr(frame, "world", None)
    if world is not None and world.world_from_camera is not None:
        return draw_floor_grid(rgb, world.world_from_camera, focal or frame.focal or float(np.hypot(w, h)))
    return rgb


def render_command(args: argparse.Namespace) -> int:
    import av

    try:
        stats = render_recording(args.recording, args.video, args.output, focal=args.focal, stream=args.stream,
                                 alpha=args.alpha, progress=not args.quiet, method=args.method,
                                 camera=args.camera, floor=args.floor)
    except (RenderError, WireError) as e:  # WireError: a damaged record after the first frames
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (av.error.FFmpegError, OSError) as e:
        print(f"error: writing {args.output} or reading {args.video} failed: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {stats['frames']} frames, {stats['frames_with_meshes']} with meshes, "
          f"{stats['persons']} person meshes, {stats['ms_per_person']:.1f} ms per person")
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("render", help="draw a recording's meshes over its source video into an MP4")
    p.add_argument("recording", type=Path, help="a file written by `run --record FILE`")
    p.add_argument("--video", required=True, type=Path, help="the source video the recording was made from")
    p.add_argument("-o", "--output", required=True, type=Path, help="MP4 file to write (H.264, else MPEG-4)")
    p.add_argument("--focal", type=float, default=None,
                   help="focal length in frame pixels; default: each frame message's focal (older recordings: the frame diagonal)")
    p.add_argument("--stream", default=None, help="stream id to draw (default: the recording's first)")
    p.add_argument("--alpha", type=float, default=0.8, help="mesh opacity, 0..1 (default 0.8)")
    p.add_argument("--method", choices=["painter", "zbuffer"], default="painter",
                   help="painter: triangles far to near (default); zbuffer: nearest per pixel (exact where surfaces cross)")
    p.add_argument("--camera", type=Path, default=None, metavar="FILE",
                   help="camera.json (fastmetro-stream calibrate): draw its floor grid (default: the recording's own "
                        "calibrated camera, when its frames carry one)")
    p.add_argument("--floor", action=argparse.BooleanOptionalAction, default=True,
                   help="the floor grid, one line a metre, where the camera over the floor is known (default on)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=render_command)
