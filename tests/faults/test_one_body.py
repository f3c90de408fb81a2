"""The published joints2d are the projection of the published joints3d and cam_t (one body), for
tracked and coasting persons, live and offline."""
from __future__ import annotations

import numpy as np
import pytest

from fastmetro import camera
from pipeline import wire
from pipeline.messages import EndOfStream
from stages.smooth import SmoothConfig, SmoothStage


@pytest.mark.parametrize("mode", ["live", "offline"])
def test_joints2d_is_the_projection_of_joints3d_and_cam_t(mode):
    stage = SmoothStage(SmoothConfig(max_coast=5), mode=mode)
    stage.setup()
    rng = np.random.default_rng(3)
    out = []
    for i in range(20):
        mf = wire.synthetic_mesh_frame(1, index=i, rng=rng)
        mf.focal = 1500.0
        pm = mf.persons[0]
        pm.person.state = "new" if i == 0 else "tracked"
        pm.joints3d = (pm.joints3d * 0.3).astype(np.float32)
        pm.cam_t = np.array([0.1, 0.0, 4.0], np.float32) + rng.normal(0, 0.05, 3).astype(np.float32)
        # the network's own 2D joints disagree with the projection by a few pixels of noise
        pm.joints2d = (camera.project(pm.joints3d[None], pm.cam_t[None], 1500.0, (1280, 720))[0]
                       + rng.normal(0, 4, (14, 2))).astype(np.float32)
        if 10 <= i < 13:
            mf.persons = []  # not detected: the track coasts
        out += stage.process(mf)
    out += stage.process(EndOfStream("default", 20))
    out += list(stage.finish())
    frames = [m for m in out if hasattr(m, "persons")]
    checked = coasting = 0
    for m in frames:
        for p in m.persons:
            want = camera.project(p.joints3d[None], p.cam_t[None], m.focal, (m.frame.width, m.frame.height))[0]
            assert np.abs(p.joints2d - want).max() < 1e-2, f"frame {m.frame.index}: {np.abs(p.joints2d - want).max():.2f} px"
            checked += 1
            coasting += p.predicted
    assert checked >= 17 and coasting >= 1
