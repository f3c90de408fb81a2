"""Engine "auto": the fastest engine on this machine whose outputs stay within a stated bound of eager fp32.

    choice = choose(options, model)       # options.engine == "auto"; model: the built network
    choice.options                        # the EngineOptions to run (engine "manual", settings filled in)
    choice.reason                         # one line: what was chosen, its speed-up and deviation

Candidates (`candidates`): eager fp32 (the reference), torch.compile fp32, and where the hardware has them
bf16 (CPUs with AVX-512 BF16 or AMX; CUDA), bf16 compiled, fp16 and fp16 with CUDA graphs (CUDA), and ONNX
Runtime and OpenVINO fp32 (body networks, when onnxruntime or openvino, and onnx, are installed; OpenVINO
on the CPU), and OpenVINO bf16 where the CPU has native bf16. Each runs the same fixed crops (seeded,
so every machine sees the same ones); its deviation is the largest distance, in millimetres, of any mesh
vertex or joint from eager fp32's, and a candidate over the bound (`tolerance_mm`, default 5 mm) is not
chosen. Speed is crops/s at batch 1 and at a second batch (4 on a CPU, max_batch on CUDA), each the best
of interleaved timed rounds (robust to other processes sharing the cores), as a ratio to eager fp32 in
the same rounds; the score is the geometric mean of the two ratios.

The choice is measured once and written to `<cache>/engine/<key>.json`, the key a hash of the machine
(CPU model, core count and instruction-set flags, or the GPU's name and compute capability), the torch
version, the variant, a hash of the weights, max_batch, the threads and the bound; later runs read it and
build only the chosen engine. Compiled code lands in torch's inductor cache, which `use_inductor_cache`
points into the same cache directory (unless TORCHINDUCTOR_CACHE_DIR is set), so a later compile reuses
the generated and built kernels.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .assets import cache_dir

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE_MM = 5.0
# Bump when what is measured or how the choice is made changes, so older cached choices are measured again.
FORMAT_VERSION = 2  # 2: OpenVINO candidates; the candidates this machine can run are part of the key
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The instruction-set flags of this CPU (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """oneDNN's own test for bf16 kernels on this CPU."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def cpu_native_bf16() -> bool:
    """AVX-512 BF16 or AMX (the flags), or oneDNN's own test where the flags cannot be read."""
    flags = cpu_flags()
    if flags:
        return any(f in flags for f in CPU_BF16_FLAGS)
    return cpu_has_native_bf16()


def machine_id(device: torch.device) -> dict:
    if device.type == "cuda":
        index = device.index or 0
        return {"gpu": torch.cuda.get_device_name(index), "capability": list(torch.cuda.get_device_capability(index)),
                "cuda": torch.version.cuda}
    flags = sorted(cpu_flags())
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "flags": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16]}


def use_inductor_cache() -> str:
    """Point torch's inductor cache (generated and built kernels) into our cache directory, unless the
    user already chose one; returns the directory in use."""
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "inductor")
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


@dataclass
class Choice:
    name: str
    options: object  # EngineOptions
    reason: str
    cached: bool
    results: dict = field(default_factory=dict)  # candidate -> {"speedup": {batch: x}, "deviation_mm": d, ...}
    path: Optional[Path] = None
    seconds: float = 0.0  # spent measuring (0 when read from the cache)


def candidates(device: torch.device, hand: bool, smpl_head: bool) -> list[tuple[str, dict]]:
    """(name, EngineOptions settings) of every engine worth trying on this device, eager fp32 first."""
    out = [("fp32", {}), ("fp32-compile", {"compile": True})]
    if device.type == "cuda":
        out += [("fp16", {"precision": "fp16"}), ("bf16", {"precision": "bf16"}),
                ("fp16-compile", {"precision": "fp16", "compile": True})]
        if not smpl_head:  # the SMPL head's SVD syncs with the host: no graph capture
            out.append(("fp16-cudagraphs", {"precision": "fp16", "cuda_graphs": True}))
    elif cpu_native_bf16():
        out += [("bf16", {"precision": "bf16"}), ("bf16-compile", {"precision": "bf16", "compile": True})]
    exported = not hand and importlib.util.find_spec("onnx") is not None  # the exported-graph backends
    if exported and importlib.util.find_spec("onnxruntime"):
        import onnxruntime as ort

        if device.type == "cpu" or "CUDAExecutionProvider" in ort.get_available_providers():
            out.append(("onnxruntime", {"backend": "onnxruntime"}))
    if exported and device.type == "cpu" and importlib.util.find_spec("openvino"):
        out.append(("openvino", {"backend": "openvino"}))
        if cpu_native_bf16():
            out.append(("openvino-bf16", {"backend": "openvino", "precision": "bf16"}))
    return out


