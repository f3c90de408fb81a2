"""The feet's cost (fastmetro/feet.py): live contact flags per person-frame (ContactDetector.update, what the
smooth stage adds per person), and offline per 1,000 frames of a track: contact flags, foot locking of the
humanoid skeleton (lock_feet) and of Human3.6M joints (lock_joints).

    PYTHONPATH=. python scripts/bench_feet.py [--frames 3000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastmetro import feet  # noqa: E402
from tests import walk_scene as ws  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    w = ws.walk(args.frames, start=(-20.0, -30.0), heading=0.6)
    pose = ws.noisy_pose(w, rng, 2.0, 0.02, 0.1, np.array([0.0, 3.0, 0.0]))
    pos = feet._world(pose)[0]
    ankles, toes = pos[:, list(feet.FOOT_BONES)], pos[:, list(feet.TOES_BONES)]
    joints = pos[:, [0, 18, 19, 20, 14, 15, 16] + [0] * 10]  # Human3.6M order for the legs and pelvis
    n = args.frames
    contact = feet.contact_flags(ankles, w.times, toes, root=pos[:, 0])

    def live():
        det = feet.ContactDetector()
        for i in range(n):
            det.update(0, w.times[i], ankles[i], root=pos[i, 0])

    rows = [
        ("live contact (ContactDetector.update)", best(live, args.repeat) / n * 1e3, "ms per person-frame"),
        ("offline contact (contact_flags)", best(lambda: feet.contact_flags(ankles, w.times, toes, root=pos[:, 0]),
                                                 args.repeat) / n * 1e3, "s per 1,000 frames"),
        ("lock_feet (skeleton)", best(lambda: feet.lock_feet(pose, contact), args.repeat) / n * 1e3,
         "s per 1,000 frames"),
        ("lock_joints (Human3.6M joints)", best(lambda: feet.lock_joints(joints, contact), args.repeat) / n * 1e3,
         "s per 1,000 frames"),
    ]
    print(f"{n} frames of one walker, best of {args.repeat}")
    for name, value, unit in rows:
        print(f"{name:40s} {value:8.3f} {unit}")


if __name__ == "__main__":
    main()
