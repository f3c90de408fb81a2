"""infer: FastMETRO on the person crops, batched across persons and frames, results mapped to the frame.

Input: Detections (crops in the frame's shared-memory slot). Output: MeshFrame, one per input, in input
order, every person of a frame together.

Batching, offline, is deadline-bounded: crops of successive frames are collected until `max_batch` crops
are waiting or the oldest waiting frame has waited `max_wait_ms`, whichever comes first (default 500 ms,
so batches fill). Live, a frame never waits for others: the runtime hands the stage every frame that was
waiting for it at once (the newest of each source, `process_many`) and they run as one batch (of at most
`max_batch` crops) there and then (`max_wait_ms` is not used). A frame's
crops are copied out of shared memory on arrival and, when this is the last stage that reads pixels (the
runtime says so: `releases_pixels`), its slot is released at once, so batching never holds the frame ring.
The network itself runs in fastmetro.engine.Engine (device, precision, buffers); results are placed in the
frame's camera by fastmetro.crops.place.

Measured (docs/metrics.md): the stage's service time is its forward pass, per batch (with the hand pass
when hands are on); "forward per crop" is that over the batch's crops; "batch wait" is the time each frame
waited in the batcher before its forward began.

Hands (`hands`, off by default on a CPU, where a 5-person frame costs 2.75x with them): a frame's pixels
are copied out with its crops, and after the body pass the hand pass (stages/infer_hands.py) cuts each
visible hand from them and runs a second engine, the hand network, on all of a batch's hand crops.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fastmetro.crops import CROP_SIZE, place
from pipeline.messages import Detections, EndOfStream, MeshFrame, PersonMesh, SourceEnd, now
from pipeline.stage import Stage, StageContext, StageError, config_section

log = logging.getLogger(__name__)


class InferConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Which network: a variant name (fastmetro-{s,m,l}-{r50,h64}[-smpl]); None = the checkpoint's,
    # or fastmetro-s-r50 (the fastest) without one.
    variant: Optional[str] = None
    # A registry name (`fastmetro-stream weights`) or a path. None runs UNTRAINED weights (loud warning).
    checkpoint: Optional[str] = None
    # Directory of the SMPL mesh data files; None = $FASTMETRO_ASSETS, then the user cache, then download.
    assets_dir: Optional[str] = None
    # auto = CUDA when present, else CPU.
    device: str = "auto"
    # fp32 everywhere; fp16/bf16 autocast on CUDA (about 2x faster); bf16 on CPUs with native bf16.
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    # Crops per forward. 16 fills a GPU well for S-R50 and bounds the latency of a burst on a CPU.
    max_batch: int = Field(16, ge=1, le=512)
    # Offline: how long the oldest waiting frame may wait for its batch to fill (None: 500 ms, full
    # batches). Live, a frame never waits for others: a batch is what arrived while the last one ran.
    max_wait_ms: Optional[float] = Field(None, ge=0, le=60000)
    # Speed settings of the engine (fastmetro.engine.EngineOptions); defaults are exact and work anywhere.
    channels_last: bool = True
    fold_batchnorm: bool = True
    # torch.compile with frozen weights, for fixed batch sizes (fastmetro.engine): about 1.4x fp32 eager
    # on a CPU, outputs within 2e-6; compiling takes minutes the first time (fp32 on a CPU: compiled
    # ahead of time into the user cache, so later runs load it in about a second); engine auto decides
    compile: bool = False
    cuda_graphs: bool = False
    quantize: Literal["none", "int8-dynamic"] = "none"
    threads: Optional[int] = Field(None, ge=1, le=4096)  # CPU threads for torch; None = all cores
    # auto: the fastest engine here (eager, compiled, bf16/fp16, CUDA graphs, ONNX Runtime, OpenVINO)
    # whose meshes stay within auto_tolerance_mm of eager fp32's on fixed crops, measured at the first
    # run and cached (fastmetro/engine_auto.py; minutes on a 2-core CPU, compiling most of it; later
    # runs read the choice); the log says which and why. manual: precision, compile, cuda_graphs, quantize and backend
    # as given. Setting any of those five yourself means manual. Default: $FASTMETRO_ENGINE, else auto.
    engine: Literal["auto", "manual"] = Field(default_factory=lambda: _default_engine())
    auto_tolerance_mm: float = Field(5.0, gt=0, le=1000)
    # torch runs the network in PyTorch (every setting above); onnxruntime runs it exported to ONNX (fp32,
    # CPU, exported once per checkpoint into the user cache; needs `pip install onnxruntime onnx`);
    # openvino runs that export with OpenVINO on the CPU (precision fp32, or bf16 on CPUs with native
    # bf16; needs `pip install openvino onnx`). Default torch: exact, no extra package, every setting above.
    backend: Literal["torch", "onnxruntime", "openvino"] = "torch"
    # Focal length (frame pixels) of the perspective camera results are expressed in; None = frame
    # diagonal (fastmetro.camera.default_focal). Set it when you know your camera.
    focal: Optional[float] = Field(None, gt=0, le=1e7)
    # A hand mesh on every person (stages/infer_hands.py): None = on where the body network runs on CUDA,
    # off on a CPU (there hands cost 2.75x a 5-person frame's time). Needs the MANO mesh data files.
    hands: Optional[bool] = None
    # The hand network: a registry name (fastmetro-hand-l-h64-freihand) or a path; None runs UNTRAINED
    # hand weights (loud warning). hand_variant None = the checkpoint's, or fastmetro-hand-s-r50 without one.
    hand_checkpoint: Optional[str] = None
    hand_variant: Optional[str] = None
    # Directory of the MANO mesh data files; None = $FASTMETRO_MANO_ASSETS, $FASTMETRO_ASSETS, the cache.
    hand_assets_dir: Optional[str] = None
    # A hand crop is hand_scale x the projected hand's extent; hands spanning fewer pixels than
    # hand_min_px get none (counted as hands_skipped_too_small).
    hand_scale: float = Field(2.0, gt=1.0, le=10.0)
    hand_min_px: float = Field(16.0, ge=1.0, le=10000.0)

    def hand_engine_options(self):
        """The EngineOptions of the hand network: the body's speed settings, the hand's weights and data."""
        import dataclasses

        return dataclasses.replace(self.engine_options(), variant=self.hand_variant or (
            None if self.hand_checkpoint else "fastmetro-hand-s-r50"), checkpoint=self.hand_checkpoint,
            assets_dir=self.hand_assets_dir, backend="torch")

    def engine_options(self):
        """The fastmetro.engine.EngineOptions these settings describe (every field the two share), so
        the infer stage, the image command and the benchmarks run the network the same way."""
        from fastmetro.engine import EngineOptions

        shared = {f.name for f in fields(EngineOptions)} & set(type(self).model_fields)
        opts = EngineOptions(**{name: getattr(self, name) for name in shared})
        if opts.engine == "auto" and ENGINE_SETTINGS & self.model_fields_set:
            opts.engine = "manual"  # the user chose the engine's settings
        return opts


# The settings that say which engine runs the network: giving any of them turns infer.engine auto off.
ENGINE_SETTINGS = frozenset({"precision", "compile", "cuda_graphs", "quantize", "backend"})


def _default_engine() -> str:
    value = os.environ.get("FASTMETRO_ENGINE", "auto")
    if value not in ("auto", "manual"):
        raise ValueError(f"FASTMETRO_ENGINE={value!r}: expected 'auto' or 'manual'")
    return value


@dataclass
class _Pending:
    det: Detections
    crops: np.ndarray  # (n, 224, 224, 3) uint8, copied out of shared memory
    arrived: float  # time.monotonic()
    pixels: Optional[np.ndarray] = None  # (H, W, 3) uint8 copy of the frame, kept for the hand pass


class DynamicBatcher:
    """Frames in, batches of whole frames out: at most max_batch crops unless one frame alone has more."""

    def __init__(self, max_batch: int, max_wait_s: float):
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.pending: list[_Pending] = []

    def add(self, item: _Pending) -> None:
        self.pending.append(item)

    @property
    def crops_waiting(self) -> int:
        return sum(len(p.crops) for p in self.pending)

    def deadline(self) -> Optional[float]:
        return self.pending[0].arrived + self.max_wait_s if self.pending else None

    def take(self, force: bool = False, now_s: Optional[float] = None) -> list[list[_Pending]]:
        """Batches that are due: full ones always; the rest when forced or past the deadline."""
        now_s = time.monotonic() if now_s is None else now_s
        out = []
        while self.pending:
            due = force or self.crops_waiting >= self.max_batch or now_s >= self.deadline()
            if not due:
                break
            batch, n = [], 0
            while self.pending and (not batch or n + len(self.pending[0].crops) <= self.max_batch):
                item = self.pending.pop(0)
                batch.append(item)
                n += len(item.crops)
            out.append(batch)
        return out


class InferStage(Stage):
    name = "infer"
    needs_pixels = True
    reports_service = True  # its forward passes (the process() calls that only collect are not work)

    def __init__(self, config: Any = None, context: Optional[StageContext] = None):
        super().__init__()
        self.cfg: InferConfig = config_section(config, "infer", InferConfig)
        self.context = context or StageContext.of(config)
        live = self.context.mode == "live"
        wait = self.cfg.max_wait_ms if self.cfg.max_wait_ms is not None else (0.0 if live else 500.0)  # offline
        self.batcher = DynamicBatcher(self.cfg.max_batch, wait / 1000.0)
        self.engine = None
        self.hands = None  # stages.infer_hands.HandPass when hands are on
        self.store = None  # set by the runtime
        # The last stage that reads pixels gives the slot back; the runtime sets this again before a run
        # (False when a later stage, the overlay, still needs the pixels).
        self.releases_pixels = True

    def check(self) -> None:
        """A checkpoint given as a file path names a file that is there (registry names are fetched later)."""
        ck = self.cfg.checkpoint
        if ck is not None and (os.sep in ck or Path(ck).suffix) and not Path(ck).expanduser().exists():
            raise StageError(f"infer.checkpoint: file {ck} does not exist (give a checkpoint file, or a name "
                             f"from `fastmetro-stream weights`)")

    def setup(self) -> None:
        from fastmetro.assets import AssetError
        from fastmetro.checkpoints import CheckpointError
        from fastmetro.engine import Engine, EngineError

        c = self.cfg
        try:
            self.engine = Engine(c.engine_options())
        except (AssetError, CheckpointError, EngineError) as e:  # a missing file, a setting this device lacks
            raise StageError(str(e)) from e
        if not self.engine.pretrained:
            self.count("untrained_weights")
        from stages.infer_hands import build_hand_pass, hands_on

        if hands_on(c, self.engine.device):
            self.hands = build_hand_pass(c, self.count)
        o = self.engine.options
        log.info("infer: %s on %s (%s%s%s%s), max_batch %d", self.engine.model.variant.name, self.engine.device,
                 o.precision, ", compiled" if o.compile else "", ", CUDA graphs" if o.cuda_graphs else "",
                 {"onnxruntime": ", ONNX Runtime", "openvino": ", OpenVINO"}.get(o.backend, ""), c.max_batch)

    # --- per item ---------------------------------------------------------------------------------
    def process(self, msg):
        if isinstance(msg, (EndOfStream, SourceEnd)):  # after every frame before it (batches of any source)
            return [*self.finish(), msg]
        self._add(msg)
        return self._run(self.batcher.take())

    def process_many(self, msgs):
        """Live: every frame that was waiting runs now, in batches of at most max_batch crops."""
        out = []
        for msg in msgs:
            if isinstance(msg, (EndOfStream, SourceEnd)):
                out += [*self.finish(), msg]
            else:
                self._add(msg)
        return out + self._run(self.batcher.take(force=True))

    def _add(self, msg) -> None:
        det: Detections = msg
        n = len(det.persons)
        if n:
            idx = [p.crop_index for p in det.persons]
            crops = np.array(self.store.crops(det.frame)[idx])  # a copy: the slot is released next
        else:
            crops = np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
        pixels = np.array(self.store.frame(det.frame)) if n and self.hands is not None else None
        if self.releases_pixels:
            self.store.release(det.frame)
        self.batcher.add(_Pending(det, crops, time.monotonic(), pixels))

    def next_deadline(self) -> Optional[float]:
        return self.batcher.deadline()

    def tick(self):
        return self._run(self.batcher.take())

    def finish(self):
        return self._run(self.batcher.take(force=True))

    # --- running a batch ---------------------------------------------------------------------------
    def _run(self, batches: list[list[_Pending]]) -> list[MeshFrame]:
        out = []
        for batch in batches:
            crops = np.concatenate([p.crops for p in batch]) if batch else None
            t0 = time.monotonic()
            for p in batch:
                self.timing("batch wait", t0 - p.arrived)
            result = self.engine(crops) if crops is not None and len(crops) else None
            forward = time.monotonic() - t0
            if result is not None:
                self.timing("forward per crop", forward / len(crops))
            if result is not None and not all(np.isfinite(v).all() for v in result.values()):
                # said here, naming the weights, rather than by a later stage choking on NaN
                from fastmetro.checkpoints import DOWNLOAD_DOC

                bad = int(sum(~np.isfinite(v.reshape(len(crops), -1)).all(1) for v in result.values()).astype(bool).sum())
                raise StageError(
                    f"the network's outputs are not finite (NaN or infinity) for {bad} of {len(crops)} crops: "
                    f"checkpoint {self.cfg.checkpoint or '(untrained weights)'} is likely damaged; download it "
                    f"again ({DOWNLOAD_DOC})")
            self.count("forwards", result is not None)
            self.count("crops", 0 if crops is None else len(crops))
            row, frames = 0, []
            for p in batch:
                k = len(p.crops)
                part = {key: v[row : row + k] for key, v in result.items()} if k else {}
                row += k
                frames.append(self._mesh_frame(p.det, part))
            if self.hands is not None:
                self.hands.run(frames, [p.pixels for p in batch])
            self.timing("service", time.monotonic() - t0 if self.hands is not None else forward)
            out += frames
        return out

    def _mesh_frame(self, det: Detections, r: dict[str, np.ndarray]) -> MeshFrame:
        from fastmetro import camera

        frame = det.frame
        persons = []
        wh = (frame.width, frame.height)
        focal = float(self.cfg.focal or camera.default_focal(wh))
        if det.persons:
            cam_t, joints2d = place(r, det.persons, wh, focal)
            for i, person in enumerate(det.persons):
                persons.append(PersonMesh(
                    person=person,
                    cam=r["cam"][i],
                    cam_t=cam_t[i].astype(np.float32),
                    joints3d=r["joints3d"][i],
                    joints_h36m=r["joints_h36m"][i],
                    joints2d=joints2d[i].astype(np.float32),
                    vertices=r["vertices"][i],
                    rotmat=r["rotmat"][i] if "rotmat" in r else None,
                    betas=r["betas"][i] if "betas" in r else None,
                ))
        frame.times[self.name] = now()
        return MeshFrame(frame=frame, persons=persons, lost=list(det.lost), focal=focal)
