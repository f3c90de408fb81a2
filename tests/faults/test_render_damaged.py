"""`render --video` on a damaged video: it goes on past the damaged packets (it stopped at the first one),
and numbers the frames after them as the decode stage did, so each recorded frame's meshes are drawn on
the frame they were measured on."""
from __future__ import annotations

import av
import pytest

from pipeline import wire
from pipeline.messages import EndOfStream
from pipeline.stage import StageContext, run_stage
from stages.publish import PublishConfig, PublishStage
from test_decode_damage import FPS, decode_all, make_video, mdat, store  # noqa: F401  (store: a fixture)
from tools.render import render_recording, video_frames


@pytest.mark.parametrize("codec", ["mpeg4", "h264"])
def test_render_goes_past_damage_and_keeps_the_decode_stages_indices(tmp_path, store, assets_dir, codec):  # noqa: F811
    path = make_video(tmp_path / "bad.mp4", codec=codec)
    data = bytearray(path.read_bytes())
    start, end = mdat(bytes(data))
    at = start + (end - start) * 2 // 5
    data[at:at + 40000] = bytes(40000)
    path.write_bytes(bytes(data))
    st, decoded = decode_all(store, path)  # what a run of this file recorded
    assert st.counters.get("corrupt_frames", 0) > 0
    indices = [i for i, _ in decoded]
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        rendered = {i: float(vf.time) for i, vf in video_frames(c, vs, vs.average_rate)}
    # every frame the stage delivered has the same index in render's numbering (its time agrees)
    for index, pts in decoded:
        assert index in rendered and abs(rendered[index] - pts) < 0.5 / FPS, (index, pts, rendered.get(index))
    assert max(rendered) >= indices[-1]

    rec = tmp_path / "run.msgpack"
    stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*", record=rec), StageContext(assets_dir=str(assets_dir)))
    msgs = []
    for index, pts in decoded:
        mf = wire.synthetic_mesh_frame(1, index=index)
        mf.frame.width, mf.frame.height, mf.frame.pts = 160, 120, pts
        msgs.append(mf)
    run_stage(stage, msgs + [EndOfStream("default", len(msgs))])
    stats = render_recording(rec, path, tmp_path / "out.mp4", progress=False)
    assert stats["frames"] == len(rendered) and stats["frames"] >= len(decoded)
    assert stats["frames_with_meshes"] == len(decoded)
