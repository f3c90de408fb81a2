"""See the result: meshes drawn over the picture (docs/render.md).

    fastmetro-stream render RECORDING --video SOURCE -o out.mp4     a --record file over its source video
    fastmetro-stream image PICTURE -o out.png [--obj DIR]           detect, infer and draw one picture

The rasteriser needs no OpenGL: numpy projects and shades every triangle at once, then OpenCV fills the
triangles far to near (the painter's algorithm) into a layer that is alpha-blended over the frame.

    overlay = MeshRenderer(faces).draw(rgb, [MeshItem(vertices, cam_t, track_id, box)], focal)

Camera: the stream's (fastmetro.camera): perspective, focal f in frame pixels, principal point at the frame
centre, body translated by cam_t; x = f (X + cam_t.x) / (Z + cam_t.z) + W / 2, frame coordinates continuous
(the frame spans [0, W] x [0, H]). The focal length is the frame message's `focal` (the infer stage's
`infer.focal`, by default the frame diagonal); `--focal` overrides it, and recordings made before frames
carried it fall back to the frame diagonal.
"""
from __future__ import annotations

import argparse
import colorsys
import dataclasses
import logging
import math
import os
import queue
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

_SHIFT = 4  # fractional bits of the coordinates handed to OpenCV: 1/16 pixel
_ONE = 1 << _SHIFT
# Light: a direction from the surface towards the light, camera frame (x right, y down, z forward): from
# the camera, a little above and to the left, so that faces turned to the camera are bright.
_LIGHT = np.array([-0.3, -0.5, -1.0]) / np.linalg.norm([-0.3, -0.5, -1.0])
_AMBIENT = 0.3  # share of the colour a face gets with no light on it


