"""The overlay stage: the run's video with every person's mesh drawn over it, written to an MP4 (docs/render.md).

smooth --MeshFrame--> overlay --MeshFrame--> publish. A sink for the pictures that passes the messages on
untouched: it declares that it needs the frame's pixels (so the runtime keeps each frame's shared-memory
slot until this stage has copied them, and this stage gives the slot back), hands the copy to a drawing
and encoding thread, and forwards the MeshFrame. Offline every frame is written; live, frames are skipped
(counted "overlay_skipped") when drawing falls behind, since the stream comes first. A drawing or writing
failure stops the overlay ("overlay_failed"), not the run. Built only when `overlay.path` is set.

With several sources each one gets its own video beside `overlay.path`, named with its stream id
(`out.mp4` -> `out.door.mp4`, `out.desk.mp4`: overlay_paths), finished when that source ends.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from draw.floor import draw_floor_grid
from draw.raster import MeshRenderer, mesh_items
from draw.video import VideoWriter
from pipeline import wire
from pipeline.messages import EndOfStream, MeshFrame, SourceEnd
from pipeline.stage import Stage, StageContext, StageError, check_output_file
from pipeline.subscriber import person_data

log = logging.getLogger(__name__)


class OverlayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # --overlay FILE: also write an MP4 of the frames with every person's mesh drawn over them. Frames then
    # keep their shared-memory slot until drawn, and the ring grows to fit (Config.ring_slots_needed).
    path: Optional[Path] = None
    # Opacity of the meshes in the overlay video.
    alpha: float = Field(0.8, ge=0.0, le=1.0)
    # Which mesh the overlay draws: "fine" (the 6890 vertices published), "coarse" (their 1723-vertex
    # subset: 4x fewer triangles, 1.5-2.7x quicker to draw (scripts/bench_render.py), nearly the same
    # outline), or "auto": coarse in live mode, where drawing must keep up with the camera, fine offline.
    mesh: Literal["auto", "fine", "coarse"] = "auto"

    @field_validator("path")
    @classmethod
    def _output_directory(cls, v: Optional[Path]) -> Optional[Path]:
        # said at start, before any stage runs, rather than by the stage once the model has loaded
        if v is not None and not Path(v).parent.is_dir():
            raise ValueError(f"directory {Path(v).parent} does not exist")
        return v


class OverlayRecorder:
    """`run --overlay FILE`: the run's frames with their meshes drawn over them, written to an MP4 while
    the run goes on (the overlay stage owns one).

    Drawing and encoding happen on a thread of their own, so the stream never waits for them. offline
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
        self.hand_faces: Optional[np.ndarray] = None  # set once frames carry hands: they are drawn too
        self.block = block
        self.written = 0
        self.skipped = 0
        self.error: Optional[BaseException] = None
        self._q: "queue.Queue" = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._loop, name="overlay", daemon=True)
        self._thread.start()

    def submit(self, rgb: np.ndarray, persons: Sequence, focal: Optional[float], t: Optional[float],
               lost: Sequence[int] = (), floor: Optional[np.ndarray] = None) -> bool:
        """Queue one frame (rgb: a copy the recorder may keep) with its persons (see mesh_items) and the
        track ids that ended at it; floor: the camera's world_from_camera (4, 4) when calibrated, its floor
        grid drawn under the meshes. False when it was skipped (live and behind, or the overlay failed)."""
        if self.error is not None:
            return False
        item = (rgb, list(persons), focal, t, list(lost), floor)
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
            rgb, persons, focal, t, lost, floor = item
            try:
                if floor is not None:
                    rgb = draw_floor_grid(rgb, floor, focal or float(np.hypot(*rgb.shape[1::-1])))
                items = mesh_items(persons, last_vertices, lost, self.hand_faces)
                if self.downsample is not None:  # the bodies' (hands keep their own faces)
                    items = [it if it.vertices is None or it.faces is not None
                             else dataclasses.replace(it, vertices=self.downsample @ it.vertices)
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



def overlay_paths(path, source_ids: Sequence[str] = ()) -> dict[Optional[str], Path]:
    """Where the overlay videos go: {None: path} for one source; for several, {id: NAME.<id>.EXT} beside it
    (the id as a safe file-name part, `wire.stream_file_name`: "../x" never leaves the folder)."""
    path = Path(path)
    if len(source_ids) <= 1:
        return {None: path}
    return {sid: path.with_name(f"{path.stem}.{wire.stream_file_name(sid)}{path.suffix}") for sid in source_ids}


class OverlayStage(Stage):
    """MeshFrame -> the same MeshFrame, its picture drawn into the overlay video on the way."""

    name = "overlay"
    needs_pixels = True

    def __init__(self, cfg: Optional[OverlayConfig] = None, context: Optional[StageContext] = None) -> None:
        super().__init__()
        self.cfg = cfg or OverlayConfig()
        self.context = context or StageContext()
        if self.cfg.path is None:
            raise ValueError("the overlay stage needs overlay.path")
        self.releases_pixels = True  # the last stage that reads pixels (the runtime says so again)
        self.store: Any = None  # set by the runtime
        self.paths = overlay_paths(self.cfg.path, self.context.source_ids)
        self.overlays: dict[Optional[str], OverlayRecorder] = {}  # None (one source) or stream id -> its video

    @property
    def overlay(self) -> Optional[OverlayRecorder]:
        """The one video of a run of one source (None before setup, after the end, or with several)."""
        return self.overlays.get(None)

    def check(self) -> None:
        for path in self.paths.values():
            check_output_file(path, "overlay.path")

    def setup(self) -> None:
        import fastmetro.assets

        try:
            mesh = fastmetro.assets.load_mesh_faces(self.context.assets_dir)
        except fastmetro.assets.AssetError as e:
            raise StageError(str(e)) from e
        live = self.context.mode == "live"
        coarse = self.cfg.mesh == "coarse" or (self.cfg.mesh == "auto" and live)
        for key, path in self.paths.items():
            self.overlays[key] = OverlayRecorder(
                path, mesh.coarse_faces if coarse else mesh.faces, alpha=self.cfg.alpha,
                block=not live, downsample=mesh.downsample if coarse else None)
            log.info("writing the overlay video%s to %s (%s mesh)", f" of {key}" if key else "", path,
                     "coarse" if coarse else "fine")

    def process(self, msg: Any) -> Iterable[Any]:
        if isinstance(msg, MeshFrame):
            self._submit(msg)
        elif isinstance(msg, EndOfStream):
            self._close()
        elif isinstance(msg, SourceEnd):
            if msg.source in self.overlays:  # with several sources: that source's video is complete
                self._close(msg.source)
        else:
            raise TypeError(f"overlay stage got {type(msg).__name__}; expected MeshFrame or EndOfStream")
        return [msg]

    def _submit(self, msg: MeshFrame) -> None:
        """Hand the frame to its source's writer: its pixels are copied out and, as the last reader, its slot
        released."""
        f = msg.frame
        if f.slot < 0 or self.store is None:
            return
        rec = self.overlays.get(None if None in self.paths else f.source)
        rgb = None
        if rec is not None and rec.error is None:
            rgb = np.array(self.store.frame(f))
        if self.releases_pixels:
            self.store.release(f)
        if rgb is None:
            return
        if rec.hand_faces is None and any(p.hands for p in msg.persons):
            import fastmetro.assets

            try:
                rec.hand_faces = fastmetro.assets.load_hand_faces(self.context.hand_assets_dir)
            except fastmetro.assets.AssetError as e:
                raise StageError(str(e)) from e
        t = f.pts if f.pts is not None else f.times.get("decode")
        world = getattr(msg, "world", None)
        floor = None if world is None else world.world_from_camera
        if not rec.submit(rgb, [person_data(p) for p in msg.persons], msg.focal, t, msg.lost, floor):
            self.count("overlay_skipped")

    def _close(self, key: Any = ...) -> None:
        """Finish every video (or the one of source `key`)."""
        for k in list(self.overlays) if key is ... else [key]:
            rec = self.overlays.pop(k)
            rec.close()
            self.count("overlay_frames", rec.written)
            if rec.error is not None:
                self.count("overlay_failed")

    def close(self) -> None:
        self._close()