def fixed_crops(n: int = 4) -> np.ndarray:
    """n deterministic 224 x 224 RGB crops: smooth random shapes (seeded), the same on every machine."""
    rng = np.random.default_rng(20240601)
    small = rng.integers(0, 256, (n, 14, 14, 3)).astype(np.float32)
    big = np.kron(small, np.ones((1, 16, 16, 1), np.float32))  # 14 x 16 = 224
    noise = rng.normal(0, 12, big.shape)
    return np.clip(big + noise, 0, 255).astype(np.uint8)


def _reference_options(options):
    return dataclasses.replace(options, engine="manual", precision="fp32", compile=False, cuda_graphs=False,
                               quantize="none", backend="torch")


def cache_key(options, model, device: torch.device, batches: tuple[int, ...], tolerance_mm: float) -> dict:
    from .onnx_export import weights_hash

    return {"format": FORMAT_VERSION, "machine": machine_id(device), "torch": torch.__version__,
            "variant": model.variant.name, "weights": weights_hash(model)[:20], "max_batch": options.max_batch,
            "batches": list(batches), "threads": options.threads or os.cpu_count(),
            "tolerance_mm": tolerance_mm, "channels_last": options.channels_last,
            "fold_batchnorm": options.fold_batchnorm,
            # a backend installed later is measured then, not passed over for a choice made without it
            "available": [n for n, _ in candidates(device, model.variant.network == "hand",
                                                   bool(model.variant.smpl_head))]}


def _describe(name: str, results: dict, tolerance_mm: float, batches) -> str:
    r = results[name]
    speed = ", ".join(f"{r['speedup'][str(b)]:.2f}x at batch {b}" for b in batches)
    text = (f"{name}: {speed} against eager fp32; outputs within {r['deviation_mm']:.3g} mm of fp32 "
            f"(bound {tolerance_mm:g} mm)")
    others = []
    for other, o in results.items():
        if other in (name, "fp32"):
            continue
        if "error" in o:
            others.append(f"{other} failed")
        elif o["deviation_mm"] > tolerance_mm:
            others.append(f"{other} {o['score']:.2f}x but {o['deviation_mm']:.3g} mm off")
        else:
            others.append(f"{other} {o['score']:.2f}x")
    return text + (f" [others: {'; '.join(others)}]" if others else "")


