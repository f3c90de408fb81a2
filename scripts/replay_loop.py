"""Replay a recording many times in a row (lossless or latest, as fast as possible) with a consumer
connected from the start, and check every run delivers every frame and the end message and exits 0.

    python scripts/replay_loop.py [--runs 50] [--mode lossless] [--file run.msgpack]

Without --file a recording of synthetic frames is made first (needs the SMPL mesh data files:
FASTMETRO_ASSETS). Prints one line per failed run and a closing line `N/N replays complete`. Then (unless
--no-slow) one lossless replay each into a consumer that takes 0.3 s and 1 s per frame, far slower than
the publisher's linger: one line each with the frames it got and whether the end message came.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import wire  # noqa: E402
from pipeline.messages import EndOfStream  # noqa: E402
from pipeline.subscriber import Subscriber  # noqa: E402


def make_recording(path: Path, frames: int, persons: int = 2) -> None:
    from stages.publish import PublishConfig, PublishStage

    stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*", record=path, linger_ms=0))
    stage.setup()
    for i in range(frames):
        stage.process(wire.synthetic_mesh_frame(persons, index=i))
    stage.process(EndOfStream("default", frames))
    stage.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_stream(sub: Subscriber, proc: subprocess.Popen, sleep_s: float, timeout_s: float = 60.0,
                stop_after: int | None = None) -> tuple[list[int], object]:
    """The frames' seqs a consumer sleeping `sleep_s` per frame reads from `sub`, and the end message (None if
    none came): until the end, `stop_after` frames, `timeout_s`, or the publishing process `proc` gone quiet."""
    seqs, end = [], None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.recv(timeout_s=0.5)
        if msg is None:
            if proc.poll() is not None:
                break
            continue
        if msg.kind == "frame":
            seqs.append(msg.seq)
            if stop_after is not None and len(seqs) >= stop_after:
                break
            time.sleep(sleep_s)
        elif msg.kind == "end":
            end = msg
            break
    return seqs, end


def replay_once(path: Path, mode: str, sleep_s: float) -> tuple[int, list[int], object, str]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    with Subscriber(endpoint, mode=mode, rcvhwm=1) as sub:
        cmd = [sys.executable, "-m", "tools.stream", "replay", str(path), "--fast", "--mode", mode,
               "--endpoint", endpoint] + (["--wait", "10"] if mode == "latest" else [])
        proc = subprocess.Popen(cmd, env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seqs, end = read_stream(sub, proc, sleep_s, timeout_s=120)
        _, err = proc.communicate(timeout=60)
    return proc.returncode, seqs, end, err


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--mode", choices=["lossless", "latest"], default="lossless")
    ap.add_argument("--file", type=Path, default=None, help="a --record file (default: made here)")
    ap.add_argument("--frames", type=int, default=60, help="frames in the recording made here")
    ap.add_argument("--persons", type=int, default=2, help="persons per frame in the recording made here "
                    "(more: larger messages, fewer of them fit in the sockets' buffers)")
    ap.add_argument("--sleep", type=float, default=0.002, help="consumer's sleep per frame (a slow reader)")
    ap.add_argument("--no-slow", action="store_true", help="skip the replays into 0.3 s and 1 s per frame consumers")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file
        if path is None:
            path = Path(tmp) / "run.msgpack"
            make_recording(path, args.frames, args.persons)
        total = sum(1 for r in wire.read_recording(path) if r.topic.endswith(b"/frame"))
        ok = 0
        t0 = time.monotonic()
        for i in range(args.runs):
            code, seqs, end, err = replay_once(path, args.mode, args.sleep)
            complete = code == 0 and end is not None and (args.mode == "latest" or seqs == list(range(total)))
            ok += complete
            if not complete:
                print(f"run {i}: exit {code}, {len(seqs)}/{total} frames, end {'yes' if end else 'MISSING'}"
                      f"{': ' + err.strip().splitlines()[-1] if err.strip() else ''}", flush=True)
        print(f"{ok}/{args.runs} replays complete ({args.mode}, {total} frames each, {time.monotonic() - t0:.0f} s)")
        slow_ok = True
        for sleep_s in ([] if args.no_slow else [0.3, 1.0]):
            code, seqs, end, err = replay_once(path, "lossless", sleep_s)
            complete = code == 0 and end is not None and seqs == list(range(total))
            slow_ok &= complete
            print(f"lossless replay into a {sleep_s:g} s/frame consumer: {len(seqs)}/{total} frames, "
                  f"end message {'1/1' if end is not None else '0/1'}, exit {code}"
                  f"{': ' + err.strip().splitlines()[-1] if err.strip() and not complete else ''}", flush=True)
    return 0 if ok == args.runs and slow_ok else 1


if __name__ == "__main__":
    sys.exit(main())
