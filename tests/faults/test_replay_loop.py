"""Replaying a recording, lossless and as fast as possible, many times in a row: every run delivers every
record and the end, and exits 0 (`scripts/replay_loop.py` runs the long form, 50 replays)."""
from __future__ import annotations

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from replay_loop import make_recording, replay_once  # noqa: E402  (the script's long form runs the same replay)

N = 40


@pytest.fixture(scope="module")
def recording(tmp_path_factory, assets_dir):
    path = tmp_path_factory.mktemp("rec") / "run.msgpack"
    make_recording(path, N)
    return path


@pytest.mark.slow
def test_lossless_replays_in_a_row_all_complete(recording):
    for i in range(8):
        code, seqs, end, err = replay_once(recording, "lossless", 0.002)
        assert code == 0, f"replay {i}: exit {code}: {err[-1500:]}"
        assert seqs == list(range(N)), f"replay {i}: got {len(seqs)} of {N} frames"
        assert end is not None and end.seq == N, f"replay {i}: no end message"


def test_latest_replay_delivers_the_end(recording):
    for i in range(3):
        code, seqs, end, err = replay_once(recording, "latest", 0.01)
        assert code == 0, err[-1500:]
        assert end is not None and end.seq == N, f"replay {i}: no end message ({len(seqs)} frames)"
