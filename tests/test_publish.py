"""The publish stage through real ZeroMQ sockets: every message kind, modes, recording, replay, safety."""
from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from pydantic import ValidationError

from pipeline import wire
from pipeline.messages import EndOfStream
from pipeline.stage import StageError
from pipeline.subscriber import EndData, FrameData, Subscriber, Topology
from pipeline.publisher import Publisher, replay
from stages.overlay import OverlayConfig
from stages.publish import PublishConfig, PublishStage
from tools.stream import add_commands

ANY_PORT = "tcp://127.0.0.1:*"  # a free port per test, so tests never collide


@pytest.fixture
def make_stage(assets_dir):
    stages = []

    def make(**kw) -> PublishStage:
        kw.setdefault("endpoint", ANY_PORT)
        stage = PublishStage(PublishConfig(**kw))
        stage.setup()
        stages.append(stage)
        return stage

    yield make
    for s in stages:
        s.close()


def joined(stage: PublishStage, timeout_s: float = 5.0) -> None:
    """Wait until the publisher has seen a subscription (latest mode), so nothing sent next is lost."""
    assert stage.publisher.sock.poll(int(timeout_s * 1000), zmq.POLLIN), "subscriber never joined"


def publish_until_frame(stage: PublishStage, sub: Subscriber, timeout_s: float = 10.0):
    """Publish synthetic frames until `sub` receives a frame message; that message, or None at timeout."""
    deadline = time.monotonic() + timeout_s
    i = 0
    while time.monotonic() < deadline:
        stage.process(wire.synthetic_mesh_frame(1, index=i))
        i += 1
        msg = sub.recv(timeout_s=0.05)
        while msg is not None:
            if msg.kind == "frame":
                return msg
            msg = sub.recv(timeout_s=0)
    return None


