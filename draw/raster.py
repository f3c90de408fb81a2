"""The mesh rasteriser: meshes drawn over an RGB frame, without OpenGL (docs/render.md).

numpy projects and shades every triangle at once, then OpenCV fills the triangles far to near (the
painter's algorithm) into a layer that is alpha-blended over the frame.

    overlay = MeshRenderer(faces).draw(rgb, [MeshItem(vertices, cam_t, track_id, box)], focal)

An item may bring its own triangles (`MeshItem.faces`): the hands (MANO topology; a left hand's with the
winding reversed, its mesh being a mirror image) drawn with the bodies, depth-sorted together.

Camera: the stream's (fastmetro.camera): perspective, focal f in frame pixels, principal point at the frame
centre, body translated by cam_t; x = f (X + cam_t.x) / (Z + cam_t.z) + W / 2, frame coordinates continuous
(the frame spans [0, W] x [0, H]).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from .colours import track_colour

_SHIFT = 4  # fractional bits of the coordinates handed to OpenCV: 1/16 pixel
_ONE = 1 << _SHIFT
# Light: a direction from the surface towards the light, camera frame (x right, y down, z forward): from
# the camera, a little above and to the left, so that faces turned to the camera are bright.
_LIGHT = np.array([-0.3, -0.5, -1.0]) / np.linalg.norm([-0.3, -0.5, -1.0])
_AMBIENT = 0.3  # share of the colour a face gets with no light on it


class RenderError(ValueError):
    """Bad input to a render command (missing file, empty recording); the message says what to do."""


@dataclass
class MeshItem:
    """One person to draw: body-relative vertices (V, 3) in metres, placed by cam_t (3,)."""

    vertices: Optional[np.ndarray]  # None: only the box and label
    cam_t: np.ndarray
    track_id: int = 0
    box: Optional[Sequence[float]] = None  # x1, y1, x2, y2 frame pixels; None = no box, no label
    colour: Optional[tuple[int, int, int]] = None  # RGB; None = track_colour(track_id)
    faces: Optional[np.ndarray] = None  # its own (F, 3) triangles (a hand's); None = the renderer's
    part: str = "body"  # "body", or the hand's side "left" / "right"


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
                  colour: tuple[int, int, int], faces: Optional[np.ndarray] = None,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Visible triangles of one mesh (with `faces`, or the renderer's): (corners (T, 3, 2) in continuous
        frame coordinates, their depths z (T, 3) in metres, colours (T, 4) RGB + 255 uint8), in no
        particular order."""
        w, h = frame_wh
        faces = self.faces if faces is None else np.asarray(faces, np.int64)
        v = np.asarray(vertices, np.float64)
        if v.ndim != 2 or v.shape[1] != 3 or len(v) <= faces.max():
            raise RenderError(f"vertices of shape {v.shape} do not fit faces indexing {faces.max() + 1}")
        p = v + np.asarray(cam_t, np.float64).reshape(1, 3)
        tri = p[faces]  # (F, 3, 3) camera frame
        a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
        normal = np.cross(b - a, c - a)
        length = np.linalg.norm(normal, axis=1)
        keep = (length > 0) & np.isfinite(length) & (np.minimum(np.minimum(a[:, 2], b[:, 2]), c[:, 2]) > self.near)
        # Orientation of the surface: with outward normals the enclosed volume is positive.
        # Taken about the mesh's own centre: exact for a closed mesh, zero for a flat one.
        rel = v[faces] - v.mean(axis=0)
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
            parts.append(self.triangles(it.vertices, it.cam_t, f, (w, h), colour, it.faces))
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



def mesh_items(persons, last_vertices: dict, lost: Sequence[int] = (),
               hand_faces: Optional[np.ndarray] = None) -> list[MeshItem]:
    """MeshItems of one frame's persons (pipeline.subscriber.PersonData: the subscriber's, a recording's, the
    overlay's). A person sent without vertices (`publish.vertices_every`) gets its track's last ones from
    `last_vertices` (track id -> vertices), which this keeps up to date: every frame's vertices go in, and
    the tracks in `lost` (ended at this frame) are forgotten after it. With `hand_faces` (the right-hand
    MANO triangles: the topology's hand.faces_right) each hand seen with its vertices is an item of its
    own after its body, in the body's colour; a left hand gets the triangles with the winding reversed."""
    from fastmetro.hand_crops import mirror_faces

    items = []
    left_faces = None if hand_faces is None else mirror_faces(hand_faces)
    for p in persons:
        tid, v = p.track_id, p.vertices
        if v is not None:
            last_vertices[tid] = v
        else:
            v = last_vertices.get(tid)
        items.append(MeshItem(v, p.cam_t, tid, p.box))
        if hand_faces is None:
            continue
        for side, h in sorted(getattr(p, "hands", {}).items()):
            if h.vertices is not None:
                items.append(MeshItem(h.vertices, h.cam_t, tid, None, faces=left_faces if side == "left" else hand_faces,
                                      part=side))
    for tid in lost:
        last_vertices.pop(tid, None)
    return items
