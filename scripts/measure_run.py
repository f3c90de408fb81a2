#!/usr/bin/env python
"""Start-up time and memory of one run: wall time and peak RSS of every process of the pipeline.

    python scripts/measure_run.py [--cli MODULE] [-- extra run arguments]

Runs `python -m MODULE run --set progress=false ...` (default MODULE: the project's CLI module) on the
shipped sample, samples the resident memory (RSS) and CPU time of the parent and of every process it
starts every 50 ms, and prints per process: its role (the stage processes are spawned in pipeline order,
so the k-th spawned child is the k-th stage), peak RSS in MB, CPU seconds (user + system, less sensitive
than wall time to other load on the machine); then the wall time of the whole run and the time
until the first frame was published (start-up: imports, the stages' processes, models loaded), read
from the run's recording (`--record`, kept with --keep FILE).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
STAGES = ["decode", "detect", "infer", "smooth", "publish"]


def default_cli() -> str:
    return "fastmetro_stream.cli" if (REPO / "fastmetro_stream" / "cli.py").is_file() else "pipeline.cli"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", default=None, help="module with the CLI's main (default: this tree's)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run's recording in this file")
    ap.add_argument("rest", nargs="*", help="more arguments for `run` (after --)")
    args = ap.parse_args(argv)
    cli = args.cli or default_cli()
    import tempfile

    tmp = tempfile.TemporaryDirectory()
    rec = args.keep.resolve() if args.keep else Path(tmp.name) / "run.msgpack"
    cmd = [sys.executable, "-m", cli, "run", "--set", "progress=false", "--record", str(rec), *args.rest]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0, epoch0 = time.perf_counter(), time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    parent = psutil.Process(proc.pid)
    peak: dict[int, int] = {}
    cpu: dict[int, float] = {}  # user + system CPU seconds, last sample
    order: dict[int, tuple[float, str]] = {}
    while proc.poll() is None:
        try:
            procs = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                rss = p.memory_info().rss
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system
                if p.pid not in order:
                    cmdline = " ".join(p.cmdline())
                    order[p.pid] = (p.create_time(), cmdline)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            peak[p.pid] = max(peak.get(p.pid, 0), rss)
        time.sleep(0.05)
    out = proc.stdout.read()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(out)
        print(f"run failed with exit code {proc.returncode}")
        return 1
    children = sorted((pid for pid in order if pid != proc.pid), key=lambda pid: order[pid][0])
    spawned = [pid for pid in children if "spawn_main" in order[pid][1]]
    names = {proc.pid: "parent (supervisor)"}
    for pid in children:
        if "resource_tracker" in order[pid][1]:
            names[pid] = "resource tracker"
    for i, pid in enumerate(spawned):
        names[pid] = STAGES[i] if i < len(STAGES) else f"child {i}"
    total = 0
    for pid in [proc.pid, *children]:
        mb = peak.get(pid, 0) / 2**20
        total += mb
        print(f"{names.get(pid, 'other: ' + order[pid][1][:60]):22s} peak RSS {mb:8.1f} MB   "
              f"CPU {cpu.get(pid, 0.0):7.1f} s")
    print(f"{'all processes':22s} sum of peaks {total:8.1f} MB")
    m = re.search(r"(\d+) frames in ([\d.]+) s", out)
    print(f"wall time of the run: {wall:.2f} s")
    if m:
        print(f"frames {m.group(1)}, supervisor elapsed {m.group(2)} s")
    sys.path.insert(0, str(REPO))
    from pipeline import wire

    first = next((r.t for r in wire.read_recording(rec) if r.topic.endswith(b"/frame")), None)
    if first is not None:
        print(f"start-up (command start to first frame published): {first - epoch0:.2f} s")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