def recv_kind(sub: Subscriber, kind: str, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.recv(timeout_s=0.2)
        if msg is not None and msg.kind == kind:
            return msg
    raise AssertionError(f"no {kind} message within {timeout_s} s (stats {sub.stats})")


def test_config_defaults_and_errors():
    cfg = PublishConfig()
    assert cfg.endpoint == "tcp://127.0.0.1:5555" and cfg.mode == "latest"
    with pytest.raises(ValidationError, match="endpont"):
        PublishConfig(endpont="tcp://127.0.0.1:1")
    with pytest.raises(ValidationError, match="curve_server_secret"):
        PublishConfig(curve=True)
    with pytest.raises(ValidationError, match="publish.endpoint"):
        PublishConfig(endpoint="127.0.0.1:5555")


def test_stream_id_from_root_config():
    class Root:
        publish = PublishConfig()
        source_id = "cam7"

    assert PublishStage(Root()).stream == "cam7"
    Root.publish = PublishConfig(stream="override")
    assert PublishStage(Root()).stream == "override"
    assert PublishStage(PublishConfig()).stream == "default"


@pytest.mark.parametrize("mode", ["latest", "lossless"])
def test_every_message_kind_round_trips_through_the_socket(make_stage, mode):
    import fastmetro

    stage = make_stage(mode=mode, stream="cam0", hwm=16)  # room for every message before the test reads
    sub = Subscriber(stage.endpoint, mode=mode)
    try:
        if mode == "latest":
            joined(stage)
        frames = [wire.synthetic_mesh_frame(2, index=i, smpl=(i == 1)) for i in range(3)]
        for mf in frames:
            assert stage.process(mf) == []
        assert stage.process(EndOfStream("cam0", frames=3)) == []
        topo = recv_kind(sub, "topology")
        assert isinstance(topo, Topology) and topo.stream == "cam0"
        np.testing.assert_array_equal(topo.faces, fastmetro.load_mesh_data().faces)
        assert topo.joint_names == list(fastmetro.JOINT_NAMES)
        assert topo.h36m_joint_names == list(fastmetro.H36M_JOINT_NAMES)
        got = [recv_kind(sub, "frame") for _ in frames]
        for g, mf in zip(got, frames):
            assert isinstance(g, FrameData) and g.index == mf.frame.index and g.topology is topo
            for p, pm in zip(g.persons, mf.persons):
                assert p.track_id == pm.person.track_id
                np.testing.assert_array_equal(p.vertices, pm.vertices)
                np.testing.assert_array_equal(p.joints2d, pm.joints2d)
                np.testing.assert_array_equal(p.cam_t, pm.cam_t)
                assert (p.rotmat is None) == (pm.rotmat is None)
        assert [g.seq for g in got] == [0, 1, 2]
        end = recv_kind(sub, "end")
        assert isinstance(end, EndData) and end.frames == 3 and end.seq == 3
        assert sub.stats["gaps"] == 0 and sub.stats["malformed"] == 0
    finally:
        sub.close()
    assert stage.counters["published"] == 3 and stage.counters["end_sent"] == 1


def test_vertices_every_nth_frame_and_never(make_stage):
    stage = make_stage(mode="lossless", vertices_every=2, vertices_dtype="int16")
    with Subscriber(stage.endpoint, mode="lossless") as sub:
        for i in range(4):
            stage.process(wire.synthetic_mesh_frame(1, index=i))
        got = [recv_kind(sub, "frame") for _ in range(4)]
    assert [g.persons[0].vertices is not None for g in got] == [True, False, True, False]
    assert got[0].topology.vertices_dtype == "int16" and got[0].topology.vertices_every == 2
    assert all(g.persons[0].joints3d.shape == (14, 3) for g in got)

    stage = make_stage(mode="lossless", vertices_every=0)
    with Subscriber(stage.endpoint, mode="lossless") as sub:
        for i in range(3):
            stage.process(wire.synthetic_mesh_frame(1, index=i))
        assert all(recv_kind(sub, "frame").persons[0].vertices is None for _ in range(3))


def _listening_addresses(port: int) -> list[str]:
    addrs = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            ip_hex, port_hex = local.split(":")
            if int(port_hex, 16) == port and state == "0A":  # LISTEN
                addrs.append(ip_hex)
    return addrs


def _non_loopback_ip():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outward interface
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


def test_default_endpoint_listens_on_loopback_only(make_stage):
    host = PublishConfig().endpoint.rsplit(":", 1)[0]  # the default, with a free port instead of 5555
    stage = make_stage(endpoint=f"{host}:*")
    port = int(stage.endpoint.rsplit(":", 1)[1])
    assert stage.endpoint.startswith("tcp://127.0.0.1:")
    listening = _listening_addresses(port)
    if listening:  # /proc/net/tcp writes 127.0.0.1 as 0100007F
        assert listening == ["0100007F"], listening
    ip = _non_loopback_ip()
    if ip is not None:
        with pytest.raises(OSError):
            socket.create_connection((ip, port), timeout=1).close()


def test_record_holds_exactly_the_published_messages(make_stage, tmp_path):
    rec = tmp_path / "run.msgpack"
    stage = make_stage(mode="lossless", record=rec, topology_interval_s=0)
    received = []
    with Subscriber(stage.endpoint, mode="lossless") as sub:
        t0 = time.time()
        for i in range(3):
            stage.process(wire.synthetic_mesh_frame(1, index=i))
        stage.process(EndOfStream("default", 3))
        for _ in range(5):
            assert sub.sock.poll(5000)
            received.append(sub.sock.recv_multipart())
    stage.close()
    recs = list(wire.read_recording(rec))
    assert [[r.topic, r.payload] for r in recs] == received
    assert [r.topic for r in recs] == [b"default/topology"] + [b"default/frame"] * 3 + [b"default/end"]
    times = [r.t for r in recs]
    assert times == sorted(times) and t0 - 1 < times[0] <= times[-1] < time.time() + 1


def test_replay_sends_the_recording_again(make_stage, tmp_path):
    rec = tmp_path / "run.msgpack"
    stage = make_stage(mode="lossless", record=rec)
    with Subscriber(stage.endpoint, mode="lossless") as sub:
        for i in range(4):
            stage.process(wire.synthetic_mesh_frame(2, index=i))
        stage.process(EndOfStream("default", 4))
        original = [recv_kind(sub, "frame") for _ in range(4)]
    stage.close()
    pub = Publisher(PublishConfig(endpoint=ANY_PORT, mode="lossless"))
    pub.open()
    try:
        with Subscriber(pub.endpoint, mode="lossless") as sub:
            sender = threading.Thread(target=replay, args=(pub, rec), kwargs={"fast": True})
            sender.start()
            again = list(sub.frames(idle_timeout_s=10))
            sender.join(10)
    finally:
        pub.close()
    assert [f.index for f in again] == [0, 1, 2, 3]
    for a, b in zip(again, original):
        np.testing.assert_array_equal(a.persons[1].vertices, b.persons[1].vertices)
        assert a.wall == b.wall  # byte-identical messages, original times inside


def test_replay_keeps_the_original_pace(tmp_path):
    rec = tmp_path / "paced.msgpack"
    w = wire.RecordWriter(rec)
    for i in range(3):
        w.write(1000.0 + 0.25 * i, b"s/frame", wire.encode_frame(wire.synthetic_mesh_frame(0, index=i), "s", i))
    w.close()
    pub = Publisher(PublishConfig(endpoint=ANY_PORT, mode="lossless"))
    pub.open()
    arrivals = []
    try:
        with Subscriber(pub.endpoint, mode="lossless", require_topology=False) as sub:
            sender = threading.Thread(target=replay, args=(pub, rec))
            sender.start()
            for _ in range(3):
                assert recv_kind(sub, "frame") is not None
                arrivals.append(time.monotonic())
            sender.join(10)
    finally:
        pub.close()
    # paced replay spreads 0.5 s of recording over at least ~0.5 s (a lower bound: never faster)
    assert arrivals[-1] - arrivals[0] >= 0.4


def test_lossless_loses_nothing_with_a_slow_subscriber(make_stage):
    stage = make_stage(mode="lossless", hwm=1)
    n = 40
    got: list[int] = []
    stats = {}

    def slow_reader():
        with Subscriber(stage.endpoint, mode="lossless", rcvhwm=1) as sub:
            for f in sub.frames(idle_timeout_s=10):
                got.append(f.seq)
                time.sleep(0.01)
            stats.update(sub.stats)

    reader = threading.Thread(target=slow_reader)
    reader.start()
    for i in range(n):
        stage.process(wire.synthetic_mesh_frame(1, index=i))
    stage.process(EndOfStream("default", n))
    reader.join(30)
    assert not reader.is_alive()
    assert got == list(range(n)) and stats["gaps"] == 0


def test_latest_never_blocks_on_a_subscriber_that_does_not_read(make_stage):
    stage = make_stage(mode="latest", hwm=2)
    sub = Subscriber(stage.endpoint, rcvhwm=2)
    try:
        joined(stage)
        n = 150  # ~25 MB: far more than the socket buffers hold
        done = threading.Event()

        def publish_all():
            for i in range(n):
                stage.process(wire.synthetic_mesh_frame(1, index=i))
            done.set()

        t = threading.Thread(target=publish_all, daemon=True)
        t.start()
        assert done.wait(60), "the publish stage blocked on a subscriber that does not read"
        assert stage.counters["published"] == n
        # the subscriber gets what fitted in the queues ...
        seqs = [f.seq for f in sub.frames(idle_timeout_s=1)]
        assert len(seqs) < n
        # ... and reports what it missed once a later message tells it (the end: the reader has room now)
        stage.process(EndOfStream("default", n))
        end = None
        while end is None:
            msg = sub.recv(timeout_s=5)
            assert msg is not None, "the end message did not arrive"
            end = msg if isinstance(msg, EndData) else None
        assert end.seq == n
        assert sub.stats["missed"] == n - len(seqs) - sub.stats["before_topology"] and sub.stats["gaps"] > 0
    finally:
        sub.close()


def test_late_subscriber_gets_topology_on_joining(make_stage):
    stage = make_stage(mode="latest", topology_interval_s=0)
    for i in range(3):
        stage.process(wire.synthetic_mesh_frame(1, index=i))  # nobody listening yet
    with Subscriber(stage.endpoint) as sub:
        joined(stage)
        stage.process(wire.synthetic_mesh_frame(1, index=3))
        first = sub.recv(timeout_s=5)
        assert isinstance(first, Topology) and first.seq == 3
        frame = recv_kind(sub, "frame")
        assert frame.index == 3 and frame.topology is first and frame.persons[0].vertices.shape == (6890, 3)


def test_late_subscriber_decodes_after_the_periodic_topology(make_stage):
    stage = make_stage(mode="latest", topology_on_subscribe=False, topology_interval_s=0.3)
    with Subscriber(stage.endpoint) as sub:
        joined(stage)
        frame = publish_until_frame(stage, sub)
        assert frame is not None and frame.topology is not None
        assert sub.stats["before_topology"] > 0  # frames that came before it were held back
        assert frame.topology.seq <= frame.seq


def test_curve_accepts_the_right_key_and_rejects_others(make_stage, tmp_path):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="cmd"))
    keys = tmp_path / "keys"
    args = parser.parse_args(["keys", str(keys), "--client", "viewer"])
    assert args.func(args) == 0
    other = tmp_path / "other"
    args = parser.parse_args(["keys", str(other)])
    assert args.func(args) == 0
    assert (keys / "authorized_clients" / "viewer.key").is_file() and (keys / "viewer.key_secret").is_file()

    stage = make_stage(curve=True, curve_server_secret=keys / "server.key_secret",
                       curve_clients=keys / "authorized_clients", topology_interval_s=0.1)
    good = Subscriber(stage.endpoint, server_key=keys / "server.key", client_key=keys / "viewer.key_secret")
    unauthorised = Subscriber(stage.endpoint, server_key=keys / "server.key", client_key=other / "client.key_secret")
    wrong_server = Subscriber(stage.endpoint, server_key=other / "server.key", client_key=keys / "viewer.key_secret")
    plain = Subscriber(stage.endpoint)
    subs = [good, unauthorised, wrong_server, plain]
    try:
        frame = publish_until_frame(stage, good)
        assert frame is not None, "the authorised client received nothing"
        for i in range(5):
            stage.process(wire.synthetic_mesh_frame(1, index=frame.index + 1 + i))
        for sub in subs[1:]:
            assert sub.recv(timeout_s=0.3) is None and sub.stats["messages"] == 0
    finally:
        for s in subs:
            s.close()


