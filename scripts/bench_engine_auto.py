#!/usr/bin/env python
"""What `infer.engine: auto` picks on this machine, and its start-up: first run (measures, compiles) against
a second run (reads the cached choice and compiled packages) against an eager fp32 engine's start-up.

    python scripts/bench_engine_auto.py [--variant fastmetro-s-r50] [--max-batch 4] [--device cpu]
                                        [--cache DIR]   # default: a fresh temporary cache (first run cold)

Each start-up is a new Python process timed from its start to an engine ready to run (imports, model
build, choice, compile or load), as a user's command would see it. The chosen engine's speed-up and
deviation are the ones the first run measured (ratios within that run, so other load on the cores counts
alike for every candidate).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = r"""
import logging, sys, time, warnings
t0 = time.perf_counter()
import torch
import fastmetro
from fastmetro.engine import Engine, EngineOptions
warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)
logging.basicConfig(level=logging.INFO, format="  %(message)s", stream=sys.stdout)
torch.manual_seed(0)
engine = Engine(EngineOptions(variant=sys.argv[1], device=sys.argv[2], max_batch=int(sys.argv[3]), engine=sys.argv[4]))
print(f"READY {time.perf_counter() - t0:.1f} {engine.choice.name if engine.choice else 'fp32'}", flush=True)
"""


def start(args, engine: str, env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, args.variant, args.device, str(args.max_batch), engine],
                       env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    lines = r.stdout.splitlines()
    for line in lines:
        if "engine auto chose" in line or "compiled network" in line:
            print(line)
    ready = [ln for ln in lines if ln.startswith("READY")]
    if r.returncode != 0 or not ready:
        raise SystemExit(f"the {engine} run failed:\n{r.stderr[-3000:]}")
    return wall, ready[0].split()[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="fastmetro-s-r50")
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache", default=None, help="cache directory (XDG_CACHE_HOME); default a fresh one")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, XDG_CACHE_HOME=args.cache or tmp, PYTHONPATH=str(REPO))
        env.pop("TORCHINDUCTOR_CACHE_DIR", None)
        eager, _ = start(args, "manual", env)
        first, name = start(args, "auto", env)
        second, name2 = start(args, "auto", env)
        eager2, _ = start(args, "manual", env)
    print(f"\n{args.variant} on {args.device}, max_batch {args.max_batch}: auto chose {name} (second run: {name2})")
    print(f"start-up to a ready engine: eager fp32 {eager:.1f} s / {eager2:.1f} s (before / after), "
          f"auto first run {first:.1f} s (measuring), auto second run {second:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
