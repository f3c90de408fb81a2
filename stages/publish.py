"""Publish stage: MeshFrames out over ZeroMQ in wire schema v1 (docs/schema.md), optionally recorded.

The socket itself is pipeline.publisher.Publisher:
  mode "latest"   a subscriber that falls behind loses messages (at most `hwm` queue for it), the
                  pipeline never waits. Every new subscription makes the stage send the topology again,
                  so a late subscriber can decode at once.
  mode "lossless" one PULL consumer; when it is slow (or not there yet) the send blocks, and the pipeline
                  slows down with it: nothing is lost.

A run of several sources (`sources:`) publishes each as its own stream, named by its id (Frame.source):
its own topology, frame messages with their own seq, and its end message when that source ends (a
SourceEnd) or, for those still going, at the run's end. One socket and one recording hold them all.

The commands around a stream (`listen`, `replay`, `keys`) are in tools/stream.py.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

import zmq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.messages import EndOfStream, MeshFrame, SourceEnd
from pipeline import wire
from pipeline.publisher import DEFAULT_ENDPOINT, Publisher, PublishError, check_endpoint
from pipeline.stage import Stage, StageContext, StageError, check_output_file, config_section

log = logging.getLogger(__name__)


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
    hwm: int = Field(4, ge=1, le=100000)
    # How long close() waits to deliver what is still queued; bounded so shutdown never hangs.
    linger_ms: int = Field(2000, ge=0, le=60000)
    # float32 is exact; float16 (~0.5 mm error at 1 m) and int16 (scale / 2 error) halve the bytes.
    vertices_dtype: Literal["float32", "float16", "int16"] = "float32"
    # Send vertices in every Nth frame message (1 = every frame, 0 = never: joints and camera only).
    vertices_every: int = Field(1, ge=0, le=100000)
    # Topology re-sent every this many seconds (0 = only at start and on subscription): 2 s bounds
    # the wait of a subscriber that missed the on-subscription copy, at ~165 KB per copy.
    topology_interval_s: float = Field(2.0, ge=0, le=3600)
    # Re-send the topology whenever a subscriber joins (latest mode), so it can decode at once.
    topology_on_subscribe: bool = True
    # --record FILE: every published message with its time (one msgpack [t, topic, payload] each).
    record: Optional[Path] = None
    # CurveZMQ encryption (off by default: the default endpoint is loopback-only).
    curve: bool = False
    # Server secret key file (`fastmetro-stream keys DIR` writes DIR/server.key_secret).
    curve_server_secret: Optional[Path] = None
    # Directory of client public keys allowed in (DIR/authorized_clients); None = any client that
    # knows the server's public key (encryption without client authentication).
    curve_clients: Optional[Path] = None

    @field_validator("topology_interval_s")
    @classmethod
    def _topology_interval(cls, v: float) -> float:
        if 0 < v < 0.1:  # below that the stage does little but send topologies (165 KB each)
            raise ValueError("publish.topology_interval_s: use 0 (never again) or at least 0.1 s")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not v.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"publish.endpoint {v!r}: use tcp://HOST:PORT, ipc://PATH or inproc://NAME")
        return v

    @field_validator("record")
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


class PublishStage(Stage):
    """MeshFrame -> one frame message; EndOfStream -> one end message. Outputs nothing downstream."""

    name = "publish"

    def __init__(self, config: Any = None, context: Optional[StageContext] = None) -> None:
        super().__init__()
        self.cfg: PublishConfig = config_section(config, "publish", PublishConfig)
        self.context = context or StageContext.of(config)
        self.stream: str = self.cfg.stream or self.context.source_id or "default"
        # several sources: one stream per source id; else the one stream
        self.multi = bool(self.context.source_ids)
        self.streams: list[str] = list(self.context.source_ids) or [self.stream]
        if self.multi:
            self.stream = self.streams[0]
        self.seqs = {s: 0 for s in self.streams}  # per stream: frame messages published so far (the next seq)
        self.taken: dict[str, int] = {}  # per stream: frames taken from its source up to the last published
        self.ended: set[str] = set()  # streams whose end message went out
        self.publisher: Optional[Publisher] = None
        self._faces = None
        self._hand_faces = None  # the MANO faces, read when the first frame with hands comes
        self._hand_joint_names: tuple = ()
        self._last_topology: Optional[float] = None  # monotonic time of the last topology sent
        self._recorded: set[str] = set()  # streams whose current topology is in the recording
        self.end_sent = False
        self.stop_reason: Optional[str] = None  # set by the runtime when the run stops before its end

    @property
    def seq(self) -> int:
        """Frame messages published so far on the (first) stream."""
        return self.seqs[self.stream]

    # -- runtime protocol
    def check(self) -> None:
        for stream in self.streams:
            if not wire.is_stream_id(stream):
                raise StageError(f"stream id {stream!r} (publish.stream, source_id or a source's id): use 1 to "
                                 f"{wire.MAX_STREAM_ID} characters without '/' (it is the first part of every topic)")
        try:
            check_endpoint(self.cfg.endpoint)
        except PublishError as e:
            raise StageError(str(e)) from e
        if self.cfg.record is not None:
            check_output_file(self.cfg.record, "publish.record")

    def setup(self) -> None:
        import fastmetro
        import fastmetro.assets  # the faces only: no torch in this process

        try:
            self._faces = fastmetro.assets.load_mesh_faces(self.context.assets_dir).faces
        except fastmetro.assets.AssetError as e:
            raise StageError(str(e)) from e
        self._joint_names = tuple(fastmetro.JOINT_NAMES)
        self._h36m_names = tuple(fastmetro.H36M_JOINT_NAMES)
        self.publisher = Publisher(self.cfg)
        try:
            self.publisher.open()
        except PublishError as e:
            raise StageError(str(e)) from e
        if self.cfg.mode == "latest":
            self.send_topology()
        # lossless: a PUSH send blocks until a consumer connects, so the first topology goes out with
        # the first message (in process), never in setup, which must not wait for a consumer.

    @property
    def endpoint(self) -> Optional[str]:
        return self.publisher.endpoint if self.publisher else None

    def _start_hands(self) -> None:
        """The first frame with hands: the topology gains the hand mesh and goes out again before it."""
        import fastmetro
        import fastmetro.assets

        try:
            self._hand_faces = fastmetro.assets.load_hand_faces(self.context.hand_assets_dir)
        except fastmetro.assets.AssetError as e:
            raise StageError(str(e)) from e
        self._hand_joint_names = tuple(fastmetro.HAND_JOINT_NAMES)
        self._last_topology = None  # due now
        self._recorded.clear()  # a new topology: recorded again

    def send_topology(self) -> None:
        """The topology of every stream still going."""
        assert self.publisher is not None and self._faces is not None
        for stream in self.streams:
            if stream in self.ended:
                continue
            payload = wire.encode_topology(
                stream, self.seqs[stream], self._faces, self._joint_names, self._h36m_names,
                self.cfg.vertices_dtype, self.cfg.vertices_every, hand_faces=self._hand_faces,
                hand_joint_names=self._hand_joint_names if self._hand_faces is not None else None,
            )
            # a recording holds each stream's topology once, and again only when it changes
            self.publisher.send(wire.topic(stream, "topology"), payload, record=stream not in self._recorded)
            self._recorded.add(stream)
            self.count("topology_sent")
        self._last_topology = time.monotonic()

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
        if isinstance(msg, MeshFrame) and self._hand_faces is None and any(p.hands for p in msg.persons):
            self._start_hands()
        self._maybe_topology()
        if isinstance(msg, MeshFrame):
            stream = msg.frame.source if self.multi else self.stream
            if stream not in self.seqs:
                raise ValueError(f"publish: a frame of stream {stream!r}, not one of the run's {self.streams}")
            self._count_dropped(stream, msg.frame)
            seq, every = self.seqs[stream], self.cfg.vertices_every
            payload = wire.encode_frame(
                msg, stream, seq, with_vertices=every > 0 and seq % every == 0,
                vertices_dtype=self.cfg.vertices_dtype,
            )
            self.publisher.send(wire.topic(stream, "frame"), payload)
            self.seqs[stream] = seq + 1
            self.count("published")
            self.count("published_bytes", len(payload))
            if self.publisher.record_failed and not self.counters.get("record_failed"):
                self.count("record_failed")
        elif isinstance(msg, SourceEnd):
            if msg.source in self.seqs and msg.source not in self.ended:
                self._send_end(msg.source, self.taken.get(msg.source, msg.frames), msg.reason)
        elif isinstance(msg, EndOfStream):
            for stream in self.streams:
                if stream not in self.ended:
                    fallback = self.seqs[stream] if self.multi else msg.frames
                    self._send_end(stream, self.taken.get(stream, fallback), msg.reason)
            self.end_sent = True
        else:
            raise TypeError(f"publish stage got {type(msg).__name__}; expected MeshFrame, SourceEnd or EndOfStream")
        return []

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

    def _count_dropped(self, stream: str, frame: Any) -> None:
        """`dropped` on the wire: the frames of this source dropped since its previous frame message, from
        the source's own count (Frame.position). The runtime's drops in a live queue land on whichever frame
        pushed them out, often a later one than the next to get through (consecutive frames then carried
        9, 9, 9); the source's count puts every drop before the frame that follows it, in order."""
        if frame.position < 0:
            return  # a source that does not count (tests, older stages): the runtime's figure stands
        before = self.taken.get(stream, 0)
        if frame.position >= before:
            frame.dropped = frame.position - before
        self.taken[stream] = max(before, frame.position + 1)

    def _send_end(self, stream: str, frames: int, reason: str) -> None:
        assert self.publisher is not None
        seq = self.seqs[stream]
        # several streams: the end names those still going, so a subscriber that heard only this one goes on
        going = [s for s in self.streams if s not in self.ended and s != stream] if self.multi else None
        self.publisher.send(wire.topic(stream, "end"),
                            wire.encode_end(EndOfStream(stream, frames, reason), stream, seq, streams_open=going),
                            reliable=True)
        self.ended.add(stream)
        self.count("end_sent")

    def _send_last_end(self) -> None:
        """The run stopped before its end of stream (an error, a killed stage, Ctrl-C twice, a stop
        timeout): still tell subscribers of every stream not ended yet, with the reason, so none waits
        forever. Bounded by linger_ms."""
        pub = self.publisher
        if pub is None or pub.sock is None or self.end_sent:
            return
        reason = self.stop_reason or "stopped"
        try:
            for stream in self.streams:
                if stream in self.ended:
                    continue
                if self.cfg.mode == "lossless" and not pub.sock.poll(self.cfg.linger_ms, zmq.POLLOUT):
                    log.warning("no consumer took the end message within %d ms", self.cfg.linger_ms)
                    return
                self._send_end(stream, self.taken.get(stream, self.seqs[stream]), reason)
            self.end_sent = True
        except (zmq.ZMQError, OSError) as e:
            log.warning("could not send the end message: %s", e)

    def close(self) -> None:
        if self.publisher is not None:
            self._send_last_end()
            undelivered = self.publisher.close()
            self.publisher = None
            if undelivered:  # lossless: said loudly, and the run fails
                self.count("end_undelivered")
                raise StageError(undelivered)
