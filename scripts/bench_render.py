"""Cost of drawing meshes over a frame (draw/raster.py): milliseconds per person, painter vs z-buffer.

    python scripts/bench_render.py            # needs the SMPL mesh data files (FASTMETRO_ASSETS)

Meshes: FastMETRO-S-R50 on the persons OpenCV's HOG finds in Ultralytics' bus.jpg (810 x 1080), with
UNTRAINED weights seeded as `fastmetro-stream image` seeds them: meaningless shapes of long thin spikes,
whose triangles are larger than a body's (a hard case for the z-buffer, whose cost grows with the covered
area). Second case: a smooth closed surface on the SMPL triangles (the mesh graph's spectral embedding,
6,890 vertices, ~0.5 m x 1.2 m) 4 m and 2 m from a 1280 x 720 camera, triangles of body-like size.
Figures are wall times of `MeshRenderer.draw` on this machine in one run (mean of 10 after a warm-up).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, n: int = 10) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1000.0


def smooth_surface(faces: np.ndarray) -> np.ndarray:
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh

    n = int(faces.max()) + 1
    i = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    j = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    a = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    a = ((a + a.T) > 0).astype(float)
    lap = sp.diags(np.asarray(a.sum(1)).ravel()) - a
    _, u = eigsh(lap + 1e-6 * sp.eye(n), k=4, sigma=0, which="LM")
    v = u[:, 1:4]
    return (v - v.mean(0)) / v.std(0) * np.array([0.2, 0.5, 0.15])


def main() -> None:
    import torch
    import ultralytics

    import fastmetro
    from fastmetro import camera
    from fastmetro.engine import Engine, EngineOptions
    from fastmetro_stream.config import load_config
    from draw.raster import MeshItem, MeshRenderer
    from fastmetro.crops import make_crops
    from stages.tracking import PersonTracker

    mesh = fastmetro.load_mesh_data()
    faces = mesh.faces
    bus = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
    rgb = np.ascontiguousarray(cv2.imread(str(bus))[..., ::-1])
    persons, _ = PersonTracker(load_config(None, ["detect.detector=hog"]).detect).update(rgb)
    torch.manual_seed(0)
    r = Engine(EngineOptions())(make_crops(rgb, persons))
    h, w = rgb.shape[:2]
    f = camera.default_focal((w, h))
    cam_t = camera.crop_to_frame_translation(r["cam"], np.array([p.center for p in persons]),
                                             np.array([p.size for p in persons]), (w, h), f)
    items = [MeshItem(r["vertices"][i], cam_t[i], p.track_id, p.box) for i, p in enumerate(persons)]
    print(f"cpu threads: {os.cpu_count()}; bus.jpg {w}x{h}, {len(items)} untrained meshes")
    res = {}
    for method in ("painter", "zbuffer"):
        ren = MeshRenderer(faces, method=method)
        one = timed(lambda: ren.draw(rgb, items[:1], f))
        alls = timed(lambda: ren.draw(rgb, items, f))
        res[method] = alls
        print(f"  {method:8s} 1 person {one:7.1f} ms   {len(items)} persons {alls:7.1f} ms "
              f"({alls / len(items):.1f} ms per person)")
    print(f"  z-buffer / painter time: {res['zbuffer'] / res['painter']:.2f}")
    # overlay.mesh: coarse (the 1723-vertex mesh: what a live overlay draws by default)
    coarse = MeshRenderer(mesh.coarse_faces)
    c = timed(lambda: coarse.draw(rgb, [dataclasses.replace(it, vertices=mesh.downsample @ it.vertices)
                                        for it in items], f))
    print(f"  painter, coarse mesh: {len(items)} persons {c:7.1f} ms ({c / len(items):.1f} ms per person, "
          f"downsampling included): {res['painter'] / c:.2f}x quicker than the fine mesh")
    v = smooth_surface(faces)
    img = np.zeros((720, 1280, 3), np.uint8)
    for z in (4.0, 2.0):
        item = [MeshItem(v, np.array([0.0, 0.0, z]), 1)]
        t = {m: timed(lambda: MeshRenderer(faces, method=m).draw(img, item)) for m in ("painter", "zbuffer")}
        vc = [MeshItem(mesh.downsample @ v, np.array([0.0, 0.0, z]), 1)]
        tc = timed(lambda: coarse.draw(img, vc))
        print(f"smooth surface at {z} m, 1280x720: painter {t['painter']:.1f} ms, zbuffer {t['zbuffer']:.1f} ms "
              f"(z-buffer / painter {t['zbuffer'] / t['painter']:.2f}), painter coarse {tc:.1f} ms "
              f"({t['painter'] / tc:.2f}x quicker)")
    labels = timed(lambda: MeshRenderer(faces).draw(rgb, [MeshItem(None, np.zeros(3), 1, (10, 10, 200, 400))], f))
    print(f"box and label only: {labels:.2f} ms")


if __name__ == "__main__":
    main()
