"""Python subscriber for fastmetro-stream (wire schema v1, docs/schema.md).

    from pipeline.subscriber import Subscriber
    with Subscriber("tcp://127.0.0.1:5555") as sub:
        for frame in sub:                       # ends after the stream's end message
            for p in frame.persons:
                p.track_id, p.vertices          # (6890, 3) float32 or None, frame.topology.faces (13776, 3)
                p.hands.get("left")             # HandData (778 x 3 vertices, 21 joints) or None

Frames are yielded once a topology message has arrived (the publisher sends one at start, when a
subscriber joins, and every few seconds). Anything off-schema, oversized, or not msgpack is counted in
`stats` and skipped: a subscriber never raises on what it receives.
"""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Sequence, Union

import numpy as np
import zmq

from . import wire

PathLike = Union[str, os.PathLike]


@dataclass
class Topology:
    kind: Literal["topology"]
    stream: str
    seq: int
    wall: float
    faces: np.ndarray  # (F, 3) int32 triangles over the vertices
    num_vertices: int
    joint_names: list[str]  # order of joints3d / joints2d
    h36m_joint_names: list[str]  # order of joints_h36m
    coordinates: dict  # frame, axes, handedness, units
    vertices_dtype: str  # how the publisher packs vertices
    vertices_every: int  # vertices in every Nth frame message (0 = never)
    hand: Optional["HandTopology"] = None  # the hand mesh, from publishers that send hands


@dataclass
class HandTopology:
    num_vertices: int  # 778 (MANO)
    faces_right: np.ndarray  # (1538, 3) int32 triangles of a right hand's vertices
    faces_left: np.ndarray  # the same with the winding reversed: a left hand is a mirror image
    joint_names: list[str]  # order of HandData.joints3d (fastmetro.HAND_JOINT_NAMES)


@dataclass
class HandData:
    side: str  # "left" / "right", the person's own
    cam: np.ndarray  # (3,) weak-perspective camera of the (un-mirrored) hand crop
    cam_t: np.ndarray  # (3,) hand translation in the camera frame, metres (the body cam_t's camera)
    joints3d: np.ndarray  # (21, 3) metres, hand-relative
    vertices: Optional[np.ndarray]  # (778, 3) metres, hand-relative; None in frames sent without vertices
    center: np.ndarray  # (2,) hand crop square centre, frame pixels
    size: float  # hand crop square side, frame pixels


@dataclass
class PersonData:
    track_id: int
    state: str  # new / tracked / coasting / lost
    box: np.ndarray  # (4,) x1, y1, x2, y2 frame pixels
    score: float
    predicted: bool  # True when the smoother coasted (no measurement this frame)
    center: np.ndarray  # (2,) crop square centre, frame pixels
    size: float  # crop square side, frame pixels
    cam: np.ndarray  # (3,) weak-perspective camera of the crop
    cam_t: np.ndarray  # (3,) body translation in the camera frame, metres
    joints3d: np.ndarray  # (14, 3) metres, body-relative
    joints2d: np.ndarray  # (14, 2) frame pixels
    joints_h36m: np.ndarray  # (17, 3) metres, body-relative
    vertices: Optional[np.ndarray]  # (6890, 3) float32 metres, None in frames sent without vertices
    rotmat: Optional[np.ndarray] = None  # (24, 3, 3) SMPL pose, models with the SMPL head only
    betas: Optional[np.ndarray] = None  # (10,) SMPL shape
    hands: dict[str, HandData] = field(default_factory=dict)  # "left"/"right" -> hand seen this frame
    hand_skips: dict[str, str] = field(default_factory=dict)  # side -> why no hand (docs/schema.md)
    foot_contact: Optional[np.ndarray] = None  # (2,) bool left, right planted; None = not sent


