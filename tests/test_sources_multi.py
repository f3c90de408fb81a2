"""Several sources in one run: the settings, the decode stage of several sources on real files, and the
per-source end through smooth, detect and publish (no mocks: real files, a real frame ring, real sockets)."""
from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastmetro_stream.cli import _load, build_parser
from fastmetro_stream.config import ConfigError, load_config, parse_sources
from pipeline import wire
from pipeline.messages import EndOfStream, Frame, SourceEnd
from pipeline.shm import FrameStore
from pipeline.stage import StageContext, StageError, run_stage
from stages.decode import DecodeConfig
from stages.decode_multi import MultiDecodeStage, SlotPool, SourceSettings, _Boxes
from tests.test_decode import make_video
from tests.test_smooth import frame as mesh_frame, mesh, walk


def write_images(folder: Path, n: int, w: int = 64, h: int = 48) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((h, w, 3), (10 * i) % 256, np.uint8)
        cv2.imwrite(str(folder / f"{i:04d}.png"), img)
    return folder


# ------------------------------------------------------------------------------------------- settings
def test_repeated_source_gives_sources_with_ids_by_position_or_given():
    assert parse_sources([]) == {}
    assert parse_sources(["a.mp4"]) == {"source": "a.mp4"}  # one source: today's behaviour
    assert parse_sources(["door=a.mp4"]) == {"source": "a.mp4", "source_id": "door"}
    got = parse_sources(["a.mp4", "yard=rtsp://cam/x?a=b", "rtsp://h/p?x=1"])
    assert got == {"sources": [{"id": "cam0", "source": "a.mp4"}, {"id": "yard", "source": "rtsp://cam/x?a=b"},
                               {"id": "cam2", "source": "rtsp://h/p?x=1"}]}


def test_a_path_holding_an_equals_sign_is_a_source(tmp_path):
    odd = tmp_path / "take=1.mp4"
    odd.write_bytes(b"")
    assert parse_sources([str(odd)]) == {"source": str(odd)}


def test_cli_repeated_source_builds_a_sources_config(tmp_path):
    a = make_video(tmp_path / "a.mp4", n=3)
    args = build_parser().parse_args(["run", "--source", str(a), "--source", f"side={tmp_path}"])
    cfg = _load(args)
    assert cfg.source is None and [(s.id, s.source) for s in cfg.sources] == [("cam0", str(a)), ("side", str(tmp_path))]
    assert cfg.stream_ids() == ["cam0", "side"]
    ctx = cfg.stage_context()
    assert ctx.source_ids == ("cam0", "side") and ctx.mode == "offline"
    one = _load(build_parser().parse_args(["run", "--source", str(a)]))
    assert one.sources is None and one.source == str(a) and one.stage_context().source_ids == ()
    assert one.stream_ids() == ["default"]


def test_sources_list_in_yaml_with_per_source_decode_settings(tmp_path):
    cfg_file = tmp_path / "multi.yaml"
    cfg_file.write_text("decode: {max_frames: 50, loop: false}\nsources:\n"
                        "  - {id: front, source: a.mp4, max_frames: 5, loop: true}\n"
                        "  - {id: back, source: /dev/video0, camera_width: 640, camera_height: 480}\n")
    cfg = load_config(cfg_file)
    front, back = cfg.sources
    f, b = front.decode_config(cfg.decode), back.decode_config(cfg.decode)
    assert (f.max_frames, f.loop) == (5, True) and (b.max_frames, b.loop) == (50, False)
    assert (b.camera_width, b.camera_height) == (640, 480)
    assert cfg.resolved().mode == "live"  # live if any source is live
    assert load_config(None, sources=[{"id": "a", "source": "x.mp4"}, {"id": "b", "source": "y"}]).resolved().mode == \
        "offline"
    # a --source on the command line replaces the file's sources
    assert load_config(cfg_file, source="z.mp4").sources is None


