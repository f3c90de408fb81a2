"""Publish stage: MeshFrames out over ZeroMQ in wire schema v1 (docs/schema.md), optionally recorded.

Sockets (one ZeroMQ context per process, explicit high-water mark and linger):
  mode "latest"   XPUB bound at `endpoint`. A subscriber that falls behind loses messages (at most
                  `hwm` queue for it), the pipeline never waits. Every new subscription makes the
                  stage send the topology again, so a late subscriber can decode at once.
  mode "lossless" PUSH bound at `endpoint`, for one PULL consumer. When the consumer is slow (or not
                  there yet) the send blocks, and the pipeline slows down with it: nothing is lost.

Commands (`add_commands`): `listen`, `replay FILE`, `keys DIR`. Also `python -m stages.publish ...`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

import numpy as np
import zmq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.messages import EndOfStream, MeshFrame
from pipeline.stage import Stage, StageError, config_section
from pipeline import wire

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


class PublishConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Loopback only: nothing on the network can read the stream unless the user binds elsewhere
    # (e.g. tcp://0.0.0.0:5555, best with curve on).
    endpoint: str = DEFAULT_ENDPOINT
    # Stream id (first part of every topic); None = the root config's source_id, else "default".
    stream: Optional[str] = None
    # "latest" suits live use: a slow consumer must never stall capture. "lossless" for offline runs.
    mode: Literal["latest", "lossless"] = "latest"
    # Messages queued per consumer before latest mode drops / lossless mode blocks: 4 frames is about
    # 130 ms at 30 fps, enough to ride out a hiccup without letting a slow consumer fall far behind.
    hwm: int = Field(4, ge=1)
    # How long close() waits to deliver what is still queued; bounded so shutdown never hangs.
    linger_ms: int = Field(2000, ge=0)
    # float32 is exact; float16 (~0.5 mm error at 1 m) and int16 (scale / 2 error) halve the bytes.
    vertices_dtype: Literal["float32", "float16", "int16"] = "float32"
    # Send vertices in every Nth frame message (1 = every frame, 0 = never: joints and camera only).
    vertices_every: int = Field(1, ge=0)
    # Topology re-sent every this many seconds (0 = only at start and on subscription): 2 s bounds
    # the wait of a subscriber that missed the on-subscription copy, at ~165 KB per copy.
    topology_interval_s: float = Field(2.0, ge=0)
    # Re-send the topology whenever a subscriber joins (latest mode), so it can decode at once.
    topology_on_subscribe: bool = True
    # --record FILE: every published message with its time (one msgpack [t, topic, payload] each).
    record: Optional[Path] = None
    # --overlay FILE: also write an MP4 of the frames with every person's mesh drawn over them
    # (docs/render.md). Frames then keep their shared-memory slot until published, and the ring grows
    # to fit (Config.ring_slots_needed). Offline every frame is written; live, frames are skipped
    # (counted) when drawing falls behind, since the stream comes first.
    overlay: Optional[Path] = None
    # Opacity of the meshes in the overlay video.
    overlay_alpha: float = Field(0.8, ge=0.0, le=1.0)
    # Which mesh the overlay draws: "fine" (the 6890 vertices published), "coarse" (their 1723-vertex
    # subset: 4x fewer triangles, 1.5-2.7x quicker to draw (scripts/bench_render.py), nearly the same
    # outline), or "auto": coarse in live mode, where drawing must keep up with the camera, fine offline.
    overlay_mesh: Literal["auto", "fine", "coarse"] = "auto"
    # CurveZMQ encryption (off by default: the default endpoint is loopback-only).
    curve: bool = False
    # Server secret key file (`fastmetro-stream keys DIR` writes DIR/server.key_secret).
    curve_server_secret: Optional[Path] = None
    # Directory of client public keys allowed in (DIR/authorized_clients); None = any client that
    # knows the server's public key (encryption without client authentication).
    curve_clients: Optional[Path] = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not v.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"publish.endpoint {v!r}: use tcp://HOST:PORT, ipc://PATH or inproc://NAME")
        return v

    @field_validator("record", "overlay")
    @classmethod
    def _output_directory(cls, v: Optional[Path]) -> Optional[Path]:
        # said at start, before any stage runs, rather than by the publish stage once the model has loaded
        if v is not None and not Path(v).parent.is_dir():
            raise ValueError(f"directory {Path(v).parent} does not exist")
        return v

    @model_validator(mode="after")
    def _curve(self) -> "PublishConfig":
        if self.curve and self.curve_server_secret is None:
            raise ValueError(
                "publish.curve is on but publish.curve_server_secret is not set: make keys with "
                "`fastmetro-stream keys DIR` and set it to DIR/server.key_secret"
            )
        if self.curve and not self.endpoint.startswith("tcp://"):
            raise ValueError("publish.curve needs a tcp:// endpoint")
        return self


def _load_secret(path: Path, what: str) -> tuple[bytes, bytes]:
    import zmq.auth

    path = Path(path)
    if not path.is_file():
        raise StageError(f"{what}: key file {path} not found (make keys with `fastmetro-stream keys DIR`)")
    public, secret = zmq.auth.load_certificate(str(path))
    if secret is None:
        raise StageError(f"{what}: {path} holds no secret key; give the .key_secret file")
    return public, secret


def _bind(sock: zmq.Socket, endpoint: str) -> None:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        raise StageError(f"publish.endpoint {endpoint}: cannot bind ({e}); choose another port") from e


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

    def __init__(self, cfg: PublishConfig) -> None:
        self.cfg = cfg
        self.sock: Optional[zmq.Socket] = None
        self.auth = None
        self.recorder: Optional[wire.RecordWriter] = None
        self.endpoint: Optional[str] = None  # the endpoint actually bound (a wildcard port resolved)
        self.sent = 0
        self.bytes = 0

    def open(self) -> None:
        cfg = self.cfg
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.XPUB if cfg.mode == "latest" else zmq.PUSH)
        try:
            sock.setsockopt(zmq.SNDHWM, cfg.hwm)
            sock.setsockopt(zmq.LINGER, cfg.linger_ms)
            if cfg.mode == "latest":
                sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, duplicates too: each asks for topology
            if cfg.curve:
                public, secret = _load_secret(cfg.curve_server_secret, "publish.curve_server_secret")
                if cfg.curve_clients is not None:
                    if not Path(cfg.curve_clients).is_dir():
                        raise StageError(f"publish.curve_clients: directory {cfg.curve_clients} not found")
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

    def send(self, topic: bytes, payload: bytes, t: Optional[float] = None, reliable: bool = False) -> None:
        """Send one message. Latest mode never blocks: past the high-water mark a subscriber's copy is
        dropped, unless `reliable` (the end message): then wait up to linger_ms for room."""
        assert self.sock is not None, "Publisher.open() first"
        if self.cfg.mode == "latest" and reliable:
            self.sock.setsockopt(zmq.XPUB_NODROP, 1)
            deadline = time.monotonic() + self.cfg.linger_ms / 1000
            try:
                while True:
                    try:
                        self.sock.send_multipart([topic, payload], flags=zmq.NOBLOCK, copy=False)
                        break
                    except zmq.Again:
                        if time.monotonic() >= deadline:
                            log.warning("a subscriber stayed full for %d ms: it misses the %s message",
                                        self.cfg.linger_ms, topic.decode(errors="replace"))
                            self.sock.setsockopt(zmq.XPUB_NODROP, 0)
                            self.sock.send_multipart([topic, payload], copy=False)
                            break
                        time.sleep(0.005)
            finally:
                self.sock.setsockopt(zmq.XPUB_NODROP, 0)
        elif self.cfg.mode == "latest":
            self.sock.send_multipart([topic, payload], copy=False)
        else:
            waited = 0.0
            while not self.sock.poll(5000, zmq.POLLOUT):
                waited += 5.0
                log.warning("lossless mode: waited %.0f s for a consumer to read from %s", waited, self.endpoint)
            self.sock.send_multipart([topic, payload], copy=False)
        self.sent += 1
        self.bytes += len(payload) + len(topic)
        if self.recorder is not None:
            self.recorder.write(wire.now() if t is None else t, topic, payload)

    def _stop_auth(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(self.cfg.linger_ms)
            self.sock = None
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        self._stop_auth()


def _assets_dir(root: Any) -> Optional[str]:
    for section in ("infer", "model"):
        value = getattr(getattr(root, section, None), "assets_dir", None)
        if value:
            return str(value)
    return None


class PublishStage(Stage):
    """MeshFrame -> one frame message; EndOfStream -> one end message. Outputs nothing downstream."""

    name = "publish"

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.root = config
        self.cfg: PublishConfig = config_section(config, "publish", PublishConfig)
        source_id = None if isinstance(config, PublishConfig) else getattr(config, "source_id", None)
        self.stream: str = self.cfg.stream or source_id or "default"
        self.publisher: Optional[Publisher] = None
        self.seq = 0  # frame messages published so far (the next frame message's seq)
        self._faces = None
        self._last_topology: Optional[float] = None  # monotonic time of the last topology sent
        self.store: Any = None  # set by the runtime (frames keep their slot when an overlay is written)
        self.overlay: Any = None  # pipeline.render.OverlayRecorder with publish.overlay

    # -- runtime protocol
    def check(self) -> None:
        check_endpoint(self.cfg.endpoint)

    def setup(self) -> None:
        import fastmetro

        mesh = fastmetro.load_mesh_data(_assets_dir(self.root))
        self._faces = mesh.faces
        self._joint_names = tuple(fastmetro.JOINT_NAMES)
        self._h36m_names = tuple(fastmetro.H36M_JOINT_NAMES)
        self.publisher = Publisher(self.cfg)
        self.publisher.open()
        if self.cfg.overlay is not None:
            from pipeline.render import OverlayRecorder

            live = getattr(self.root, "mode", "offline") == "live"
            coarse = self.cfg.overlay_mesh == "coarse" or (self.cfg.overlay_mesh == "auto" and live)
            self.overlay = OverlayRecorder(
                self.cfg.overlay, mesh.coarse_faces if coarse else self._faces, alpha=self.cfg.overlay_alpha,
                block=not live, downsample=mesh.downsample if coarse else None)
            log.info("writing the overlay video to %s (%s mesh)", self.cfg.overlay, "coarse" if coarse else "fine")
        if self.cfg.mode == "latest":
            self.send_topology()
        # lossless: a PUSH send blocks until a consumer connects, so the first topology goes out with
        # the first message (in process), never in setup, which must not wait for a consumer.

    @property
    def endpoint(self) -> Optional[str]:
        return self.publisher.endpoint if self.publisher else None

    def send_topology(self) -> None:
        assert self.publisher is not None and self._faces is not None
        payload = wire.encode_topology(
            self.stream, self.seq, self._faces, self._joint_names, self._h36m_names,
            self.cfg.vertices_dtype, self.cfg.vertices_every,
        )
        self.publisher.send(wire.topic(self.stream, "topology"), payload)
        self._last_topology = time.monotonic()
        self.count("topology_sent")

    def _maybe_topology(self) -> None:
        assert self.publisher is not None
        requested = self.cfg.topology_on_subscribe and self.publisher.new_subscribers() > 0
        due = self._last_topology is None or (
            self.cfg.topology_interval_s > 0 and time.monotonic() - self._last_topology >= self.cfg.topology_interval_s
        )
        if requested or due:
            self.send_topology()

    def process(self, msg: Any) -> Iterable[Any]:
        if self.publisher is None:
            raise RuntimeError("PublishStage.setup() must run before process()")
        self._maybe_topology()
        if isinstance(msg, MeshFrame):
            every = self.cfg.vertices_every
            payload = wire.encode_frame(
                msg, self.stream, self.seq, with_vertices=every > 0 and self.seq % every == 0,
                vertices_dtype=self.cfg.vertices_dtype,
            )
            self.publisher.send(wire.topic(self.stream, "frame"), payload)
            self.seq += 1
            self.count("published")
            self.count("published_bytes", len(payload))
            self._overlay(msg)
        elif isinstance(msg, EndOfStream):
            self.publisher.send(wire.topic(self.stream, "end"), wire.encode_end(msg, self.stream, self.seq), reliable=True)
            self.count("end_sent")
            self._close_overlay()
        else:
            raise TypeError(f"publish stage got {type(msg).__name__}; expected MeshFrame or EndOfStream")
        return []

    def _overlay(self, msg: MeshFrame) -> None:
        """Hand the frame to the overlay writer: its pixels are copied out and its slot released here."""
        f = msg.frame
        if f.slot < 0 or self.store is None:
            return
        rgb = None
        if self.overlay is not None and self.overlay.error is None:
            rgb = np.array(self.store.frame(f))
        self.store.release(f)
        if rgb is not None:
            t = f.pts if f.pts is not None else f.times.get("decode")
            if not self.overlay.submit(rgb, msg.persons, msg.focal, t, msg.lost):
                self.count("overlay_skipped")

    def _close_overlay(self) -> None:
        if self.overlay is not None:
            self.overlay.close()
            self.count("overlay_frames", self.overlay.written)
            if self.overlay.error is not None:
                self.count("overlay_failed")
            self.overlay = None

    # Between frames (an idle or slow pipeline) the runtime calls tick() by next_deadline(), so a
    # subscriber that joins still gets the topology at once and the periodic copy stays on time.
    # Latest mode only: in lossless mode a send may wait for a consumer, which only frames should do.
    SUBSCRIPTION_POLL_S = 0.2

    def next_deadline(self) -> Optional[float]:
        if self.publisher is None or self.cfg.mode != "latest":
            return None
        deadline = time.monotonic() + self.SUBSCRIPTION_POLL_S if self.cfg.topology_on_subscribe else None
        if self.cfg.topology_interval_s > 0 and self._last_topology is not None:
            due = self._last_topology + self.cfg.topology_interval_s
            deadline = due if deadline is None else min(deadline, due)
        return deadline

    def tick(self) -> Iterable[Any]:
        if self.publisher is not None and self.cfg.mode == "latest":
            self._maybe_topology()
        return []

    def close(self) -> None:
        self._close_overlay()
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None


# ------------------------------------------------------------------------------------------ commands
def _add_socket_args(p: argparse.ArgumentParser, default_mode: str = "latest") -> None:
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help=f"ZeroMQ endpoint (default {DEFAULT_ENDPOINT})")
    p.add_argument("--mode", choices=["latest", "lossless"], default=default_mode,
                   help="latest: PUB/SUB, drops for slow consumers; lossless: PUSH/PULL, one consumer, no loss")


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("listen", help="subscribe to a stream and show live stats (fps, persons, bytes/s, gaps)")
    _add_socket_args(p)
    p.add_argument("--stream", default=None, help="only this stream id (default: every stream)")
    p.add_argument("--curve-server-key", type=Path, default=None, help="server public key file (DIR/server.key)")
    p.add_argument("--curve-client-key", type=Path, default=None, help="client secret key file (DIR/client.key_secret)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between stats lines (default 1)")
    p.set_defaults(func=listen_command)

    p = subparsers.add_parser("replay", help="publish a --record file again, at its original pace or as fast as possible")
    p.add_argument("file", type=Path, help="a file written by --record")
    _add_socket_args(p)
    p.add_argument("--fast", action="store_true", help="as fast as possible instead of the original pace")
    p.add_argument("--speed", type=float, default=1.0, help="pace factor (2 = twice as fast; default 1)")
    p.add_argument("--wait", type=float, default=0.0,
                   help="latest mode: wait up to this many seconds for a first subscriber before sending")
    p.add_argument("--loop", action="store_true", help="start again at the end (until Ctrl-C)")
    p.add_argument("--hwm", type=int, default=PublishConfig.model_fields["hwm"].default,
                   help="messages queued per subscriber before latest mode drops (raise it with --fast)")
    p.add_argument("--curve-server-secret", type=Path, default=None, help="enable CurveZMQ with this server secret key")
    p.add_argument("--curve-clients", type=Path, default=None, help="directory of authorised client public keys")
    p.set_defaults(func=replay_command)

    p = subparsers.add_parser("keys", help="make CurveZMQ key pairs for an encrypted, authenticated stream")
    p.add_argument("dir", type=Path, help="directory to write server.key(_secret), client.key(_secret) into")
    p.add_argument("--client", action="append", default=None,
                   help="client name (repeatable; default: one client named 'client')")
    p.set_defaults(func=keys_command)


def keys_command(args: argparse.Namespace) -> int:
    import zmq.auth

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    authorized = out / "authorized_clients"
    authorized.mkdir(exist_ok=True)
    names = args.client or ["client"]
    for name in ["server", *names]:
        if (out / f"{name}.key_secret").exists():
            print(f"error: {out / (name + '.key_secret')} exists; remove it or choose another DIR", file=sys.stderr)
            return 1
    zmq.auth.create_certificates(str(out), "server")
    for name in names:
        public, _ = zmq.auth.create_certificates(str(out), name)
        Path(public).replace(authorized / f"{name}.key")
        # keep a copy beside the secret so the client directory is self-contained
        (out / f"{name}.key").write_bytes((authorized / f"{name}.key").read_bytes())
    for f in out.glob("*.key_secret"):
        os.chmod(f, 0o600)
    print(f"keys written to {out}\n"
          f"publisher config:\n  publish:\n    curve: true\n    curve_server_secret: {out / 'server.key_secret'}\n"
          f"    curve_clients: {authorized}\n"
          f"subscriber: Subscriber(endpoint, server_key='{out / 'server.key'}', client_key='{out / (names[0] + '.key_secret')}')")
    return 0


def replay_command(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"error: recording {args.file} not found", file=sys.stderr)
        return 1
    cfg = PublishConfig(
        endpoint=args.endpoint, mode=args.mode, hwm=args.hwm, curve=args.curve_server_secret is not None,
        curve_server_secret=args.curve_server_secret, curve_clients=args.curve_clients,
    )
    pub = Publisher(cfg)
    try:
        pub.open()
    except StageError as e:  # a busy port, a missing key file
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"replaying {args.file} on {pub.endpoint} ({args.mode})", file=sys.stderr, flush=True)
    try:
        if args.wait > 0 and not pub.wait_subscriber(args.wait):
            print(f"no subscriber within {args.wait} s; sending anyway", file=sys.stderr)
        while True:
            n = replay(pub, args.file, fast=args.fast, speed=args.speed)
            if not args.loop:
                break
        print(f"replayed {n} messages", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    except wire.WireError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        pub.close()
    return 0


def replay(pub: Publisher, path: Path, fast: bool = False, speed: float = 1.0) -> int:
    """Send every record of a --record file again (the same bytes). Each new subscriber (latest mode)
    gets the last topology at once. Returns the number of messages sent."""
    topology: Optional[tuple[bytes, bytes]] = None
    t0_rec = t0_now = None
    n = 0
    for rec in wire.read_recording(path):
        if not fast:
            if t0_rec is None:
                t0_rec, t0_now = rec.t, time.monotonic()
            delay = t0_now + (rec.t - t0_rec) / max(speed, 1e-9) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if pub.new_subscribers() and topology is not None and not rec.topic.endswith(b"/topology"):
            pub.send(*topology)
        if rec.topic.endswith(b"/topology"):
            topology = (rec.topic, rec.payload)
        pub.send(rec.topic, rec.payload, t=rec.t, reliable=rec.topic.endswith(b"/end"))
        n += 1
    return n


def listen_command(args: argparse.Namespace) -> int:
    from pipeline.subscriber import Subscriber

    sub = Subscriber(args.endpoint, stream=args.stream, mode=args.mode,
                     server_key=args.curve_server_key, client_key=args.curve_client_key)
    print(f"listening on {args.endpoint} ({args.mode}); Ctrl-C to stop", file=sys.stderr, flush=True)
    start = last = time.monotonic()
    frames = persons = 0
    last_stats = dict(sub.stats)
    try:
        while True:
            now_ = time.monotonic()
            if args.duration is not None and now_ - start >= args.duration:
                break
            msg = sub.recv(timeout_s=min(args.interval, 0.25))
            if msg is not None and msg.kind == "frame":
                frames += 1
                persons += len(msg.persons)
            elif msg is not None and msg.kind == "end":
                print(f"end of stream {msg.stream}: {msg.frames} frames ({msg.reason})")
            now_ = time.monotonic()
            if now_ - last >= args.interval or (args.frames and frames >= args.frames) or (msg is not None and msg.kind == "end"):
                dt = max(now_ - last, 1e-9)
                s = sub.stats
                df = s["frames"] - last_stats["frames"]
                dp = s["persons"] - last_stats["persons"]
                print(
                    f"{df / dt:6.1f} fps  {dp / max(df, 1):4.1f} persons/frame  "
                    f"{(s['bytes'] - last_stats['bytes']) / dt / 1e6:7.2f} MB/s  gaps {s['gaps']} "
                    f"(missed {s['missed']})  malformed {s['malformed']}  oversized {s['oversized']}  "
                    f"frames {s['frames']}",
                    flush=True,
                )
                last, last_stats = now_, dict(s)
            if args.frames and frames >= args.frames:
                break
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.publish", description="publish-side commands")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