def person_data(pm: Any) -> PersonData:
    """A pipeline.messages.PersonMesh as the decoded type (no copies): what the overlay stage draws, so that
    every consumer of persons (subscriber, recordings, overlay, viewer) takes one type."""
    p = pm.person
    return PersonData(
        track_id=p.track_id, state=p.state, box=np.asarray(p.box, np.float64), score=p.score,
        predicted=pm.predicted, center=np.asarray(p.center, np.float64), size=p.size, cam=pm.cam,
        cam_t=pm.cam_t, joints3d=pm.joints3d, joints2d=pm.joints2d, joints_h36m=pm.joints_h36m,
        vertices=pm.vertices, rotmat=pm.rotmat, betas=pm.betas, foot_contact=pm.foot_contact,
        hands={s: HandData(side=h.side, cam=h.cam, cam_t=h.cam_t, joints3d=h.joints3d, vertices=h.vertices,
                           center=np.asarray(h.center, np.float64), size=h.size) for s, h in pm.hands.items()},
    )


@dataclass
class WorldData:
    """The camera's pose over the floor at a frame (docs/world.md)."""

    state: str  # calibrating | calibrated | fixed
    focal_estimated: bool  # the frame's focal was calibrated
    world_from_camera: Optional[np.ndarray]  # (4, 4) float64, X_world = T @ [X_cam, 1]; None while calibrating


@dataclass
class FrameData:
    kind: Literal["frame"]
    stream: str
    seq: int  # frame messages published before this one on the stream
    index: int  # frame index in the source
    pts: Optional[float]
    wall: float  # wall-clock time it was published
    width: int
    height: int
    times: dict[str, float]  # stage -> wall time it emitted this frame
    dropped: int  # frames dropped upstream since the previous message
    persons: list[PersonData]
    lost: list[int]  # track ids that ended at this frame
    topology: Optional[Topology]
    nbytes: int = 0  # payload size on the wire
    focal: Optional[float] = None  # focal length (frame pixels) of cam_t's camera; None from older publishers
    world: Optional[WorldData] = None  # the camera over the floor; None when the publisher has no world


@dataclass
class EndData:
    kind: Literal["end"]
    stream: str
    seq: int  # frame messages published on the stream in all
    wall: float
    frames: int  # frames the source delivered
    reason: str
    streams_open: list[str] = field(default_factory=list)  # the publisher's other streams not ended yet


Message = Union[Topology, FrameData, EndData]


def _key(path: PathLike, what: str) -> tuple[bytes, Optional[bytes]]:
    import zmq.auth

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what}: key file {p} not found (make keys with `fastmetro-stream keys DIR`)")
    return zmq.auth.load_certificate(str(p))


def vertex_count_differs(frame: FrameData) -> bool:
    """Whether a body's (or a hand's) vertices have another row count than its stream's topology says
    (docs/schema.md, rule 9: such a frame is delivered and counted)."""
    top = frame.topology
    if top is None:
        return False
    return any(p.vertices is not None and p.vertices.shape[0] != top.num_vertices for p in frame.persons) or any(
        h.vertices is not None and top.hand is not None and h.vertices.shape[0] != top.hand.num_vertices
        for p in frame.persons for h in p.hands.values())


def to_message(m: dict, topology: Optional[Topology]) -> Message:
    """A dict from `wire.decode` -> a typed message."""
    kind = m["kind"]
    if kind == "topology":
        h = m.get("hand")
        hand = None if h is None else HandTopology(h["num_vertices"], h["faces_right"], h["faces_left"],
                                                   list(h["joint_names"]))
        return Topology(
            "topology", m["stream"], m["seq"], float(m["wall"]), m["faces"], m["num_vertices"],
            list(m["joint_names"]), list(m["h36m_joint_names"]), dict(m["coordinates"]),
            str(m.get("vertices_dtype", "float32")), int(m.get("vertices_every", 1)), hand,
        )
    if kind == "end":
        return EndData("end", m["stream"], m["seq"], float(m["wall"]), m["frames"], m["reason"],
                       list(m.get("streams_open", [])))
    persons = [PersonData(**{**p, "hands": {s: HandData(**h) for s, h in p["hands"].items()}})
               for p in m["persons"]]
    return FrameData(
        "frame", m["stream"], m["seq"], m["index"], m.get("pts"), float(m["wall"]), int(m.get("width", 0)),
        int(m.get("height", 0)), dict(m["times"]), m["dropped"], persons, m["lost"], topology,
        focal=None if m.get("focal") is None else float(m["focal"]),
        world=None if m.get("world") is None else WorldData(**m["world"]),
    )