class RenderError(ValueError):
    """Bad input to a render command (missing file, empty recording); the message says what to do."""


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable, distinct RGB colour per track id (hues spaced by the golden ratio)."""
    hue = (0.6 + int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.55, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


@dataclass
class MeshItem:
    """One person to draw: body-relative vertices (V, 3) in metres, placed by cam_t (3,)."""

    vertices: Optional[np.ndarray]  # None: only the box and label
    cam_t: np.ndarray
    track_id: int = 0
    box: Optional[Sequence[float]] = None  # x1, y1, x2, y2 frame pixels; None = no box, no label
    colour: Optional[tuple[int, int, int]] = None  # RGB; None = track_colour(track_id)


class MeshRenderer:
    """Depth-sorted flat-shaded triangle rasteriser over an RGB frame.

    faces: (F, 3) vertex indices. cull: drop triangles facing away from the camera; which side is "out"
    is read off each mesh (the sign of its enclosed volume), so either winding order works; an open or
    flat mesh (no volume) counts counter-clockwise-on-screen as front. alpha: opacity of the meshes.
    method: "painter" (triangles far to near, one OpenCV fill each: cost grows with the triangle count) or
    "zbuffer" (every covered pixel centre at once in numpy, nearest wins per pixel: exact where surfaces
    cross, cost grows with the covered area; slow for meshes of long thin spikes such as untrained output).
    """

    def __init__(self, faces: np.ndarray, alpha: float = 0.8, cull: bool = True,
                 near: float = 0.05, thickness: int = 2, method: str = "painter") -> None:
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
            raise RenderError(f"faces must be an (F, 3) integer array, got {faces.shape} {faces.dtype}")
        if not 0.0 <= alpha <= 1.0:
            raise RenderError(f"alpha must lie in [0, 1], got {alpha}")
        if method not in ("zbuffer", "painter"):
            raise RenderError(f"method must be 'zbuffer' or 'painter', got {method!r}")
        self.faces = faces.astype(np.int64)
        self.method = method
        self.alpha, self.cull, self.near, self.thickness = float(alpha), bool(cull), float(near), int(thickness)

    # --- one mesh -> screen triangles ---------------------------------------------------------------
    def triangles(self, vertices: np.ndarray, cam_t: np.ndarray, focal: float, frame_wh: tuple[int, int],
                  colour: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Visible triangles of one mesh: (corners (T, 3, 2) in continuous frame coordinates, their depths
        z (T, 3) in metres, colours (T, 4) RGB + 255 uint8), in no particular order."""
        w, h = frame_wh
        v = np.asarray(vertices, np.float64)
        if v.ndim != 2 or v.shape[1] != 3 or len(v) <= self.faces.max():
            raise RenderError(f"vertices of shape {v.shape} do not fit faces indexing {self.faces.max() + 1}")
        p = v + np.asarray(cam_t, np.float64).reshape(1, 3)
        tri = p[self.faces]  # (F, 3, 3) camera frame
        a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
        normal = np.cross(b - a, c - a)
        length = np.linalg.norm(normal, axis=1)
        keep = (length > 0) & np.isfinite(length) & (np.minimum(np.minimum(a[:, 2], b[:, 2]), c[:, 2]) > self.near)
        # Orientation of the surface: with outward normals the enclosed volume is positive.
        # Taken about the mesh's own centre: exact for a closed mesh, zero for a flat one.
        rel = v[self.faces] - v.mean(axis=0)
        volume = np.einsum("ij,ij->", rel[:, 0], np.cross(rel[:, 1], rel[:, 2])) / 6.0
        outward = -1.0 if volume < -1e-12 else 1.0
        if self.cull:
            if abs(volume) > 1e-12:  # normal towards the camera (any point of the plane gives the same sign)
                keep &= outward * np.einsum("ij,ij->i", normal, a) < 0
            # (flat meshes are culled on screen below)
        unit = normal / np.maximum(length, 1e-30)[:, None] * outward
        # Two-sided Lambert for what is kept: a back face seen through a hole is lit like its front.
        lambert = np.abs(unit @ _LIGHT) if not self.cull else np.clip(unit @ _LIGHT, 0.0, 1.0)
        shade = _AMBIENT + (1.0 - _AMBIENT) * lambert
        z = tri[:, :, 2:3]
        uv = focal * tri[:, :, :2] / np.where(z > 0, z, 1.0) + np.array([w / 2.0, h / 2.0])
        if self.cull and abs(volume) <= 1e-12:  # open/flat mesh: counter-clockwise on screen is front
            e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
            keep &= (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) < 0  # y down: negative = anticlockwise
        lo = np.minimum(np.minimum(uv[:, 0], uv[:, 1]), uv[:, 2])
        hi = np.maximum(np.maximum(uv[:, 0], uv[:, 1]), uv[:, 2])
        keep &= (hi[:, 0] > 0) & (lo[:, 0] < w) & (hi[:, 1] > 0) & (lo[:, 1] < h)  # on the frame (NaN: off)
        keep &= (lo[:, 0] > -1e6) & (lo[:, 1] > -1e6) & (hi[:, 0] < 1e6) & (hi[:, 1] < 1e6)  # fits int32
        col = np.full((int(keep.sum()), 4), 255, np.uint8)  # RGB and the coverage channel
        col[:, :3] = np.clip(shade[keep, None] * np.asarray(colour, np.float64), 0, 255)
        return uv[keep], tri[keep, :, 2], col

    # --- a frame ------------------------------------------------------------------------------------
    def draw(self, rgb: np.ndarray, items: Sequence[MeshItem], focal: Optional[float] = None,
             labels: bool = True) -> np.ndarray:
        """The frame with every item's mesh blended over it, then its box and "ID n" label. Returns a
        new (H, W, 3) uint8 array; `rgb` is not changed. focal None = fastmetro.camera.default_focal."""
        from fastmetro.camera import default_focal

        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = img.shape[:2]
        f = float(focal) if focal else default_focal((w, h))
        parts = []
        for it in items:
            if it.vertices is None:
                continue
            colour = it.colour or track_colour(it.track_id)
            parts.append(self.triangles(it.vertices, it.cam_t, f, (w, h), colour))
        out = img.copy()
        if parts:
            uv = np.concatenate([p[0] for p in parts])
            z = np.concatenate([p[1] for p in parts])
            cols = np.concatenate([p[2] for p in parts])
            if len(uv):
                if self.method == "zbuffer":
                    self._zbuffer(out, uv, z, cols)
                else:
                    self._painter(out, uv, z, cols)
        if labels:
            for it in items:
                if it.box is not None:
                    self._label(out, it)
        return out

    def _blend(self, roi: np.ndarray, rgb: np.ndarray, cover: np.ndarray) -> np.ndarray:
        a = cover.astype(np.float32)[..., None] * (self.alpha / 255.0)
        return (roi * (1.0 - a) + rgb * a + 0.5).astype(np.uint8)

    def _painter(self, out: np.ndarray, uv: np.ndarray, z: np.ndarray, cols: np.ndarray) -> None:
        """Triangles far to near, one cv2.fillConvexPoly each, into a layer over the meshes' bounding box."""
        h, w = out.shape[:2]
        order = np.argsort(-z.sum(axis=1), kind="stable")  # centroid depth, far first
        # continuous coordinates -> OpenCV's (pixel centres at integers), in 1/16 pixel
        pts = np.rint((uv[order] - 0.5) * _ONE).astype(np.int32)
        cols = cols[order].tolist()
        lo = np.clip(pts.min(axis=(0, 1)) >> _SHIFT, 0, [w - 1, h - 1])
        hi = np.clip((pts.max(axis=(0, 1)) >> _SHIFT) + 2, 1, [w, h])
        x0, y0, x1, y1 = int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])
        if x1 <= x0 or y1 <= y0:
            return
        layer = np.zeros((y1 - y0, x1 - x0, 4), np.uint8)  # RGB + coverage
        pts -= np.array([x0 * _ONE, y0 * _ONE], np.int32)
        fill = cv2.fillConvexPoly
        for tri, col in zip(pts, cols):
            fill(layer, tri, col, cv2.LINE_8, _SHIFT)
        roi = out[y0:y1, x0:x1]
        roi[:] = self._blend(roi, layer[..., :3], layer[..., 3])

    def _zbuffer(self, out: np.ndarray, uv: np.ndarray, z: np.ndarray, cols: np.ndarray,
                 chunk: int = 4_000_000) -> None:
        """Every pixel centre inside a triangle, at once (numpy): barycentric inside test, perspective-correct
        depth (1/z interpolated on screen), the nearest triangle wins each pixel."""
        h, w = out.shape[:2]
        # pixel (i, j) has its centre at (i + 0.5, j + 0.5): the columns whose centre lies in [lo, hi]
        lo = np.ceil(uv.min(axis=1) - 0.5).astype(np.int64)
        hi = np.floor(uv.max(axis=1) - 0.5).astype(np.int64)
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, [w - 1, h - 1])
        bw = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0)
        n = bw * np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
        a, b, c = uv[:, 0], uv[:, 1], uv[:, 2]
        area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        ok = (n > 0) & (np.abs(area) > 1e-12)
        idx = np.nonzero(ok)[0]
        inv = 1.0 / area
        winners_key, winners_iz, winners_tri = [], [], []
        ends = np.cumsum(n[idx])
        start = 0
        while start < len(idx):  # bounded memory: about `chunk` candidate pixels at a time
            stop = int(np.searchsorted(ends, (ends[start - 1] if start else 0) + chunk, side="right"))
            stop = max(stop, start + 1)
            t_idx = idx[start:stop]
            counts = n[t_idx]
            tri = np.repeat(t_idx, counts)
            first = np.cumsum(counts) - counts
            k = np.arange(len(tri)) - np.repeat(first, counts)
            px = lo[tri, 0] + k % bw[tri]
            py = lo[tri, 1] + k // bw[tri]
            cx, cy = px + 0.5, py + 0.5
            ax, ay, bx, by, qx, qy = a[tri, 0], a[tri, 1], b[tri, 0], b[tri, 1], c[tri, 0], c[tri, 1]
            s = inv[tri]
            l1 = ((cx - ax) * (qy - ay) - (cy - ay) * (qx - ax)) * s  # weight of corner b
            l2 = ((bx - ax) * (cy - ay) - (by - ay) * (cx - ax)) * s  # weight of corner c
            l0 = 1.0 - l1 - l2
            inside = (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
            tri, l0, l1, l2 = tri[inside], l0[inside], l1[inside], l2[inside]
            iz = l0 / z[tri, 0] + l1 / z[tri, 1] + l2 / z[tri, 2]  # 1 / depth: larger is nearer
            key = py[inside] * w + px[inside]
            winners_key.append(key)
            winners_iz.append(iz)
            winners_tri.append(tri)
            start = stop
        if not winners_key:
            return
        key, iz, tri = (np.concatenate(x) for x in (winners_key, winners_iz, winners_tri))
        order = np.lexsort((-iz, key))  # by pixel, nearest first
        key, tri = key[order], tri[order]
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]
        key, tri = key[first], tri[first]
        flat = out.reshape(-1, 3)
        flat[key] = self._blend(flat[key], cols[tri, :3], cols[tri, 3])

    def _label(self, img: np.ndarray, it: MeshItem) -> None:
        colour = it.colour or track_colour(it.track_id)
        x1, y1, x2, y2 = (float(v) for v in it.box)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            return
        p1 = (int(round(x1)), int(round(y1)))
        p2 = (int(round(x2)) - 1, int(round(y2)) - 1)  # continuous box -> last pixel inside it
        cv2.rectangle(img, p1, p2, colour, self.thickness, cv2.LINE_AA)
        text = f"ID {it.track_id}"
        scale = max(0.5, min(img.shape[:2]) / 900.0)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = p1[1] - 4 if p1[1] - th - base - 4 >= 0 else p1[1] + th + 4
        cv2.rectangle(img, (p1[0], ty - th - 3), (p1[0] + tw + 4, ty + base - 1), colour, cv2.FILLED)
        cv2.putText(img, text, (p1[0] + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


# ------------------------------------------------------------------------------------------- OBJ
def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, cam_t: Optional[np.ndarray] = None) -> None:
    """A Wavefront OBJ of one mesh. Vertices are placed by cam_t (camera frame, metres) and written in the
    axes 3D tools expect (x right, y up, z towards the viewer: the camera frame turned 180 degrees about x,
    which keeps the triangles' winding)."""
    v = np.asarray(vertices, np.float64) + (0.0 if cam_t is None else np.asarray(cam_t, np.float64).reshape(1, 3))
    v = v * np.array([1.0, -1.0, -1.0])
    f = np.asarray(faces, np.int64) + 1
    with open(path, "w") as fh:
        fh.write("# fastmetro-stream mesh: metres, x right, y up, z towards the viewer (camera at the origin)\n")
        fh.write("".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in v.tolist()))
        fh.write("".join(f"f {a} {b} {c}\n" for a, b, c in f.tolist()))


