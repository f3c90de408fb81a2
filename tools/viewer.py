"""Live 3D viewer: every tracked person's mesh in a browser, from the published stream (docs/viewer.md).

    fastmetro-stream view [--endpoint tcp://127.0.0.1:5555] [--port 8080]     then open the printed URL
    fastmetro-stream view --endpoint tcp://cam-a:5555 --endpoint tcp://cam-b:5555   # several publishers

It is just another subscriber: a SUB socket in the publisher's `latest` mode, so a slow browser or viewer
loses frames (the publisher drops its copies past the high-water mark) and never slows the pipeline. Each
step drains what has arrived and draws only the newest frame of each stream; nothing queues up. The page
is served by viser (a well-kept three.js viewer with a Python API): a scene with one mesh per person,
coloured as in the overlay video (`draw.colours.track_colour`), labelled "ID n", and a panel with
Play/Pause, the frame counter and the streams' state.

Several streams (publishers on several machines, or one publisher's several streams): a person is the
pair (stream id, track id), since each stream numbers its tracks on its own. Each stream's camera frame
is its own, so the streams are placed side by side, in the order they first came: stream k's scene is
moved `spacing` metres along +x times k (0: all in one place). A stream that ends, or sends nothing for
`quiet_s` seconds, has its persons removed, as a lost track's.

    viewer = MeshViewer("tcp://127.0.0.1:5555", port=8080)
    viewer.run()               # until Ctrl-C (or run(duration_s=...)); or call viewer.step() yourself
    viewer.close()

Coordinates: the stream's camera frame is x right, y down, z forward (docs/schema.md); the scene shows
world = (x, -y, -z) with +y up, i.e. the camera frame turned 180 degrees about x, so people stand upright
and stand where they stand relative to each other (vertices + cam_t); the initial view is from the camera.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np

from draw.colours import track_colour
from draw.raster import mesh_items
from pipeline.subscriber import EndData, FrameData, Subscriber, Topology

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
_TO_WORLD = np.array([1.0, -1.0, -1.0], np.float32)  # camera frame (y down, z forward) -> y up, z back


def person_colour(stream_index: int, track_id: int) -> tuple[int, int, int]:
    """A stable colour per (stream, track): the first stream's tracks keep the overlay video's colours
    (`track_colour(id)`); stream k > 0 numbers its persons apart from them (negative colour indices, one
    per (k, id) pair), so two streams' track 1 are told apart."""
    if stream_index == 0:
        return track_colour(track_id)
    k, t = stream_index - 1, int(track_id)
    return track_colour(-1 - ((k + t) * (k + t + 1) // 2 + t))  # Cantor's pairing: distinct per (k, id)


@dataclass
class _Stream:
    """What the viewer keeps of one stream."""

    index: int  # its place in the scene (side by side) and colour family; order of arrival, reused when freed
    heard: float = 0.0  # monotonic time of its newest frame
    newest: Optional[FrameData] = None  # its newest frame received
    items: list = field(default_factory=list)  # that frame's MeshItems, vertices filled in
    drawn: Optional[FrameData] = None  # its frame on screen
    last_vertices: dict = field(default_factory=dict)  # track id -> vertices (frames sent without them)
    ended: Optional[EndData] = None  # its end message, until it sends frames again
    quiet: bool = False  # silent for quiet_s: its persons removed

    @property
    def live(self) -> bool:
        return self.ended is None and not self.quiet


class MeshViewer:
    """Subscribes to `endpoint` (one, or a list: several publishers, their streams merged by stream id) and
    shows each stream's newest frame on a viser server at host:port (port 0: any free port; `url` says
    which). A port in use is taken as viser does: the next free one."""

    # Vertices kept for at most this many tracks per stream (a frame without vertices reuses them).
    MAX_TRACKS = 256
    # Streams kept (stream ids come from the network): the least recently heard one is forgotten first.
    MAX_STREAMS = 64

    def __init__(self, endpoint: Union[str, Sequence[str]] = DEFAULT_ENDPOINT, stream: Optional[str] = None,
                 host: str = "127.0.0.1", port: int = 8080, server_key=None, client_key=None,
                 spacing: float = 5.0, quiet_s: float = 3.0) -> None:
        import viser

        self.endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        self.endpoint = ", ".join(self.endpoints)
        self.sub = Subscriber(self.endpoints, stream=stream, mode="latest", server_key=server_key,
                              client_key=client_key)
        try:
            self.server = viser.ViserServer(host=host, port=port, verbose=False)
        except BaseException:
            self.sub.close()
            raise
        self.host = host
        self.spacing = float(spacing)
        self.quiet_s = float(quiet_s)
        self.paused = False
        self.state = "waiting"  # waiting (no topology yet) | streaming | ended (every stream seen ended)
        self.frames_received = 0  # frame messages that arrived
        self.frames_shown = 0  # frames drawn (each stream's newest of each step, while playing)
        self.shown: Optional[FrameData] = None  # the frame drawn last (of any stream)
        self.newest: Optional[FrameData] = None  # the newest frame received (of any stream)
        self.end: Optional[EndData] = None  # the last end message
        self.streams: "OrderedDict[str, _Stream]" = OrderedDict()  # least recently heard first
        self._faces: dict[str, np.ndarray] = {}  # stream -> its topology's faces, as viser takes them
        self._hand_faces: dict[str, np.ndarray] = {}  # stream -> the right hand's faces, when it sends hands
        self._meshes: dict[tuple[str, int], Any] = {}  # (stream, track id) -> viser MeshHandle
        self._hand_meshes: dict[tuple[str, int, str], Any] = {}  # (stream, track id, side) -> viser MeshHandle
        self._labels: dict[tuple[str, int], Any] = {}
        self._rate: list[float] = []  # arrival times of recent frames, for the fps figure
        self._camera_set = False
        self._build_panel()

    # ------------------------------------------------------------------------------------------ setup
    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url(self) -> str:
        host = "localhost" if self.host in ("0.0.0.0", "127.0.0.1", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def clients(self) -> int:
        """Browsers connected now."""
        return len(self.server.get_clients())

    def _build_panel(self) -> None:
        s = self.server
        s.scene.set_up_direction("+y")
        # plain lights, no shadows and no environment map: cheap to draw, also in a browser without a GPU
        s.scene.configure_environment_map(None)
        s.scene.configure_default_lights(enabled=True, cast_shadow=False)
        s.scene.add_grid("/ground", width=20.0, height=20.0, plane="xz", position=(0.0, -1.0, -5.0))
        s.initial_camera.position = (0.0, 0.0, 0.0)
        s.initial_camera.look_at = (0.0, 0.0, -4.0)
        s.initial_camera.up = (0.0, 1.0, 0.0)
        self._button = s.gui.add_button("Pause")
        self._button.on_click(lambda _event: self.toggle())
        self._status = s.gui.add_markdown(self._status_text())
        self._counter = s.gui.add_markdown(self._counter_text())

    # ---------------------------------------------------------------------------------------- control
    def toggle(self) -> None:
        """Play/Pause. Paused, the scene stays as it is while the socket keeps being drained, so playing
        again shows each stream's newest frame at once (and removes the streams that ended meanwhile)."""
        self.paused = not self.paused
        self._button.label = "Play" if self.paused else "Pause"
        if not self.paused:
            self._draw_all()
        self._update_panel()

    def _stream(self, name: str) -> _Stream:
        st = self.streams.get(name)
        if st is None:
            while len(self.streams) >= self.MAX_STREAMS:
                old, _ = self.streams.popitem(last=False)
                self._remove_persons(old)
            used = {x.index for x in self.streams.values()}
            st = self.streams[name] = _Stream(index=next(i for i in range(len(used) + 1) if i not in used))
        self.streams.move_to_end(name)
        return st

    def step(self, timeout_s: float = 0.05) -> int:
        """Take every message that has arrived (waiting up to timeout_s for the first) and draw each
        stream's newest frame unless paused. Returns the number of messages taken."""
        taken = 0
        msg = self.sub.recv(timeout_s=timeout_s)
        while msg is not None:
            taken += 1
            if isinstance(msg, Topology):
                self._faces[msg.stream] = np.asarray(msg.faces, dtype=np.uint32)
                if msg.hand is not None:
                    self._hand_faces[msg.stream] = np.asarray(msg.hand.faces_right)
                for stream in [s for s in self._faces if s not in self.sub.topology]:
                    del self._faces[stream]  # the subscriber forgot it (bounded per-stream state)
                for stream in [s for s in self._hand_faces if s not in self.sub.topology]:
                    del self._hand_faces[stream]
                if self.state == "waiting":
                    self.state = "streaming"
            elif isinstance(msg, FrameData):
                self.frames_received += 1
                self._rate.append(time.monotonic())
                st = self._stream(msg.stream)
                st.heard, st.ended, st.quiet = time.monotonic(), None, False
                self.state = "streaming"
                # every frame's vertices are kept (frames that are never drawn too), lost tracks forgotten
                st.items = mesh_items(msg.persons, st.last_vertices, msg.lost, self._hand_faces.get(msg.stream))
                if len(st.last_vertices) > self.MAX_TRACKS:  # track ids never reported lost
                    current = {p.track_id for p in msg.persons}
                    for tid in [t for t in st.last_vertices if t not in current]:
                        del st.last_vertices[tid]
                st.newest = self.newest = msg
            elif isinstance(msg, EndData):
                self.end = msg
                if msg.stream in self.streams:
                    self.streams[msg.stream].ended = msg
                if not any(st.live for st in self.streams.values()):
                    self.state = "ended"
            msg = self.sub.recv(timeout_s=0)
        now = time.monotonic()
        for st in self.streams.values():
            if self.quiet_s > 0 and st.live and st.newest is not None and now - st.heard >= self.quiet_s:
                st.quiet = True
        if not self.paused:
            self._draw_all()
        self._update_panel()
        return taken

    def run(self, duration_s: Optional[float] = None) -> None:
        """Step until Ctrl-C (or for duration_s seconds)."""
        stop = None if duration_s is None else time.monotonic() + duration_s
        while stop is None or time.monotonic() < stop:
            self.step(timeout_s=0.1)

    def close(self) -> None:
        self.sub.close()
        self.server.stop()

    def __enter__(self) -> "MeshViewer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- drawing
    def _put_mesh(self, handles: dict, key, name: str, world: np.ndarray, faces: np.ndarray, colour) -> None:
        """Move the mesh under `key` to `world`, or (new, or other triangles) add it in its person's colour."""
        mesh = handles.get(key)
        if mesh is not None and mesh.faces.shape == faces.shape:
            mesh.vertices = world
            return
        if mesh is not None:
            mesh.remove()
        handles[key] = self.server.scene.add_mesh_simple(
            name, vertices=world, faces=faces, color=colour, side="double", cast_shadow=False, receive_shadow=False)

    def _remove_persons(self, stream: str, keep: Optional[set] = None) -> None:
        """Remove the stream's persons (all, or those not in `keep`: track ids) and their hands."""
        keep = keep or set()
        for key in [k for k in self._meshes if k[0] == stream and k[1] not in keep]:
            self._meshes.pop(key).remove()
            self._labels.pop(key).remove()
        for key in [k for k in self._hand_meshes if k[0] == stream and k[1] not in keep]:
            self._hand_meshes.pop(key).remove()

    def _draw_all(self) -> None:
        """Each live stream's newest frame, where not drawn yet; the persons of ended or quiet streams removed."""
        with self.server.atomic():
            for name, st in self.streams.items():
                if not st.live:
                    self._remove_persons(name)
                    st.drawn = None
                elif st.newest is not None and st.newest is not st.drawn:
                    self._draw(name, st)

    def _label(self, stream: str, track_id: int) -> str:
        return f"ID {track_id}" if len(self.streams) <= 1 else f"{self._plain(stream, 24)} ID {track_id}"

    def _draw(self, stream: str, st: _Stream) -> None:
        frame, faces = st.newest, self._faces.get(stream)
        offset = np.array([self.spacing * st.index, 0.0, 0.0], np.float32)
        present, hands_present = set(), set()
        for it in st.items:
            if it.vertices is None or faces is None:
                continue
            tid = it.track_id
            colour = person_colour(st.index, tid)
            world = (np.asarray(it.vertices, np.float32) + np.asarray(it.cam_t, np.float32)) * _TO_WORLD + offset
            if it.part != "body":  # a hand: its own mesh, its own triangles, the body's colour
                hands_present.add((stream, tid, it.part))
                self._put_mesh(self._hand_meshes, (stream, tid, it.part), f"/hands/{st.index}_{tid}_{it.part}",
                               world, np.asarray(it.faces, dtype=np.uint32), colour)
                continue
            key = (stream, tid)
            present.add(tid)
            self._put_mesh(self._meshes, key, f"/persons/{st.index}_{tid}", world, faces, colour)
            top = tuple(float(c) for c in world[np.argmax(world[:, 1])] + np.array([0.0, 0.15, 0.0], np.float32))
            label = self._labels.get(key)
            if label is None:
                self._labels[key] = self.server.scene.add_label(f"/labels/{st.index}_{tid}",
                                                                self._label(stream, tid), position=top)
            else:
                label.position = top
                if label.text != self._label(stream, tid):  # a second stream came: names the stream
                    label.text = self._label(stream, tid)
        self._remove_persons(stream, keep=present)
        for key in [k for k in self._hand_meshes if k[0] == stream and k not in hands_present]:
            self._hand_meshes.pop(key).remove()
        if present and not self._camera_set:
            # look at the people of the first frame drawn, from the camera that filmed them
            centre = np.mean([np.asarray(it.cam_t, np.float32) * _TO_WORLD + offset for it in st.items
                              if it.part == "body"], axis=0)
            self.server.initial_camera.look_at = tuple(float(c) for c in centre)
            for client in self.server.get_clients().values():
                client.camera.look_at = tuple(float(c) for c in centre)
            self._camera_set = True
        st.drawn = self.shown = frame
        self.frames_shown += 1

    @property
    def persons_shown(self) -> list[tuple[str, int]]:
        """The persons in the scene: (stream id, track id), sorted."""
        return sorted(self._meshes)

    @property
    def tracks_shown(self) -> list[int]:
        """Their track ids (of every stream), sorted."""
        return sorted(tid for _, tid in self._meshes)

    # ------------------------------------------------------------------------------------------ panel
    def _fps(self) -> float:
        now = time.monotonic()
        self._rate = [t for t in self._rate if now - t <= 2.0]
        if len(self._rate) < 2:
            return 0.0
        return (len(self._rate) - 1) / max(self._rate[-1] - self._rate[0], 1e-6)

    @staticmethod
    def _plain(text: Any, limit: int = 80) -> str:
        """Publisher-controlled text for the markdown panel: printable characters only, none that
        markdown or HTML would read as markup, length bounded."""
        out = "".join(c if c.isprintable() and c not in "`*[]<>&|\\" else "?" for c in str(text)[:limit])
        return out + ("..." if len(str(text)) > limit else "")

    def _streams_text(self, limit: int = 8) -> str:
        """The streams seen, newest-heard last: `id` live / ended / quiet."""
        parts = []
        for name, st in list(self.streams.items())[-limit:]:
            what = ("ended" if st.ended is not None else "quiet" if st.quiet
                    else f"{len(st.newest.persons) if st.newest else 0} persons")
            parts.append(f"`{self._plain(name, 40)}` {what}")
        more = len(self.streams) - limit
        return "streams: " + ", ".join(parts) + (f" (+{more} more)" if more > 0 else "")

    def _status_text(self) -> str:
        if self.state == "waiting":
            return f"**waiting for stream** on `{self.endpoint}`"
        if self.state == "ended":
            e = self.end
            text = (f"**ended**: stream `{self._plain(e.stream)}`, {e.frames} frames ({self._plain(e.reason)}); "
                    "waiting for a new one" if e is not None else "**ended**")
        else:
            text = f"**{'paused' if self.paused else 'streaming'}** `{self.endpoint}`"
        return text + ("  \n" + self._streams_text() if self.streams else "")

    def _counter_text(self) -> str:
        f = self.shown
        if f is None:
            return "frame -"
        s = self.sub.stats
        live = [st for st in self.streams.values() if st.live and st.drawn is not None]
        persons = sum(len(st.drawn.persons) for st in live)
        lines = [f"frame **{f.index}** (seq {f.seq}) of stream `{self._plain(f.stream)}`",
                 f"{persons} persons" + (f" in {len(live)} streams" if len(live) > 1 else "")
                 + f" · {self._fps():.1f} fps received",
                 f"received {self.frames_received} · shown {self.frames_shown} · missed {s['missed']}"]
        if self.paused and self.newest is not None and self.newest is not f:
            lines.append(f"newest frame {self.newest.index}")
        return "  \n".join(lines)

    def _update_panel(self) -> None:
        status, counter = self._status_text(), self._counter_text()
        if self._status.content != status:
            self._status.content = status
        if self._counter.content != counter:
            self._counter.content = counter


# ---------------------------------------------------------------------------------------------- CLI
def view_command(args: argparse.Namespace) -> int:
    import zmq

    try:
        viewer = MeshViewer(args.endpoint or [DEFAULT_ENDPOINT], stream=args.stream, host=args.host, port=args.port,
                            server_key=args.curve_server_key, client_key=args.curve_client_key,
                            spacing=args.spacing, quiet_s=args.quiet)
    except (zmq.ZMQError, FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"viewer: open {viewer.url}  (subscribed to {viewer.endpoint}; Ctrl-C to stop)", flush=True)
    try:
        viewer.run(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("view", help="live 3D viewer in the browser (a subscriber; never slows the pipeline)")
    p.add_argument("--endpoint", action="append", default=None,
                   help=f"publisher to subscribe to (repeatable: several publishers, their streams shown side by "
                        f"side; default {DEFAULT_ENDPOINT})")
    p.add_argument("--stream", default=None, help="show only this stream id (default: any)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address the web page is served on (default 127.0.0.1; 0.0.0.0 for other machines)")
    p.add_argument("--port", type=int, default=8080, help="web page port (default 8080; taken: the next free one)")
    p.add_argument("--spacing", type=float, default=5.0,
                   help="metres between the streams placed side by side (default 5; 0: all in one place)")
    p.add_argument("--quiet", type=float, default=3.0,
                   help="a stream silent this many seconds has its persons removed (default 3; 0: only at its end)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--curve-server-key", default=None, help="CurveZMQ: the publisher's public key file")
    p.add_argument("--curve-client-key", default=None, help="CurveZMQ: this client's secret key file")
    p.set_defaults(func=view_command)