MAX_LIVE_STREAMS = 4096  # streams frames() waits to see end (bounded: stream ids come from the network)


class Reconnector:
    """Connects a socket again where ZeroMQ gave a connection up for good. A frame past ZMQ_MAXMSGSIZE is
    refused as it arrives, but ZeroMQ then closes that connection as a protocol error and never retries it:
    one oversized message would leave the subscriber deaf to that publisher (and a lossless publisher
    blocked). A connection lost for any other reason is retried by ZeroMQ itself (a retry event follows
    within its reconnect interval); one with no retry after GRACE_S is connected again here."""

    GRACE_S = 0.3
    EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_DELAYED | zmq.EVENT_CONNECT_RETRIED

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.monitor: Optional[zmq.Socket] = sock.get_monitor_socket(self.EVENTS)
        self.lost: dict[str, float] = {}  # endpoint -> when to connect it again unless ZeroMQ retries
        self.next_check = 0.0

    INTERVAL_S = 0.1

    def poll_s(self, wait: Optional[float]) -> float:
        """How long the caller may block on its socket before calling check() again."""
        return self.INTERVAL_S if wait is None else min(wait, self.INTERVAL_S)

    def check(self) -> int:
        """Read the connection events (at most every INTERVAL_S); connect again what ZeroMQ gave up.
        Returns how many."""
        from zmq.utils.monitor import recv_monitor_message

        now = time.monotonic()
        if self.monitor is None or now < self.next_check:
            return 0
        self.next_check = now + self.INTERVAL_S
        while self.monitor.poll(0):
            ev = recv_monitor_message(self.monitor)
            where = ev["endpoint"].decode("utf-8", "replace") if isinstance(ev["endpoint"], bytes) else str(ev["endpoint"])
            if ev["event"] == zmq.EVENT_DISCONNECTED:
                self.lost[where] = time.monotonic() + self.GRACE_S
            else:
                self.lost.pop(where, None)  # connected, or ZeroMQ is retrying it itself
        n = 0
        for where, due in list(self.lost.items()):
            if time.monotonic() >= due:
                del self.lost[where]
                try:
                    self.sock.disconnect(where)
                except zmq.ZMQError:
                    pass  # already gone with its session
                self.sock.connect(where)
                n += 1
        return n

    def close(self) -> None:
        if self.monitor is not None:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self.monitor.close(0)
            self.monitor = None


class StreamEnds:
    """When a subscriber is done: every stream it heard of has sent its end message, and at least one end
    per endpoint has come. A stream is heard of by its topology, its frames, or another stream's end
    message naming it in `streams_open` (a publisher of several streams: the first to end says which go
    on). A topology after a stream's end starts it again (a restarted publisher)."""

    def __init__(self, endpoints: int = 1, stream: Optional[str] = None) -> None:
        self.endpoints, self.stream = endpoints, stream
        self.going: set[str] = set()  # heard of, not ended
        self.done: set[str] = set()
        self.ends = 0

    def _heard(self, stream: str) -> None:
        if stream not in self.done and len(self.going) < MAX_LIVE_STREAMS:
            self.going.add(stream)

    def note(self, msg: Message) -> bool:
        """Take one message; True once the subscriber is done."""
        if isinstance(msg, EndData):
            for other in msg.streams_open:
                if other != msg.stream and (self.stream is None or other == self.stream):
                    self._heard(other)
            self.going.discard(msg.stream)
            if len(self.done) < MAX_LIVE_STREAMS:
                self.done.add(msg.stream)
            self.ends += 1
            return not self.going and self.ends >= self.endpoints
        if isinstance(msg, Topology):
            self.done.discard(msg.stream)
        self._heard(msg.stream)
        return False


