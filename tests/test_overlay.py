"""The overlay stage: the video with the meshes drawn over it, written while the run goes (stages/overlay.py)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import wire
from pipeline.messages import EndOfStream
from pipeline.stage import StageContext
from pipeline.supervisor import assign_pixel_release
from stages.infer import InferStage
from stages.overlay import OverlayConfig, OverlayStage


def test_overlay_frames_are_copied_and_their_slot_released(assets_dir, tmp_path):
    import multiprocessing as mp

    from pipeline.shm import FrameStore

    store = FrameStore.create(mp.get_context("spawn"), slots=4, max_pixels=1280 * 720, max_persons=2)
    stage = OverlayStage(OverlayConfig(path=tmp_path / "o.mp4"))
    stage.store = store
    try:
        stage.setup()
        for i in range(3):
            mf = wire.synthetic_mesh_frame(2, index=i)
            mf.frame.slot = store.acquire(block=False)
            store.frame(mf.frame)[:] = 50 * i
            assert stage.process(mf) == [mf]  # passed on to publish
            assert mf.frame.slot == -1 and store.spec.free.qsize() == 4  # released as soon as copied
        assert stage.process(EndOfStream("default", 3))[0].frames == 3
        assert stage.counters["overlay_frames"] == 3 and "overlay_skipped" not in stage.counters
    finally:
        stage.close()
        store.close()
        store.unlink()
    import av

    with av.open(str(tmp_path / "o.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (720, 1280, 3)
    for i, f in enumerate(frames):  # each frame's own pixels around the meshes
        assert (np.abs(f.astype(int) - 50 * i) <= 3).all(axis=2).mean() > 0.1


@pytest.mark.parametrize("mode, setting, coarse", [
    ("live", "auto", True), ("offline", "auto", False), ("offline", "coarse", True), ("live", "fine", False)])
def test_the_overlay_draws_the_coarse_mesh_live_and_the_fine_one_offline(assets_dir, tmp_path, mode, setting, coarse):
    stage = OverlayStage(OverlayConfig(path=tmp_path / "o.mp4", mesh=setting), StageContext(mode=mode))
    try:
        stage.setup()
        assert stage.overlay.renderer.faces.shape == ((3442, 3) if coarse else (13776, 3))
        assert (stage.overlay.downsample is not None) == coarse
        assert stage.overlay.block == (mode == "offline")
    finally:
        stage.close()


def test_the_last_stage_that_needs_pixels_releases_them(tmp_path):
    # with an overlay the infer stage keeps each frame's slot and the overlay stage, later, gives it back
    infer, overlay = InferStage(None), OverlayStage(OverlayConfig(path=tmp_path / "o.mp4"))
    assign_pixel_release([infer, overlay])
    assert (infer.releases_pixels, overlay.releases_pixels) == (False, True)
    assign_pixel_release([infer])
    assert infer.releases_pixels


def test_the_ring_holds_the_frames_the_overlay_still_needs(tmp_path):
    from fastmetro_stream.api import build_stages
    from fastmetro_stream.config import load_config

    config = load_config(None, [f"overlay.path={tmp_path / 'o.mp4'}"], source="clip.mp4").resolved()
    names = [s.name for s in build_stages(config)]
    assert names == ["decode", "detect", "infer", "smooth", "overlay", "publish"]
    assert config.run_settings().ring_slots == config.ring_slots_needed() > config.ring_slots
    assert [s.name for s in build_stages(load_config(None, [], source="clip.mp4"))][-2:] == ["smooth", "publish"]


def test_several_sources_get_one_overlay_video_each(assets_dir, tmp_path):
    """With several sources each stream's frames go into its own video beside overlay.path (named with its
    stream id), finished when that source ends while the other goes on."""
    import multiprocessing as mp

    import av

    from pipeline.messages import SourceEnd
    from pipeline.shm import FrameStore
    from stages.overlay import overlay_paths

    assert overlay_paths(tmp_path / "o.mp4", ("door",)) == {None: tmp_path / "o.mp4"}
    paths = overlay_paths(tmp_path / "o.mp4", ("door", "desk"))
    assert paths == {"door": tmp_path / "o.door.mp4", "desk": tmp_path / "o.desk.mp4"}
    store = FrameStore.create(mp.get_context("spawn"), slots=4, max_pixels=1280 * 720, max_persons=2)
    stage = OverlayStage(OverlayConfig(path=tmp_path / "o.mp4"), StageContext(source_ids=("door", "desk")))
    stage.store = store
    stage.check()
    try:
        stage.setup()
        for i in range(5):  # door: 2 frames then its end; desk: 3 frames (a brighter grey), then the run's end
            source = "door" if i in (0, 2) else "desk"
            mf = wire.synthetic_mesh_frame(1, index=i, source=source)
            mf.frame.slot = store.acquire(block=False)
            store.frame(mf.frame)[:] = 40 if source == "door" else 200
            assert stage.process(mf) == [mf] and mf.frame.slot == -1
            if i == 2:
                stage.process(SourceEnd("door", 2))
                assert paths["door"].stat().st_size > 0 and set(stage.overlays) == {"desk"}
        stage.process(EndOfStream("*", 5))
        assert stage.counters["overlay_frames"] == 5 and not stage.overlays
    finally:
        stage.close()
        store.close()
        store.unlink()
    for source, n, grey in [("door", 2, 40), ("desk", 3, 200)]:
        with av.open(str(paths[source])) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == n and frames[0].shape == (720, 1280, 3)
        assert all((np.abs(f.astype(int) - grey) <= 3).all(axis=2).mean() > 0.1 for f in frames)
    assert not (tmp_path / "o.mp4").exists()


def test_the_ring_holds_every_sources_smoothing_window_with_an_overlay(tmp_path):
    from fastmetro_stream.config import Config

    base = {"overlay": {"path": str(tmp_path / "o.mp4")}, "mode": "offline", "smooth": {"offline": "rts"}}
    one = Config.model_validate({**base, "source": "a.mp4"})
    four = Config.model_validate({**base, "sources": [{"id": f"c{i}", "source": f"{i}.mp4"} for i in range(4)]})
    holds = one.smooth.holds_frames("offline")
    assert holds > 0 and four.ring_slots_needed() == one.ring_slots_needed() + 3 * holds
