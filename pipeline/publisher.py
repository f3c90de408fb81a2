"""The sending side of the wire: a ZeroMQ socket that publishes [topic, payload] messages, records them,
notices new subscribers, and replays recordings (the counterpart of pipeline/subscriber.py).

Sockets (a ZeroMQ context of its own per Publisher, explicit high-water mark and linger):
  mode "latest"   XPUB bound at `endpoint`. A subscriber that falls behind loses messages (at most
                  `hwm` queue for it), the sender never waits. Every new subscription is reported
                  (`new_subscribers`), so the sender can send the topology again.
  mode "lossless" PUSH bound at `endpoint`, for one PULL consumer. When the consumer is slow (or not
                  there yet) the send blocks: nothing is lost.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import zmq

from . import wire
from .delivery import close_delivering

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


class PublishError(RuntimeError):
    """A socket that cannot be opened (a busy port, a missing key file); the message says what to do."""


@dataclass
class PublisherSettings:
    """What a Publisher reads (the publish stage passes its PublishConfig, which has the same fields)."""

    endpoint: str = DEFAULT_ENDPOINT
    mode: Literal["latest", "lossless"] = "latest"
    hwm: int = 4
    linger_ms: int = 2000
    record: Optional[Path] = None
    curve: bool = False
    curve_server_secret: Optional[Path] = None
    curve_clients: Optional[Path] = None


def _load_secret(path: Path, what: str) -> tuple[bytes, bytes]:
    import zmq.auth

    path = Path(path)
    if not path.is_file():
        raise PublishError(f"{what}: key file {path} not found (make keys with `fastmetro-stream keys DIR`)")
    public, secret = zmq.auth.load_certificate(str(path))
    if secret is None:
        raise PublishError(f"{what}: {path} holds no secret key; give the .key_secret file")
    return public, secret


def _bind(sock: zmq.Socket, endpoint: str) -> None:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        raise PublishError(f"publish.endpoint {endpoint}: cannot bind ({e}); choose another port") from e


def check_endpoint(endpoint: str) -> None:
    """StageError if this tcp/ipc endpoint cannot be bound now (another run holds the port): bound and let
    go at once, so a busy port is named before the run starts its processes."""
    if endpoint.startswith("inproc://") or endpoint.rsplit(":", 1)[-1] in ("0", "*"):
        return  # in-process, or a port chosen at bind time: nothing to hold it already
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    try:
        _bind(sock, endpoint)
    finally:
        sock.close(linger=0)
        ctx.term()


class Publisher:
    """The socket side of publishing: bind, send [topic, payload], record, notice new subscribers."""

    def __init__(self, cfg: PublisherSettings) -> None:
        self.cfg = cfg
        self.sock: Optional[zmq.Socket] = None
        self.ctx: Optional[zmq.Context] = None
        self.auth = None
        self.recorder: Optional[wire.RecordWriter] = None
        self.endpoint: Optional[str] = None  # the endpoint actually bound (a wildcard port resolved)
        self.sent = 0
        self.bytes = 0
        self.full_at: Optional[float] = None  # latest mode: when a send last found a subscriber full
        self.record_failed = False  # the recording stopped early (a write failed)
        self.slowest_s = 0.0  # lossless: the longest one send waited for the consumer
        self.undelivered: Optional[str] = None  # lossless: why the tail did not reach the consumer (close)

    def open(self) -> None:
        cfg = self.cfg
        # A context of its own, terminated in close(): its I/O thread is done with every queued message
        # (delivered, or given up after linger_ms) before the process may exit and free memory under it.
        ctx = self.ctx = zmq.Context()
        sock = ctx.socket(zmq.XPUB if cfg.mode == "latest" else zmq.PUSH)
        # Copy every payload into ZeroMQ (pyzmq otherwise sends messages over 64 KB zero-copy, borrowing
        # the Python buffer until the I/O thread is done with it: at exit that buffer can be gone first).
        sock.copy_threshold = 2**31 - 1
        try:
            sock.setsockopt(zmq.SNDHWM, cfg.hwm)
            sock.setsockopt(zmq.LINGER, cfg.linger_ms)
            if cfg.mode == "latest":
                sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, duplicates too: each asks for topology
            if cfg.curve:
                public, secret = _load_secret(cfg.curve_server_secret, "publish.curve_server_secret")
                if cfg.curve_clients is not None:
                    if not Path(cfg.curve_clients).is_dir():
                        raise PublishError(f"publish.curve_clients: directory {cfg.curve_clients} not found")
                    from zmq.auth.thread import ThreadAuthenticator

                    self.auth = ThreadAuthenticator(ctx, log=logging.getLogger("zmq.auth"))
                    self.auth.start()
                    self.auth.configure_curve(domain="*", location=str(cfg.curve_clients))
                sock.curve_secretkey = secret
                sock.curve_publickey = public
                sock.curve_server = True
            _bind(sock, cfg.endpoint)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            if cfg.record is not None:
                self.recorder = wire.RecordWriter(cfg.record)
        except BaseException:
            sock.close(0)
            self._stop_auth()
            ctx.term()
            self.ctx = None
            raise
        self.sock = sock
        log.info("publishing (%s) on %s%s", cfg.mode, self.endpoint, f", recording to {cfg.record}" if cfg.record else "")

    def new_subscribers(self) -> int:
        """How many subscriptions arrived since the last call (latest mode; 0 in lossless mode)."""
        if self.sock is None or self.cfg.mode != "latest":
            return 0
        n = 0
        while True:
            try:
                ev = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return n
            if ev[:1] == b"\x01":
                n += 1

    def wait_subscriber(self, timeout_s: float) -> bool:
        """Block up to timeout_s for a first subscriber (latest mode); True if one came."""
        if self.cfg.mode != "latest":
            return True
        assert self.sock is not None
        if self.sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            return True
        return False

    def send(self, topic: bytes, payload: bytes, t: Optional[float] = None, reliable: bool = False,
             record: bool = True) -> None:
        """Send one message. Latest mode never blocks: past the high-water mark a subscriber's copy is
        dropped, unless `reliable` (the end message): then wait up to linger_ms for room. `record=False`:
        not into the recording (a repeated topology, sent again only for late subscribers)."""
        assert self.sock is not None, "Publisher.open() first"
        if self.cfg.mode == "latest" and reliable:
            self.sock.setsockopt(zmq.XPUB_NODROP, 1)
            deadline = time.monotonic() + self.cfg.linger_ms / 1000
            try:
                # A subscriber whose queue filled up is left out of every send, NODROP ones too, until
                # it has read half its queue and this socket has handled the notice: give it that time.
                while self.full_at is not None and time.monotonic() < deadline:
                    self.sock.getsockopt(zmq.EVENTS)  # handles pending notices, e.g. "room again"
                    if time.monotonic() - self.full_at >= self.cfg.linger_ms / 2000:
                        break
                    time.sleep(0.005)
                while True:
                    try:
                        self.sock.send_multipart([topic, payload], flags=zmq.NOBLOCK)
                        break
                    except zmq.Again:
                        if time.monotonic() >= deadline:
                            log.warning("a subscriber stayed full for %d ms: it misses the %s message",
                                        self.cfg.linger_ms, topic.decode(errors="replace"))
                            self.sock.setsockopt(zmq.XPUB_NODROP, 0)
                            self.sock.send_multipart([topic, payload])
                            break
                        time.sleep(0.005)
            finally:
                self.sock.setsockopt(zmq.XPUB_NODROP, 0)
        elif self.cfg.mode == "latest":
            # Try without dropping first, only to learn whether a subscriber is full (then send as usual,
            # dropped for that one): the end message then waits for it to catch up.
            self.sock.setsockopt(zmq.XPUB_NODROP, 1)
            try:
                self.sock.send_multipart([topic, payload], flags=zmq.NOBLOCK)
            except zmq.Again:
                self.full_at = time.monotonic()
                self.sock.setsockopt(zmq.XPUB_NODROP, 0)
                self.sock.send_multipart([topic, payload])
            finally:
                self.sock.setsockopt(zmq.XPUB_NODROP, 0)
        else:
            waited, t0 = 0.0, time.monotonic()
            while not self.sock.poll(5000, zmq.POLLOUT):
                waited += 5.0
                log.warning("lossless mode: waited %.0f s for a consumer to read from %s", waited, self.endpoint)
            if self.sent:  # not the wait for a first consumer
                self.slowest_s = max(self.slowest_s, time.monotonic() - t0)
            self.sock.send_multipart([topic, payload])
        self.sent += 1
        self.bytes += len(payload) + len(topic)
        if self.recorder is not None and record:
            try:
                self.recorder.write(wire.now() if t is None else t, topic, payload)
            except OSError as e:  # a full disk, a removed drive: stop only the recording, the stream goes on
                log.error("recording stopped (%s): %s holds the %d messages before it; the stream goes on",
                          e.strerror or e, self.cfg.record, self.recorder.count)
                self.record_failed = True
                try:
                    self.recorder.close()
                except OSError:
                    pass  # what was buffered could not be written either; the file ends at a record
                self.recorder = None

    def _stop_auth(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None

    def close(self) -> Optional[str]:
        """Deliver what is queued, then release the socket, its context and the recording. Latest mode:
        up to linger_ms. Lossless mode: as long as the consumer keeps taking messages (however slowly; a
        pause longer than linger_ms or than 3 times its slowest pace during the stream is a stall); returns
        why the tail was not delivered (also in `undelivered`), None when it was."""
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        if self.sock is not None and self.ctx is not None and self.cfg.mode == "lossless" and self.sent:
            self._stop_auth()
            stall_s = max(self.cfg.linger_ms / 1000, 3 * self.slowest_s, 1.0)
            if not close_delivering(self.sock, self.ctx, self.endpoint, stall_s):
                self.undelivered = (f"lossless mode: the consumer on {self.endpoint} took nothing for "
                                    f"{stall_s:.0f} s: the last messages (the end message among them) did not reach it")
                log.error(self.undelivered)
            self.sock = self.ctx = None
            return self.undelivered
        if self.sock is not None:
            self.sock.close(self.cfg.linger_ms)
            self.sock = None
        self._stop_auth()
        if self.ctx is not None:
            self.ctx.term()  # returns once every queued message is sent or linger_ms has passed
            self.ctx = None
        return None


def replay(pub: Publisher, path: Path, fast: bool = False, speed: float = 1.0) -> int:
    """Send every record of a --record file again (the same bytes). Each new subscriber (latest mode)
    gets at once the last topology of every stream that has not ended yet (a recording of several
    streams holds one per stream). Returns the number of messages sent."""
    topologies: dict[bytes, tuple[bytes, bytes]] = {}  # stream (topic prefix) -> its last topology
    t0_rec = t0_now = None
    n = 0
    for rec in wire.read_recording(path):
        if not fast:
            if t0_rec is None:
                t0_rec, t0_now = rec.t, time.monotonic()
            delay = t0_now + (rec.t - t0_rec) / max(speed, 1e-9) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        stream, _, kind = rec.topic.rpartition(b"/")
        if pub.new_subscribers():
            for key, topology in topologies.items():
                if not (kind == b"topology" and key == stream):  # that one goes out next anyway
                    pub.send(*topology, record=False)
        if kind == b"topology":
            topologies[stream] = (rec.topic, rec.payload)
        elif kind == b"end":
            topologies.pop(stream, None)  # ended: a late subscriber must not take it for one starting again
        pub.send(rec.topic, rec.payload, t=rec.t, reliable=kind == b"end")
        n += 1
    return n
