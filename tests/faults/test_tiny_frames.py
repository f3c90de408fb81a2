"""Tiny and odd frames never crash detection: frames too small to hold a person are skipped and
counted, and the HOG detector is never given an image smaller than its window (OpenCV reads out of
bounds on those). Run in a child process, so a crash is a failed test and not a dead test run."""
from __future__ import annotations

import textwrap

from conftest import run_python

CODE = textwrap.dedent("""
    import numpy as np
    from stages.detect import DetectConfig
    from stages.detectors import HogDetector
    from stages.tracking import PersonTracker
    rng = np.random.default_rng(0)
    sizes = [(1, 1), (2, 3), (2000, 16), (16, 2000), (130, 63), (127, 70), (40, 40), (200, 120)]
    frames = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    hog = HogDetector()
    for f in frames * 3:
        d = hog.detect([f])[0]
        assert len(d) == 0 or d.xyxy.shape[1] == 4
    tracker = PersonTracker(DetectConfig(detector="hog"), detector=hog)
    for f in frames:
        persons, lost = tracker.update(f)
    out = tracker.update_batch(frames)
    print("too_small", tracker.too_small)
""")


def test_tiny_and_thin_frames_do_not_crash_and_are_counted():
    r = run_python(CODE, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    # 1x1, 2x3 and 16 tall (under min_box_size 40): skipped, twice each (update, then update_batch)
    assert "too_small 6" in r.stdout, r.stdout
