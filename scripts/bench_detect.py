"""Detect-stage benchmark: frames/s of detect + track + crop per persons-per-frame, and the cost of a crop.

    python scripts/bench_detect.py [--detector hog|yolo|auto] [--frames 20] [--persons 1 2 4 8]

The frames are made from Ultralytics' bus.jpg: the two people on its left are cut out and pasted N times on
a 1280x720 frame of the image's own pavement, each copy sliding a few pixels a frame. Part 1 times
PersonTracker.update (detector + tracker + crop squares) and make_crops per frame, with detection on every
frame and on every third. Part 2 times the crops of the same squares three ways in the same run:

    warp      stages.detect.make_crops: one cv2.warpAffine per person straight into the crop buffer
    loop      the usual per-person Python loop: pad the frame (cv2.copyMakeBorder), slice, cv2.resize
    roi_align stages.detect.make_crops_roi_align: all persons in one torchvision roi_align call (CPU, and
              CUDA when present)

and prints microseconds per person and the ratio to `loop`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.messages import CROP_SIZE  # noqa: E402
from fastmetro.crops import make_crops, make_crops_roi_align  # noqa: E402
from stages.detect import DetectConfig, PersonTracker, build_detector  # noqa: E402


def bus_rgb() -> np.ndarray:
    import ultralytics

    path = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def make_frames(n_persons: int, frames: int, w: int = 1280, h: int = 720) -> list[np.ndarray]:
    rgb = bus_rgb()
    people = rgb[380:920, 30:360]  # the two people on the left of bus.jpg, with some margin
    # ~430 px tall: the HOG detector at its default hog_max_side (400) sees people from ~1/3 of the long side
    people = cv2.resize(people, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    ph, pw = people.shape[:2]
    pavement = cv2.resize(rgb[930:1080, :], (w, h), interpolation=cv2.INTER_LINEAR)
    groups = (n_persons + 1) // 2  # each pasted patch holds two people
    cols = groups  # one row: up to 4 patches of two people
    out = []
    for t in range(frames):
        f = pavement.copy()
        for g in range(groups):
            x = min(int(20 + g * (w - pw - 40) / max(cols - 1, 1)) + 2 * t, w - pw)
            y = (h - ph) // 2
            patch = people if (g < groups - 1 or n_persons % 2 == 0) else people[:, : pw // 2]
            f[y:y + ph, x:x + patch.shape[1]] = patch
        out.append(f)
    return out


def crop_loop(rgb: np.ndarray, squares, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """The per-person Python loop of cv2 calls: pad, slice the square, resize (INTER_LINEAR aliases when it
    shrinks; INTER_AREA averages, like make_crops' pyramid)."""
    out = np.empty((len(squares), CROP_SIZE, CROP_SIZE, 3), np.uint8)
    h, w = rgb.shape[:2]
    for i, ((cx, cy), s) in enumerate(squares):
        x1, y1 = int(round(cx - s / 2)), int(round(cy - s / 2))
        x2, y2 = x1 + int(round(s)), y1 + int(round(s))
        pad = max(0, -x1, -y1, x2 - w, y2 - h)
        src = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0)) if pad else rgb
        sq = src[y1 + pad:y2 + pad, x1 + pad:x2 + pad]
        out[i] = cv2.resize(sq, (CROP_SIZE, CROP_SIZE), interpolation=interpolation)
    return out


def timeit(fn, repeat: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default="hog", choices=["hog", "yolo", "auto"])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--persons", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--repeat", type=int, default=50, help="repetitions of each crop timing")
    args = ap.parse_args()

    cfg = DetectConfig(detector=args.detector)
    detector = build_detector(cfg)
    print(f"detector: {detector.name}; frames 1280x720, {args.frames} per row; cv2 threads {cv2.getNumThreads()}")
    print("\n1) detect + track + crop, frames/s")
    print(f"{'persons pasted':>14} {'found/frame':>11} {'every frame fps':>15} {'every 3rd fps':>13} "
          f"{'crop ms/frame':>13}")
    for n in args.persons:
        frames = make_frames(n, args.frames)
        row = []
        found = 0.0
        detector.detect(frames[:1])  # warm-up
        for every in (1, 3):
            tracker = PersonTracker(cfg.model_copy(update={"detect_every": every}), detector=detector)
            buf = np.empty((cfg.max_persons, CROP_SIZE, CROP_SIZE, 3), np.uint8)
            crop_t = 0.0
            t0 = time.perf_counter()
            persons_total = 0
            for f in frames:
                persons, _ = tracker.update(f)
                c0 = time.perf_counter()
                make_crops(f, persons, out=buf)
                crop_t += time.perf_counter() - c0
                persons_total += len(persons)
            dt = time.perf_counter() - t0
            row.append(len(frames) / dt)
            if every == 1:
                found, crop_ms = persons_total / len(frames), 1000 * crop_t / len(frames)
        print(f"{n:>14} {found:>11.1f} {row[0]:>15.1f} {row[1]:>13.1f} {crop_ms:>13.2f}")

    print("\n2) crop cost per person (microseconds), same squares, same run")
    frame = make_frames(8, 1)[0]
    rng = np.random.default_rng(0)
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    header = f"{'persons':>7} {'side px':>8} {'loop':>8} {'loop_area':>9} {'warp':>8} {'warp/loop':>9}"
    for d in devices:
        header += f" {'roi_' + d:>9} {'ratio':>6}"
    print(header)
    for n in (1, 4, 8):
        for side in (150, 400, 900):
            squares = [((float(rng.uniform(100, 1180)), float(rng.uniform(100, 620))), float(side)) for _ in range(n)]
            buf = np.empty((n, CROP_SIZE, CROP_SIZE, 3), np.uint8)
            t_loop = timeit(lambda: crop_loop(frame, squares), args.repeat) / n * 1e6
            t_area = timeit(lambda: crop_loop(frame, squares, cv2.INTER_AREA), args.repeat) / n * 1e6
            t_warp = timeit(lambda: make_crops(frame, squares, out=buf), args.repeat) / n * 1e6
            line = f"{n:>7} {side:>8} {t_loop:>8.0f} {t_area:>9.0f} {t_warp:>8.0f} {t_warp / t_loop:>9.2f}"
            for d in devices:
                img = torch.from_numpy(frame).to(d)

                def roi() -> None:
                    make_crops_roi_align(img, squares, device=d)
                    if d == "cuda":
                        torch.cuda.synchronize()

                t_roi = timeit(roi, args.repeat) / n * 1e6
                line += f" {t_roi:>9.0f} {t_roi / t_loop:>6.2f}"
            print(line)


if __name__ == "__main__":
    main()
