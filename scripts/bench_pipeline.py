#!/usr/bin/env python
"""Frames/s of the whole pipeline on a video next to the bare model's frames/s on the same crops.

    python scripts/bench_pipeline.py [--source samples/sample.mp4] [--repeat 3] [--set key=value ...]

1. The pipeline runs on the source (offline mode, recording to a temporary file); its steady-state rate
   is taken from the recorded publish times (first to last frame), so start-up is not counted.
2. The same frames go through detect + crop in this process, and the model alone (the same inference
   engine and settings) runs on those crops, timed without detection: one batch per frame, and in full
   batches of infer.max_batch crops across frames; the better of the two is the reference.
The ratio pipeline / bare model is the figure of merit: the runtime must not be the bottleneck (>= 0.9).
On a machine where detection and the model share the same few CPU cores, detection's cost shows in it.

    python scripts/bench_pipeline.py --hands [--frames 24] [--set key=value ...]

runs the pipeline twice on the same frames instead, hands off (infer.hands=false) and on, and prints both
steady-state rates and their ratio (hands on / off).
"""
from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402

import fastmetro  # noqa: E402
from pipeline import wire  # noqa: E402
from fastmetro_stream.api import run  # noqa: E402
from fastmetro_stream.config import load_config  # noqa: E402


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=None, help="video (default: the shipped sample)")
    ap.add_argument("--repeat", type=int, default=3, help="play the source this many times (longer steady state)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--hands", action="store_true", help="the pipeline with hands off against on (no bare model)")
    ap.add_argument("--frames", type=int, default=24, help="with --hands: frames per run")
    args = ap.parse_args(argv)
    if args.hands:
        return hands_on_off(args)

    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "bench.msgpack"
        overrides = ["mode=offline", "progress=false", f"publish.endpoint={free_endpoint()}",
                     f"publish.record={rec}", *args.overrides]
        if args.repeat > 1:
            overrides.append("decode.loop=true")
        config = load_config(None, overrides, source=args.source).resolved()
        source = config.source
        with av.open(str(source or Path(__file__).resolve().parents[1] / "samples" / "sample.mp4")) as c:
            rgb_frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        if args.repeat > 1:
            config = config.model_copy(update={"decode": config.decode.model_copy(
                update={"max_frames": len(rgb_frames) * args.repeat})})
        summary = run(config)
        if summary.exit_code != 0:
            print(f"pipeline failed: {summary.reason}")
            return 1
        walls = [m["wall"] for m in (wire.decode(r.payload) for r in wire.read_recording(rec)) if m["kind"] == "frame"]
    n = len(walls)
    pipe_fps = (n - 1) / (walls[-1] - walls[0]) if n > 1 else float("nan")

    # the same frames: detect + crop here, then the model alone on those crops
    from fastmetro.crops import make_crops
    from stages.tracking import PersonTracker
    from fastmetro.engine import Engine

    tracker = PersonTracker(config.detect)
    crops_per_frame = []
    for rgb in rgb_frames * max(1, args.repeat):
        persons, _ = tracker.update(rgb)
        crops_per_frame.append(make_crops(rgb, persons) if persons else None)
    c = config.infer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)
        engine = Engine(c.engine_options())  # exactly as the pipeline's infer stage runs it
    for crops in crops_per_frame[:3]:
        if crops is not None:
            engine(crops)  # warm-up
    t0 = time.perf_counter()
    for crops in crops_per_frame:
        if crops is not None:
            engine(crops)
    per_frame_fps = len(crops_per_frame) / (time.perf_counter() - t0)
    # the same crops in full batches of infer.max_batch across frames (what the batching stage aims at)
    every = np.concatenate([x for x in crops_per_frame if x is not None]) if any(
        x is not None for x in crops_per_frame) else np.empty((0, 224, 224, 3), np.uint8)
    t0 = time.perf_counter()
    for i in range(0, len(every), c.max_batch):
        engine(every[i:i + c.max_batch])
    batched_fps = len(crops_per_frame) / (time.perf_counter() - t0)
    model_fps = max(per_frame_fps, batched_fps)
    persons = len(every)

    print(f"\nframes {n} (pipeline) / {len(crops_per_frame)} (bare), persons per frame "
          f"{persons / max(1, len(crops_per_frame)):.2f}, device {engine.device}")
    print(f"pipeline (steady state, publish times):       {pipe_fps:7.2f} frames/s")
    print(f"bare model, one batch per frame:              {per_frame_fps:7.2f} frames/s")
    print(f"bare model, batches of {c.max_batch:3d} crops across frames: {batched_fps:7.2f} frames/s")
    print(f"ratio pipeline / best bare model:             {pipe_fps / model_fps:7.2f}")
    return 0


def pipeline_fps(source, overrides) -> tuple[float, int, dict]:
    """Steady-state frames/s of one offline run (publish times of the recorded frames, start-up not
    counted), the frames recorded and the infer stage's counters."""
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "bench.msgpack"
        config = load_config(None, ["mode=offline", "progress=false", f"publish.endpoint={free_endpoint()}",
                                    f"publish.record={rec}", *overrides], source=source).resolved()
        summary = run(config)
        if summary.exit_code != 0:
            raise SystemExit(f"pipeline failed: {summary.reason}")
        walls = [m["wall"] for m in (wire.decode(r.payload) for r in wire.read_recording(rec)) if m["kind"] == "frame"]
    n = len(walls)
    infer = next((dict(m.counters) for m in summary.stages if m.name == "infer"), {})
    return ((n - 1) / (walls[-1] - walls[0]) if n > 1 else float("nan")), n, infer


def hands_on_off(args) -> int:
    rates = {}
    for hands in (False, True):
        # smooth.offline=none: the RTS window would hold a short run's frames and publish them at once
        overrides = [f"decode.max_frames={args.frames}", "smooth.offline=none", f"infer.hands={str(hands).lower()}",
                     *args.overrides]
        rates[hands], n, infer = pipeline_fps(args.source, overrides)
        extra = f", hand crops {infer.get('hand_crops', 0)}" if hands and infer else ""
        print(f"pipeline, hands {'on ' if hands else 'off'}: {rates[hands]:7.2f} frames/s ({n} frames{extra})")
    print(f"ratio hands on / off:       {rates[True] / rates[False]:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
