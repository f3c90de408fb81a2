"""FastMETRO as an ONNX graph, exported once per checkpoint and run with ONNX Runtime.

    path = cached_onnx(model)                 # exports on first use, then reuses the cached file
    runner = OnnxRunner(path, threads=2)
    out = runner(images)                      # images: (B, 3, 224, 224) float32 normalised numpy

The graph is the network itself (call fold_batchnorm first for speed; the engine does), exported with
torch.onnx.export's TorchScript exporter (dynamo=False), opset 17, with a dynamic batch axis.
Input "images" (B, 3, 224, 224) float32; outputs pred_cam (B, 3), pred_3d_joints (B, 14, 3),
pred_3d_vertices_fine (B, 6890, 3), and with the SMPL head smpl_raw (B, 226): the regressor's raw 24
rotation matrices and 10 betas. ONNX has no SVD, so the projection of each raw matrix to the nearest
rotation (what the torch model does) runs in numpy after the session (nearest_rotations).

Files live in fastmetro.assets.cache_dir() / "onnx", named by variant and a hash of every parameter and
buffer (so a different checkpoint, or weights changed by BN folding, gives a different file). Exports
are written to a temporary file and renamed, so a crashed export never leaves a broken cache entry.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from .assets import cache_dir

log = logging.getLogger(__name__)

OPSET = 17
# Bump when the exported graph's inputs/outputs change, so stale cache files are not reused.
FORMAT_VERSION = "1"
INPUT = "images"
OUTPUTS = ("pred_cam", "pred_3d_joints", "pred_3d_vertices_fine")
SMPL_OUTPUT = "smpl_raw"


class OnnxExportError(RuntimeError):
    """The network could not be exported (e.g. the onnx package, which the exporter needs, is missing)."""


class _RawSMPLHead(nn.Module):
    """The SMPL head's MLP without its SVD: (raw 24 x 9 rotation entries, 10 betas), same weights."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, vertices: Tensor) -> tuple[Tensor, Tensor]:
        out = self.head.regressor(vertices.reshape(vertices.shape[0], -1))
        return out[:, : 24 * 9], out[:, 24 * 9 :]


class _ExportForward(nn.Module):
    """The network's forward with a tuple of outputs (what the exporter needs); same module weights."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.smpl_head = bool(model.variant.smpl_head)

    def forward(self, images: Tensor):
        out = self.model(images)
        outs = (out["pred_cam"], out["pred_3d_joints"], out["pred_3d_vertices_fine"])
        if self.smpl_head:  # pred_rotmat holds the raw entries here (see export_onnx)
            outs += (torch.cat([out["pred_rotmat"], out["pred_betas"]], dim=1),)
        return outs


def nearest_rotations(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """smpl_raw (B, 226) -> rotmat (B, 24, 3, 3), betas (B, 10), as the torch SMPL head computes them."""
    b = raw.shape[0]
    mats = raw[:, : 24 * 9].reshape(b * 24, 3, 3).astype(np.float64)
    u, _, vh = np.linalg.svd(mats)
    rot = u @ vh
    rot = rot * np.linalg.det(rot)[:, None, None]
    return rot.reshape(b, 24, 3, 3).astype(np.float32), np.ascontiguousarray(raw[:, 24 * 9 :], np.float32)


def weights_hash(model: nn.Module) -> str:
    """SHA-256 over the variant, every parameter and buffer (names, shapes, dtypes, values)."""
    h = hashlib.sha256(f"fastmetro-onnx/{FORMAT_VERSION}/opset{OPSET}/{model.variant.name}".encode())
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def export_onnx(model: nn.Module, path: Union[str, os.PathLike], opset: int = OPSET) -> Path:
    """Export the (eval-mode) network to `path` atomically; returns the path."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export writes the file through it)
    except ImportError as e:
        raise OnnxExportError("exporting FastMETRO to ONNX needs the onnx package: pip install onnx "
                              "(or pip install 'fastmetro-stream[onnx]')") from e
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _ExportForward(model).eval()  # the exporter keeps the root's mode: eval turns dropout off
    names = list(OUTPUTS) + ([SMPL_OUTPUT] if wrapper.smpl_head else [])
    device = next(model.parameters()).device
    example = torch.zeros(2, 3, 224, 224, device=device)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    os.close(fd)
    was_training = model.training
    head = getattr(model, "smpl_parameter_regressor", None) if wrapper.smpl_head else None
    try:
        model.eval()
        if head is not None:
            model.smpl_parameter_regressor = _RawSMPLHead(head)
        with torch.no_grad(), warnings.catch_warnings():
            # expected: the TorchScript exporter is deprecated, and the model's input-size check traces
            # to a constant (inputs are always 224 x 224)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper, (example,), tmp, dynamo=False, opset_version=opset,
                input_names=[INPUT], output_names=names,
                dynamic_axes={n: {0: "batch"} for n in [INPUT, *names]},
            )
        os.chmod(tmp, 0o644)  # mkstemp made it private; the cache entry is an ordinary file
        os.replace(tmp, path)
    finally:
        if head is not None:
            model.smpl_parameter_regressor = head
        model.train(was_training)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def cached_onnx(model: nn.Module, directory: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The ONNX file of this model's weights, exported into the cache on first use."""
    directory = Path(directory) if directory else cache_dir() / "onnx"
    path = directory / f"{model.variant.name}-{weights_hash(model)[:20]}.onnx"
    if path.is_file():
        log.debug("reusing ONNX export %s", path)
        return path
    log.info("exporting %s to ONNX (once per checkpoint) -> %s", model.variant.name, path)
    return export_onnx(model, path)


class OnnxRunner:
    """An ONNX Runtime session over an exported FastMETRO graph."""

    def __init__(self, path: Union[str, os.PathLike], threads: Optional[int] = None,
                 providers: Optional[list] = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or os.cpu_count() or 1
        so.inter_op_num_threads = 1  # one branch-free graph: parallelism lives inside the ops
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between runs: the pipeline's other stages (decode, detect) share these cores.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images (B, 3, 224, 224) float32 -> the network's outputs by name (rotmat/betas with the head)."""
        res = dict(zip(self.outputs, self.session.run(None, {INPUT: np.ascontiguousarray(images, np.float32)})))
        if SMPL_OUTPUT in res:
            res["pred_rotmat"], res["pred_betas"] = nearest_rotations(res.pop(SMPL_OUTPUT))
        return res