@pytest.mark.parametrize("tree, words", [
    ({"source": "a.mp4", "sources": [{"id": "x", "source": "b.mp4"}]}, ["either `source`", "not both"]),
    ({"sources": []}, ["`sources` is empty"]),
    ({"sources": [{"id": "x", "source": "a"}, {"id": "x", "source": "b"}]}, ["'x' is given twice"]),
    ({"sources": [{"id": "a/b", "source": "a"}]}, ["sources.0.id", "without '/'"]),
    ({"sources": [{"id": "", "source": "a"}]}, ["sources.0.id"]),
    ({"sources": [{"source": "a"}]}, ["sources.0.id", "required"]),
    ({"sources": [{"id": "a", "source": "x", "fps": 3}]}, ["sources.0.fps", "unknown setting"]),
    ({"sources": [{"id": "a", "source": "x", "camera_width": 640}]}, []),  # pairing checked per source below
    ({"source_id": "cam7", "sources": [{"id": "a", "source": "x"}]}, ["source_id"]),
    ({"sources": [{"id": "a", "source": "x"}, {"id": "b", "source": "y"}], "publish": {"stream": "s"}},
     ["publish.stream"]),
])
def test_bad_sources_are_clear_errors(tmp_path, tree, words):
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(tree))
    if not words:
        cfg = load_config(p)
        with pytest.raises(ValueError, match="camera_width and decode.camera_height go together"):
            cfg.sources[0].decode_config(cfg.decode)
        return
    with pytest.raises(ConfigError) as e:
        load_config(p)
    for w in words:
        assert w in str(e.value)


# ------------------------------------------------------------------------------------------- decode
@pytest.fixture
def store():
    s = FrameStore.create(multiprocessing.get_context("spawn"), 8, 64 * 48, 1)
    try:
        yield s
    finally:
        s.close()
        s.unlink()


def multi(store, entries, mode="offline", **decode) -> MultiDecodeStage:
    st = MultiDecodeStage([SourceSettings(**e) for e in entries], DecodeConfig(**decode), StageContext(mode=mode))
    st.check()
    st.store = store
    st.setup()
    return st


def consume(stage, store, delay=0.0):
    out = []
    for item in stage.frames():
        if isinstance(item, Frame):
            out.append((item, float(store.frame(item).mean())))
            store.release(item)
            time.sleep(delay)
        else:
            out.append((item, None))
    stage.close()
    return [x for x, _ in out], [px for _, px in out]


def test_two_sources_interleave_with_their_own_ids_indices_and_pts(tmp_path, store):
    video = make_video(tmp_path / "a.mp4", n=12, fps=25)
    images = write_images(tmp_path / "imgs", 7)
    st = multi(store, [{"id": "vid", "source": str(video)}, {"id": "pics", "source": str(images)}])
    items, pixels = consume(st, store, delay=0.005)
    frames = [x for x in items if isinstance(x, Frame)]
    by = {sid: [f for f in frames if f.source == sid] for sid in ("vid", "pics")}
    assert [f.index for f in by["vid"]] == list(range(12)) and [f.index for f in by["pics"]] == list(range(7))
    assert [f.pts for f in by["pics"]] == pytest.approx([i / 30 for i in range(7)])
    assert by["vid"][1].pts - by["vid"][0].pts == pytest.approx(1 / 25, abs=1e-3)
    # each picture is its source's own: image i is flat grey 10 * i
    assert [round(p) for it, p in zip(items, pixels) if isinstance(it, Frame) and it.source == "pics"] == \
        [10 * i for i in range(7)]
    # interleaved: the image folder's frames do not all wait for the end of the video
    first_pics = next(i for i, x in enumerate(frames) if x.source == "pics")
    assert first_pics < 12
    # each source ends after its last frame, with how many it delivered
    ends = {x.source: (i, x) for i, x in enumerate(items) if isinstance(x, SourceEnd)}
    assert set(ends) == {"vid", "pics"}
    for sid, (i, end) in ends.items():
        assert end.frames == len(by[sid]) and end.reason == "end of stream"
        assert all(not (isinstance(x, Frame) and x.source == sid) for x in items[i + 1:])


def test_a_failing_source_ends_its_own_stream_and_the_other_goes_on(tmp_path, store):
    video = make_video(tmp_path / "a.mp4", n=15)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    st = multi(store, [{"id": "bad", "source": str(broken)}, {"id": "good", "source": str(video)}])
    items, _ = consume(st, store)
    ends = {x.source: x for x in items if isinstance(x, SourceEnd)}
    assert ends["bad"].reason.startswith("error: decode:") and "broken.mp4" in ends["bad"].reason
    assert ends["bad"].frames == 0
    assert [x.index for x in items if isinstance(x, Frame) and x.source == "good"] == list(range(15))
    assert ends["good"].reason == "end of stream"
    assert st.counters["sources_failed"] == 1


def test_when_every_source_fails_the_stage_fails_naming_them(tmp_path, store):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"x" * 1000)
    st = multi(store, [{"id": "a", "source": str(bad)}, {"id": "b", "source": str(bad)}])
    with pytest.raises(StageError, match="every source failed: a: error: decode: .*; b: "):
        consume(st, store)


