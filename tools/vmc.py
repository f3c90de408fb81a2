"""VMC protocol sender: a subscriber of the stream that drives one avatar per tracked person in a game
engine (Unity EVMC4U, Unreal VMC4UE, Blender VMC4B, Godot, VSeeFace, Warudo ...), OSC over UDP.

    fastmetro-stream vmc                                  # every frame to 127.0.0.1:39539, the largest person
    fastmetro-stream vmc --slots 3 --port 39539           # three persons -> ports 39539, 39540, 39541
    fastmetro-stream vmc --endpoint tcp://a:5555 --endpoint tcp://b:5555 --slots 2   # two machines' streams

    from tools.vmc import VmcSettings, VmcSender
    sender = VmcSender(VmcSettings(slots=2))
    sender.send_frame(frame)                              # a FrameData from pipeline.subscriber

Per frame and destination one OSC bundle (protocol.vmc.info, Marionette spec): /VMC/Ext/OK, /VMC/Ext/T,
/VMC/Ext/Root/Pos and /VMC/Ext/Bone/Pos for the 22 bones of `fastmetro.humanoid`, each a local position
and rotation in Unity's frame (left-handed, y up, metres). VMC has no actor id, so each person gets its
own destination ("slot"); slots go to tracks when they appear and come free when a track is lost.
Several publishers (`--endpoint` repeated) are one merged subscription: a person is (stream id, track id),
so two cameras' track 1 are two persons with a slot each; a stream that ends or goes quiet frees its slots.
UDP: a receiver that is not there costs nothing, nothing blocks, nothing queues. docs/engines.md.
Fingers: the 30 finger bones of `fastmetro.humanoid_hands` follow the 22 for a person once the stream has
shown one of its hands (`fastmetro.humanoid_hand_policy`: the hand mesh while seen, held, then relaxed).
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fastmetro import humanoid as hu
from fastmetro import humanoid_hands as hh
from fastmetro.humanoid_hand_policy import HandPolicy
from pipeline.subscriber import FrameData, StreamEnds, Subscriber

from .vmc_slots import SlotAssigner, key_text, parse_track  # noqa: F401  (part of this module's API)

log = logging.getLogger("fastmetro-stream.vmc")

DEFAULT_PORT = 39539  # the VMC protocol's default Marionette (receiver) port


class VmcSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The stream to read (a running pipeline or `fastmetro-stream replay`); several publishers: a list, their
    # streams merged and told apart by stream id.
    endpoint: list[str] = ["tcp://127.0.0.1:5555"]
    mode: Literal["latest", "lossless"] = "latest"
    stream: Optional[str] = None
    # Where the avatars listen: slot i goes to host:port+i, unless `destinations` lists host:port per slot.
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    destinations: list[str] = []
    slots: int = Field(1, ge=1, le=64)  # persons sent at once (one avatar each); with destinations: their number
    # Which persons get the slots: the largest boxes, the earliest tracks (lowest ids), or one track id.
    select: Literal["largest", "first", "track"] = "largest"
    track_id: Optional[int] = None
    track_stream: Optional[str] = None  # with select "track": that track of this stream only (None: any stream)
    # Sends per second at most, per stream (0 = every frame the stream brings).
    rate: float = Field(0.0, ge=0)
    # Root motion: the avatar moves as the person does in front of the camera; off: it stays in place.
    root_motion: bool = True
    # Lengths: 1.0 = the person's own, in metres (avatars that take bone positions get the person's size).
    scale: float = Field(1.0, gt=0)
    # While a track coasts (no detection) and after it is lost, until its slot is taken again:
    # hold its last measured pose, fall back to the T-pose, or send nothing.
    lost: Literal["hold", "tpose", "stop"] = "hold"
    # Models with the SMPL head: their rotations (rotmat) instead of the mesh's.
    use_rotmat: bool = True
    # A stream silent this many seconds frees its slots, as its end message does (0: only its end).
    quiet: float = Field(5.0, ge=0)
    # The world frame (tools/vmc_world.py): the persons placed over the engine's floor by this camera.json,
    # else by the stream's calibrated camera when it has one; world False: always the camera frame.
    camera: Optional[str] = None
    world: bool = True

    @field_validator("endpoint", mode="before")
    @classmethod
    def _endpoints(cls, v):
        v = [v] if isinstance(v, str) else v
        if not v:
            raise ValueError("at least one endpoint")
        return v

    @field_validator("destinations")
    @classmethod
    def _dest(cls, v: list[str]) -> list[str]:
        for d in v:
            parse_destination(d)
        return v

    @model_validator(mode="after")
    def _track(self) -> "VmcSettings":
        if self.select == "track" and self.track_id is None:
            raise ValueError("select 'track' needs track_id (--track ID or --track STREAM:ID)")
        return self

    def targets(self) -> list[tuple[str, int]]:
        if self.destinations:
            return [parse_destination(d) for d in self.destinations]
        if self.port + self.slots - 1 > 65535:
            raise ValueError(f"port {self.port} + {self.slots} slots runs past 65535")
        return [(self.host, self.port + i) for i in range(self.slots)]


def parse_destination(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"destination {text!r}: expected host:port, e.g. 127.0.0.1:39539")
    return host, int(port)


# ----------------------------------------------------------------------------------------------- axes
def to_unity(positions: np.ndarray, rotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The humanoid frame (right-handed, y up, +X the character's left) -> Unity (left-handed, y up, +X
    the character's right, both facing +Z): mirror X. Positions (x, y, z) -> (-x, y, z); quaternions
    (x, y, z, w) -> (x, -y, -z, w) (the mirrored rotation)."""
    return positions * np.array([-1.0, 1.0, 1.0]), rotations * np.array([1.0, -1.0, -1.0, 1.0])


