#!/usr/bin/env python
"""The VMC bridge's cost: solve + pack + send per person-frame (target < 1 ms), split into its parts, and
the end-to-end latency it adds to the stream (publish -> ZeroMQ -> sender -> UDP datagram received),
against a plain subscriber on the same stream.

    python scripts/bench_vmc.py [--persons 1 3 10] [--seconds 1.0] [--frames 150] [--json out.json]

Frames are synthetic (pipeline.wire.synthetic_mesh_frame, through the wire and back): the cost does not
depend on what the mesh shows. Times are wall-clock on this machine and vary with its load; the ratios
within one run are what to compare.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from fastmetro import humanoid as hu  # noqa: E402
from pipeline import wire  # noqa: E402
from pipeline.messages import EndOfStream  # noqa: E402
from pipeline.subscriber import Subscriber, to_message  # noqa: E402
from pipeline.publisher import Publisher, PublisherSettings  # noqa: E402
from tools.vmc import BundlePacker, VmcSender, VmcSettings, run, unity_pose  # noqa: E402


def with_hands(mf):
    """Both hands on every person: random joints and MANO-sized vertices (the solve is closed form: its cost
    does not depend on what the hand shows)."""
    from pipeline.messages import HandMesh

    rng = np.random.default_rng(mf.frame.index)
    for pm in mf.persons:
        for side in ("left", "right"):
            pm.hands[side] = HandMesh(side, np.array([5.0, 0, 0], np.float32), pm.cam_t,
                                      rng.uniform(-0.1, 0.1, (21, 3)).astype(np.float32),
                                      rng.uniform(-0.1, 0.1, (778, 3)).astype(np.float32), (0.0, 0.0), 50.0)
    return mf


def frame_data(persons: int, index: int = 0, smpl: bool = False, hands: bool = False):
    mf = wire.synthetic_mesh_frame(persons, index=index, smpl=smpl)
    if hands:
        with_hands(mf)
    return to_message(wire.decode(wire.encode_frame(mf, "default", index)), topology=None)


class UdpSink:
    """A non-blocking UDP socket on 127.0.0.1 in place of the VMC receiver; `drain` reads away what came."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def drain(self) -> int:
        """Read every datagram waiting; how many there were."""
        n = 0
        try:
            while True:
                self.sock.recv(65536)
                n += 1
        except BlockingIOError:
            return n

    def close(self) -> None:
        self.sock.close()