def test_a_missing_file_is_named_before_the_run_starts(tmp_path):
    st = MultiDecodeStage([SourceSettings(id="a", source=str(tmp_path / "nope.mp4"))])
    with pytest.raises(StageError, match="source 'a'.*nope.mp4"):
        st.check()


def test_a_slow_source_does_not_hold_up_a_fast_one(tmp_path, store):
    """A realtime-paced image folder at 2 frames/s beside a file played in real time (a file beside a live
    source must be): the file's frames all come long before the slow source has given its few, and the
    stop ends both at once."""
    video = make_video(tmp_path / "a.mp4", n=30)
    slow = write_images(tmp_path / "slow", 50)
    st = multi(store, [{"id": "slow", "source": str(slow), "realtime": True, "image_fps": 2.0},
                       {"id": "fast", "source": str(video), "realtime": True}], mode="live")
    t0 = time.monotonic()
    got: list = []
    done_fast = None
    for item in st.frames():
        if isinstance(item, Frame):
            store.release(item)
        got.append(item)
        if isinstance(item, SourceEnd) and item.source == "fast":
            done_fast = time.monotonic() - t0
            st.stop()
    st.close()
    assert done_fast is not None and done_fast < 5.0
    assert sum(1 for x in got if isinstance(x, Frame) and x.source == "fast") + \
        sum(x.dropped for x in got if isinstance(x, Frame) and x.source == "fast") == 30
    slow_end = [x for x in got if isinstance(x, SourceEnd) and x.source == "slow"]
    assert slow_end and slow_end[0].reason == "stopped"
    assert time.monotonic() - t0 < 10.0


def test_no_source_can_hold_every_slot(store):
    pool = SlotPool(store, ["a", "b"], SlotPool.cap_for(store.spec.slots, 2))
    stop = threading.Event()
    time.sleep(0.3)  # (the ring's free queue is a multiprocessing queue: its slots land a moment after it is made)
    assert pool.cap == 6  # 8 slots, 2 kept for the other source
    held = [pool.take("a", block=False, stop=stop) for _ in range(6)]
    assert None not in held and pool.take("a", block=False, stop=stop) is None  # at its cap
    b = [pool.take("b", block=False, stop=stop) for _ in range(2)]
    assert None not in b
    store.release(held[0])  # a slot of "a" comes back: "a" may take one again
    time.sleep(0.3)
    assert pool.take("a", block=False, stop=stop) is not None
    assert SlotPool.cap_for(16, 4) == 10 and SlotPool.cap_for(4, 4) == 1 and SlotPool.cap_for(16, 1) == 16


def test_live_boxes_keep_the_freshest_frame_and_count_what_they_replaced():
    boxes = _Boxes(["a", "b"], live=True)
    stop = threading.Event()
    olds = [boxes.put(Frame("a", i, None, i, 1, 1), stop) for i in range(4)]
    assert olds[:2] == [None, None] and [o.index for o in olds[2:]] == [0, 1]
    boxes.put(Frame("b", 0, None, 9, 1, 1), stop)
    got = [boxes.take(0.01) for _ in range(3)]
    assert [(f.source, f.index, f.dropped) for f in got] == [("a", 2, 1), ("b", 0, 0), ("a", 3, 1)]
    assert boxes.take(0.01) is None


# ------------------------------------------------------------------------------------------- per-source end
def test_smooth_flushes_one_source_at_its_end_while_the_other_goes_on():
    from stages.smooth import SmoothConfig, SmoothStage

    st = SmoothStage(SmoothConfig(method="kalman", rts_lag=30), context=StageContext(mode="offline"))
    rng = np.random.default_rng(0)
    wa, wb = walk(rng, 10), walk(rng, 10, start=1.0)
    out = []
    for i in range(10):
        out += st.process(mesh_frame(i, [mesh(1, wa[i])], source="a"))
        out += st.process(mesh_frame(i, [mesh(1, wb[i])], source="b"))
    held = len(out)
    out += st.process(SourceEnd("a", 10))
    released = out[held:]
    # every frame of "a" comes out, then its SourceEnd; frames of "b" behind them in order stay held until b ends
    kinds = [(getattr(m, "frame", m).source, type(m).__name__) for m in released]
    assert kinds[-1] == ("a", "SourceEnd")
    a_frames = [m for m in out if not isinstance(m, SourceEnd) and m.frame.source == "a"]
    assert [m.frame.index for m in a_frames] == list(range(10))
    assert all(len(m.persons) == 1 for m in a_frames)
    assert ("b", 1) in st._tracks and ("a", 1) not in st._tracks
    rest = st.process(SourceEnd("b", 10)) + st.process(EndOfStream("*", 20)) + st.finish()
    b_frames = [m for m in out + rest if not isinstance(m, (SourceEnd, EndOfStream)) and m.frame.source == "b"]
    assert [m.frame.index for m in b_frames] == list(range(10))
    assert isinstance(rest[-1], EndOfStream)