# -------------------------------------------------------------------------------------------- packing
def _osc_string(s: str) -> bytes:
    from pythonosc.parsing import osc_types

    return osc_types.write_string(s)


class BundlePacker:
    """Packs one person's pose into the VMC bundle. The constant parts (addresses, type tags, bone names)
    are encoded once with python-osc's own writers; the per-frame floats are one big-endian numpy cast.
    `tests/test_vmc.py` checks the bytes against python-osc's message and bundle builders."""

    _HEAD = b"#bundle\x00" + struct.pack(">Q", 1)  # time tag 1: "immediately"

    def __init__(self) -> None:
        bone = _osc_string("/VMC/Ext/Bone/Pos") + _osc_string(",sfffffff")
        self._ok_prefix = _osc_string("/VMC/Ext/OK") + _osc_string(",iiii")
        self._t_prefix = _osc_string("/VMC/Ext/T") + _osc_string(",f")
        self._root_prefix = _osc_string("/VMC/Ext/Root/Pos") + _osc_string(",sfffffff") + _osc_string("root")
        self._bone_prefix = [bone + _osc_string(name) for name in hh.ALL_BONES]  # the first B are sent
        self._sizes = [struct.pack(">i", len(p) + 28) for p in self._bone_prefix]

    def pack(self, t: float, root: np.ndarray, positions: np.ndarray, rotations: np.ndarray,
             tracking: bool = True) -> bytes:
        """t: seconds; root (7,) Root/Pos position + rotation; positions (B, 3), rotations (B, 4): local,
        all already in Unity's frame; B = 22 (the body) or 52 (with the finger bones)."""
        ok = self._ok_prefix + struct.pack(">iiii", 1, 3, 0, 1 if tracking else 0)  # loaded, calibrated, normal
        tm = self._t_prefix + struct.pack(">f", t)
        rt = self._root_prefix + np.asarray(root, dtype=">f4").tobytes()
        floats = np.concatenate([positions, rotations], axis=1).astype(">f4").tobytes()
        parts = [self._HEAD, struct.pack(">i", len(ok)), ok, struct.pack(">i", len(tm)), tm,
                 struct.pack(">i", len(rt)), rt]
        for b in range(len(positions)):
            parts += (self._sizes[b], self._bone_prefix[b], floats[28 * b: 28 * b + 28])
        return b"".join(parts)


