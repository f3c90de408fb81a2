"""The infer stage's hand pass: hand crops of a batch's persons cut from the frames, the hand network, results
mirrored back and placed in the body's camera.

After the body pass of a batch, each person's body mesh says where its hands are (fastmetro.hand_crops:
the SMPL hand vertices projected with the body's cam_t and the frame's focal length). A visible hand gets a
square crop from the frame's pixels (a left hand flipped left-right, the released network knowing right
hands only); the crops of every person of every frame of the batch go through the hand network in one
call; each result is mirrored back for a left hand and placed by fastmetro.camera.crop_to_frame_translation
in the camera frame of the body's cam_t. A hand with no crop (body coasting, out of the frame, too small,
behind the camera) gets no mesh that frame; its reason goes into `PersonMesh.hand_skips` and the stage
counts it (`hands_skipped_<reason>`).
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from fastmetro import camera
from fastmetro.crops import CROP_SIZE
from fastmetro.hand_crops import HandSkip, HandSquare, Side, hand_crop_matrix, hand_squares, unmirror_result
from pipeline.messages import HandMesh, MeshFrame
from pipeline.stage import StageError

log = logging.getLogger(__name__)


def hands_on(cfg, device) -> bool:
    """Whether hands run: infer.hands when set, else on where the body network runs on CUDA (`device`,
    a torch.device), off on a CPU."""
    return cfg.hands if cfg.hands is not None else device.type == "cuda"


def build_hand_pass(cfg, count: Callable[..., None]) -> "HandPass":
    """The hand pass that infer's settings (`cfg`, an InferConfig) describe: the hand engine, the SMPL hand
    vertices and the crop settings; what the infer stage and the `image` command both run. A missing file,
    a body network given as the hand's or a checkpoint that cannot be read is a StageError naming the
    setting; untrained hand weights are counted (`untrained_hand_weights`) and said loudly."""
    from fastmetro.assets import AssetError, load_mesh_data
    from fastmetro.checkpoints import CheckpointError
    from fastmetro.engine import Engine, EngineError
    from fastmetro.hand_crops import smpl_hand_vertices

    try:
        engine = Engine(cfg.hand_engine_options())
        mesh = load_mesh_data(cfg.assets_dir)
    except (AssetError, CheckpointError, EngineError) as e:
        raise StageError(f"infer.hands: {e}") from e
    if not engine.hand:
        raise StageError(f"infer.hand_variant/hand_checkpoint: {engine.model.variant.name} is a body network; "
                         f"give a hand one (fastmetro-hand-*)")
    if not engine.pretrained:
        count("untrained_hand_weights")
        log.warning("infer: hands run UNTRAINED weights (set infer.hand_checkpoint, e.g. "
                    "fastmetro-hand-l-h64-freihand): hand meshes are meaningless")
    log.info("infer: hands with %s on %s", engine.model.variant.name, engine.device)
    return HandPass(engine, smpl_hand_vertices(mesh.faces, mesh.j_regressor_h36m), count,
                    scale=cfg.hand_scale, min_hand_px=cfg.hand_min_px)


def cut_hand_crops(rgb: np.ndarray, squares: Sequence[HandSquare], out: Optional[np.ndarray] = None) -> np.ndarray:
    """The crops (N, 224, 224, 3) uint8 of hand squares of one frame, mirrored ones flipped; parts outside the
    frame are black. Squares more than twice the crop size are sampled from a Gaussian pyramid level of
    the frame, as body crops are (fastmetro.crops.make_crops), so that shrinking does not alias."""
    if out is None:
        out = np.empty((len(squares), CROP_SIZE, CROP_SIZE, 3), np.uint8)
    pyramid = [rgb]
    for i, sq in enumerate(squares):
        m = hand_crop_matrix(sq.center, sq.size, sq.mirrored)
        level = min(int(math.floor(math.log2(max(sq.size / CROP_SIZE, 1.0)))), 4)
        while len(pyramid) <= level:
            pyramid.append(cv2.pyrDown(pyramid[-1]))
        if level:  # level pixel j sits at frame pixel 2^level * j
            m = m.copy()
            m[:, :2] *= 2 ** level
        cv2.warpAffine(pyramid[level], m, (CROP_SIZE, CROP_SIZE), dst=out[i], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return out


class HandPass:
    """Hands for the persons of mesh frames: `run(frames, pixels)` fills PersonMesh.hands / hand_skips.

    engine: a hand fastmetro.engine.Engine (or any callable with its contract); hand_vertices: side ->
    SMPL vertex indices (fastmetro.hand_crops.smpl_hand_vertices); count: the stage's counter."""

    def __init__(self, engine: Callable[[np.ndarray], dict], hand_vertices: dict, count: Callable[..., None],
                 scale: float = 2.0, min_hand_px: float = 16.0):
        self.engine, self.hand_vertices, self.count = engine, hand_vertices, count
        self.scale, self.min_hand_px = scale, min_hand_px

    def run(self, frames: Sequence[MeshFrame], pixels: Sequence[Optional[np.ndarray]]) -> None:
        crops, where = [], []  # where: (person mesh, square, frame size, focal) per crop, in crop order
        for mf, rgb in zip(frames, pixels):
            wh = (mf.frame.width, mf.frame.height)
            squares = []
            for pm in mf.persons:
                coasting = pm.predicted or pm.person.state == "coasting"
                found = hand_squares(pm.vertices, pm.cam_t, mf.focal, wh, self.hand_vertices, coasting=coasting,
                                     scale=self.scale, min_hand_px=self.min_hand_px)
                for side in (Side.LEFT, Side.RIGHT):
                    got = found[side]
                    if isinstance(got, HandSkip):
                        pm.hand_skips[side.value] = got.value
                        self.count(f"hands_skipped_{got.value}")
                    elif rgb is None:  # no pixels kept for this frame (cannot happen in the stage)
                        pm.hand_skips[side.value] = HandSkip.OUT_OF_FRAME.value
                        self.count(f"hands_skipped_{HandSkip.OUT_OF_FRAME.value}")
                    else:
                        squares.append(got)
                        where.append((pm, got, wh, mf.focal))
            if squares:
                crops.append(cut_hand_crops(rgb, squares))
        self.count("hand_crops", len(where))
        if not where:
            return
        result = self.engine(np.concatenate(crops))
        self.count("hand_forwards")
        for i, (pm, sq, wh, focal) in enumerate(where):
            r = unmirror_result(sq, {k: result[k][i] for k in ("cam", "joints3d", "vertices")})
            cam_t = camera.crop_to_frame_translation(r["cam"][None], np.array([sq.center]), np.array([sq.size]),
                                                     wh, focal)[0]
            pm.hands[sq.side.value] = HandMesh(
                side=sq.side.value, cam=np.asarray(r["cam"], np.float32), cam_t=cam_t.astype(np.float32),
                joints3d=np.asarray(r["joints3d"], np.float32), vertices=np.asarray(r["vertices"], np.float32),
                center=(float(sq.center[0]), float(sq.center[1])), size=float(sq.size))
