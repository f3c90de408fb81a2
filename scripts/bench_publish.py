#!/usr/bin/env python
"""Publishing cost per payload option: bytes per person-frame, packing and unpacking time, and
messages/s and MB/s through a real ZeroMQ socket (lossless PUSH -> PULL in another process, so every
message is encoded, sent, received and counted), for 1, 5 and 10 persons per frame.

    python scripts/bench_publish.py [--seconds 1.5] [--persons 1 5 10] [--json out.json]

Frames are synthetic (pipeline.wire.synthetic_mesh_frame): the wire cost does not depend on the network.
Sizes are exact; times are wall-clock on this machine and vary with its load.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zmq  # noqa: E402

from pipeline import wire  # noqa: E402
from pipeline.publisher import Publisher, PublisherSettings as PublishConfig  # noqa: E402

OPTIONS = [  # name, vertices dtype, vertices every Nth frame (0 = never)
    ("float32", "float32", 1),
    ("float16", "float16", 1),
    ("int16", "int16", 1),
    ("float32/5th", "float32", 5),
    ("int16/5th", "int16", 5),
    ("no vertices", "float32", 0),
]


def receiver(endpoint: str, conn) -> None:
    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.connect(endpoint)
    conn.send("ready")
    n = nbytes = 0
    while True:
        topic, payload = sock.recv_multipart()
        if topic == b"bench/end":
            break
        n += 1
        nbytes += len(topic) + len(payload)
    conn.send((n, nbytes))
    sock.close(0)


def with_vertices(seq: int, every: int) -> bool:
    return every > 0 and seq % every == 0


def measure(persons: int, dtype: str, every: int, seconds: float) -> dict:
    frames = [wire.synthetic_mesh_frame(persons, index=i) for i in range(10)]
    # sizes: average over a whole vertices cycle
    cycle = max(every, 1)
    sizes = [len(wire.encode_frame(frames[i % 10], "bench", i, with_vertices(i, every), dtype)) for i in range(cycle)]
    # packing and unpacking time
    payloads, k, t0 = [], 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 3 or k < 10:
        payloads.append(wire.encode_frame(frames[k % 10], "bench", k, with_vertices(k, every), dtype))
        k += 1
    pack_s = (time.perf_counter() - t0) / k
    t0 = time.perf_counter()
    for p in payloads:
        wire.decode(p)
    unpack_s = (time.perf_counter() - t0) / len(payloads)
    # through the socket, encoding included, into another process
    pub = Publisher(PublishConfig(endpoint="tcp://127.0.0.1:*", mode="lossless", hwm=16, linger_ms=5000))
    pub.open()
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=receiver, args=(pub.endpoint, child))
    proc.start()
    parent.recv()
    sent, t0 = 0, time.perf_counter()
    topic = wire.topic("bench", "frame")
    while time.perf_counter() - t0 < seconds or sent < 10:
        pub.send(topic, wire.encode_frame(frames[sent % 10], "bench", sent, with_vertices(sent, every), dtype))
        sent += 1
    pub.send(b"bench/end", b"")
    received, nbytes = parent.recv()
    elapsed = time.perf_counter() - t0
    proc.join()
    pub.close()
    assert received == sent, f"lossless lost messages: {received} of {sent}"
    return {
        "persons": persons,
        "bytes_per_frame": sum(sizes) / len(sizes),
        "bytes_per_person_frame": sum(sizes) / len(sizes) / persons,
        "pack_ms_per_person_frame": pack_s * 1e3 / persons,
        "unpack_ms_per_person_frame": unpack_s * 1e3 / persons,
        "messages_per_s": received / elapsed,
        "mb_per_s": nbytes / elapsed / 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1.5, help="socket run per measurement (default 1.5)")
    ap.add_argument("--persons", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    rows = []
    print(f"{'payload':<12} {'persons':>7} {'B/person-frame':>15} {'vs float32':>10} {'pack ms/pf':>10} "
          f"{'unpack ms/pf':>12} {'msg/s':>8} {'MB/s':>8}")
    for persons in args.persons:
        base = None
        for name, dtype, every in OPTIONS:
            r = measure(persons, dtype, every, args.seconds)
            r["payload"] = name
            base = base or r["bytes_per_person_frame"]
            r["size_vs_float32"] = r["bytes_per_person_frame"] / base
            rows.append(r)
            print(f"{name:<12} {persons:>7} {r['bytes_per_person_frame']:>15,.0f} {r['size_vs_float32']:>10.3f} "
                  f"{r['pack_ms_per_person_frame']:>10.3f} {r['unpack_ms_per_person_frame']:>12.3f} "
                  f"{r['messages_per_s']:>8.0f} {r['mb_per_s']:>8.1f}", flush=True)
    worst = max(r["pack_ms_per_person_frame"] for r in rows)
    print(f"\nworst packing time per person-frame: {worst:.3f} ms (target: well under 1 ms)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
