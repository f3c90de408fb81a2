"""`fastmetro-stream run --record` killed with SIGKILL (no handler runs in it): its stage processes exit on
their own within seconds (the kernel's parent-death signal, and each stage watching its parent), the shared
memory and semaphores the run made are removed (by multiprocessing's resource tracker, which outlives the
supervisor and cleans up what it registered once the stages are gone), and the recording so far reads back
up to its last complete record."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, child_env, free_port
from pipeline import wire
from pipeline.recording import recording_frames

sys.path.insert(0, str(REPO / "scripts"))
from kill_supervisor import alive as _alive, children as _children  # noqa: E402  (the script measures the same)


def _shm_files(pids) -> set[str]:
    """The /dev/shm files (frame ring, queue semaphores) these processes have mapped."""
    names = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        names.update(line.split()[-1] for line in maps.splitlines() if "/dev/shm/" in line)
    return names


def _frames_recorded(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(r.topic.endswith(b"/frame") for r in wire.read_recording(path))


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_supervisor_leaves_no_process_no_shared_memory_and_a_readable_recording(tmp_path, assets_dir):
    rec = tmp_path / "run.msgpack"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastmetro_stream.cli", "run", "--mode", "live", "--record", str(rec),
         "--set", "detect.detector=hog", "--set", "decode.loop=true",
         "--set", f"publish.endpoint=tcp://127.0.0.1:{free_port()}"],
        env=child_env(), cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while _frames_recorded(rec) < 5:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no frames recorded within 240 s"
            time.sleep(0.3)
        kids = _children(proc.pid)
        stages = [pid for pid, cmd in kids if "spawn_main" in cmd]
        assert len(stages) >= 5, kids  # decode, detect, infer, smooth, publish
        shm = _shm_files(stages)
        assert any(Path(n).name.startswith("psm_") for n in shm), shm  # the frame ring
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        t0 = time.monotonic()
        while any(_alive(p) for p in stages) and time.monotonic() - t0 < 15:
            time.sleep(0.05)
        took = time.monotonic() - t0
        assert not [p for p in stages if _alive(p)], "stage processes outlived the supervisor by 15 s"
        assert took < 5, f"the stages took {took:.1f} s to exit"
        while any(os.path.exists(n) for n in shm) and time.monotonic() - t0 < 20:
            time.sleep(0.1)
        left = sorted(n for n in shm if os.path.exists(n))
        assert not left, f"left in /dev/shm: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid, _ in _children(proc.pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    frames = list(recording_frames(rec))
    assert len(frames) >= 5
    indices = [f.index for f in frames]
    assert indices == sorted(indices) and all(f.persons is not None for f in frames)
    data = rec.read_bytes()  # a record cut short, as a kill in the middle of a write leaves it
    records = list(wire.read_recording(rec))
    cut = tmp_path / "cut.msgpack"
    cut.write_bytes(data[: len(data) - len(records[-1].payload) // 2])
    assert len(list(wire.read_recording(cut))) == len(records) - 1


STUCK = """
from pipeline.supervisor import Supervisor
from stage_helpers import CountingSource, runtime_config
from fault_stages import Stuck
Supervisor(runtime_config(), [CountingSource(None, delay_s=0.05, pid_dir={d!r}), Stuck({d!r})]).run()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_stage_stuck_in_a_long_call_still_exits_soon_after_its_supervisor_dies(tmp_path):
    from conftest import popen_python

    proc = popen_python(STUCK.format(d=str(tmp_path)))
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "stuck.busy").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.05)
        pids = [int((tmp_path / f"{n}.pid").read_text()) for n in ("source", "stuck")]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        t0 = time.monotonic()
        while any(_alive(p) for p in pids) and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        took = time.monotonic() - t0
    finally:
        for pid in [int(p.read_text()) for p in tmp_path.glob("*.pid")]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert took < 5, f"{took:.1f} s until the stages were gone (the stuck one waits 120 s)"