def unity_pose(pose: hu.HumanoidPose, i: int, root_motion: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Person i of `pose` as VMC wants it: Root/Pos (7,), local bone positions (B, 3) and rotations (B, 4),
    in Unity's frame. The root sits on the floor under the Hips (the lowest joint of the rest skeleton);
    the Hips' local position is its height above it. Without root motion the root stays at the origin."""
    offsets = pose.offsets[i].copy()
    height = float(hu.rest_height(pose)[i])
    offsets[0] = (0.0, height, 0.0)
    pos, rot = to_unity(offsets, pose.rotations[i])
    root = np.zeros(7)
    root[6] = 1.0
    if root_motion:
        root[:3] = to_unity(pose.root[i] - offsets[0], np.zeros(4))[0]
    return root, pos, rot


@dataclass
class _Datagram:  # what python-osc's UDPClient.send reads from a message or bundle
    dgram: bytes


# --------------------------------------------------------------------------------------------- sender
class VmcSender:
    """Turns frames of the stream into VMC bundles, one destination per slot. `send_frame` never blocks:
    UDP datagrams to a receiver that is not there are dropped by the system (counted in stats when the
    system reports it)."""

    def __init__(self, settings: VmcSettings) -> None:
        from pythonosc.udp_client import UDPClient

        self.settings = settings
        self.targets = settings.targets()
        self.clients = []
        for host, port in self.targets:
            try:
                self.clients.append(UDPClient(host, port))  # non-blocking: a full buffer drops, never waits
            except OSError as e:
                self.close()
                raise ValueError(f"destination {host}:{port}: {e}") from e
        self.assigner = SlotAssigner(len(self.targets), settings.select, settings.track_id, settings.track_stream)
        self.packer = BundlePacker()
        self.hands = HandPolicy()  # per person: finger bones once a hand was seen (held, relaxed when unseen)
        self.world = _world_placement(settings)
        self._last: list[Optional[tuple]] = [None] * len(self.targets)  # slot -> last (root, pos, rot) sent
        self._from: list[Optional[str]] = [None] * len(self.targets)  # slot -> stream of its (last) owner
        self._heard: dict[str, float] = {}  # stream owning a slot -> when its last frame came (monotonic)
        self._t0 = time.monotonic()
        self._last_send: dict[str, float] = {}  # stream -> when its frame was last sent (rate: per stream)
        self.stats = dict(frames=0, sent=0, skipped_rate=0, send_errors=0, assignments=0, held=0, tposes=0,
                          streams_released=0, nonfinite=0)

    def _log_changes(self, changes, why: str = "lost") -> None:
        for slot, old, new in changes:
            self.stats["assignments"] += 1
            host, port = self.targets[slot]
            if old is not None:
                self.hands.forget(old)
            if new is None:
                log.info("vmc: slot %d (%s:%d) free (track %s %s)", slot, host, port, key_text(old), why)
            else:
                self._last[slot] = None  # never the previous owner's pose for the new track
                self._from[slot] = new[0]
                log.info("vmc: slot %d (%s:%d) <- track %s", slot, host, port, key_text(new))

    def end_stream(self, stream: str, why: str = "stream ended") -> int:
        """Frees the slots of `stream` (its end message came, or it went quiet); returns how many."""
        changes = self.assigner.release(stream)
        self._heard.pop(stream, None)
        if changes:
            self.stats["streams_released"] += 1
            self._log_changes(changes, why)
        return len(changes)

    def expire(self, now: Optional[float] = None) -> list[str]:
        """Frees the slots of streams silent for `settings.quiet` seconds; returns those streams."""
        if self.settings.quiet <= 0:
            return []
        now = time.monotonic() if now is None else now
        quiet = [s for s, t in self._heard.items() if now - t >= self.settings.quiet]
        for s in quiet:
            self.end_stream(s, f"stream quiet for {self.settings.quiet:g} s")
        return quiet

    def send_frame(self, frame: FrameData) -> int:
        """Sends this frame's persons (rate permitting); returns the number of datagrams sent. The frame
        settles its own stream's slots; the other streams' slots wait for their own frames."""
        self.stats["frames"] += 1
        stream = frame.stream
        self._log_changes(self.assigner.update(frame.persons, frame.lost, stream))
        now = time.monotonic()
        owners = {k[0] for k in self.assigner.owner if k is not None}
        if stream in owners:
            self._heard[stream] = now
        for s in [s for s in self._heard if s not in owners]:
            del self._heard[s]  # bounded: only streams that hold a slot
        # the rate holds per stream: one stream's frames never starve another's avatars
        if self.settings.rate > 0 and now - self._last_send.get(stream, -1e9) < 1.0 / self.settings.rate:
            self.stats["skipped_rate"] += 1
            return 0
        self._last_send[stream] = now
        for s in [s for s in self._last_send if s not in owners and s not in self._from]:
            del self._last_send[s]  # bounded: streams that hold a slot or a held pose
        by_track = {p.track_id: p for p in frame.persons}
        measured = []  # (slot, person) with a fresh measurement and a mesh
        for slot, key in enumerate(self.assigner.owner):
            p = by_track.get(key[1]) if key is not None and key[0] == stream else None
            if p is not None and not p.predicted and p.state != "coasting" and p.vertices is not None:
                measured.append((slot, p))
        t = float(now - self._t0)
        sent = 0
        fresh = set()
        if measured:
            with np.errstate(all="ignore"):  # absurd (finite) input overflows: caught below, not printed
                persons = [p for _, p in measured]
                pose = hu.solve_persons(persons, scale=1.0 if self.world else self.settings.scale,
                                        use_rotmat=self.settings.use_rotmat)
                keys = [self.assigner.owner[slot] for slot, _ in measured]
                full = pose
                if any(p.hands or self.hands.has_hands(k) for (_, p), k in zip(measured, keys)):
                    full = self._with_fingers(pose, keys, persons, frame)
                if self.world is not None:  # over the engine's floor when the camera is known
                    full, _ = self.world.apply(frame, [(stream, p.track_id) for p in persons], full,
                                               np.stack([p.cam_t for p in persons]), t, self.settings.scale)
                if full is not pose:  # the body's bones (the Hand bones as the hands gave them), in place
                    pose = hu.HumanoidPose(full.rotations[:, : len(hu.BONES)], full.offsets[:, : len(hu.BONES)],
                                           full.root)
                posed = [unity_pose(full if self.hands.has_hands(k) else pose, i, self.settings.root_motion)
                         for i, k in enumerate(keys)]  # once a hand was seen: 52 bones
            for (slot, _), bones in zip(measured, posed):
                if not all(np.isfinite(a).all() for a in bones):  # never NaN or infinity over OSC
                    self.stats["nonfinite"] += 1
                    continue
                self._last[slot] = bones
                fresh.add(slot)
                sent += self._send(slot, t, *bones, tracking=True)
        for slot, key in enumerate(self.assigner.owner):
            if slot in fresh or self._last[slot] is None:
                continue
            if (key[0] if key is not None else self._from[slot]) != stream:
                continue  # another stream's person (or its held pose): sent with that stream's frames
            p = by_track.get(key[1]) if key is not None else None
            if p is not None and not p.predicted and p.state != "coasting":
                sent += self._send(slot, t, *self._last[slot], tracking=True)  # a frame without vertices
            elif self.settings.lost == "hold":
                self.stats["held"] += 1
                sent += self._send(slot, t, *self._last[slot], tracking=False)
            elif self.settings.lost == "tpose":
                self.stats["tposes"] += 1
                root, pos, rot = self._last[slot]
                sent += self._send(slot, t, root, pos, np.tile([0.0, 0.0, 0.0, 1.0], (len(rot), 1)), tracking=False)
        return sent

    def _with_fingers(self, pose: hu.HumanoidPose, keys: list, persons: list, frame: FrameData) -> hu.HumanoidPose:
        """The 52-bone pose (`humanoid_hand_policy`: the hand mesh while seen, held, then relaxed), on the
        stream's clock (the source's pts, else the publish time); finger lengths follow `scale`."""
        t = frame.pts if frame.pts is not None else frame.wall
        full, _ = self.hands.apply(pose, keys, [p.hands for p in persons], t)
        full.offsets[:, len(hu.BONES):] *= self.settings.scale
        return full

    def _send(self, slot: int, t: float, root, pos, rot, tracking: bool) -> int:
        try:
            self.clients[slot].send(_Datagram(self.packer.pack(t, root, pos, rot, tracking)))
        except OSError:  # a full buffer (non-blocking) or the system's "port unreachable": drop it
            self.stats["send_errors"] += 1
            return 0
        self.stats["sent"] += 1
        return 1

    def status(self) -> str:
        owners = ", ".join(f"{h}:{p}=" + ("-" if o is None else f"track {key_text(o)}")
                           for (h, p), o in zip(self.targets, self.assigner.owner))
        return owners

    def close(self) -> None:
        for c in self.clients:
            c.close()


def _world_placement(settings: VmcSettings):
    """The sender's world placement (tools/vmc_world.py), or None with world off."""
    if not settings.world:
        return None
    from fastmetro.world import CameraModel

    from .vmc_world import WorldPlacement

    return WorldPlacement(CameraModel.load(settings.camera) if settings.camera else None)


def run(settings: VmcSettings, duration: Optional[float] = None, frames: Optional[int] = None,
        interval: float = 1.0, out=sys.stderr) -> dict:
    """Subscribe and send until the stream ends (or duration / frames); prints a status line every interval."""
    sender = VmcSender(settings)
    sub = Subscriber(settings.endpoint, stream=settings.stream, mode=settings.mode)
    start = last = time.monotonic()
    last_frames = last_sent = 0
    ends = StreamEnds(len(settings.endpoint), settings.stream)  # done when every stream heard of has ended
    try:
        while True:
            now = time.monotonic()
            if duration is not None and now - start >= duration:
                break
            msg = sub.recv(timeout_s=0.1)
            if msg is not None and msg.kind == "end":
                sender.end_stream(msg.stream)
            if msg is not None and ends.note(msg):
                break
            if msg is not None and msg.kind == "frame":
                sender.send_frame(msg)
                if frames is not None and sender.stats["frames"] >= frames:
                    break
            sender.expire()
            now = time.monotonic()
            if interval > 0 and now - last >= interval:
                s = sender.stats
                print(f"vmc: {(s['frames'] - last_frames) / (now - last):5.1f} fps in, "
                      f"{(s['sent'] - last_sent) / (now - last):6.1f} bundles/s out, errors {s['send_errors']}; "
                      f"{sender.status()}", file=out, flush=True)
                last, last_frames, last_sent = now, s["frames"], s["sent"]
    except KeyboardInterrupt:
        pass
    finally:
        skipped = {k: sub.stats.get(k, 0) for k in ("malformed", "oversized")}  # the subscriber's counts
        sub.close()
        sender.close()
    return dict(sender.stats, **skipped)


def vmc_command(args: argparse.Namespace) -> int:
    try:
        track_stream, track_id = parse_track(args.track) if args.track is not None else (None, None)
        settings = VmcSettings(
            endpoint=args.endpoint or VmcSettings.model_fields["endpoint"].default, mode=args.mode,
            stream=args.stream, host=args.host, port=args.port,
            destinations=args.to or [], slots=len(args.to) if args.to else args.slots, select=args.select,
            track_id=track_id, track_stream=track_stream, rate=args.rate, root_motion=not args.in_place,
            scale=args.scale, lost=args.lost, use_rotmat=not args.mesh_rotations, quiet=args.quiet,
            camera=args.camera, world=args.world,
        )
        for host, port in settings.targets():  # a name that does not resolve: one line now, not a traceback later
            try:
                socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except (OSError, UnicodeError) as e:
                raise ValueError(f"destination {host}:{port}: cannot resolve {host!r} "
                                 f"({getattr(e, 'strerror', None) or e})") from None
        _world_placement(settings)  # a camera file that does not load: one line now, not at the first frame
    except ValidationError as e:
        why = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg'].removeprefix('Value error, ')}" for x in e.errors())
        print(f"error: vmc: {why}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: vmc: {e}", file=sys.stderr)
        return 2
    if importlib.util.find_spec("pythonosc") is None:
        print("error: vmc: python-osc is not installed: pip install 'fastmetro-stream[vmc]'", file=sys.stderr)
        return 2
    dests = ", ".join(f"{h}:{p}" for h, p in settings.targets())
    print(f"vmc: {', '.join(settings.endpoint)} ({settings.mode}) -> {dests}; Ctrl-C to stop", file=sys.stderr, flush=True)
    stats = run(settings, duration=args.duration, frames=args.frames, interval=args.interval)
    print(f"vmc: {stats['frames']} frames, {stats['sent']} bundles sent, {stats['send_errors']} send errors; "
          f"skipped: {stats['malformed']} malformed, {stats['oversized']} oversized messages, "
          f"{stats['nonfinite']} unusable poses", file=sys.stderr)
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("vmc", help="drive avatars in game engines over the VMC protocol (OSC/UDP)")
    p.add_argument("--endpoint", action="append", default=None,
                   help="publisher to subscribe to (repeatable: several publishers, their streams merged and told "
                        "apart by stream id; default tcp://127.0.0.1:5555)")
    p.add_argument("--mode", choices=["latest", "lossless"], default="latest", help="how the stream is published")
    p.add_argument("--stream", default=None, help="only this stream id")
    p.add_argument("--host", default="127.0.0.1", help="where the avatar application runs (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"its VMC port (default {DEFAULT_PORT}); slot i -> port+i")
    p.add_argument("--slots", type=int, default=1, help="persons sent at once, one destination each (default 1)")
    p.add_argument("--to", action="append", metavar="HOST:PORT", help="explicit destination per slot (repeatable)")
    p.add_argument("--select", choices=["largest", "first", "track"], default="largest",
                   help="who gets the slots: largest boxes, earliest tracks, or --track ID")
    p.add_argument("--track", default=None, metavar="[STREAM:]ID",
                   help="the person for --select track: ID (that track id in any stream) or STREAM:ID")
    p.add_argument("--rate", type=float, default=0.0, help="sends per second at most, per stream (default 0: every frame)")
    p.add_argument("--in-place", action="store_true", help="no root motion: the avatar stays at the origin")
    p.add_argument("--scale", type=float, default=1.0, help="length factor (default 1: the person's metres)")
    p.add_argument("--lost", choices=["hold", "tpose", "stop"], default="hold",
                   help="while a track coasts or after it is lost: hold the last pose, T-pose, or send nothing")
    p.add_argument("--mesh-rotations", action="store_true", help="solve rotations from the mesh even with the SMPL head")
    p.add_argument("--quiet", type=float, default=VmcSettings.model_fields["quiet"].default,
                   help="a stream silent this many seconds frees its slots, as its end does (default 5; 0: never)")
    p.add_argument("--camera", default=None, metavar="FILE",
                   help="camera.json (fastmetro-stream calibrate): the avatars stand on the engine's floor, in metres "
                        "(default: the stream's own calibrated camera when it has one)")
    p.add_argument("--world", action=argparse.BooleanOptionalAction, default=True,
                   help="the world frame when the camera is known (default on; --no-world: the camera's frame)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between status lines (0: none)")
    p.set_defaults(func=vmc_command)
