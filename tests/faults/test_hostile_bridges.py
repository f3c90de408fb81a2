"""Hostile messages to the stream's bridges: the VMC bridge (`fastmetro-stream vmc`, tools/vmc.py) and the
Node.js example (examples/node). Malformed msgpack, a message of the wrong form, an oversized message, the
right topic with the wrong schema, NaN in vertices, absurd track ids and seq numbers, finite values so
large that the pose overflows: each is counted and skipped, the bridge goes on with the next good frame,
and nothing that is not a finite number reaches the OSC receiver (python-osc's server is the judge)."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from conftest import free_port
from pipeline import wire
from pipeline.messages import EndOfStream

pytest.importorskip("pythonosc")
from pythonosc import dispatcher as osc_dispatcher  # noqa: E402
from pythonosc import osc_server  # noqa: E402

from tools.vmc import VmcSettings, run  # noqa: E402

NODE_DIR = Path(__file__).resolve().parents[2] / "examples" / "node"


def _frame(seq: int, smpl: bool = False, track_id: int = 1) -> bytes:
    mf = wire.synthetic_mesh_frame(1, index=seq, smpl=smpl)
    mf.persons[0].person.track_id = track_id
    return wire.encode_frame(mf, "default", seq)


def _edit(payload: bytes, edit) -> bytes:
    m = msgpack.unpackb(payload, raw=False)
    edit(m)
    return msgpack.packb(m, use_bin_type=True)


def _nan_vertices(m):
    v = m["persons"][0]["vertices"]
    a = np.frombuffer(v["data"], "<f4").copy()
    a[100] = np.nan
    v["data"] = a.tobytes()


def _huge_rotmat(m):
    r = m["persons"][0]["rotmat"]
    r["data"] = np.full(len(r["data"]) // 4, 3e38, "<f4").tobytes()  # finite, but the pose overflows


def hostile_messages() -> tuple[list[list[bytes]], int]:
    """The messages in order, and how many good frames (sendable poses) among them."""
    topo = [wire.topic("default", "topology"),
            wire.encode_topology("default", 0, np.zeros((1, 3), np.int32), ["j"] * 14, ["h"] * 17)]
    t = wire.topic("default", "frame")
    msgs = [
        topo,
        [t, _frame(0)],                                                       # good
        [t, b"\xc1\xc1\xc1 not msgpack"],                                     # malformed msgpack
        [t],                                                                  # one part, no payload
        [t, msgpack.packb({"v": 1, "kind": "frame", "stream": "default", "seq": 1, "persons": "x"})],  # schema
        [t, _edit(_frame(2), _nan_vertices)],                                 # NaN in vertices
        [t, _edit(_frame(3), lambda m: m.update(seq=2**64 - 1))],             # absurd seq
        [t, _edit(_frame(4), lambda m: m["persons"][0].update(track_id=2**64 - 1))],  # absurd track id
        [t, _frame(5, track_id=2**40)],                                       # large, valid track id: good
        [t, _frame(6, smpl=True)],                                            # good, with the SMPL rotations
        [t, _edit(_frame(7, smpl=True), _huge_rotmat)],                       # finite, overflowing pose
        [t, b"\x00" * (wire.DEFAULT_MAX_MESSAGE_BYTES + 1)],                  # oversized
        [t, _frame(8)],                                                       # good
        [wire.topic("default", "end"), wire.encode_end(EndOfStream("default", 9), "default", 9)],
    ]
    return msgs, 4


class FloatReceiver:
    """python-osc's UDP server collecting every VMC message's arguments."""

    def __init__(self):
        self.messages: list[tuple] = []
        d = osc_dispatcher.Dispatcher()
        d.map("/VMC/Ext/*", lambda address, *args: self.messages.append((address, args)))
        self.server = osc_server.BlockingOSCUDPServer(("127.0.0.1", 0), d)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_the_vmc_bridge_counts_and_skips_hostile_messages_and_never_sends_nan(assets_dir):
    msgs, good = hostile_messages()
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    push.bind(endpoint)
    receiver = FloatReceiver()
    result: dict = {}
    settings = VmcSettings(endpoint=endpoint, mode="lossless", port=receiver.port, lost="stop")
    bridge = threading.Thread(target=lambda: result.update(run(settings, duration=60, interval=0)), daemon=True)
    try:
        bridge.start()
        for parts in msgs:
            push.send_multipart(parts)
        bridge.join(60)
        assert not bridge.is_alive(), "the bridge did not stop at the stream's end"
        deadline = time.monotonic() + 5
        while sum(a == "/VMC/Ext/OK" for a, _ in receiver.messages) < good - 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        push.close(0)
        receiver.close()
    assert result["frames"] == good + 1, result  # the overflowing frame arrives, and is not sent
    assert result["nonfinite"] == 1 and result["oversized"] == 1, result
    assert result["malformed"] >= 5, result  # garbage, one part, schema, NaN, seq, track id
    bundles = sum(a == "/VMC/Ext/OK" for a, _ in receiver.messages)
    assert bundles >= good, f"{bundles} bundles for {good} good frames"
    floats = [x for _, args in receiver.messages for x in args if isinstance(x, float)]
    assert floats and all(math.isfinite(x) for x in floats), "a non-finite number went out over OSC"


@pytest.mark.skipif(shutil.which("node") is None or not (NODE_DIR / "node_modules" / "zeromq").is_dir(),
                    reason="node and examples/node's packages (npm install --prefix examples/node) are needed")
def test_the_node_example_counts_and_skips_hostile_messages():
    msgs, good = hostile_messages()
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    push.bind(endpoint)
    try:
        node = subprocess.Popen(["node", "subscriber.js", "--endpoint", endpoint, "--mode", "lossless", "--json",
                                 "--timeout", "30"], cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        for parts in msgs:
            push.send_multipart(parts)
        out, err = node.communicate(timeout=60)
    finally:
        push.close(0)
        if node.poll() is None:
            node.kill()
    assert node.returncode == 0, err[-3000:]
    lines = [json.loads(line) for line in out.splitlines()]
    kinds = [line["kind"] for line in lines]
    assert kinds[0] == "topology" and kinds[-1] == "end", kinds
    frames = [line for line in lines if line["kind"] == "frame"]
    assert [f["seq"] for f in frames] == [0, 5, 6, 7, 8], frames
    assert "nan" not in out.lower() and "infinity" not in out.lower()
    stats = lines[-1]["stats"]
    assert stats["oversized"] == 1 and stats["malformed"] == 6, stats
    assert stats["missed"] == 4, stats  # seq 1 to 4 refused; the absurd seq never counted
