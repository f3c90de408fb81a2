"""A subscriber of several streams goes on until every stream it heard of has ended (a stream that ends
first, even before sending a frame, does not stop it), and a late subscriber of a replayed recording of
several streams gets every stream's topology, so none of their frames are held back."""
from __future__ import annotations

import threading
import time

from pipeline import wire
from pipeline.messages import EndOfStream, SourceEnd
from pipeline.publisher import Publisher, PublisherSettings, replay
from pipeline.stage import StageContext, run_stage
from pipeline.subscriber import EndData, StreamEnds, Subscriber
from stages.publish import PublishConfig, PublishStage

N = 6


def _two_stream_stage(assets_dir, endpoint, **cfg):
    return PublishStage(PublishConfig(endpoint=endpoint, **cfg),
                        StageContext(source_ids=("good", "bad"), assets_dir=str(assets_dir)))


def _messages():
    # "bad" ends before it sends a frame (a broken file), "good" goes on
    return ([SourceEnd("bad", 0, "error: decode: not a video")]
            + [wire.synthetic_mesh_frame(1, index=i, source="good") for i in range(N)]
            + [EndOfStream("*", N, "end of stream")])


def test_a_stream_that_ends_first_does_not_stop_the_subscriber(assets_dir, port):
    endpoint = f"tcp://127.0.0.1:{port}"
    stage = _two_stream_stage(assets_dir, endpoint, mode="lossless", linger_ms=2000)
    with Subscriber(endpoint, mode="lossless") as sub:
        t = threading.Thread(target=run_stage, args=(stage, _messages()), daemon=True)
        t.start()
        got = [(f.stream, f.index) for f in sub.frames(idle_timeout_s=20)]
        t.join(30)
    assert got == [("good", i) for i in range(N)]
    assert sub.stats["ends"] == 2


def test_the_end_names_the_streams_still_going(assets_dir, tmp_path):
    rec = tmp_path / "run.msgpack"
    run_stage(_two_stream_stage(assets_dir, "tcp://127.0.0.1:*", record=rec), _messages())
    ends = [wire.decode(r.payload) for r in wire.read_recording(rec) if r.topic.endswith(b"/end")]
    assert [(m["stream"], m["streams_open"]) for m in ends] == [("bad", ["good"]), ("good", [])]
    # a subscriber that heard nothing but the first end (it joined late) knows to wait for "good"
    ends_rule = StreamEnds()
    first = EndData("end", "bad", 0, 0.0, 0, "error", ["good"])
    assert not ends_rule.note(first)
    assert ends_rule.note(EndData("end", "good", N, 0.0, N, "end of stream", []))


def test_a_late_subscriber_of_a_replay_gets_every_streams_topology(assets_dir, tmp_path, port):
    rec = tmp_path / "run.msgpack"
    stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*", record=rec, topology_interval_s=0),
                         StageContext(source_ids=("front", "back"), assets_dir=str(assets_dir)))
    msgs = []
    for i in range(40):
        msgs += [wire.synthetic_mesh_frame(0, index=i, source="front"),
                 wire.synthetic_mesh_frame(0, index=i, source="back")]
    run_stage(stage, msgs + [EndOfStream("*", 80, "end of stream")])
    assert sum(r.topic.endswith(b"/topology") for r in wire.read_recording(rec)) == 2  # recorded once each

    paced = tmp_path / "paced.msgpack"  # the same records 25 ms apart: a replay of ~4 s
    writer = wire.RecordWriter(paced)
    for i, r in enumerate(wire.read_recording(rec)):
        writer.write(1000.0 + 0.025 * i, r.topic, r.payload)
    writer.close()
    endpoint = f"tcp://127.0.0.1:{port}"
    pub = Publisher(PublisherSettings(endpoint=endpoint, hwm=1000))
    pub.open()
    t = threading.Thread(target=replay, args=(pub, paced), daemon=True)
    t.start()
    time.sleep(1.0)  # join late: both topologies went out long before
    try:
        with Subscriber(endpoint, rcvhwm=1000) as sub:
            got = list(sub.frames(idle_timeout_s=15))
        t.join(30)
    finally:
        pub.close()
    streams = {f.stream for f in got}
    assert streams == {"front", "back"}, (streams, sub.stats)
    assert sub.stats["before_topology"] <= 2, sub.stats