def test_keys_refuse_to_overwrite(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["keys", str(tmp_path)])
    assert args.func(args) == 0
    secret = (tmp_path / "server.key_secret").read_bytes()
    assert args.func(args) == 1
    assert "exists" in capsys.readouterr().err and (tmp_path / "server.key_secret").read_bytes() == secret


def test_missing_key_file_is_a_clear_error(assets_dir, tmp_path):
    stage = PublishStage(PublishConfig(endpoint=ANY_PORT, curve=True, curve_server_secret=tmp_path / "none"))
    with pytest.raises(StageError, match="curve_server_secret"):
        stage.setup()
    stage.close()


def test_bind_conflict_names_the_setting(make_stage):
    first = make_stage()
    with pytest.raises(StageError, match="publish.endpoint"):
        make_stage(endpoint=first.endpoint)


def test_a_busy_port_is_named_before_the_run_and_a_free_one_is_let_go(make_stage, tmp_path, capsys):
    from pipeline.publisher import check_endpoint

    first = make_stage()
    with pytest.raises(StageError, match=f"publish.endpoint {first.endpoint}: cannot bind"):
        PublishStage(PublishConfig(endpoint=first.endpoint)).check()
    rec = tmp_path / "r.msgpack"
    wire.RecordWriter(rec).close()
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["replay", str(rec), "--endpoint", first.endpoint])
    assert args.func(args) == 1  # replay onto a busy port: one line, no traceback
    assert f"error: publish.endpoint {first.endpoint}: cannot bind" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    check_endpoint(free)
    make_stage(endpoint=free)  # the check held the port only for a moment


