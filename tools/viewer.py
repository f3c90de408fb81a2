"""Live 3D viewer: every tracked person's mesh in a browser, from the published stream (docs/viewer.md).

    fastmetro-stream view [--endpoint tcp://127.0.0.1:5555] [--port 8080]     then open the printed URL

It is just another subscriber: a SUB socket in the publisher's `latest` mode, so a slow browser or viewer
loses frames (the publisher drops its copies past the high-water mark) and never slows the pipeline. Each
step drains what has arrived and draws only the newest frame; nothing queues up. The page is served by
viser (a well-kept three.js viewer with a Python API): a scene with one mesh per track, coloured as in the
overlay video (`draw.colours.track_colour`), labelled "ID n", and a panel with Play/Pause, the frame
counter and the stream's state.

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
from typing import Any, Optional

import numpy as np

from draw.colours import track_colour
from draw.raster import MeshItem, mesh_items
from pipeline.subscriber import EndData, FrameData, Subscriber, Topology

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
_TO_WORLD = np.array([1.0, -1.0, -1.0], np.float32)  # camera frame (y down, z forward) -> y up, z back


class MeshViewer:
    """Subscribes to `endpoint` and shows the newest frame's meshes on a viser server at host:port
    (port 0: any free port; `url` says which). A port in use is taken as viser does: the next free one."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, stream: Optional[str] = None, host: str = "127.0.0.1",
                 port: int = 8080, server_key=None, client_key=None) -> None:
        import viser

        self.endpoint = endpoint
        self.sub = Subscriber(endpoint, stream=stream, mode="latest", server_key=server_key, client_key=client_key)
        try:
            self.server = viser.ViserServer(host=host, port=port, verbose=False)
        except BaseException:
            self.sub.close()
            raise
        self.host = host
        self.paused = False
        self.state = "waiting"  # waiting (no topology yet) | streaming | ended
        self.frames_received = 0  # frame messages that arrived
        self.frames_shown = 0  # frames drawn (the newest of each step, while playing)
        self.shown: Optional[FrameData] = None  # the frame on screen
        self.newest: Optional[FrameData] = None  # the newest frame received
        self.end: Optional[EndData] = None
        self._faces: dict[str, np.ndarray] = {}  # stream -> its topology's faces, as viser takes them
        self._newest_items: list[MeshItem] = []  # the newest frame's persons, vertices filled in
        self._meshes: dict[int, Any] = {}  # track id -> viser MeshHandle
        self._hand_faces: dict[str, np.ndarray] = {}  # stream -> the right hand's faces, when it sends hands
        self._hand_meshes: dict[tuple[int, str], Any] = {}  # (track id, side) -> viser MeshHandle
        self._labels: dict[int, Any] = {}
        self._last_vertices: dict[int, np.ndarray] = {}  # frames sent without vertices reuse these
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
        """Play/Pause. Paused, the scene stays on its frame while the socket keeps being drained, so
        playing again shows the newest frame at once."""
        self.paused = not self.paused
        self._button.label = "Play" if self.paused else "Pause"
        if not self.paused and self.newest is not None and self.newest is not self.shown:
            self._draw(self.newest, self._newest_items)
        self._update_panel()

    def step(self, timeout_s: float = 0.05) -> int:
        """Take every message that has arrived (waiting up to timeout_s for the first) and draw the newest
        frame unless paused. Returns the number of messages taken."""
        taken, newest = 0, None
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
                self.state = "streaming"
            elif isinstance(msg, FrameData):
                self.frames_received += 1
                self._rate.append(time.monotonic())
                self.state, self.end = "streaming", None
                # every frame's vertices are kept (frames that are never drawn too), lost tracks forgotten
                self._newest_items = mesh_items(msg.persons, self._last_vertices, msg.lost,
                                                self._hand_faces.get(msg.stream))
                if len(self._last_vertices) > self.MAX_TRACKS:  # track ids never reported lost
                    current = {p.track_id for p in msg.persons}
                    for tid in [t for t in self._last_vertices if t not in current]:
                        del self._last_vertices[tid]
                newest = msg
            elif isinstance(msg, EndData):
                self.state, self.end = "ended", msg
            msg = self.sub.recv(timeout_s=0)
        if newest is not None:
            self.newest = newest
            if not self.paused:
                self._draw(newest, self._newest_items)
        if taken:
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
    def _put_mesh(self, handles: dict, key, name: str, world: np.ndarray, faces: np.ndarray, track_id: int) -> None:
        """Move the mesh under `key` to `world`, or (new, or other triangles) add it in its track's colour."""
        mesh = handles.get(key)
        if mesh is not None and mesh.faces.shape == faces.shape:
            mesh.vertices = world
            return
        if mesh is not None:
            mesh.remove()
        handles[key] = self.server.scene.add_mesh_simple(
            name, vertices=world, faces=faces, color=track_colour(track_id), side="double", cast_shadow=False,
            receive_shadow=False)

    def _draw(self, frame: FrameData, items: list[MeshItem]) -> None:
        faces = self._faces.get(frame.stream)
        present, hands_present = set(), set()
        with self.server.atomic():
            for it in items:
                if it.vertices is None or faces is None:
                    continue
                if it.part != "body":  # a hand: its own mesh, its own triangles, the body's colour
                    key = (it.track_id, it.part)
                    hands_present.add(key)
                    world = (np.asarray(it.vertices, np.float32) + np.asarray(it.cam_t, np.float32)) * _TO_WORLD
                    hand_faces = np.asarray(it.faces, dtype=np.uint32)
                    self._put_mesh(self._hand_meshes, key, f"/hands/{it.track_id}_{it.part}", world, hand_faces,
                                   it.track_id)
                    continue
                cam_t = np.asarray(it.cam_t, np.float32)
                world = (np.asarray(it.vertices, np.float32) + cam_t) * _TO_WORLD
                top = world[np.argmax(world[:, 1])] + np.array([0.0, 0.15, 0.0], np.float32)
                tid = it.track_id
                present.add(tid)
                self._put_mesh(self._meshes, tid, f"/persons/{tid}", world, faces, tid)
                if tid in self._labels:
                    self._labels[tid].position = tuple(float(c) for c in top)
                else:
                    self._labels[tid] = self.server.scene.add_label(f"/labels/{tid}", f"ID {tid}",
                                                                   position=tuple(float(c) for c in top))
            for tid in [t for t in self._meshes if t not in present]:
                self._meshes.pop(tid).remove()
                self._labels.pop(tid).remove()
            for key in [k for k in self._hand_meshes if k not in hands_present]:
                self._hand_meshes.pop(key).remove()
            if present and not self._camera_set:
                # look at the people of the first frame drawn, from the camera that filmed them
                centre = np.mean([np.asarray(it.cam_t, np.float32) * _TO_WORLD for it in items if it.part == "body"],
                                 axis=0)
                self.server.initial_camera.look_at = tuple(float(c) for c in centre)
                for client in self.server.get_clients().values():
                    client.camera.look_at = tuple(float(c) for c in centre)
                self._camera_set = True
        self.shown = frame
        self.frames_shown += 1

    @property
    def tracks_shown(self) -> list[int]:
        return sorted(self._meshes)

    # ------------------------------------------------------------------------------------------ panel
    def _fps(self) -> float:
        now = time.monotonic()
        self._rate = [t for t in self._rate if now - t <= 2.0]
        if len(self._rate) < 2:
            return 0.0
        return (len(self._rate) - 1) / max(self._rate[-1] - self._rate[0], 1e-6)

    # Vertices kept for at most this many tracks (a frame without vertices reuses them).
    MAX_TRACKS = 256

    @staticmethod
    def _plain(text: Any, limit: int = 80) -> str:
        """Publisher-controlled text for the markdown panel: printable characters only, none that
        markdown or HTML would read as markup, length bounded."""
        out = "".join(c if c.isprintable() and c not in "`*[]<>&|\\" else "?" for c in str(text)[:limit])
        return out + ("..." if len(str(text)) > limit else "")

    def _status_text(self) -> str:
        if self.state == "waiting":
            return f"**waiting for stream** on `{self.endpoint}`"
        if self.state == "ended":
            e = self.end
            return (f"**ended**: stream `{self._plain(e.stream)}`, {e.frames} frames ({self._plain(e.reason)}); "
                    "waiting for a new one"
                    if e is not None else "**ended**")
        return f"**{'paused' if self.paused else 'streaming'}** `{self.endpoint}`"

    def _counter_text(self) -> str:
        f = self.shown
        if f is None:
            return "frame -"
        s = self.sub.stats
        lines = [f"frame **{f.index}** (seq {f.seq}) of stream `{self._plain(f.stream)}`",
                 f"{len(f.persons)} persons · {self._fps():.1f} fps received",
                 f"received {self.frames_received} · shown {self.frames_shown} · missed {s['missed']}"]
        if self.paused and self.newest is not None and self.newest is not f:
            lines.append(f"newest frame {self.newest.index}")
        return "  \n".join(lines)

    def _update_panel(self) -> None:
        self._status.content = self._status_text()
        self._counter.content = self._counter_text()


# ---------------------------------------------------------------------------------------------- CLI
def view_command(args: argparse.Namespace) -> int:
    import zmq

    try:
        viewer = MeshViewer(args.endpoint, stream=args.stream, host=args.host, port=args.port,
                            server_key=args.curve_server_key, client_key=args.curve_client_key)
    except (zmq.ZMQError, FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"viewer: open {viewer.url}  (subscribed to {args.endpoint}; Ctrl-C to stop)", flush=True)
    try:
        viewer.run(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("view", help="live 3D viewer in the browser (a subscriber; never slows the pipeline)")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help=f"publisher to subscribe to (default {DEFAULT_ENDPOINT})")
    p.add_argument("--stream", default=None, help="show only this stream id (default: any)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address the web page is served on (default 127.0.0.1; 0.0.0.0 for other machines)")
    p.add_argument("--port", type=int, default=8080, help="web page port (default 8080; taken: the next free one)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--curve-server-key", default=None, help="CurveZMQ: the publisher's public key file")
    p.add_argument("--curve-client-key", default=None, help="CurveZMQ: this client's secret key file")
    p.set_defaults(func=view_command)
