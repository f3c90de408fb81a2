"""A large frame ring (e.g. queue_size=1024 with --overlay: thousands of slots) lets the run's process
exit: what is left in the free-slot queue is not waited for at exit."""
from __future__ import annotations

import textwrap

from conftest import run_python

CODE = textwrap.dedent("""
    import multiprocessing as mp
    from pipeline.shm import FrameStore
    if __name__ == "__main__":
        store = FrameStore.create(mp.get_context("spawn"), 20000, 64 * 64, 1)
        store.close()
        store.unlink()
        print("done", flush=True)
""")


def test_a_large_ring_does_not_hold_the_process_at_exit():
    r = run_python(CODE, timeout=60)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr[-1500:]
