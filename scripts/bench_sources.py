#!/usr/bin/env python
"""Several sources in one run against one run per source: total frames/s and total memory, measured in
one go on the same clips.

    python scripts/bench_sources.py                          # N = 1, 2, 4; the shipped sample, 6 frames each
    python scripts/bench_sources.py --counts 1,2 --frames 10 --source clip.mp4 -- --set infer.max_batch=4

For each N: ONE run with N sources (`--source cam0=CLIP --source cam1=CLIP ...`), then N SEPARATE runs (one
source each) started at the same time as separate processes. Each is a real `fastmetro-stream run` (HOG
detector, recording); every process of the run(s) is sampled every 0.5 s (resident memory, RSS, and its
proportional share, PSS, which counts the shared frame ring and shared libraries once; as
scripts/measure_run.py and scripts/soak.py sample them). Printed per N and way: the frames published,
the wall time, the total frames/s over the wall time (start-up included: N runs load N model copies)
and over the processing span (from the first frame decoded to the last one published, of all the run(s):
start-up left out), the sum of RSS and PSS
over all processes (peak and mean), and the ratios one run / N runs. The target: with 4 sources, one
run at no more than half the memory of 4 runs, and at least their frames/s.

Linux (psutil). Keep runs short (--frames): on 2 CPU cores N = 1, 2, 4 takes a few minutes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.soak import free_port  # noqa: E402

SAMPLE_EVERY_S = 0.5


@dataclass
class Measured:
    frames: int
    wall_s: float
    span_s: float  # from the first frame decoded to the last frame published
    rss_peak: float  # MB, sum over every process
    rss_mean: float
    pss_peak: float
    pss_mean: float
    exit_codes: list

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s else 0.0

    @property
    def steady_fps(self) -> float:
        return self.frames / self.span_s if self.span_s > 0 else float("nan")


def command(sources: list[str], rec: Path, frames: int, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "fastmetro_stream.cli", "run", "--record", str(rec),
           "--set", "progress=false", "--set", "detect.detector=hog", "--set", f"decode.max_frames={frames}",
           "--set", f"publish.endpoint=tcp://127.0.0.1:{free_port()}"]
    for s in sources:
        cmd += ["--source", s]
    return cmd + extra


def tree(pids: list[int]) -> list[psutil.Process]:
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out += [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return out


def memory(procs: list[psutil.Process]) -> tuple[float, float]:
    """(sum of RSS, sum of PSS) in MB."""
    rss = pss = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return rss / 2**20, pss / 2**20


def published(rec: Path) -> tuple[int, float, float]:
    """(frame messages, when the first of them was decoded, when the last was published) of a recording."""
    from pipeline import wire

    frames = [r for r in wire.read_recording(rec) if r.topic.endswith(b"/frame")] if rec.is_file() else []
    if not frames:
        return 0, float("nan"), float("nan")
    decoded = [wire.decode(r.payload)["times"].get("decode", r.t) for r in frames]
    return len(frames), min(decoded), max(r.t for r in frames)


def measure(commands: list[list[str]], recs: list[Path], logs: Path) -> Measured:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    outs = [open(logs.with_suffix(f".{i}.log"), "w") for i in range(len(commands))]
    procs = [subprocess.Popen(c, cwd=REPO, env=env, stdout=o, stderr=subprocess.STDOUT) for c, o in zip(commands, outs)]
    rss, pss = [], []
    while any(p.poll() is None for p in procs):
        r, s = memory(tree([p.pid for p in procs if p.poll() is None]))
        if r:
            rss.append(r)
            pss.append(s)
        time.sleep(SAMPLE_EVERY_S)
    wall = time.monotonic() - t0
    for o in outs:
        o.close()
    counts = [published(r) for r in recs]
    frames = sum(c[0] for c in counts)
    span = max(c[2] for c in counts) - min(c[1] for c in counts) if frames else float("nan")
    return Measured(frames, wall, span, max(rss, default=0.0), statistics.fmean(rss) if rss else 0.0,
                    max(pss, default=0.0), statistics.fmean(pss) if pss else 0.0, [p.returncode for p in procs])


def show(label: str, m: Measured) -> None:
    print(f"  {label:<13} {m.frames:4d} frames  wall {m.wall_s:6.1f} s  {m.fps:5.2f} frames/s "
          f"(processing span {m.steady_fps:5.2f})  RSS peak {m.rss_peak:7.0f} MB mean {m.rss_mean:7.0f} MB  "
          f"PSS peak {m.pss_peak:7.0f} MB mean {m.pss_mean:7.0f} MB" + ("" if not any(m.exit_codes) else
                                                                       f"  EXIT CODES {m.exit_codes}"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="1,2,4", help="numbers of sources, comma-separated (default 1,2,4)")
    ap.add_argument("--frames", type=int, default=6, help="frames per source (decode.max_frames)")
    ap.add_argument("--source", default=str(REPO / "samples" / "sample.mp4"), help="the clip every source reads")
    ap.add_argument("rest", nargs="*", help="more arguments for every `run` (after --)")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.counts.split(",")]
    print(f"clip {args.source}, {args.frames} frames per source, HOG detector, untrained weights; "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for n in counts:
            recs = [d / f"one{n}.msgpack"]
            one = measure([command([f"cam{i}={args.source}" for i in range(n)], recs[0], args.frames, args.rest)],
                          recs, d / f"one{n}")
            print(f"N={n}")
            show("one run", one)
            if n == 1:  # one run of one source is the separate run
                sep = one
            else:
                recs = [d / f"sep{n}_{i}.msgpack" for i in range(n)]
                sep = measure([command([args.source], r, args.frames, args.rest) for r in recs], recs, d / f"sep{n}")
                show(f"{n} runs", sep)
            print(f"  one run / {n} runs: frames/s x{one.fps / sep.fps:.2f} (processing span "
                  f"x{one.steady_fps / sep.steady_fps:.2f}), RSS peak x{one.rss_peak / sep.rss_peak:.2f} "
                  f"mean x{one.rss_mean / sep.rss_mean:.2f}, PSS peak x{one.pss_peak / sep.pss_peak:.2f} "
                  f"mean x{one.pss_mean / sep.pss_mean:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