class Subscriber:
    """Connects to a publisher and hands out decoded messages.

    endpoint: where the publisher binds, or a list of endpoints: one socket connects to every publisher and
    their streams arrive merged, told apart by stream id (give each publisher its own `publish.stream`).
    stream: only this stream id (None = all).
    mode: "latest" (SUB, pairs with the publisher's latest mode) or "lossless" (PULL).
    server_key / client_key: CurveZMQ, the server's public key file and this client's secret key
    file (without client_key an ephemeral key pair is used, enough when clients are not authenticated).
    max_message_bytes: larger messages are counted as oversized and skipped.
    require_topology: hold back frames until a topology message for their stream has arrived.
    max_streams: per-stream state (topology, last seq) is kept for this many streams, the least recently
    heard of forgotten first (counted in stats["streams_forgotten"]), so fake stream ids cannot grow it.
    """

    # A jump in seq larger than this is a publisher restart (or a lie), not frames missed: ~6 days at 30 fps.
    MAX_GAP = 2**24

    def __init__(
        self,
        endpoint: Union[str, Sequence[str]] = "tcp://127.0.0.1:5555",
        stream: Optional[str] = None,
        mode: Literal["latest", "lossless"] = "latest",
        server_key: Optional[PathLike] = None,
        client_key: Optional[PathLike] = None,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
        rcvhwm: int = 16,
        require_topology: bool = True,
        max_streams: int = 64,
    ) -> None:
        if mode not in ("latest", "lossless"):
            raise ValueError(f"Subscriber mode must be 'latest' or 'lossless', got {mode!r}")
        self.endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        if not self.endpoints:
            raise ValueError("Subscriber needs at least one endpoint")
        self.endpoint = ", ".join(self.endpoints)  # for messages
        self.stream, self.mode = stream, mode
        self.max_message_bytes = max_message_bytes
        self.require_topology = require_topology
        self.topology: dict[str, Topology] = {}
        self.stats: dict[str, int] = dict(
            messages=0, frames=0, topologies=0, ends=0, persons=0, bytes=0, malformed=0, oversized=0,
            gaps=0, missed=0, before_topology=0, restarts=0, streams_forgotten=0, vertex_count_mismatch=0,
            reconnects=0,
        )
        self.max_streams = max(1, int(max_streams))
        self._streams: "OrderedDict[str, None]" = OrderedDict()  # streams with state, least recent first
        self.last_error: Optional[str] = None
        self._last_seq: dict[str, int] = {}
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.SUB if mode == "latest" else zmq.PULL)
        try:
            sock.setsockopt(zmq.RCVHWM, rcvhwm)
            sock.setsockopt(zmq.LINGER, 0)
            # ZeroMQ refuses a frame past twice the limit as it arrives (dropping that connection, which
            # Reconnector connects again) instead of buffering it whole first; one between the two is
            # received, counted as oversized and skipped, and the connection stays
            sock.setsockopt(zmq.MAXMSGSIZE, 2 * max_message_bytes + 4096)
            if server_key is not None:
                server_public, _ = _key(server_key, "server_key")
                if client_key is not None:
                    public, secret = _key(client_key, "client_key")
                    if secret is None:
                        raise ValueError(f"client_key: {client_key} holds no secret key; give the .key_secret file")
                else:
                    public, secret = zmq.curve_keypair()
                sock.curve_serverkey = server_public
                sock.curve_publickey = public
                sock.curve_secretkey = secret
            if mode == "latest":
                sock.setsockopt(zmq.SUBSCRIBE, f"{stream}/".encode() if stream else b"")
            for e in self.endpoints:
                sock.connect(e)
        except BaseException:
            sock.close(0)
            raise
        self.sock = sock
        self._reconnect = Reconnector(sock)

    # -- receiving
    def _touch(self, stream: str) -> None:
        """Note that `stream` has state; forget the least recently heard streams beyond max_streams, and
        beyond max_message_bytes of topology in all (fake stream ids cannot grow memory)."""
        self._streams[stream] = None
        self._streams.move_to_end(stream)
        while len(self._streams) > 1 and (
            len(self._streams) > self.max_streams
            or sum(t.faces.nbytes for t in self.topology.values()) > self.max_message_bytes
        ):
            old, _ = self._streams.popitem(last=False)
            self.topology.pop(old, None)
            self._last_seq.pop(old, None)
            self.stats["streams_forgotten"] += 1

    def _gap(self, stream: str, seq: int, last: Optional[int]) -> None:
        if last is None:
            return
        if seq < last or seq - last - 1 > self.MAX_GAP:
            self.stats["restarts"] += 1
        elif seq > last + 1:
            self.stats["gaps"] += 1
            self.stats["missed"] += seq - last - 1

    def _bad(self, key: str, why: str) -> None:
        self.stats[key] += 1
        self.last_error = why

    def recv(self, timeout_s: Optional[float] = None) -> Optional[Message]:
        """The next well-formed message, or None when none came within timeout_s (None = wait)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.stats["reconnects"] += self._reconnect.check()  # at most every 0.1 s, however busy
            if not self.sock.poll(int(self._reconnect.poll_s(wait) * 1000)):
                if wait is not None and time.monotonic() >= deadline:
                    return None
                continue
            parts = self.sock.recv_multipart(copy=True)
            msg = self._handle(parts)
            if msg is not None:
                return msg
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _handle(self, parts: list[bytes]) -> Optional[Message]:
        self.stats["messages"] += 1
        size = sum(len(p) for p in parts)
        self.stats["bytes"] += size
        if len(parts) != 2:
            self._bad("malformed", f"{len(parts)} frames in a message (expected topic and payload)")
            return None
        topic, payload = parts
        if len(payload) > self.max_message_bytes:
            self._bad("oversized", f"{len(payload)} bytes > max_message_bytes {self.max_message_bytes}")
            return None
        try:
            m = wire.decode(payload, self.max_message_bytes)
            if topic != wire.topic(m["stream"], m["kind"]):
                raise wire.WireError(f"topic {topic!r} does not match the payload's stream and kind")
            if self.stream is not None and m["stream"] != self.stream:
                return None  # another stream (lossless mode receives every stream)
            msg = to_message(m, self.topology.get(m["stream"]))
            if isinstance(msg, FrameData) and vertex_count_differs(msg):
                self.stats["vertex_count_mismatch"] += 1  # docs/schema.md: counted, the frame still delivered
        except Exception as e:  # never crash on input: count and skip
            self._bad("malformed", f"{type(e).__name__}: {e}")
            return None
        if isinstance(msg, Topology):
            self.stats["topologies"] += 1
            self.topology[msg.stream] = msg
            self._touch(msg.stream)
            return msg
        if isinstance(msg, EndData):
            self.stats["ends"] += 1
            last = self._last_seq.pop(msg.stream, None)
            if last is not None and msg.seq > last + 1:
                self._gap(msg.stream, msg.seq, last)
            return msg
        msg.nbytes = len(payload)
        self._gap(msg.stream, msg.seq, self._last_seq.get(msg.stream))
        self._last_seq[msg.stream] = msg.seq  # a lower seq means the publisher restarted: start over
        self._touch(msg.stream)
        if msg.topology is None and self.require_topology:
            self.stats["before_topology"] += 1
            return None
        self.stats["frames"] += 1
        self.stats["persons"] += len(msg.persons)
        return msg

    def frames(self, idle_timeout_s: Optional[float] = None, stop_at_end: bool = True) -> Iterator[FrameData]:
        """Frames as they come, of every stream merged; ends after idle_timeout_s of silence, or (stop_at_end)
        once every stream heard of has ended (`StreamEnds`, docs/schema.md "Several streams")."""
        ends = StreamEnds(len(self.endpoints), self.stream)
        while True:
            msg = self.recv(idle_timeout_s)
            if msg is None:
                return
            if ends.note(msg) and stop_at_end:
                return
            if isinstance(msg, FrameData):
                yield msg

    def __iter__(self) -> Iterator[FrameData]:
        return self.frames()

    def close(self) -> None:
        if self.sock is not None:
            self._reconnect.close()
            self.sock.close(0)
            self.sock = None  # type: ignore[assignment]

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