# ------------------------------------------------------------------------------------------- recordings
def recording_frames(path: Path, stream: Optional[str] = None) -> Iterator[tuple[dict, np.ndarray]]:
    """(frame message, faces) of one stream of a --record file, in order. Frames before the stream's first
    topology message are skipped (no faces yet). stream None: the first stream that has frames."""
    from . import wire

    faces: dict[str, np.ndarray] = {}
    for rec in wire.read_recording(path):
        m = wire.decode(rec.payload)
        if m["kind"] == "topology":
            faces[m["stream"]] = m["faces"]
        elif m["kind"] == "frame":
            if stream is None:
                stream = m["stream"]
            if m["stream"] == stream and stream in faces:
                yield m, faces[stream]


class VideoWriter:
    """An MP4 written frame by frame with PyAV: H.264 when this FFmpeg has libx264, else MPEG-4.

    The size is the first frame's (odd sides padded to even, as yuv420p needs); a later frame of another
    size is resized to it. `write(rgb, t)`: t is the frame's time in seconds (None: one frame at `rate`
    after the previous one); timestamps are kept to the millisecond, so a live run that dropped frames
    keeps its timing (`rate` is only the nominal rate). Use as a context manager or close().
    """

    TIME_BASE = Fraction(1, 1000)
    threads = min(os.cpu_count() or 1, 8)  # encoder threads: the machine's cores, whatever this thread's affinity

    def __init__(self, path, rate: float = 30.0) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise RenderError(f"output directory {self.path.parent} does not exist ({self.path})")
        self.rate = rate
        self.frames = 0
        self._container = None
        self._stream = None
        self._size: Optional[tuple[int, int]] = None  # (w, h) of the first frame
        self._t0: Optional[float] = None
        self._last_t: Optional[float] = None
        self._last_pts = -1

    def _open(self, w: int, h: int) -> None:
        import av

        self._container = av.open(str(self.path), "w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        rate = Fraction(self.rate).limit_denominator(1001)
        s = self._container.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
        s.codec_context.time_base = self.TIME_BASE
        # The encoder's output depends on its thread count, and "auto" counts the CPUs the calling thread
        # may use, which differs between processes (pinned thread pools). A fixed count gives the same
        # file for the same frames in every process: `run --overlay` and `render` agree.
        s.codec_context.thread_count = self.threads
        if s.codec_context.name == "libx264":
            s.options = {"crf": "20", "preset": "veryfast"}
        else:
            s.bit_rate = 8_000_000
        self._stream, self._size = s, (w, h)

    def write(self, rgb: np.ndarray, t: Optional[float] = None) -> None:
        import av

        h, w = rgb.shape[:2]
        if self._stream is None:
            self._open(w, h)
        if (w, h) != self._size:
            rgb = cv2.resize(rgb, self._size, interpolation=cv2.INTER_AREA)
            w, h = self._size
        if w % 2 or h % 2:
            rgb = cv2.copyMakeBorder(rgb, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if t is None:
            t = 0.0 if self._last_t is None else self._last_t + 1.0 / self.rate
        if self._t0 is None:
            self._t0 = t
        self._last_t = t
        pts = max(self._last_pts + 1, round((t - self._t0) / self.TIME_BASE))  # strictly increasing
        frame.pts, frame.time_base = pts, self.TIME_BASE
        self._last_pts = pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file; safe to call more than once."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OverlayRecorder:
    """`run --overlay FILE`: the run's frames with their meshes drawn over them, written to an MP4 while
    the run goes on (the publish stage owns one).

    Drawing and encoding happen on a thread of their own, so publishing never waits for them. offline
    (`block=True`): submit() waits for room, every frame is written. live: a frame that finds the queue
    full is skipped (counted in `skipped`). A drawing or writing failure is logged once and stops the
    overlay (the run goes on); `error` holds it.

    downsample: a sparse (V', 6890) matrix to draw every mesh with fewer vertices, `faces` then being those
    of the smaller mesh (fastmetro MeshData.downsample and coarse_faces: 4x fewer triangles, 1.5-2.7x quicker).
    """

    def __init__(self, path, faces: np.ndarray, alpha: float = 0.8, rate: float = 30.0, block: bool = True,
                 queue_size: int = 8, downsample=None) -> None:
        self.writer = VideoWriter(path, rate)
        self.renderer = MeshRenderer(faces, alpha=alpha)
        self.downsample = downsample
        self.block = block
        self.written = 0
        self.skipped = 0
        self.error: Optional[BaseException] = None
        self._q: "queue.Queue" = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._loop, name="overlay", daemon=True)
        self._thread.start()

    def submit(self, rgb: np.ndarray, persons: Sequence, focal: Optional[float], t: Optional[float],
               lost: Sequence[int] = ()) -> bool:
        """Queue one frame (rgb: a copy the recorder may keep) with its persons (see mesh_items) and the
        track ids that ended at it. False when it was skipped (live and behind, or the overlay failed)."""
        if self.error is not None:
            return False
        item = (rgb, list(persons), focal, t, list(lost))
        if not self.block:
            try:
                self._q.put_nowait(item)
                return True
            except queue.Full:
                self.skipped += 1
                return False
        while self._thread.is_alive():
            try:
                self._q.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _loop(self) -> None:
        last_vertices: dict[int, np.ndarray] = {}
        while True:
            item = self._q.get()
            if item is None:
                return
            if self.error is not None:
                continue
            rgb, persons, focal, t, lost = item
            try:
                items = mesh_items(persons, last_vertices, lost)
                if self.downsample is not None:
                    items = [it if it.vertices is None else dataclasses.replace(it, vertices=self.downsample @ it.vertices)
                             for it in items]
                self.writer.write(self.renderer.draw(rgb, items, focal) if items else rgb, t)
                self.written += 1
            except Exception as e:  # disk full, codec failure: stop the overlay, not the run
                self.error = e
                log.error("overlay %s: %s; no more frames are written to it", self.writer.path, e)

    def close(self) -> None:
        """Write what is queued and finish the file."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        try:
            self.writer.close()
        except Exception as e:
            if self.error is None:
                self.error = e
                log.error("overlay %s: %s", self.writer.path, e)


def mesh_items(persons, last_vertices: dict, lost: Sequence[int] = ()) -> list[MeshItem]:
    """MeshItems of one frame's persons: wire dicts (a recording), PersonMesh (in the pipeline) or the
    subscriber's PersonData. A person sent without vertices (`publish.vertices_every`) gets its track's
    last ones from `last_vertices` (track id -> vertices), which this keeps up to date: every frame's
    vertices go in, and the tracks in `lost` (ended at this frame) are forgotten after it."""
    items = []
    for p in persons:
        if isinstance(p, dict):
            tid, v, cam_t, box = p["track_id"], p["vertices"], p["cam_t"], p["box"]
        elif hasattr(p, "person"):  # PersonMesh
            tid, v, cam_t, box = p.person.track_id, p.vertices, p.cam_t, p.person.box
        else:  # PersonData
            tid, v, cam_t, box = p.track_id, p.vertices, p.cam_t, p.box
        if v is not None:
            last_vertices[tid] = v
        else:
            v = last_vertices.get(tid)
        items.append(MeshItem(v, cam_t, tid, box))
    for tid in lost:
        last_vertices.pop(tid, None)
    return items


def render_recording(recording: Path, video: Path, output: Path, focal: Optional[float] = None,
                     stream: Optional[str] = None, alpha: float = 0.8, progress: bool = True,
                     method: str = "painter") -> dict:
    """Write `output` (MP4): every frame of `video`, with the meshes of `recording` drawn over the frame of
    the same index. Returns counts: frames written, frames with meshes, persons drawn, ms per person."""
    import time

    import av

    from . import wire

    recording, video, output = Path(recording), Path(video), Path(output)
    if not 0.0 <= alpha <= 1.0:
        raise RenderError(f"--alpha must lie in [0, 1], got {alpha}")
    if method not in ("painter", "zbuffer"):
        raise RenderError(f"--method must be 'painter' or 'zbuffer', got {method!r}")
    if not recording.is_file():
        raise RenderError(f"recording {recording} not found (make one with `fastmetro-stream run --record FILE`)")
    if not video.is_file():
        raise RenderError(f"source video {video} not found (--video: the file the recording was made from)")
    if not output.parent.is_dir():
        raise RenderError(f"output directory {output.parent} does not exist (-o {output})")
    try:
        frames = recording_frames(recording, stream)
        first = next(frames, None)
    except wire.WireError as e:
        raise RenderError(f"recording {recording} cannot be read: {e}") from None
    if first is None:
        raise RenderError(f"recording {recording} holds no frame messages"
                          + (f" of stream {stream!r}" if stream else "")
                          + " (was the run stopped before its first frame?)")
    pending = [first]

    def next_frame():
        return pending.pop() if pending else next(frames, None)

    try:
        src = av.open(str(video))
    except av.error.FFmpegError as e:
        raise RenderError(f"source video {video} cannot be opened: {e}") from None
    if not src.streams.video:
        src.close()
        raise RenderError(f"source video {video} has no video stream")
    vs = src.streams.video[0]
    vs.thread_type = "AUTO"
    rate = vs.average_rate or vs.guessed_rate or 30
    total = vs.frames or None

    renderer: Optional[MeshRenderer] = None
    last_vertices: dict[int, np.ndarray] = {}  # frames sent without vertices (vertices_every) reuse these
    stats = {"frames": 0, "frames_with_meshes": 0, "persons": 0, "draw_s": 0.0, "resized": False}
    current = next_frame()
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with VideoWriter(output, rate=float(rate)) as dst, Progress(
                TextColumn("render"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                disable=not progress, transient=False) as bar:
            task = bar.add_task("render", total=total)
            for index, vf in enumerate(src.decode(vs)):
                rgb = vf.to_ndarray(format="rgb24")
                while current is not None and current[0]["index"] < index:
                    current = next_frame()
                items: list[MeshItem] = []
                if current is not None and current[0]["index"] == index:
                    m, faces = current
                    wh = (int(m["width"]), int(m["height"]))
                    if wh != (rgb.shape[1], rgb.shape[0]):
                        if not stats["resized"]:
                            log.warning("render: recording frames are %dx%d, the video's %dx%d: video resized",
                                        wh[0], wh[1], rgb.shape[1], rgb.shape[0])
                        stats["resized"] = True
                        rgb = cv2.resize(rgb, wh, interpolation=cv2.INTER_AREA)
                    if renderer is None or renderer.faces.shape != faces.shape:
                        renderer = MeshRenderer(faces, alpha=alpha, method=method)
                    items = mesh_items(m["persons"], last_vertices, m["lost"])
                if items:
                    t0 = time.perf_counter()
                    rgb = renderer.draw(rgb, items, focal or current[0].get("focal"))
                    stats["draw_s"] += time.perf_counter() - t0
                    stats["frames_with_meshes"] += 1
                    stats["persons"] += sum(it.vertices is not None for it in items)
                dst.write(rgb)
                stats["frames"] += 1
                bar.advance(task)
            if dst.frames == 0:
                raise RenderError(f"source video {video} has no frames")
    finally:
        src.close()
    if stats["frames_with_meshes"] == 0:
        log.warning("render: no frame of %s matched a frame index of %s (is it the right video?)", video, recording)
    stats["ms_per_person"] = 1000.0 * stats["draw_s"] / stats["persons"] if stats["persons"] else 0.0
    return stats


# ------------------------------------------------------------------------------------------- one picture
def run_image(picture: Path, output: Path, obj_dir: Optional[Path] = None, config=None, seed: int = 0) -> dict:
    """Detect, infer and draw one picture; `config` is the root Config (its detect and infer sections).
    Without a checkpoint the untrained weights are drawn with torch's generator seeded by `seed`, so the
    same command gives the same picture. Returns {"persons": n, "pretrained": bool, "objs": [paths],
    "unplaced": [track ids whose camera scale was not positive: drawn at a point far away]}."""
    import torch

    import fastmetro
    from fastmetro import camera
    from fastmetro.engine import Engine
    from stages.detect import PersonTracker, make_crops

    from .config import Config

    picture, output = Path(picture), Path(output)
    if not picture.is_file():
        raise RenderError(f"picture {picture} not found")
    bgr = cv2.imread(str(picture), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RenderError(f"picture {picture} cannot be read as an image (PNG, JPEG, BMP, TIFF, WebP, ...)")
    if not output.parent.is_dir():
        raise RenderError(f"output directory {output.parent} does not exist (-o {output})")
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    config = config if config is not None else Config()
    persons, _ = PersonTracker(config.detect).update(rgb)
    c = config.infer
    if c.checkpoint is None:
        torch.manual_seed(seed)
    engine = Engine(c.engine_options())
    h, w = rgb.shape[:2]
    focal = c.focal or camera.default_focal((w, h))
    items, objs, unplaced = [], [], []
    faces = fastmetro.load_mesh_data(c.assets_dir).faces
    if persons:
        r = engine(make_crops(rgb, persons))
        center = np.array([p.center for p in persons], np.float64)
        size = np.array([p.size for p in persons], np.float64)
        cam_t = camera.crop_to_frame_translation(r["cam"], center, size, (w, h), focal)
        for i, p in enumerate(persons):
            items.append(MeshItem(r["vertices"][i], cam_t[i], p.track_id, p.box))
            if not r["cam"][i][0] > 0:  # no perspective camera has the body in front of it
                unplaced.append(p.track_id)
        if obj_dir is not None:
            obj_dir = Path(obj_dir)
            obj_dir.mkdir(parents=True, exist_ok=True)
            for i, p in enumerate(persons):
                path = obj_dir / f"{picture.stem}_id{p.track_id}.obj"
                write_obj(path, r["vertices"][i], faces, cam_t[i])
                objs.append(path)
    out = MeshRenderer(faces).draw(rgb, items, focal)
    if not cv2.imwrite(str(output), np.ascontiguousarray(out[..., ::-1])):
        raise RenderError(f"cannot write {output}: use a .png or .jpg name in a writable directory")
    return {"persons": len(persons), "pretrained": engine.pretrained, "objs": objs, "unplaced": unplaced}


# ------------------------------------------------------------------------------------------- commands
def render_command(args: argparse.Namespace) -> int:
    import av

    from .wire import WireError

    try:
        stats = render_recording(args.recording, args.video, args.output, focal=args.focal, stream=args.stream,
                                 alpha=args.alpha, progress=not args.quiet, method=args.method)
    except (RenderError, WireError) as e:  # WireError: a damaged record after the first frames
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (av.error.FFmpegError, OSError) as e:
        print(f"error: writing {args.output} or reading {args.video} failed: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {stats['frames']} frames, {stats['frames_with_meshes']} with meshes, "
          f"{stats['persons']} person meshes, {stats['ms_per_person']:.1f} ms per person")
    return 0


def image_command(args: argparse.Namespace) -> int:
    import fastmetro

    from .config import ConfigError, load_config

    overrides = list(args.overrides)
    if args.checkpoint:
        overrides.append(f"infer.checkpoint={args.checkpoint}")
    if args.detector:
        overrides.append(f"detect.detector={args.detector}")
    try:
        config = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        result = run_image(args.picture, args.output, args.obj, config, seed=args.seed)
    except (RenderError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not result["pretrained"]:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]WARNING: {fastmetro.UNTRAINED_MESSAGE}[/]")
    print(f"wrote {args.output}: {result['persons']} person(s)"
          + (f"; meshes: {', '.join(str(p) for p in result['objs'])}" if result["objs"] else ""))
    if result["unplaced"]:
        print(f"warning: the network's camera scale is not positive for ID {result['unplaced']}: "
              "their meshes sit far away (a point on the picture)", file=sys.stderr)
    if not result["persons"]:
        print("no person found in the picture (try --detector hog, or a picture with whole, upright people)",
              file=sys.stderr)
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("render", help="draw a recording's meshes over its source video into an MP4")
    p.add_argument("recording", type=Path, help="a file written by `run --record FILE`")
    p.add_argument("--video", required=True, type=Path, help="the source video the recording was made from")
    p.add_argument("-o", "--output", required=True, type=Path, help="MP4 file to write (H.264, else MPEG-4)")
    p.add_argument("--focal", type=float, default=None,
                   help="focal length in frame pixels; default: each frame message's focal (older recordings: the frame diagonal)")
    p.add_argument("--stream", default=None, help="stream id to draw (default: the recording's first)")
    p.add_argument("--alpha", type=float, default=0.8, help="mesh opacity, 0..1 (default 0.8)")
    p.add_argument("--method", choices=["painter", "zbuffer"], default="painter",
                   help="painter: triangles far to near (default); zbuffer: nearest per pixel (exact where surfaces cross)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=render_command)

    p = subparsers.add_parser("image", help="detect, infer and draw the meshes of one picture (PNG, OBJ)")
    p.add_argument("picture", type=Path, help="an image file (JPEG, PNG, ...)")
    p.add_argument("-o", "--output", required=True, type=Path, help="overlay picture to write (.png)")
    p.add_argument("--obj", type=Path, default=None, metavar="DIR", help="also write one OBJ mesh per person into DIR")
    p.add_argument("--checkpoint", help="FastMETRO checkpoint: a name from `weights` or a file path")
    p.add_argument("--detector", choices=["auto", "yolo", "hog"], default=None,
                   help="person detector (default: the config's detect.detector, auto)")
    p.add_argument("--config", "-c", metavar="FILE", help="YAML settings: its detect and infer sections are used")
    p.add_argument("--seed", type=int, default=0,
                   help="without a checkpoint: seed of the untrained weights, for a repeatable picture (default 0)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override one setting, e.g. --set infer.focal=1200 (repeatable)")
    p.set_defaults(func=image_command)
