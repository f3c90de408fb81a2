"""`fastmetro-stream calibrate REC_OR_SOURCE [-o camera.json]`: the camera over the floor from the persons in
a recording (their published boxes, and meshes with --trust-meshes) or in a video (detected and tracked
here), printed and written as a camera.json that a run takes back (`world.camera`, docs/world.md)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _is_recording(path: Path) -> bool:
    from pipeline import wire

    try:
        next(iter(wire.read_recording(path)))
        return True
    except Exception:
        return False


def rows_from_recording(path: Path, trust_meshes: bool, stream=None):
    """boxes, tracks, frames, joints_h36m (or None), frame size, focal of a recording's frames."""
    from pipeline.recording import recording_frames

    boxes, tracks, frames, joints = [], [], [], []
    wh, focal = None, None
    for f in recording_frames(path, stream):
        if wh is None:
            wh, focal = (f.width, f.height), f.focal
        for p in f.persons:
            if p.predicted:
                continue
            boxes.append(p.box)
            tracks.append(p.track_id)
            frames.append(f.index)
            joints.append(p.joints_h36m)
    if wh is None:
        raise ValueError(f"{path}: no frames in this recording")
    j = np.array(joints) if trust_meshes and joints else None
    return np.array(boxes).reshape(-1, 4), np.array(tracks), np.array(frames), j, wh, focal


def rows_from_video(source: str, detector: str, max_frames, hog_max_side, progress=True, scale: float = 1.0,
                    every: int = 1):
    """Person boxes and tracks of a video file, detected and tracked as the detect stage does; scale > 1
    enlarges the frames first (small persons: HOG's window is 128 pixels tall), boxes scaled back."""
    import cv2

    from stages.detect import DetectConfig, PersonTracker

    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise ValueError(f"cannot open {source!r} as a video or a recording")
    kw = {"detector": detector}
    if hog_max_side:
        kw["hog_max_side"] = hog_max_side
    tracker = PersonTracker(DetectConfig(**kw))
    boxes, tracks, frames = [], [], []
    wh = None
    i = 0
    t0 = time.time()
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    while max_frames is None or i < max_frames:
        ok, bgr = cap.read()
        if not ok:
            break
        i += 1
        if progress and i % 100 == 0:
            print(f"calibrate: {i}{'/' + str(total) if total else ''} frames read, {len(boxes)} person-frames, "
                  f"{i / (time.time() - t0):.1f} fps", file=sys.stderr)
        if (i - 1) % every:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        wh = (rgb.shape[1], rgb.shape[0])
        if scale != 1.0:
            rgb = cv2.resize(rgb, (round(wh[0] * scale), round(wh[1] * scale)), interpolation=cv2.INTER_CUBIC)
        persons, _ = tracker.update(rgb)
        for p in persons:
            boxes.append(np.asarray(p.box, np.float64) / scale)
            tracks.append(p.track_id)
            frames.append(i - 1)
    cap.release()
    if wh is None:
        raise ValueError(f"{source!r}: no frames")
    return np.array(boxes).reshape(-1, 4), np.array(tracks), np.array(frames), None, wh, None


def calibrate_command(args) -> int:
    from fastmetro.camera import default_focal
    from fastmetro.world_calib import calibrate, observations_from_boxes

    src = Path(args.source)
    try:
        if src.is_file() and _is_recording(src):
            boxes, tracks, frames, joints, wh, focal_rec = rows_from_recording(src, args.trust_meshes, args.stream)
        else:
            if not src.exists():
                print(f"error: {args.source}: no such file", file=sys.stderr)
                return 2
            boxes, tracks, frames, joints, wh, focal_rec = rows_from_video(
                str(src), args.detector, args.max_frames, args.hog_max_side, scale=args.detect_scale, every=args.every)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    focal = args.focal or focal_rec or default_focal(wh)
    obs = observations_from_boxes(boxes, tracks, frames, wh, joints)
    model = calibrate(obs, wh, focal, body_height=args.body_height, mesh_weight=1.0 if joints is not None else 0.0)
    if model is None:
        print(f"error: too few standing persons to calibrate from ({len(obs)} usable person-frames of "
              f"{len(boxes)}, {len(np.unique(obs.track))} tracks; need 30 and 3)", file=sys.stderr)
        return 1
    d = model.to_dict()
    shown = {k: d[k] for k in ("focal", "focal_estimated", "up", "height", "pitch_deg", "roll_deg", "persons",
                               "frames", "residual", "width", "height_px")}
    print(json.dumps(shown, indent=2))
    if not model.focal_estimated:
        print(f"focal kept at {model.focal:.1f} px ({'given' if args.focal or focal_rec else 'the frame diagonal'}):"
              " it cannot be observed from " + ("a nearly level camera" if joints is not None else
                                                "boxes alone (--trust-meshes with trained weights)"),
              file=sys.stderr)
    if args.output:
        model.save(args.output)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("calibrate", help="the camera over the floor from the persons in a recording or video",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="REC_OR_SOURCE", help="a --record file, or a video file of a static camera")
    p.add_argument("-o", "--output", metavar="camera.json", help="write the camera here (world.camera takes it)")
    p.add_argument("--focal", type=float, help="the focal (frame pixels) to keep where it cannot be observed "
                   "(default: the recording's, else the frame diagonal)")
    p.add_argument("--body-height", type=float, default=1.70, help="the persons' mean height, metres (1.70)")
    p.add_argument("--trust-meshes", action="store_true", help="use the meshes' up and height (trained weights)")
    p.add_argument("--stream", help="the stream of a recording of several (default: the first)")
    p.add_argument("--detector", default="auto", choices=["auto", "yolo", "hog"], help="for a video (auto)")
    p.add_argument("--hog-max-side", type=int, help="HOG: shrink the frame to this long side first")
    p.add_argument("--max-frames", type=int, help="for a video: only its first N frames")
    p.add_argument("--every", type=int, default=1, help="for a video: detect every Nth frame only (faster)")
    p.add_argument("--detect-scale", type=float, default=1.0,
                   help="for a video: enlarge frames by this before detecting (small persons; HOG needs ~100 px)")
    p.set_defaults(func=calibrate_command)
