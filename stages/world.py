"""The world stage's piece: each frame's camera over the floor (docs/world.md), calibrated online from the
persons seen (fastmetro.world_calib.OnlineCalibrator) or fixed from a camera file, and the persons placed at
its focal when that focal was calibrated. Runs inside the smooth stage, before smoothing, so that the
smoothed and published `cam_t` are in the camera the frame's `world` describes."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fastmetro.camera import project
from fastmetro.world import CameraModel
from fastmetro.world_calib import BODY_HEIGHT, OnlineCalibrator
from pipeline.messages import MeshFrame, WorldInfo


class WorldConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # auto: calibrate the (static) camera from the persons in view, then hold it; a moved camera is found
    # and calibrated again. fixed: the camera of `camera` (a camera.json from `fastmetro-stream calibrate`).
    # off: no world (frames carry no `world`, cam_t stays at infer.focal).
    mode: Literal["auto", "fixed", "off"] = "auto"
    # A camera.json; given, the mode is fixed (unless off).
    camera: Optional[Path] = None
    # The persons' mean standing height (metres): the scale of the camera's height from boxes.
    body_height: float = Field(BODY_HEIGHT, gt=0.5, le=2.5)
    # Trust the meshes' orientation and height (trained weights): the camera's tilt from the bodies' up and
    # the focal where the camera looks down enough. Off, boxes alone give the horizon and the height, and
    # the focal stays infer.focal (the frame diagonal unless set).
    trust_meshes: bool = False
    # Person-frames a fit uses (the most recent `window`, `fit_rows` of them sampled) and how often it runs.
    window: int = Field(6000, ge=100, le=1_000_000)
    fit_rows: int = Field(1500, ge=50, le=100_000)
    refit_every: int = Field(400, ge=10, le=1_000_000)
    min_rows: int = Field(300, ge=30, le=1_000_000)
    # Fit in a worker thread (a fit takes 0.1-1 s; frames go on meanwhile). Off: in the stage's own thread,
    # so that when a frame sees the camera calibrated depends on the frames alone (tests, exact replays).
    background: bool = True

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v):  # YAML reads a bare `off` as false
        return "off" if v is False else v

    @model_validator(mode="after")
    def _fixed_needs_a_file(self) -> "WorldConfig":
        if self.mode == "fixed" and self.camera is None:
            raise ValueError("world.mode fixed needs world.camera: a camera.json (fastmetro-stream calibrate)")
        return self

    def effective_mode(self) -> str:
        return "off" if self.mode == "off" else ("fixed" if self.camera is not None else self.mode)


class WorldPlacer:
    """Per source: the camera in use, attached to each MeshFrame as `world`, persons re-placed at its focal."""

    def __init__(self, cfg: WorldConfig) -> None:
        self.cfg = cfg
        self.mode = cfg.effective_mode()
        self.fixed: Optional[CameraModel] = None
        if self.mode == "fixed":
            self.fixed = CameraModel.load(cfg.camera).with_state("fixed")
        self._cal: dict[str, tuple[tuple[int, int], OnlineCalibrator]] = {}

    def calibrator(self, source: str) -> Optional[OnlineCalibrator]:
        c = self._cal.get(source)
        return None if c is None else c[1]

    def apply(self, mf: MeshFrame) -> MeshFrame:
        if self.mode == "off":
            return mf
        wh = (mf.frame.width, mf.frame.height)
        focal_in = float(mf.focal) if mf.focal else float(np.hypot(*wh))
        if self.fixed is not None:
            model: Optional[CameraModel] = self.fixed
            state = "fixed"
        else:
            c = self._cal.get(mf.frame.source)
            if c is None or c[0] != wh:  # a new source, or its frame size changed: calibrate again
                c = (wh, OnlineCalibrator(wh, focal_in, self.cfg.body_height, self.cfg.trust_meshes,
                                          window=self.cfg.window, fit_rows=self.cfg.fit_rows,
                                          refit_every=self.cfg.refit_every, min_rows=self.cfg.min_rows,
                                          background=self.cfg.background))
                if self._cal.get(mf.frame.source) is not None:
                    self._cal[mf.frame.source][1].close()
                self._cal[mf.frame.source] = c
            cal = c[1]
            persons = [pm for pm in mf.persons if not pm.predicted]
            if persons:
                cal.observe(np.array([pm.person.box for pm in persons], np.float64),
                            [pm.person.track_id for pm in persons], mf.frame.index,
                            np.array([pm.joints_h36m for pm in persons]) if self.cfg.trust_meshes else None)
            model = cal.model if cal.state == "calibrated" else None
            state = cal.state
        if model is None:
            mf.world = WorldInfo(state=state)
            return mf
        estimated = model.focal_estimated or state == "fixed"
        if estimated:
            self._replace(mf, focal_in, model.focal_for(*wh))
        mf.world = WorldInfo(state=state, world_from_camera=model.world_from_camera(),
                             focal_estimated=model.focal_estimated)
        return mf

    def close(self) -> None:
        for _, cal in self._cal.values():
            cal.close()

    @staticmethod
    def _replace(mf: MeshFrame, focal_in: float, focal: float) -> None:
        """Place every person (and hand) at `focal`: a crop's translation keeps x and y, z scales with the
        focal (fastmetro.camera.crop_to_frame_translation), and joints2d is projected again."""
        k = focal / focal_in
        if abs(k - 1.0) < 1e-9:
            mf.focal = focal
            return
        wh = (mf.frame.width, mf.frame.height)
        out = []
        for pm in mf.persons:
            cam_t = np.asarray(pm.cam_t, np.float64) * (1.0, 1.0, k)
            j2d = project(np.asarray(pm.joints3d)[None], cam_t[None], focal, wh)[0]
            hands = {s: dataclasses.replace(h, cam_t=(np.asarray(h.cam_t, np.float64) * (1.0, 1.0, k)).astype(np.float32))
                     for s, h in pm.hands.items()}
            out.append(dataclasses.replace(pm, cam_t=cam_t.astype(np.float32), joints2d=j2d.astype(np.float32),
                                           hands=hands))
        mf.persons = out
        mf.focal = focal