def test_detect_ends_one_sources_tracker_and_keeps_the_other(tmp_path, store):
    from stages.detect import DetectConfig, DetectStage

    st = DetectStage(DetectConfig(detector="hog"), StageContext(mode="offline"))
    frames = []
    for sid in ("a", "b"):
        slot = store.acquire()
        f = Frame(sid, 0, 0.0, slot, 48, 64)
        store.frame(f)[:] = 128
        frames.append(f)
    st.store = store
    st.setup()
    out = [o for f in frames for o in st.process(f)]
    assert set(st.trackers) == {"a", "b"}
    out += st.process(SourceEnd("a", 1))
    assert set(st.trackers) == {"b"} and isinstance(out[-1], SourceEnd) and out[-1].source == "a"
    assert [o.frame.source for o in out[:-1]] == ["a", "b"]
    st.close()


def test_publish_sends_each_source_as_its_own_stream(tmp_path, assets_dir):
    from pipeline.recording import recording_frames
    from stages.publish import PublishConfig, PublishStage

    rec = tmp_path / "run.msgpack"
    st = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*", record=rec),
                      StageContext(source_ids=("front", "back"), assets_dir=str(assets_dir)))
    st.check()
    run_stage(st, [wire.synthetic_mesh_frame(1, index=0, source="front"),
                   wire.synthetic_mesh_frame(1, index=0, source="back"),
                   wire.synthetic_mesh_frame(1, index=1, source="front"),
                   SourceEnd("front", 2, "end of stream"),
                   wire.synthetic_mesh_frame(1, index=1, source="back"),
                   EndOfStream("*", 4, "stopped")])
    msgs = [wire.decode(r.payload) for r in wire.read_recording(rec)]
    assert {m["stream"] for m in msgs if m["kind"] == "topology"} == {"front", "back"}
    for sid in ("front", "back"):
        mine = [m for m in msgs if m["stream"] == sid]
        assert [m["seq"] for m in mine if m["kind"] == "frame"] == [0, 1]
        assert mine[-1]["kind"] == "end" and mine[-1]["seq"] == 2
        assert [f.index for f in recording_frames(rec, stream=sid)] == [0, 1]
    ends = {m["stream"]: m for m in msgs if m["kind"] == "end"}
    assert ends["front"]["reason"] == "end of stream" and ends["back"]["reason"] == "stopped"
    assert [m["stream"] for m in msgs if m["kind"] == "end"] == ["front", "back"]  # front's when it ended


def test_each_sources_tracker_numbers_its_own_tracks():
    """detect keeps one tracker per source, and each counts its own ids (1, 2, ...) whatever the other does
    (older Ultralytics numbered tracks from one counter per process, reset by every new tracker)."""
    from stages.tracking import UltralyticsTracker

    two = np.array([[10, 10, 50, 120], [200, 10, 240, 120]], np.float32)
    rgb = np.zeros((240, 320, 3), np.uint8)
    a = UltralyticsTracker("bytetrack")
    _, ids_a, _, _ = a.update(two, np.array([0.9, 0.9], np.float32), rgb)
    b = UltralyticsTracker("bytetrack")  # a second source's tracker starts
    _, ids_b, _, _ = b.update(two[:1], np.array([0.9], np.float32), rgb)
    three = np.vstack([two, [[100, 100, 140, 220]]]).astype(np.float32)
    for _ in range(3):  # a new person in source a: confirmed after a few frames
        _, ids_a2, _, _ = a.update(three, np.array([0.9, 0.9, 0.9], np.float32), rgb)
    assert sorted(ids_a) == [1, 2] and list(ids_b) == [1]
    assert sorted(ids_a2) == [1, 2, 3]  # not 2 again (the other tracker's count), nor 1 (its reset)


