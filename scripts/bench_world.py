"""The world calibration's cost: online (OnlineCalibrator.observe, refits included, per person-frame) and
offline (calibrate over a whole recording, per 1,000 person-frames), on a synthetic scene.

    PYTHONPATH=. python scripts/bench_world.py [--seconds 60] [--walkers 6]
    PYTHONPATH=. python scripts/bench_world.py --accuracy    # the table of docs/world.md instead
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from fastmetro.world_calib import OnlineCalibrator, calibrate, observations_from_boxes
from fastmetro.world_synth import SceneSpec, make_scene


def accuracy() -> None:
    """Errors against the known camera: 20, 10 and 2 degree cameras (roll 2, 3.5 m, true focal 0.7 x the
    diagonal), 16 s scenes with a sitting person and one on stairs, as tests/test_world.py makes them."""
    import math

    for pitch in (20, 10, 2):
        sc = make_scene(SceneSpec(pitch_deg=pitch, roll_deg=2.0, height=3.5, focal_ratio=0.7, seconds=16, sitting=1,
                                  stairs=1), seed=pitch)
        ps = [(i, p) for i, fr in enumerate(sc.frames) for p in fr]
        b, t, f = np.array([p.box for _, p in ps]), [p.track_id for _, p in ps], [i for i, _ in ps]
        j = np.array([p.joints_h36m for _, p in ps])
        for label, joints, f0, mw in (("meshes trusted", j, sc.assumed_focal, 1.0),
                                      ("boxes, diagonal focal given", None, sc.assumed_focal, 0.0),
                                      ("boxes, true focal given", None, sc.camera.focal, 0.0)):
            m = calibrate(observations_from_boxes(b, t, f, sc.frame_wh, joints), sc.frame_wh, f0, mesh_weight=mw)
            ang = math.degrees(math.acos(float(np.clip(m.up @ sc.camera.up, -1, 1))))
            print(f"{pitch:2d} deg down, {label:28s}: focal x{m.focal / sc.camera.focal:.3f} "
                  f"({'estimated' if m.focal_estimated else 'kept'}), up {ang:.2f} deg off, "
                  f"height x{m.height / sc.camera.height:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--walkers", type=int, default=6)
    ap.add_argument("--accuracy", action="store_true", help="print the errors against the known camera instead")
    args = ap.parse_args()
    if args.accuracy:
        return accuracy()
    sc = make_scene(SceneSpec(pitch_deg=20, roll_deg=2, seconds=args.seconds, walkers=args.walkers, sitting=1),
                    seed=0)
    frames = [(i, np.array([p.box for p in fr]), [p.track_id for p in fr], np.array([p.joints_h36m for p in fr]))
              for i, fr in enumerate(sc.frames) if fr]
    rows = sum(len(t) for _, _, t, _ in frames)
    for mesh in (False, True):
        cal = OnlineCalibrator(sc.frame_wh, sc.assumed_focal, use_mesh=mesh)
        t0 = time.perf_counter()
        worst = 0.0
        for i, b, t, j in frames:
            t1 = time.perf_counter()
            cal.observe(b, t, i, j)
            worst = max(worst, time.perf_counter() - t1)
        dt = time.perf_counter() - t0
        cal.close()
        print(f"online ({'meshes' if mesh else 'boxes'}): {dt / rows * 1e3:.3f} ms per person-frame over {rows} "
              f"person-frames ({cal.fits} fits in the stage's thread, state {cal.state}); slowest frame "
              f"{worst * 1e3:.1f} ms (one with a fit; world.background moves fits to a worker thread)")
    b = np.concatenate([f[1] for f in frames])
    t = np.concatenate([f[2] for f in frames])
    fi = np.concatenate([[f[0]] * len(f[2]) for f in frames])
    j = np.concatenate([f[3] for f in frames])
    for mesh in (False, True):
        t0 = time.perf_counter()
        obs = observations_from_boxes(b, t, fi, sc.frame_wh, j if mesh else None)
        m = calibrate(obs, sc.frame_wh, sc.assumed_focal, mesh_weight=1.0 if mesh else 0.0)
        dt = time.perf_counter() - t0
        print(f"offline ({'meshes' if mesh else 'boxes'}): {dt / rows * 1e6:.1f} ms per 1,000 person-frames "
              f"({dt:.2f} s for {rows}); focal {'estimated' if m.focal_estimated else 'kept'}")


if __name__ == "__main__":
    main()
