"""Closing a lossless (PUSH) socket without losing its tail: wait, however slow the consumer, for as long as
it keeps taking what is queued, and say so when it stops taking it.

ZeroMQ's linger is a fixed time: a consumer that takes 1 s per frame still has the last frames and the
end message queued when it runs out, and they are dropped without a word. Here the socket closes with no
time limit while a thread waits for the context to finish delivering, and the wait is bounded by progress
instead: the bytes the kernel still holds for the consumer's connection (/proc/net/tcp) must change at
least once every `stall_s`. A consumer gone, or one that stops reading, ends the wait; the caller learns
that the tail was not delivered. Where the connection cannot be observed (not Linux, not TCP) the wait is
`stall_s` in all.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

import zmq


def _port(endpoint: Optional[str]) -> Optional[int]:
    if not endpoint or not endpoint.startswith("tcp://"):
        return None
    try:
        return int(endpoint.rsplit(":", 1)[1])
    except ValueError:
        return None


def connection_queues(port: int) -> Optional[tuple[int, ...]]:
    """Bytes the kernel holds to send on each established TCP connection of local `port`, from
    /proc/net/tcp and tcp6; None where that cannot be read."""
    found, readable = [], False
    for name in ("tcp", "tcp6"):
        try:
            lines = Path("/proc/net", name).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            f = line.split()
            if len(f) > 4 and f[3] == "01" and int(f[1].rsplit(":", 1)[1], 16) == port:
                found.append(int(f[4].split(":")[0], 16))
    return tuple(sorted(found)) if readable else None


def close_delivering(sock: zmq.Socket, ctx: zmq.Context, endpoint: Optional[str], stall_s: float,
                     poll_s: float = 0.05) -> bool:
    """Close `sock` and terminate `ctx` once every queued message has gone to the consumer's connection.
    True when delivered; False when the consumer stopped taking them for `stall_s` (or went away), in which
    case the context is left to finish (or not) in a daemon thread."""
    sock.close(linger=-1)
    done = threading.Event()

    def term() -> None:
        ctx.term()
        done.set()

    threading.Thread(target=term, name="lossless-delivery", daemon=True).start()
    port = _port(endpoint)
    last = connection_queues(port) if port is not None else None
    last_change = time.monotonic()
    while not done.wait(poll_s):
        now = time.monotonic()
        queues = connection_queues(port) if port is not None else None
        if queues is not None and queues and queues != last:
            last_change = now  # the consumer took something: the kernel's queue moved
        last = queues
        if now - last_change >= stall_s:
            return done.is_set()
    return True
