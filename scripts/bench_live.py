#!/usr/bin/env python
"""Live latency: a video paced at its own rate through the whole pipeline, the age of what is published
next to the work done on it.

    python scripts/bench_live.py [--source VIDEO] [--persons 1 3] [--seconds 20] [--set key=value ...]
    python scripts/bench_live.py --tree /path/to/other/checkout ...   # the same runs on another tree's code
    python scripts/bench_live.py --tree BEFORE --tree . --baseline-set infer.engine=manual   # BEFORE on eager fp32

For each person count it runs `mode=live, decode.realtime=true, decode.loop=true` on the source (the
shipped sample by default: 15 fps, 640x480) for `--seconds` of video, the HOG detector (no weights
needed) keeping at most that many persons per frame, and records the stream. From the recording:
published frames/s (first to last publish; and the frames published while the source played, per second
of it, which leaves out a backlog published after it ended), the fraction of frames dropped (the frames' `dropped`
counts over frames published + dropped), and the age of each published frame, capture (decode's
timestamp) to publish, p50/p95/p99. From the run's summary: each stage's measured service time (p50 per
item; infer: the forward pass of the batch a frame rode in) and their sum; the target is
p95 age <= 1.5 x that sum + one frame interval.

Each run is its own process (`--tree` chooses whose code it imports), so two trees compare on the same
machine in one invocation (`--tree A --tree B`, runs interleaved; with `--together` at the same time, so
that a machine whose load changes from minute to minute loads both alike).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def child(args) -> int:
    """One run, in this process, with whatever code PYTHONPATH names; prints one JSON line."""
    import numpy as np

    from fastmetro_stream.api import run
    from fastmetro_stream.config import load_config
    from pipeline import wire

    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "live.msgpack"
        import av

        src = args.source or str(REPO / "samples" / "sample.mp4")
        with av.open(src) as c:
            rate = float(c.streams.video[0].average_rate or 15)
        overrides = ["mode=live", "decode.realtime=true", "decode.loop=true", "progress=false",
                     f"decode.max_frames={int(args.seconds * rate)}", "detect.detector=hog",
                     f"detect.max_persons={args.persons}", f"publish.endpoint={free_endpoint()}",
                     f"publish.record={rec}", *args.overrides]
        config = load_config(None, overrides, source=src)
        summary = run(config)
        frames = [(r.t, wire.decode(r.payload)) for r in wire.read_recording(rec) if r.topic.endswith(b"/frame")]
    ages = np.array([t - m["times"]["decode"] for t, m in frames]) * 1000.0
    # the source played from `start` (frame i is due i / rate after it) for `seconds`: frames published by
    # then are the live output; a run that had frames queued publishes more after (old frames)
    start = min((m["times"]["decode"] - m["index"] / rate for _, m in frames), default=0.0)
    during = sum(t <= start + args.seconds for t, _ in frames)
    dropped = sum(m["dropped"] for _, m in frames)
    n = len(frames)
    out = {
        "exit": summary.exit_code, "frames": n, "dropped": dropped, "rate": rate, "during": during,
        "seconds": args.seconds,
        "fps": (n - 1) / (frames[-1][0] - frames[0][0]) if n > 1 else 0.0,
        "persons": sum(len(m["persons"]) for _, m in frames) / max(n, 1),
        "detected": next((s.counters.get("persons", 0) / max(s.items_out, 1) for s in summary.stages
                          if s.name == "detect"), 0.0),
        "age": {k: float(np.percentile(ages, q)) for k, q in (("p50", 50), ("p95", 95), ("p99", 99))} if n else {},
        "startup_s": getattr(summary, "startup_s", None),
        "stages": [{"name": s.name, "latency_ms": s.latency_ms, "service_ms": getattr(s, "service_ms", None),
                    "busy": getattr(s, "busy", None), "wait_ms": getattr(s, "wait_ms", None),
                    "drops": s.drops + s.dropped_here} for s in summary.stages],
    }
    print("BENCH_LIVE " + json.dumps(out), flush=True)
    return 0


def one_run(tree: Path, persons: int, args, extra: tuple = ()) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--persons", str(persons),
           "--seconds", str(args.seconds)] + (["--source", args.source] if args.source else [])
    for o in [*args.overrides, *extra]:
        cmd += ["--set", o]
    env = dict(os.environ, PYTHONPATH=str(tree))
    p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    line = next((x for x in p.stdout.splitlines() if x.startswith("BENCH_LIVE ")), None)
    if line is None:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])
        raise SystemExit(f"run failed on {tree} ({persons} persons)")
    if args.verbose:
        sys.stderr.write(p.stderr)
    return json.loads(line[len("BENCH_LIVE "):])


def service_sum(r: dict, q: str = "p50") -> float | None:
    """Sum over stages of the service time per item, its p50 or p95 (None when the tree does not
    measure it)."""
    vals = [s["service_ms"][q] for s in r["stages"] if s.get("service_ms")]
    return sum(vals) if vals else None


def show(tree: Path, persons: int, r: dict, extra: tuple = ()) -> None:
    interval = 1000.0 / r["rate"]
    total = r["frames"] + r["dropped"]
    a = r["age"]
    print(f"\n{tree}{' (' + ' '.join(extra) + ')' if extra else ''}  detect.max_persons {persons}: persons detected per frame {r['detected']:.2f}, published "
          f"per frame {r['persons']:.2f} (with tracks carried by smooth), source {r['rate']:.0f} fps")
    print(f"  published {r['frames']} frames, {r['fps']:.2f} fps; dropped {r['dropped']} "
          f"({r['dropped'] / max(total, 1):.0%}); while the source played: {r['during']} frames, "
          f"{r['during'] / r['seconds']:.2f} fps")
    print(f"  age capture -> publish: p50 {a.get('p50', 0):.0f} ms  p95 {a.get('p95', 0):.0f} ms  "
          f"p99 {a.get('p99', 0):.0f} ms")
    for s in r["stages"]:
        svc = s.get("service_ms") or {}
        lat = s.get("latency_ms") or {}
        wait = s.get("wait_ms") or {}
        busy = s.get("busy")
        print(f"    {s['name']:8s} service p50 {svc.get('p50', float('nan')):7.1f} ms   "
              f"(time in stage p50 {lat.get('p50', float('nan')):7.1f} ms)   "
              f"wait p50 {wait.get('p50', float('nan')):7.1f} ms   busy "
              + (f"{busy:4.0%}" if busy is not None else "  - ") + f"   drops {s['drops']}")
    total_svc = service_sum(r)
    if total_svc is None:
        print("  sum of service times: not measured by this tree")
    else:
        bound = 1.5 * total_svc + interval
        print(f"  sum of service times p50 {total_svc:.0f} ms (p95 {service_sum(r, 'p95'):.0f} ms); target p95 age "
              f"<= 1.5 x sum + {interval:.0f} ms = {bound:.0f} ms: p95 {a.get('p95', 0):.0f} ms -> "
              + ("met" if a.get("p95", 1e9) <= bound else "NOT met")
              + f"; p50 age {a.get('p50', 0):.0f} ms vs sum + interval {total_svc + interval:.0f} ms")
    if r.get("startup_s") is not None:
        print(f"  start-up (command to first published frame): {r['startup_s']:.2f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=None, help="a video file (default: the shipped sample)")
    ap.add_argument("--persons", type=int, nargs="+", default=[1, 3], help="detect.max_persons of each run")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of video per run (looped)")
    ap.add_argument("--tree", type=Path, action="append", default=None,
                    help="checkout whose code runs (repeatable; default: this one)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--baseline-set", dest="baseline", action="append", default=[], metavar="KEY=VALUE",
                    help="settings for the first --tree only (e.g. infer.engine=manual: the baseline's engine)")
    ap.add_argument("--together", action="store_true",
                    help="run the trees' runs at the same time (each under the same load; they share the CPUs)")
    ap.add_argument("--verbose", action="store_true", help="show each run's own output")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.persons = args.persons[0]
        return child(args)
    trees = [t.resolve() for t in (args.tree or [REPO])]
    extras = [tuple(args.baseline) if i == 0 and len(trees) > 1 else () for i in range(len(trees))]
    for persons in args.persons:
        if args.together:  # every tree's run at the same time: the same load on the machine for each
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(trees)) as pool:
                results = list(pool.map(lambda i: one_run(trees[i], persons, args, extras[i]), range(len(trees))))
        else:
            results = [one_run(tree, persons, args, extra) for tree, extra in zip(trees, extras)]
        for tree, extra, r in zip(trees, extras, results):
            show(tree, persons, r, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
