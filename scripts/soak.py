"""Soak test: run the pipeline on a looped source for a given time, sample every process's resident
memory (RSS) and open file descriptors, and print each one's growth per minute (least-squares slope
after a warm-up), so a leak shows as a slope well above the noise.

    python scripts/soak.py --duration 1800                 # the shipped sample, looped, HOG detector
    python scripts/soak.py --duration 300 --source video.mp4 --set infer.max_batch=4
    python scripts/soak.py --source a=samples/sample.mp4 --source b=samples/sample.mp4 --set infer.hands=true

Linux only (reads /proc). The run is a real `fastmetro-stream run` child process with a subscriber
reading the stream in this process; it is stopped with Ctrl-C (SIGINT) at the end and must exit 0.
Target: no growth beyond noise, under 1 MB/min per process.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ["decode", "detect", "infer", "smooth", "publish"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> tuple[int, int]:
    """(parent pid, start time in clock ticks) from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[19])


def processes(root: int) -> dict[str, int]:
    """name -> pid: the supervisor, and its stage processes in start order (the supervisor starts them
    decode first, publish last); the multiprocessing resource tracker is left out."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid, start = _stat(int(entry))
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if ppid == root and b"resource_tracker" not in cmd:
            children.append((start, int(entry)))
    names = {"supervisor": root}
    for name, (_, pid) in zip(STAGES, sorted(children)):
        names[name] = pid
    return names


def sample(pid: int) -> tuple[float, int]:
    """(RSS in MB, open file descriptors) of a process."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return rss_kb / 1024.0, len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_min(ts: list[float], ys: list[float]) -> float:
    n = len(ts)
    if n < 2:
        return float("nan")
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return 60.0 * sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var if var else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=1800.0, help="seconds of sampling after start-up (default 1800)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds left out of the slopes (default: a fifth, at most 120)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--source", action="append", default=[],
                    help="video file or image folder, or ID=SOURCE; repeat for several sources in one run "
                         "(default: the shipped sample)")
    ap.add_argument("--set", action="append", default=[], help="extra --set section.key=value for the run")
    args = ap.parse_args()
    if not sys.platform.startswith("linux"):
        print("soak.py reads /proc: Linux only", file=sys.stderr)
        return 2
    warmup = args.warmup if args.warmup is not None else min(120.0, args.duration / 5)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "fastmetro_stream.cli", "run", "--set", "decode.loop=true", "--set", "progress=false",
           "--set", "detect.detector=hog", "--set", f"publish.endpoint={endpoint}",
           "--set", "stop_timeout_s=600"]  # a slow CPU run drains its queues through infer at the end
    for source in args.source:
        cmd += ["--source", source]
    for s in args.set:
        cmd += ["--set", s]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"soak-{os.getpid()}.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    print(f"soak: pid {proc.pid}, log {log.name}", flush=True)

    from pipeline.subscriber import Subscriber

    received = {"frames": 0}
    done = threading.Event()

    def consume():
        with Subscriber(endpoint) as sub:
            while not done.is_set():
                msg = sub.recv(timeout_s=0.5)
                if msg is not None and msg.kind == "frame":
                    received["frames"] += 1

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    while received["frames"] == 0 and proc.poll() is None:  # start-up: models load
        time.sleep(1.0)
    if proc.poll() is not None:
        print(f"soak: the run ended before its first frame (exit {proc.returncode}); see {log.name}")
        return 1
    names = processes(proc.pid)
    series: dict[str, list[tuple[float, float, int]]] = {n: [] for n in names}
    t0 = time.monotonic()
    next_print = t0
    while time.monotonic() - t0 < args.duration and proc.poll() is None:
        t = time.monotonic() - t0
        for name, pid in names.items():
            try:
                rss, fds = sample(pid)
            except OSError:
                continue
            series[name].append((t, rss, fds))
        if time.monotonic() >= next_print:
            print(f"  t={t:6.0f} s  frames received {received['frames']}  " + "  ".join(
                f"{n} {series[n][-1][1]:.0f}MB/{series[n][-1][2]}fd" for n in names if series[n]), flush=True)
            next_print += 60.0
        time.sleep(args.interval)
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    done.set()
    reader.join(5)
    elapsed = time.monotonic() - t0
    print(f"\nsoak: {elapsed / 60:.1f} min sampled (slopes after the first {warmup:.0f} s), "
          f"{received['frames']} frames received, run exit {proc.returncode}{'' if alive else ' (ended early)'}")
    print(f"{'process':<11} {'pid':>7} {'RSS start':>10} {'RSS end':>9} {'RSS MB/min':>11} {'fds':>5} {'fds/min':>8}")
    worst = 0.0
    for name, rows in series.items():
        rows = [r for r in rows if r[0] >= warmup] or rows
        if not rows:
            continue
        ts = [r[0] for r in rows]
        mb = slope_per_min(ts, [r[1] for r in rows])
        fd = slope_per_min(ts, [float(r[2]) for r in rows])
        worst = max(worst, mb if mb == mb else 0.0)
        print(f"{name:<11} {names[name]:>7} {rows[0][1]:>10.1f} {rows[-1][1]:>9.1f} {mb:>11.3f} {rows[-1][2]:>5} {fd:>8.3f}")
    print(f"largest RSS slope {worst:.3f} MB/min (target < 1 MB/min per process)")
    return 0 if proc.returncode == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
