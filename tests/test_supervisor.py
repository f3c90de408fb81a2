"""The runtime on its own: end of stream, errors, killed stages, signals, live drops, offline back-pressure,
and that no process and no shared-memory segment outlives a run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pipeline.supervisor import Supervisor
from stage_helpers import CountingSource, Forward, Sink, alive, read_sink, runtime_config

REPO = Path(__file__).resolve().parents[1]


def shm_exists(name: str) -> bool:
    return Path("/dev/shm", name.lstrip("/")).exists()


def run(stages, **cfg):
    sup = Supervisor(runtime_config(**cfg), stages)
    summary = sup.run()
    assert not shm_exists(sup.store.spec.name), "shared memory left behind"
    assert not any(p.is_alive() for p in sup.procs), "a stage process outlived the run"
    return summary


def test_end_of_stream_flows_through_and_exits_zero(tmp_path):
    out = tmp_path / "sink.jsonl"
    summary = run([CountingSource(30), Forward("a"), Forward("b"), Sink(str(out))])
    assert summary.exit_code == 0 and summary.reason == "end of stream"
    frames, ends = read_sink(out)
    assert [f[0] for f in frames] == list(range(30))
    assert ends == [["end", 30, "end of stream"]]
    assert summary.frames == 30
    src = summary.stages[0]
    assert src.items_out == 31  # 30 frames + the end of stream
    assert summary.stages[1].latency_ms.keys() == {"p50", "p95", "p99"}


def test_a_stage_exception_stops_everything_with_its_traceback(tmp_path):
    summary = run([CountingSource(None), Forward("a", fail_at=5), Sink(str(tmp_path / "s"))])
    assert summary.exit_code == 1
    assert "ValueError: boom at 5" in summary.error
    assert "error in a" == summary.reason


def test_a_stage_error_stops_everything_with_its_message_only(tmp_path):
    # what the user can fix (a busy port, a missing file): the message, not a traceback that buries it
    msg = "publish.endpoint tcp://127.0.0.1:1: cannot bind; choose another port"
    summary = run([CountingSource(None), Forward("a", setup_error=msg), Sink(str(tmp_path / "s"))])
    assert summary.exit_code == 1 and summary.reason == "error in a"
    assert summary.error == f"a: {msg}"


def test_sigkill_of_one_stage_stops_all(tmp_path):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    stages = [CountingSource(None, delay_s=0.01, pid_dir=str(pid_dir)), Forward("a", pid_dir=str(pid_dir)),
              Sink(str(tmp_path / "s"), pid_dir=str(pid_dir))]

    def killer():
        deadline = time.monotonic() + 60
        while not (pid_dir / "a.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(int((pid_dir / "a.pid").read_text()), signal.SIGKILL)

    t = threading.Thread(target=killer)
    t.start()
    summary = run(stages)
    t.join()
    assert summary.exit_code == 1
    assert "killed by SIGKILL" in summary.reason
    pids = [int(p.read_text()) for p in pid_dir.glob("*.pid")]
    assert len(pids) == 3 and not any(alive(p) for p in pids)


def test_offline_loses_nothing_behind_a_slow_stage(tmp_path):
    out = tmp_path / "sink.jsonl"
    summary = run([CountingSource(60), Forward("slow", delay_s=0.01), Sink(str(out))], mode="offline",
                  queue_size=2, ring_slots=3)
    frames, _ = read_sink(out)
    assert [f[0] for f in frames] == list(range(60))
    assert summary.drops == 0 and all(d == 0 for _, d in frames)


def test_live_drops_the_oldest_and_counts_instead_of_growing_queues(tmp_path):
    out = tmp_path / "sink.jsonl"
    n = 300
    summary = run([CountingSource(n, live=True, delay_s=0.002), Forward("slow", delay_s=0.03), Sink(str(out))],
                  mode="live", queue_size=2, ring_slots=6)
    frames, ends = read_sink(out)
    idx = [f[0] for f in frames]
    assert summary.exit_code == 0 and ends
    assert len(idx) < n / 2, "a slow stage in live mode must not see every frame"
    assert idx == sorted(set(idx)), "frames out of order or processed twice"
    # Every frame that did not get through is reported dropped (Frame.dropped) by the next frame that
    # did, so delivered + reported is every frame produced: nothing lost, nothing counted twice.
    reported = sum(d for _, d in frames)
    assert summary.drops > 0
    assert reported + len(idx) == n
    assert max(m.queue_depth_max for m in summary.stages) <= 2


def test_a_live_source_waits_for_slow_starting_stages(tmp_path):
    out = tmp_path / "sink.jsonl"
    summary = run([CountingSource(10, live=True, delay_s=0.01), Forward("model", setup_s=1.5), Sink(str(out))],
                  mode="live", queue_size=2)
    frames, _ = read_sink(out)
    assert summary.exit_code == 0
    assert frames[0][0] == 0, "frames were read (and dropped) before the stages were ready"


SCRIPT = textwrap.dedent("""
    import sys
    sys.path[:0] = [{tests!r}, {repo!r}]
    import pipeline.supervisor as s
    from stage_helpers import CountingSource, Forward, Sink, runtime_config

    def main():
        pid_dir = {pid_dir!r}
        orig = s.FrameStore.create

        def create(*a, **k):
            store = orig(*a, **k)
            open(pid_dir + "/shm", "w").write(store.spec.name)
            return store

        s.FrameStore.create = create
        sup = s.Supervisor(runtime_config(), [CountingSource(None, delay_s=0.01, pid_dir=pid_dir),
                           Forward("a", pid_dir=pid_dir), Sink({sink!r}, pid_dir=pid_dir)])
        summary = sup.run()
        print("EXIT", summary.exit_code, summary.reason, flush=True)
        sys.exit(summary.exit_code)

    if __name__ == "__main__":
        main()
""")


def start_script(tmp_path, **popen):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(REPO / "tests"), repo=str(REPO), pid_dir=str(pid_dir),
                                    sink=str(tmp_path / "sink.jsonl")))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)
    deadline = time.monotonic() + 60
    while len(list(pid_dir.glob("*.pid"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    pids = [int(p.read_text()) for p in pid_dir.glob("*.pid")]
    assert len(pids) == 3, proc.stderr.read() if proc.poll() is not None else "stages did not start"
    return proc, pids, (pid_dir / "shm").read_text()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly(tmp_path, sig):
    proc, pids, shm = start_script(tmp_path)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "EXIT 0 stopped" in out
    frames, ends = read_sink(tmp_path / "sink.jsonl")
    assert ends and ends[0][2] == "stopped" and frames
    assert not any(alive(p) for p in pids)
    assert shm and not shm_exists(shm)


def test_sigterm_to_the_whole_process_group_is_a_stop_not_a_stage_failure(tmp_path):
    """kill -- -PGID (a cancelled job, a closed terminal) ends every stage process at once with the
    supervisor: the run says it was stopped (exit 130), it does not blame the first stage seen dead
    ("stage smooth exited with 1")."""
    proc, pids, shm = start_script(tmp_path, start_new_session=True)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "EXIT 130 stopped at once" in out and "exited with" not in err
    assert not any(alive(p) for p in pids)
    assert shm and not shm_exists(shm)


def test_stages_do_not_outlive_a_killed_supervisor(tmp_path):
    proc, pids, shm = start_script(tmp_path)
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)
    while shm_exists(shm) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not shm_exists(shm), "the resource tracker should unlink the ring when the supervisor dies"