def test_listen_command_prints_live_stats(make_stage, capsys):
    stage = make_stage(mode="lossless")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["listen", "--endpoint", stage.endpoint, "--mode", "lossless", "--frames", "3",
                              "--duration", "20"])

    def publish():
        for i in range(3):
            stage.process(wire.synthetic_mesh_frame(2, index=i))

    t = threading.Thread(target=publish)
    t.start()
    assert args.func(args) == 0
    t.join(10)
    out = capsys.readouterr().out.strip().splitlines()
    assert out, "listen printed nothing"
    last = out[-1]
    assert "frames 3" in last and "gaps 0" in last and "2.0 persons/frame" in last and "MB/s" in last


def test_idle_stage_answers_a_new_subscriber_on_tick(make_stage):
    stage = make_stage(mode="latest", topology_interval_s=0)
    with Subscriber(stage.endpoint) as sub:
        joined(stage)
        deadline = stage.next_deadline()
        assert deadline is not None and deadline <= time.monotonic() + 1
        assert stage.tick() == []  # no frame has come, the subscriber still gets the topology
        assert isinstance(sub.recv(timeout_s=5), Topology)
    assert make_stage(mode="lossless").next_deadline() is None


def test_stage_is_cheap_and_picklable_before_setup():
    import pickle

    stage = PublishStage(PublishConfig(vertices_dtype="int16"))
    assert stage.publisher is None  # no socket in the parent process
    clone = pickle.loads(pickle.dumps(stage))
    assert clone.cfg == stage.cfg and clone.stream == "default"
    with pytest.raises(RuntimeError, match="setup"):
        clone.process(wire.synthetic_mesh_frame(1))


