"""Kill `fastmetro-stream run --record` with SIGKILL once it has recorded a few frames, and say how long each
stage process outlived it, whether the run's /dev/shm files were removed, and how many frames the
recording reads back (Linux: reads /proc).

    python scripts/kill_supervisor.py [--frames 5]

Needs the SMPL mesh data files (FASTMETRO_ASSETS); runs the shipped sample with the HOG detector.
Prints one line per stage process (`pid N: gone after S s`), then `/dev/shm: ...` and `recording: ...`.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import wire  # noqa: E402
from pipeline.recording import recording_frames  # noqa: E402


def children(pid: int) -> list[tuple[int, str]]:
    out = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ppid == pid:
            out.append((int(d), cmd))
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def frames_recorded(path: Path) -> int:
    return sum(r.topic.endswith(b"/frame") for r in wire.read_recording(path)) if path.exists() else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=5, help="frames recorded before the kill (default 5)")
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rec = Path(tempfile.mkdtemp()) / "run.msgpack"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastmetro_stream.cli", "run", "--mode", "live", "--record", str(rec),
         "--set", "detect.detector=hog", "--set", "decode.loop=true",
         "--set", f"publish.endpoint=tcp://127.0.0.1:{port}"],
        env=env, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while frames_recorded(rec) < args.frames:
        if proc.poll() is not None:
            print("the run ended before recording enough frames")
            return 1
        time.sleep(0.3)
    stages = [pid for pid, cmd in children(proc.pid) if "spawn_main" in cmd]
    shm = set()
    for pid in stages:
        maps = Path(f"/proc/{pid}/maps").read_text()
        shm.update(line.split()[-1] for line in maps.splitlines() if "/dev/shm/" in line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.monotonic()
    gone: dict[int, float] = {}
    while len(gone) < len(stages) and time.monotonic() - t0 < 60:
        for pid in stages:
            if pid not in gone and not alive(pid):
                gone[pid] = time.monotonic() - t0
        time.sleep(0.02)
    for pid in stages:
        print(f"pid {pid}: " + (f"gone after {gone[pid]:.2f} s" if pid in gone else "still running after 60 s"))
    while any(os.path.exists(n) for n in shm) and time.monotonic() - t0 < 60:
        time.sleep(0.1)
    left = [n for n in shm if os.path.exists(n)]
    print(f"/dev/shm: {len(shm)} files of the run, {len(left)} left after {time.monotonic() - t0:.1f} s")
    print(f"recording: {len(list(recording_frames(rec)))} frames read back from {rec}")
    return 0 if not left and len(gone) == len(stages) else 1


if __name__ == "__main__":
    sys.exit(main())
