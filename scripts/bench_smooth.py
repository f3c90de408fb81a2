"""Benchmark of the smooth stage on synthetic noisy meshes with a known ground truth.

    python scripts/bench_smooth.py                    # defaults: 30 fps, 1 cm noise, 600 frames
    python scripts/bench_smooth.py --recording run.fmr   # also: a stream recorded with `run --record`

Ground truth: a 6,890-vertex body whose vertices move in 16 rigid-ish parts, each a sum of sinusoids of
0.3-2 Hz and 2-25 cm (limbs swinging: up to ~40 m/s^2), walking across the camera; the network's error is
white noise of `--noise` metres per coordinate (1 cm: the per-frame jitter of single-frame methods) and 5 cm
on the camera depth. The stage runs as in a pipeline (SmoothStage.process on MeshFrames), live (online
Kalman) and offline (RTS), on its default settings unless told.

Figures (per vertex, millimetres, as in the literature):
    accel error  mean |a_out - a_gt|, a = x[t+1] - 2 x[t] + x[t-1] (mm/frame^2): the jitter
    position     mean |x_out - x_gt| (mm)
    lag          the time shift (frames, sub-frame) of the ground truth that best matches the output
    cost         wall time of process() per person-frame, for 6,890 vertices (one run, this CPU)
Targets: online cuts the accel error by >= 2x with a lag <= 1 frame at 30 fps; offline beats online on
accel and position error; online cost < 1 ms per person-frame.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.messages import Frame, MeshFrame, Person, PersonMesh  # noqa: E402
from stages.smooth import SmoothConfig, SmoothStage  # noqa: E402


def ground_truth(frames: int, fps: float, n_vertices: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / fps
    parts = 16
    part_of = rng.integers(0, parts, size=n_vertices)
    rest = rng.normal(scale=[0.15, 0.45, 0.1], size=(n_vertices, 3))
    motion = np.zeros((frames, parts, 3))
    for p in range(parts):
        for _ in range(3):
            f = rng.uniform(0.3, 2.0)
            # part 0 is the pelvis (the root): it sways by a couple of cm; limbs swing up to 25 cm
            amp = (rng.uniform(0.005, 0.02) if p == 0 else rng.uniform(0.02, 0.25)) * rng.dirichlet(np.ones(3))
            motion[:, p, :] += amp * np.sin(2 * np.pi * f * t[:, None] + rng.uniform(0, 2 * np.pi, 3))
    weight = rng.uniform(0.7, 1.0, size=n_vertices)[None, :, None]  # vertices of a part move alike
    vertices = rest[None] + weight * motion[:, part_of, :]
    # the person walks across the view at ~1.2 m/s, 4-6 m from the camera
    cam_t = np.stack([-1.5 + 1.2 * t, 0.2 + 0.02 * np.sin(2 * np.pi * 1.8 * t), 5 + np.sin(0.4 * t)], 1)
    return {"vertices": vertices, "cam_t": cam_t, "pelvis": np.flatnonzero(part_of == 0)}


def messages(gt: dict[str, np.ndarray], fps: float, noise: float, depth_noise: float, seed: int):
    rng = np.random.default_rng(seed + 1)
    frames, n, _ = gt["vertices"].shape
    joint_idx = rng.choice(n, size=14, replace=False)
    h36m_idx = rng.choice(n, size=17, replace=False)
    h36m_idx[0] = gt["pelvis"][0]  # H36M joint 0 is the pelvis
    out = []
    for i in range(frames):
        v = (gt["vertices"][i] + rng.normal(scale=noise, size=(n, 3))).astype(np.float32)
        cam_t = gt["cam_t"][i] + rng.normal(scale=[noise, noise, depth_noise])
        person = Person(track_id=1, state="new" if i == 0 else "tracked", box=(0, 0, 1, 1), score=0.9,
                        center=(0.5, 0.5), size=1.0, crop_index=0)
        pm = PersonMesh(person=person, cam=np.array([1.0, 0, 0], np.float32), cam_t=cam_t.astype(np.float32),
                        joints3d=v[joint_idx], joints_h36m=v[h36m_idx],
                        joints2d=np.zeros((14, 2), np.float32), vertices=v)
        frame = Frame(source="bench", index=i, pts=i / fps, slot=-1, height=480, width=640)
        out.append(MeshFrame(frame=frame, persons=[pm]))
    return out


def run(stage: SmoothStage, msgs) -> tuple[dict[str, np.ndarray], float]:
    outs, elapsed = [], 0.0
    for m in msgs:
        t0 = time.perf_counter()
        outs.extend(stage.process(m))
        elapsed += time.perf_counter() - t0
    t0 = time.perf_counter()
    outs.extend(stage.finish())
    elapsed += time.perf_counter() - t0
    assert [o.frame.index for o in outs] == [m.frame.index for m in msgs], "frames out of order"
    return {"vertices": np.stack([o.persons[0].vertices for o in outs]).astype(np.float64),
            "cam_t": np.stack([o.persons[0].cam_t for o in outs]).astype(np.float64)}, elapsed / len(msgs)


def accel_error(x: np.ndarray, gt: np.ndarray) -> float:
    a = x[2:] - 2 * x[1:-1] + x[:-2]
    g = gt[2:] - 2 * gt[1:-1] + gt[:-2]
    return float(np.linalg.norm(a - g, axis=-1).mean() * 1000)


def position_error(x: np.ndarray, gt: np.ndarray) -> float:
    return float(np.linalg.norm(x - gt, axis=-1).mean() * 1000)


def lag_frames(x: np.ndarray, gt: np.ndarray, skip: int) -> float:
    """Shift s (frames) minimising |x[t] - gt(t - s)|^2, gt linearly interpolated; s > 0 = output late."""
    t = np.arange(len(gt), dtype=np.float64)
    shifts = np.arange(-3.0, 3.0001, 0.02)
    flat_gt = gt.reshape(len(gt), -1)
    flat_x = x.reshape(len(x), -1)
    sl = slice(skip + 4, len(gt) - 4)
    errs = []
    for s in shifts:
        src = t[sl] - s
        lo = np.floor(src).astype(int)
        w = (src - lo)[:, None]
        g = flat_gt[lo] * (1 - w) + flat_gt[lo + 1] * w
        errs.append(float(np.mean((flat_x[sl] - g) ** 2)))
    return float(shifts[int(np.argmin(errs))])


def cost_per_person(cfg: SmoothConfig, mode: str, persons: int, frames: int, n_vertices: int) -> float:
    """process() wall time per person-frame with `persons` people in every frame."""
    rng = np.random.default_rng(0)
    stage = SmoothStage(SimpleNamespace(smooth=cfg, mode=mode))
    msgs = []
    for i in range(frames):
        pms = []
        for k in range(persons):
            v = rng.normal(size=(n_vertices, 3)).astype(np.float32)
            person = Person(track_id=k, state="new" if i == 0 else "tracked", box=(0, 0, 1, 1), score=1.0,
                            center=(0.5, 0.5), size=1.0)
            pms.append(PersonMesh(person=person, cam=np.ones(3, np.float32), cam_t=np.ones(3, np.float32),
                                  joints3d=v[:14], joints_h36m=v[:17], joints2d=v[:14, :2], vertices=v))
        msgs.append(MeshFrame(frame=Frame("c", i, i / 30, -1, 480, 640), persons=pms))
    t0 = time.perf_counter()
    n_out = 0
    for m in msgs:
        n_out += len(stage.process(m))
    n_out += len(stage.finish())
    assert n_out == frames
    return (time.perf_counter() - t0) / (frames * persons)


def recorded(path: Path, cfg: SmoothConfig) -> None:
    """Raw vs smoothed jitter on a recorded stream (no ground truth: accel magnitude, lag to raw).

    Record it unsmoothed: `fastmetro-stream run --record run.fmr --set smooth.method=none`.
    """
    from pipeline.wire import decode, read_recording

    print(f"\nrecorded stream {path} (no ground truth: mean |accel| of the vertices, mm/frame^2)")
    tracks: dict[tuple[str, int], list[tuple[int, float, dict]]] = {}
    for rec in read_recording(path):
        msg = decode(rec.payload)
        if msg["kind"] != "frame":
            continue
        for p in msg["persons"]:
            if p["vertices"] is not None and not p["predicted"]:
                tracks.setdefault((msg.get("stream", ""), p["track_id"]), []).append(
                    (int(msg.get("index", len(tracks))), msg.get("pts"), p))
    if not tracks:
        print("  no measured persons with vertices in the recording")
        return
    for (src, tid), items in tracks.items():
        if len(items) < 10:
            continue
        msgs = []
        for i, (index, pts, p) in enumerate(items):
            person = Person(track_id=tid, state="new" if i == 0 else "tracked", box=tuple(p["box"]),
                            score=p["score"], center=tuple(p["center"]), size=p["size"])
            pm = PersonMesh(person=person, cam=p["cam"], cam_t=p["cam_t"], joints3d=p["joints3d"],
                            joints_h36m=p["joints_h36m"], joints2d=p["joints2d"], vertices=p["vertices"],
                            rotmat=p["rotmat"], betas=p["betas"])
            msgs.append(MeshFrame(Frame(src, index, pts, -1, 1, 1), [pm]))
        raw = np.stack([m.persons[0].vertices for m in msgs]).astype(np.float64)
        line = [f"  track {tid} ({len(raw)} frames): raw {_jitter(raw):.1f}"]
        for mode in ("live", "offline"):
            out, _ = run(SmoothStage(SimpleNamespace(smooth=cfg, mode=mode)), msgs)
            line.append(f"{'online' if mode == 'live' else 'offline'} {_jitter(out['vertices']):.1f} "
                        f"(lag to raw {lag_frames(out['vertices'], raw, 5):+.2f} frames)")
        print(", ".join(line))


def _jitter(x: np.ndarray) -> float:
    return float(np.linalg.norm(x[2:] - 2 * x[1:-1] + x[:-2], axis=-1).mean() * 1000)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--noise", type=float, default=0.01, help="per-coordinate noise of the vertices (m)")
    ap.add_argument("--depth-noise", type=float, default=0.05, help="noise of the camera depth (m)")
    ap.add_argument("--vertices", type=int, default=6890)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a smooth setting, e.g. body.process=20 (JSON values)")
    ap.add_argument("--recording", type=Path, help="a file written by `fastmetro-stream run --record`")
    args = ap.parse_args(argv)

    cfg = SmoothConfig()
    if args.set:
        import json

        data = cfg.model_dump()
        for item in args.set:
            key, _, value = item.partition("=")
            node = data
            *path, last = key.split(".")
            for p in path:
                node = node[p]
            node[last] = json.loads(value)
        cfg = SmoothConfig(**data)

    gt = ground_truth(args.frames, args.fps, args.vertices, args.seed)
    msgs = messages(gt, args.fps, args.noise, args.depth_noise, args.seed)
    raw = {"vertices": np.stack([m.persons[0].vertices for m in msgs]).astype(np.float64),
           "cam_t": np.stack([m.persons[0].cam_t for m in msgs]).astype(np.float64)}
    online, _ = run(SmoothStage(SimpleNamespace(smooth=cfg, mode="live")), msgs)
    offline, _ = run(SmoothStage(SimpleNamespace(smooth=cfg, mode="offline")), msgs)
    euro_cfg = cfg.model_copy(update={"method": "one_euro"})
    one_euro, _ = run(SmoothStage(SimpleNamespace(smooth=euro_cfg, mode="live")), msgs)
    skip = 15  # the filter's start-up (a newborn track's first frames) is left out of the figures
    sl = slice(skip, None)

    gt.pop("pelvis")
    print(f"synthetic body: {args.frames} frames at {args.fps:g} fps, {args.vertices} vertices, "
          f"noise {args.noise * 1000:g} mm (depth {args.depth_noise * 1000:g} mm), method {cfg.method}, "
          f"model {cfg.model}")
    print(f"{'':10s} {'vertices accel':>15s} {'position':>9s} {'lag':>7s}   {'cam_t accel':>12s} {'position':>9s}")
    res = {}
    rows = [("raw", raw), ("online", online), ("offline", offline)]
    if cfg.method == "kalman":
        rows.append(("one euro", one_euro))
    for name, out in rows:
        r = {k: (accel_error(out[k][sl], gt[k][sl]), position_error(out[k][sl], gt[k][sl]))
             for k in ("vertices", "cam_t")}
        lag = lag_frames(out["vertices"][:, ::7], gt["vertices"][:, ::7], skip)
        res[name] = (r, lag)
        print(f"{name:10s} {r['vertices'][0]:12.2f} mm/f2 {r['vertices'][1]:6.2f} mm {lag:+6.2f} f"
              f"   {r['cam_t'][0]:9.2f} mm/f2 {r['cam_t'][1]:6.2f} mm")
    cut = res["raw"][0]["vertices"][0] / res["online"][0]["vertices"][0]
    print(f"online cuts the vertex accel error {cut:.2f}x at a lag of {res['online'][1]:+.2f} frames "
          f"(target >= 2x at <= 1 frame): {'OK' if cut >= 2 and abs(res['online'][1]) <= 1 else 'MISSED'}")
    better = all(res["offline"][0]["vertices"][i] < res["online"][0]["vertices"][i] for i in (0, 1))
    print(f"offline / online: accel {res['offline'][0]['vertices'][0] / res['online'][0]['vertices'][0]:.2f}, "
          f"position {res['offline'][0]['vertices'][1] / res['online'][0]['vertices'][1]:.2f} "
          f"(target < 1 on both): {'OK' if better else 'MISSED'}")

    print(f"\ncost per person-frame, {args.vertices} vertices (process() wall time, this CPU):")
    for mode in ("live", "offline"):
        for persons in (1, 4):
            c = cost_per_person(cfg, mode, persons, 120, args.vertices)
            label = "online " if mode == "live" else "offline"
            print(f"  {label} {persons} person(s)/frame: {c * 1000:.3f} ms"
                  + (f"  (target < 1 ms: {'OK' if c < 1e-3 else 'MISSED'})" if mode == "live" else ""))
    if args.recording:
        recorded(args.recording, cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