@pytest.mark.parametrize("setting, section, key", [("record", PublishConfig, "publish.record"),
                                                   ("overlay", OverlayConfig, "overlay.path")])
def test_an_output_into_a_missing_directory_is_named_before_the_run(tmp_path, capsys, setting, section, key):
    from fastmetro_stream.cli import main

    missing = tmp_path / "nope"
    field = key.split(".")[1]
    with pytest.raises(ValidationError, match=f"{field}\n.*directory {missing} does not exist"):
        section(**{field: missing / "out"})
    assert main(["run", f"--{setting}", str(missing / "out"), "--set", "detect.detector=hog"]) == 2
    err = capsys.readouterr().err
    assert f"{key}: Value error, directory {missing} does not exist" in err and "Traceback" not in err


def test_the_hand_faces_come_from_infer_hand_assets_dir(assets_dir, mano_dir, tmp_path, monkeypatch):
    """A user who names the MANO files only with infer.hand_assets_dir: publish sends the hand topology
    from there (no FASTMETRO_MANO_ASSETS, an empty cache, no download)."""
    import fastmetro.assets
    from fastmetro_stream.config import load_config
    from tests.test_wire_hands import _frame_with_hands

    def no_download(url, *a, **k):
        raise fastmetro.assets.AssetError(f"no download in this test ({url})")

    monkeypatch.delenv("FASTMETRO_MANO_ASSETS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(fastmetro.assets, "download", no_download)
    fastmetro.assets._load_hand_faces.cache_clear()
    config = load_config(None, [f"infer.hand_assets_dir={mano_dir}", f"publish.endpoint={ANY_PORT}",
                                f"publish.record={tmp_path / 'rec.msgpack'}"])
    assert config.stage_context().hand_assets_dir == str(mano_dir)
    stage = PublishStage(config.publish, config.stage_context())
    stage.setup()
    try:
        stage.process(_frame_with_hands())
        stage.process(EndOfStream("default", 1))
    finally:
        stage.close()
    msgs = [wire.decode(x.payload) for x in wire.read_recording(tmp_path / "rec.msgpack")]
    topology = [m for m in msgs if m["kind"] == "topology"][-1]
    expected = fastmetro.assets.load_hand_faces(mano_dir)
    np.testing.assert_array_equal(topology["hand"]["faces_right"], expected)
    fastmetro.assets._load_hand_faces.cache_clear()


def test_a_recording_holds_a_repeated_topology_once(assets_dir, mano_dir, tmp_path):
    """The periodic topology copies go to subscribers, not into the recording: it holds the topology once,
    and again only when it changes (hands appear)."""
    from pipeline.stage import StageContext
    from tests.test_wire_hands import _frame_with_hands

    rec = tmp_path / "r.msgpack"
    stage = PublishStage(PublishConfig(endpoint=ANY_PORT, record=rec, topology_interval_s=0.1),
                         StageContext(hand_assets_dir=str(mano_dir)))
    stage.setup()
    try:
        for i in range(3):
            stage.process(wire.synthetic_mesh_frame(1, index=i))
            time.sleep(0.15)  # past topology_interval_s: a periodic copy goes out before the next frame
        stage.process(_frame_with_hands())
        for i in range(2):
            time.sleep(0.15)
            stage.process(wire.synthetic_mesh_frame(1, index=4 + i))
        stage.process(EndOfStream("default", 6))
    finally:
        stage.close()
    assert stage.counters["topology_sent"] >= 6  # the copies did go out on the socket
    msgs = [wire.decode(r.payload) for r in wire.read_recording(rec)]
    topologies = [m for m in msgs if m["kind"] == "topology"]
    assert len(topologies) == 2 and "hand" not in topologies[0] and "hand" in topologies[1]
    assert [m["kind"] for m in msgs].count("frame") == 6 and msgs[0]["kind"] == "topology"
