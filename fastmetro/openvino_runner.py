"""FastMETRO on OpenVINO: the network's ONNX export compiled by OpenVINO's CPU plugin, one fixed batch size each.

    runner = OpenVinoRunner(path, threads=2, precision="fp32", sizes=(1, 4))
    out = runner(images)          # images: (B, 3, 224, 224) float32 normalised numpy, B one of runner.sizes

The graph is fastmetro.onnx_export's (cached per checkpoint); OpenVINO reads it as is. Each fixed batch
size is compiled with a static shape (on this project's CPUs about 1.3x faster than one dynamic-batch
compile); the engine runs a batch of another size in pieces of the fixed sizes, as its compiled torch path
does (fastmetro.engine.fixed_size_pieces): nothing is padded, and no shape compiles in the middle of a
stream.

precision "fp32" asks for f32 inference explicitly: on CPUs with AMX or AVX-512 BF16 OpenVINO would
otherwise run bf16. precision "bf16" runs bf16 where the CPU has it natively. Compiled blobs are cached
in `<cache>/openvino` (OpenVINO's CACHE_DIR), so a later run compiles in a fraction of the time. Threads
are not pinned to cores: the pipeline's other stages share them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .assets import cache_dir
from .onnx_export import INPUT, OUTPUTS, SMPL_OUTPUT, nearest_rotations

HINTS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoRunner:
    """Compiled OpenVINO models of an exported FastMETRO graph, one per fixed batch size."""

    def __init__(self, path: Union[str, os.PathLike], threads: Optional[int] = None, precision: str = "fp32",
                 sizes: tuple[int, ...] = (1, 4), cache: Optional[Union[str, os.PathLike]] = None):
        import openvino as ov

        if precision not in HINTS:
            raise ValueError(f"precision {precision!r}: OpenVINO runs fp32 or bf16")
        if any(int(b) < 1 for b in sizes):
            raise ValueError(f"batch sizes must be positive, got {sizes}")
        self.path = Path(path)
        self.sizes = tuple(sorted({1, *(int(b) for b in sizes)}))  # 1: any batch can be cut into pieces of them
        core = ov.Core()
        cache = Path(cache) if cache else cache_dir() / "openvino"
        cache.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(cache)})
        # SNIPPETS_MODE DISABLE: with OpenVINO's subgraph JIT ("snippets") on, a static-shape compile of
        # this graph gave different results on every call after the first (0.1 m off in OpenVINO 2026.4.1,
        # tests/test_openvino.py); without it results match torch's to round-off at the same speed
        config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": int(threads or os.cpu_count() or 1), "ENABLE_CPU_PINNING": False,
                  "SNIPPETS_MODE": "DISABLE"}
        self.requests = {}
        for b in self.sizes:
            model = core.read_model(str(self.path))
            model.reshape({INPUT: [b, 3, 224, 224]})
            self.requests[b] = core.compile_model(model, "CPU", config).create_infer_request()
        # (an output can carry several names in OpenVINO; the export's own ones are what callers ask for)
        known = {*OUTPUTS, SMPL_OUTPUT}
        self.outputs = [next((n for n in sorted(o.get_names()) if n in known), o.get_any_name())
                        for o in self.requests[self.sizes[0]].model_outputs]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images (B, 3, 224, 224) float32, B one of `sizes` -> the network's outputs by name (rotmat/betas
        with the head)."""
        request = self.requests.get(len(images))
        if request is None:
            raise ValueError(f"batch of {len(images)}: compiled for batch sizes {self.sizes} only "
                             f"(cut it with fastmetro.engine.fixed_size_pieces)")
        request.infer({INPUT: np.ascontiguousarray(images, np.float32)})
        # copies: the request's output buffers are reused by its next inference
        res = {name: np.array(request.get_tensor(name).data, np.float32) for name in self.outputs}
        if SMPL_OUTPUT in res:
            res["pred_rotmat"], res["pred_betas"] = nearest_rotations(res.pop(SMPL_OUTPUT))
        return res