def per_call(fn, seconds: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def cost(persons: int, seconds: float) -> dict:
    sink = UdpSink()
    frame = frame_data(persons)
    frame_smpl = frame_data(persons, smpl=True)
    sender = VmcSender(VmcSettings(destinations=[f"127.0.0.1:{sink.port}"] * persons, slots=persons, select="first"))
    packer = BundlePacker()
    pose = hu.solve_persons(frame.persons)
    root, pos, rot = unity_pose(pose, 0, True)

    def whole():
        sender.send_frame(frame)
        sink.drain()

    out = dict(
        persons=persons,
        solve_mesh=per_call(lambda: hu.solve_persons(frame.persons), seconds) / persons,
        solve_smpl=per_call(lambda: hu.solve_persons(frame_smpl.persons), seconds) / persons,
        pack=per_call(lambda: [packer.pack(0.0, root, pos, rot) for _ in range(persons)], seconds) / persons,
        send_frame=per_call(whole, seconds) / persons,  # slots, solve, Unity axes, pack, sendto, and the drain
    )
    sender.close()
    sink.close()
    return out


def hand_cost(persons: int, seconds: float) -> dict:
    """What the finger bones add, per hand (every person with both hands): the whole `send_frame` with
    hands against the same frame without (solve_hand, the hold / blend policy, 30 more bones packed and
    sent), and the finger solve alone."""
    from fastmetro import humanoid_hands as hh

    sink = UdpSink()

    timings = {}
    for hands in (False, True):
        frame = frame_data(persons, hands=hands)
        sender = VmcSender(VmcSettings(destinations=[f"127.0.0.1:{sink.port}"] * persons, slots=persons,
                                       select="first"))
        timings[hands] = per_call(lambda: (sender.send_frame(frame), sink.drain()), seconds)
        sender.close()
    frame = frame_data(persons, hands=True)
    joints = np.stack([p.hands["left"].joints3d for p in frame.persons])
    verts = np.stack([p.hands["left"].vertices for p in frame.persons])
    sink.close()
    return dict(persons=persons, hands=2 * persons, send_frame_without=timings[False] / persons,
                send_frame_with=timings[True] / persons,
                added_per_hand=(timings[True] - timings[False]) / (2 * persons),
                solve_hand=per_call(lambda: hh.solve_hand(joints, verts, "left"), seconds) / persons)


def _bridge(endpoint: str, port: int, persons: int) -> None:
    run(VmcSettings(endpoint=endpoint, destinations=[f"127.0.0.1:{port}"] * persons, slots=persons,
                    select="first"), duration=120, interval=0)


def latency(persons: int, frames: int) -> dict:
    """Median and 95th percentile of publish -> the persons' datagrams received (through the bridge in
    another process), and publish -> the frame ready at a plain subscriber here (ZeroMQ alone)."""
    import zmq

    pub = Publisher(PublisherSettings(endpoint="tcp://127.0.0.1:*", hwm=64))
    pub.open()
    sink = UdpSink()
    bridge = mp.get_context("spawn").Process(target=_bridge, args=(pub.endpoint, sink.port, persons),
                                             daemon=True)
    bridge.start()
    sub = Subscriber(pub.endpoint)
    poller = zmq.Poller()
    poller.register(sub.sock, zmq.POLLIN)
    poller.register(sink.sock, zmq.POLLIN)
    topo = wire.encode_topology("default", 0, np.zeros((1, 3), np.int32), ["j"] * 14, ["h"] * 17)
    payloads = [wire.encode_frame(wire.synthetic_mesh_frame(persons, index=i), "default", i) for i in range(frames)]
    vmc, zmq_only = [], []
    try:
        deadline, joined = time.monotonic() + 60, 0
        while joined < 2 and time.monotonic() < deadline:  # the bridge and the plain subscriber joined
            joined += pub.new_subscribers()
            pub.send(wire.topic("default", "topology"), topo)
            time.sleep(0.2)
        time.sleep(1.0)
        while sub.recv(timeout_s=0.1) is not None:
            pass
        for payload in payloads:
            t0 = time.perf_counter()
            pub.send(wire.topic("default", "frame"), payload)
            got, t_zmq, t_vmc = 0, None, None
            while (t_zmq is None or t_vmc is None) and time.perf_counter() - t0 < 2.0:
                for sock, _ in poller.poll(100):
                    now = time.perf_counter()
                    if sock is sub.sock:
                        t_zmq = t_zmq or now
                        sub.recv(timeout_s=0)
                    else:
                        got += sink.drain()
                        if got >= persons and t_vmc is None:
                            t_vmc = now
            if t_zmq is not None and t_vmc is not None:
                zmq_only.append(t_zmq - t0)
                vmc.append(t_vmc - t0)
            time.sleep(1 / 30)
        pub.send(wire.topic("default", "end"), wire.encode_end(EndOfStream("default", frames), "default", frames),
                 reliable=True)
    finally:
        bridge.join(5)
        if bridge.is_alive():
            bridge.terminate()
        sub.close()
        pub.close()
        sink.close()

    def q(xs, f):
        return float(np.quantile(xs, f)) if xs else float("nan")

    added = [a - b for a, b in zip(vmc, zmq_only)]
    return dict(persons=persons, frames=len(vmc), vmc_median=q(vmc, 0.5), vmc_p95=q(vmc, 0.95),
                zmq_median=q(zmq_only, 0.5), zmq_p95=q(zmq_only, 0.95), added_median=q(added, 0.5),
                added_p95=q(added, 0.95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persons", type=int, nargs="+", default=[1, 3, 10])
    ap.add_argument("--seconds", type=float, default=1.0, help="timing per measurement")
    ap.add_argument("--frames", type=int, default=150, help="frames for the latency measurement (30 fps)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = {"cost": [], "latency": []}
    print("cost per person-frame, ms (target < 1 ms for solve + pack + send):")
    print(f"{'persons':>8} {'solve mesh':>11} {'solve smpl':>11} {'pack':>7} {'send_frame':>11} {'vs 1 ms':>8}")
    for n in args.persons:
        c = cost(n, args.seconds)
        results["cost"].append(c)
        print(f"{n:>8} {c['solve_mesh'] * 1e3:>11.3f} {c['solve_smpl'] * 1e3:>11.3f} {c['pack'] * 1e3:>7.3f} "
              f"{c['send_frame'] * 1e3:>11.3f} {c['send_frame'] / 1e-3:>8.2f}")
    print("\nfinger bones (both hands of every person), ms (target < 0.2 ms added per hand):")
    print(f"{'persons':>8} {'send_frame w/o':>15} {'with hands':>11} {'added per hand':>15} {'solve_hand':>11}")
    results["hands"] = []
    for n in args.persons:
        h = hand_cost(n, args.seconds)
        results["hands"].append(h)
        print(f"{n:>8} {h['send_frame_without'] * 1e3:>15.3f} {h['send_frame_with'] * 1e3:>11.3f} "
              f"{h['added_per_hand'] * 1e3:>15.3f} {h['solve_hand'] * 1e3:>11.3f}")
    print("\nlatency from publish, ms (the bridge's datagrams received vs a plain subscriber's frame; 30 fps):")
    print(f"{'persons':>8} {'vmc median':>11} {'vmc p95':>8} {'zmq median':>11} {'zmq p95':>8} {'added':>7} "
          f"{'added p95':>10}")
    for n in (1, 3):
        r = latency(n, args.frames)
        results["latency"].append(r)
        print(f"{n:>8} {r['vmc_median'] * 1e3:>11.2f} {r['vmc_p95'] * 1e3:>8.2f} {r['zmq_median'] * 1e3:>11.2f} "
              f"{r['zmq_p95'] * 1e3:>8.2f} {r['added_median'] * 1e3:>7.2f} {r['added_p95'] * 1e3:>10.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