def choose(options, model, tolerance_mm: Optional[float] = None, directory: Optional[Path] = None,
           rounds: int = 6, names: Optional[tuple[str, ...]] = None, *, build, device) -> Choice:
    """The engine "auto" picks for this model on `device` (options.device resolved; see the module
    docstring); `names` limits the candidates tried (eager fp32, the reference, always runs). build: the
    engine class (fastmetro.engine.Engine), called as build(options, model=...) for each candidate."""
    tolerance_mm = DEFAULT_TOLERANCE_MM if tolerance_mm is None else float(tolerance_mm)
    use_inductor_cache()
    second = min(4, options.max_batch) if device.type == "cpu" else options.max_batch
    batches = tuple(sorted({1, second}))
    key = cache_key(options, model, device, batches, tolerance_mm)
    if names is not None:
        key["candidates"] = sorted(set(names) | {"fp32"})
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = (Path(directory) if directory else cache_dir() / "engine") / f"{model.variant.name}-{digest}.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            opts = dataclasses.replace(_reference_options(options), **saved["settings"])
            reason = f"{_describe(saved['choice'], saved['results'], tolerance_mm, batches)}; measured " \
                     f"{saved['measured']}, read from {path}"
            return Choice(saved["choice"], opts, reason, True, saved["results"], path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("engine auto: ignoring unreadable cached choice %s (%s); measuring again", path, e)

    t_start = time.perf_counter()
    log.warning("engine auto: first run of %s on this machine: measuring the engines once (compiling can take "
                "minutes); later runs read the choice from %s. infer.engine: manual skips this",
                model.variant.name, path.parent)
    results, engines = _measure(options, model, device, batches, rounds, names, build)
    eligible = [n for n, r in results.items() if "error" not in r and r["deviation_mm"] <= tolerance_mm]
    best = max(eligible, key=lambda n: results[n]["score"])
    settings = dict(candidates_by_name(device, model)[best])
    opts = dataclasses.replace(_reference_options(options), **settings)
    seconds = time.perf_counter() - t_start
    measured = time.strftime("%Y-%m-%d %H:%M:%S")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.part")
    tmp.write_text(json.dumps({"key": key, "choice": best, "settings": settings, "results": results,
                               "measured": measured, "seconds": round(seconds, 1)}, indent=1, sort_keys=True))
    os.replace(tmp, path)
    reason = f"{_describe(best, results, tolerance_mm, batches)}; measured now in {seconds:.0f} s, cached in {path}"
    choice = Choice(best, opts, reason, False, results, path, seconds)
    choice.engine = engines.get(best)  # the measured engine itself, ready to run (saves building it again)
    return choice


def candidates_by_name(device, model) -> dict[str, dict]:
    return dict(candidates(device, model.variant.network == "hand", bool(model.variant.smpl_head)))


def _deviation_mm(out: dict, ref: dict) -> float:
    """The largest distance, in millimetres, of any vertex or joint in `out` from `ref` (inf if not finite)."""
    dev = max(float(np.linalg.norm(out[k] - ref[k], axis=-1).max()) for k in ("vertices", "joints3d")) * 1000
    return dev if math.isfinite(dev) else float("inf")


def _measure(options, model, device, batches, rounds, names, build) -> tuple[dict, dict]:
    """Build every candidate, compare its outputs on the fixed crops with eager fp32's, then time them in
    interleaved rounds (each timing the best of its rounds)."""
    crops = fixed_crops(max(4, max(batches)))
    engines, results, ref = {}, {}, None
    cands = candidates(device, model.variant.network == "hand", bool(model.variant.smpl_head))
    cands = [(n, s) for n, s in cands if names is None or n == "fp32" or n in names]
    for name, settings in cands:
        t0 = time.perf_counter()
        log.info("engine auto: trying %s", name)
        try:
            opts = dataclasses.replace(_reference_options(options), **settings)
            engine = build(opts, model=copy.deepcopy(model))
            out = engine(crops)
        except Exception as e:  # a candidate this machine cannot run is left out, and said why
            results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
            log.info("engine auto: %s left out: %s", name, results[name]["error"])
            continue
        if ref is None:
            ref = out
        results[name] = {"deviation_mm": _deviation_mm(out, ref), "build_s": round(time.perf_counter() - t0, 2)}
        engines[name] = engine
    best = {n: {b: math.inf for b in batches} for n in engines}
    for _ in range(rounds):
        for b in batches:
            for n, engine in engines.items():
                t0 = time.perf_counter()
                engine(crops[:b])
                best[n][b] = min(best[n][b], time.perf_counter() - t0)
    for n, engine in engines.items():  # the deviation again after the timed calls: an engine whose results
        # drift from call to call is caught too
        results[n]["deviation_mm"] = max(results[n]["deviation_mm"], _deviation_mm(engine(crops), ref))
        speed = {str(b): best["fp32"][b] / best[n][b] for b in batches}
        results[n]["speedup"] = speed
        results[n]["ms"] = {str(b): round(best[n][b] * 1000, 2) for b in batches}
        results[n]["score"] = math.exp(sum(math.log(s) for s in speed.values()) / len(speed))
    return results, engines