def test_infer_batches_crops_of_every_source_together_in_order(assets_dir):
    import warnings

    import fastmetro
    from pipeline.messages import Detections, MeshFrame, Person
    from stages.infer import InferConfig, InferStage

    s = FrameStore.create(multiprocessing.get_context("spawn"), 8, 64 * 64, 1)
    try:
        time.sleep(0.3)
        stage = InferStage(InferConfig(assets_dir=str(assets_dir), max_batch=4), StageContext(mode="offline"))
        stage.store = s
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)
            stage.setup()
        rng = np.random.default_rng(0)

        def det(source, index):
            f = Frame(source, index, index / 30, s.acquire(), 64, 64)
            s.crops(f)[0] = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
            return Detections(f, [Person(1, "tracked", (10, 10, 40, 50), 0.9, (25.0, 30.0), 48.0, crop_index=0)])

        out = []
        for i in range(2):
            out += stage.process(det("a", i))
            out += stage.process(det("b", i))
        assert stage.counters["forwards"] == 1 and stage.counters["crops"] == 4  # one batch, both sources
        out += stage.process(det("a", 2))
        out += stage.process(SourceEnd("a", 3))  # the held frame goes first, then the end
        assert [(m.frame.source, m.frame.index) if isinstance(m, MeshFrame) else ("end", m.source) for m in out] == \
            [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("end", "a")]
        stage.close()
    finally:
        s.close()
        s.unlink()


# ------------------------------------------------------------------------------------------- in the runtime
def flat_images(folder: Path, n: int) -> Path:
    """n 16 x 16 PNGs, image i flat i % 256 (what stage_helpers.Forward checks against the frame's index)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((16, 16, 3), i % 256, np.uint8))
    return folder


def run_multi(tmp_path, entries, mode, delay_s, **cfg):
    import json

    from pipeline.supervisor import Supervisor
    from stage_helpers import Forward, StreamSink, runtime_config

    out = tmp_path / "sink.jsonl"
    decode = MultiDecodeStage([SourceSettings(**e) for e in entries], DecodeConfig(), StageContext(mode=mode))
    summary = Supervisor(runtime_config(mode=mode, **cfg), [decode, Forward("slow", delay_s=delay_s),
                                                            StreamSink(str(out))]).run()
    return summary, [json.loads(line) for line in out.read_text().splitlines()]


def test_offline_in_the_runtime_every_frame_of_each_source_then_its_end(tmp_path):
    a, b = flat_images(tmp_path / "a", 40), flat_images(tmp_path / "b", 25)
    summary, rows = run_multi(tmp_path, [{"id": "a", "source": str(a)}, {"id": "b", "source": str(b)}],
                              "offline", 0.002, ring_slots=6, queue_size=2)
    assert summary.exit_code == 0 and summary.frames == 65 and summary.drops == 0
    for sid, n in (("a", 40), ("b", 25)):
        assert [r[2] for r in rows if r[:2] == ["frame", sid]] == list(range(n))
        ends = [i for i, r in enumerate(rows) if r[:2] == ["source_end", sid]]
        assert len(ends) == 1 and rows[ends[0]][2:] == [n, "end of stream"]
        assert not any(r[:2] == ["frame", sid] for r in rows[ends[0]:])
    assert rows[-1][0] == "end" and sum(r[0] == "end" for r in rows) == 1
    assert summary.sources == {"a": (40, 0), "b": (25, 0)}
    assert summary.stages[0].items_in == 65  # the SourceEnds are not counted as items


def test_live_in_the_runtime_drops_are_reported_per_source(tmp_path):
    a, b = flat_images(tmp_path / "a", 150), flat_images(tmp_path / "b", 150)
    entries = [{"id": "a", "source": str(a), "realtime": True, "image_fps": 300},
               {"id": "b", "source": str(b), "realtime": True, "image_fps": 300}]
    summary, rows = run_multi(tmp_path, entries, "live", 0.02, ring_slots=6, queue_size=2)
    assert summary.exit_code == 0
    for sid in ("a", "b"):
        frames = [r for r in rows if r[:2] == ["frame", sid]]
        idx = [r[2] for r in frames]
        assert idx == sorted(set(idx)) and len(idx) < 150  # in order, each once, and some dropped
        reported = sum(r[3] for r in frames)
        # every frame up to the last delivered one is delivered or reported dropped by a later frame of
        # its own source (drops after it have no frame left to report them)
        assert reported + len(idx) == idx[-1] + 1
        assert summary.sources[sid] == (len(idx), reported)
        assert [r for r in rows if r[:2] == ["source_end", sid]][0][3] == "end of stream"
    assert summary.drops > 0
