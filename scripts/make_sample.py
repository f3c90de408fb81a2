"""Make samples/sample.mp4, the video that ships with the project and is the default source.

Deterministic: built only from the two photos Ultralytics ships (assets/bus.jpg, assets/zidane.jpg):
a slow pan and zoom across each (so the people move in the frame), a cut between them. 640x480, 15 fps,
H.264 (libx264, else MPEG-4 Part 2), about 4 s, well under 1 MB.

    python scripts/make_sample.py                 # writes samples/sample.mp4
    python scripts/make_sample.py --check         # and prints HOG persons per frame (stages.detect)
    python scripts/make_sample.py --out x.mp4 --seconds 2
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT, FPS = 640, 480, 15


def ultralytics_assets() -> Path:
    import ultralytics

    return Path(os.path.dirname(ultralytics.__file__)) / "assets"


def _lerp(a, b, t):
    return tuple(x + (y - x) * t for x, y in zip(a, b))


def shot(image: np.ndarray, n: int, start: tuple, end: tuple) -> list[np.ndarray]:
    """n frames of a virtual camera moving over `image` (RGB). start/end: (cx, cy, view height) as
    fractions of the image height/width; the view keeps the output's 4:3 aspect. Smooth ease in/out."""
    h, w = image.shape[:2]
    out = []
    for i in range(n):
        t = i / max(n - 1, 1)
        t = 0.5 - 0.5 * np.cos(np.pi * t)  # ease in/out: no jerk at the cut
        cx, cy, vh = _lerp(start, end, t)
        view_h = vh * h
        view_w = view_h * WIDTH / HEIGHT
        s = WIDTH / view_w
        # keep the view inside the photo: no mirrored borders
        x0 = min(max(cx * w - view_w / 2, 0.0), max(w - view_w, 0.0))
        y0 = min(max(cy * h - view_h / 2, 0.0), max(h - view_h, 0.0))
        m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], dtype=np.float64)
        out.append(cv2.warpAffine(image, m, (WIDTH, HEIGHT), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT101))
    return out


def frames(seconds: float = 4.0) -> list[np.ndarray]:
    assets = ultralytics_assets()
    bus = cv2.cvtColor(cv2.imread(str(assets / "bus.jpg")), cv2.COLOR_BGR2RGB)  # 810x1080 portrait
    zidane = cv2.cvtColor(cv2.imread(str(assets / "zidane.jpg")), cv2.COLOR_BGR2RGB)  # 1280x720
    total = int(round(seconds * FPS))
    n1 = total // 2
    n2 = total - n1
    # bus.jpg: four people in front of a bus; zoom in a little while panning right across them (a 4:3 view
    # of this portrait photo is at most 0.56 of its height tall)
    a = shot(bus, n1, start=(0.5, 0.6, 0.55), end=(0.62, 0.6, 0.45))
    # zidane.jpg: two men; zoom out slowly while drifting right
    b = shot(zidane, n2, start=(0.45, 0.55, 0.85), end=(0.52, 0.5, 1.0))
    return a + b


def write(path: Path, images: list[np.ndarray]) -> str:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if codec == "libx264":
            # fixed, single-threaded encoder settings: the same bytes on every run
            stream.options = {"crf": "26", "preset": "medium", "threads": "1", "bf": "0"}
            stream.codec_context.thread_count = 1
        else:
            stream.bit_rate = 1_000_000
        for rgb in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return codec


def check(path: Path) -> list[int]:
    """Persons per frame found by the HOG detector + tracker of the detect stage."""
    import av

    from stages.detect import DetectConfig, PersonTracker

    tracker = PersonTracker(DetectConfig(detector="hog"))
    counts = []
    with av.open(str(path)) as c:
        for vf in c.decode(video=0):
            persons, _ = tracker.update(vf.to_ndarray(format="rgb24"))
            counts.append(len(persons))
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "samples" / "sample.mp4")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--check", action="store_true", help="run the HOG detector over the result")
    args = ap.parse_args(argv)
    codec = write(args.out, frames(args.seconds))
    print(f"{args.out}: {args.out.stat().st_size} bytes, {codec}, {WIDTH}x{HEIGHT} @ {FPS} fps")
    if args.check:
        counts = check(args.out)
        found = sum(c >= 1 for c in counts)
        print("persons per frame:", " ".join(map(str, counts)))
        print(f"frames with >= 1 person: {found}/{len(counts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
