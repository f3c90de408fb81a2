"""One message past twice a subscriber's size limit is refused as it arrives (ZMQ_MAXMSGSIZE), but ZeroMQ
then closes that connection for good: the subscriber must connect again, so the publisher's next messages
still reach it (latest mode) and a lossless publisher does not block forever."""
from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
import time

import pytest

from pipeline import wire
from pipeline.publisher import Publisher, PublisherSettings
from pipeline.subscriber import Subscriber

LIMIT = 200_000
AFTER = 20


@pytest.mark.parametrize("mode", ["latest", "lossless"])
def test_an_oversized_message_does_not_deafen_the_subscriber(port, mode):
    endpoint = f"tcp://127.0.0.1:{port}"
    pub = Publisher(PublisherSettings(endpoint=endpoint, mode=mode, linger_ms=0))
    pub.open()
    big = wire.encode_frame(wire.synthetic_mesh_frame(8, index=0), "default", 0)
    assert len(big) > 2 * LIMIT + 4096  # past the socket's own limit: refused as it arrives
    sent = threading.Event()

    def send() -> None:
        pub.send(b"default/frame", big)
        for i in range(1, AFTER + 1):
            pub.send(b"default/frame", wire.encode_frame(wire.synthetic_mesh_frame(0, index=i), "default", i))
            time.sleep(0.1)
        sent.set()

    try:
        with Subscriber(endpoint, mode=mode, max_message_bytes=LIMIT, require_topology=False) as sub:
            time.sleep(0.3)  # connected
            t = threading.Thread(target=send, daemon=True)
            t.start()
            got = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (sent.is_set() and len(got) >= AFTER - 1):
                msg = sub.recv(timeout_s=0.2)
                if msg is not None:
                    got.append(msg.seq)
            assert sent.wait(5), "the publisher is still blocked on the oversized message"
            # latest: the frames sent while the subscriber connected again are lost (seq shows it)
            need = AFTER - 1 if mode == "lossless" else AFTER // 2
            assert len(got) >= need and got == sorted(got) and 0 not in got, (got, sub.stats)
            assert sub.stats["reconnects"] >= 1
    finally:
        pub.close()


NODE_DIR = Path(__file__).resolve().parents[2] / "examples" / "node"


@pytest.mark.skipif(shutil.which("node") is None or not (NODE_DIR / "node_modules" / "zeromq").is_dir(),
                    reason="node or examples/node/node_modules missing")
def test_the_node_example_connects_again_too(port, assets_dir):
    """The Node.js example, lossless: the oversized message is refused, the frames after it arrive."""
    import json

    from stages.publish import PublishConfig, PublishStage

    endpoint = f"tcp://127.0.0.1:{port}"
    node = subprocess.Popen(["node", "subscriber.js", "--endpoint", endpoint, "--mode", "lossless", "--json",
                             "--max-message-bytes", str(LIMIT), "--timeout", "20"], cwd=str(NODE_DIR),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stage = PublishStage(PublishConfig(endpoint=endpoint, mode="lossless", linger_ms=3000),
                         __import__("pipeline.stage", fromlist=["StageContext"]).StageContext(assets_dir=str(assets_dir)))
    def publish() -> None:
        stage.setup()
        stage.publisher.send(b"default/frame", wire.encode_frame(wire.synthetic_mesh_frame(8, index=0), "default", 0))
        time.sleep(1.0)  # refused, and connected again (what was queued to the closed connection is lost)
        for i in range(AFTER):
            stage.process(wire.synthetic_mesh_frame(0, index=i))
        stage.process(__import__("pipeline.messages", fromlist=["EndOfStream"]).EndOfStream("default", AFTER))
        stage.close()

    t = threading.Thread(target=publish, daemon=True)
    try:
        t.start()
        t.join(30)
        assert not t.is_alive(), "the lossless publisher is blocked: the subscriber never connected again"
        out, err = node.communicate(timeout=60)
    finally:
        node.kill()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    frames = [m for m in lines if m["kind"] == "frame"]
    ends = [m for m in lines if m["kind"] == "end"]
    assert len(frames) >= AFTER - 1 and ends, (out[-2000:], err[-2000:])
    assert ends[0]["stats"]["reconnects"] >= 1
