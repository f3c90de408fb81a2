"""Synthetic wire samples: plausibly sized random frames for benchmarks, tests and examples of the wire
format; no network needed.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .messages import Frame, MeshFrame, Person, PersonMesh, now


def synthetic_mesh_frame(
    persons: int = 1, index: int = 0, rng: Optional[np.random.Generator] = None, smpl: bool = False,
    source: str = "default",
) -> MeshFrame:
    """A MeshFrame of random but plausibly sized arrays (bodies within +-1 m, 3-5 m away), for
    benchmarks, tests and examples of the wire format; no network needed."""
    rng = rng if rng is not None else np.random.default_rng(index)
    f32 = np.float32
    frame = Frame(source=source, index=index, pts=index / 30.0, slot=-1, height=720, width=1280,
                  times={"decode": now(), "detect": now(), "infer": now(), "smooth": now()}, dropped=0)
    out = []
    for i in range(persons):
        x1, y1 = rng.uniform(0, 900), rng.uniform(0, 300)
        person = Person(track_id=i + 1, state="tracked", box=(x1, y1, x1 + 200, y1 + 400), score=0.9,
                        center=(x1 + 100, y1 + 200), size=440.0, crop_index=i)
        out.append(PersonMesh(
            person=person,
            cam=np.array([0.9, 0.01, 0.2], f32),
            cam_t=np.array([rng.uniform(-1, 1), rng.uniform(-0.5, 0.5), rng.uniform(3, 5)], f32),
            joints3d=rng.uniform(-1, 1, (14, 3)).astype(f32),
            joints_h36m=rng.uniform(-1, 1, (17, 3)).astype(f32),
            joints2d=rng.uniform(0, 720, (14, 2)).astype(f32),
            vertices=rng.uniform(-1, 1, (6890, 3)).astype(f32),
            rotmat=np.tile(np.eye(3, dtype=f32), (24, 1, 1)) if smpl else None,
            betas=rng.normal(size=10).astype(f32) if smpl else None,
        ))
    return MeshFrame(frame=frame, persons=out, lost=[])
