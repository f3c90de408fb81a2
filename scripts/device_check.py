#!/usr/bin/env python
"""One run that checks this project on an accelerator and writes one report (device_check.json and .md).

    bash scripts/device_check.sh [--device cuda|cpu] [--quick] [--out DIR]     # installs .whl/, then this
    python scripts/device_check.py [--device cuda|cpu] [--quick] [--out DIR] [--budget-s 420]

Sections, each timed, each recorded even when it fails (the report says what failed and why):
  environment  python, torch, device, CPU flags, the packages found;
  parity       the shipped parity fixtures (body and hand S-R50) run on the device against the official
               outputs stored with them, and our fp32 outputs on the device against the same network on the CPU;
  precision    fp16 / bf16 (autocast) against fp32 on the device, largest mesh deviation in mm (fixed crops);
  speed        crops/s by batch size for S/M/L (R50) in every engine the device has (eager fp32, fp16,
               bf16, fp16 with CUDA graphs, compiled, ONNX Runtime), each against eager fp32 on this device
               in the same run; and what `infer.engine: auto` chooses here;
  live         the pipeline live on 4 paced copies of the sample video with hands on: published fps, drops,
               capture-to-publish p50/p95/p99, the GPU's busy fraction (sampled through NVML);
  paths        the code paths each section went through (engine settings, CUDA graphs captured, compiled
               packages, ONNX providers, the hand pass's counters).
--quick (what CI runs on the CPU, `--device cpu --quick`, in a couple of minutes) does each section small:
parity on the CPU, one variant and batch size, a short live run with 2 sources. Exit status 0 when every
section ran (a section the device cannot do, such as fp16 on a CPU, is skipped, not failed), 1 otherwise.
Uses only torch APIs that torch 2.11 has (the GPU machines' own torch).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import socket
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import torch  # noqa: E402

import fastmetro  # noqa: E402
from fastmetro.engine import Engine, EngineOptions  # noqa: E402
from fastmetro.engine_auto import candidates, choose, cpu_flags, fixed_crops  # noqa: E402

warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)


class Report:
    def __init__(self, args):
        self.args = args
        self.data = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args), "sections": {}}
        self.t0 = time.perf_counter()

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def section(self, name, fn):
        print(f"== {name} ({self.left():.0f} s of the budget left)", flush=True)
        t0 = time.perf_counter()
        entry = {"status": "ok"}
        try:
            if self.left() < 10:
                raise TimeoutError("no time left in the budget")
            entry.update(fn() or {})
        except Skip as e:
            entry = {"status": "skipped", "why": str(e)}
        except Exception as e:  # recorded, and the other sections still run
            entry = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            print(entry["traceback"], file=sys.stderr)
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        self.data["sections"][name] = entry
        print(f"   {entry['status']} in {entry['seconds']} s", flush=True)
        self.save()

    def save(self):
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        self.data["seconds"] = round(time.perf_counter() - self.t0, 1)
        (out / "device_check.json").write_text(json.dumps(self.data, indent=1, default=str))
        (out / "device_check.md").write_text(markdown(self.data))


class Skip(Exception):
    """A section this device cannot run (not a failure)."""


def _model(variant, device="cpu"):
    torch.manual_seed(0)
    return fastmetro.build_model(variant, device=device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# --- sections ----------------------------------------------------------------------------------------

def environment(device):
    import importlib.metadata as md

    pkgs = {}
    for name in ("numpy", "scipy", "av", "pyzmq", "msgpack", "pydantic", "pyyaml", "opencv-python",
                 "opencv-python-headless", "ultralytics", "filterpy", "lap", "onnxruntime", "onnxruntime-gpu", "onnx"):
        try:
            pkgs[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
           "device": str(device), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "cpu_bf16_flags": sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512f"}),
           "cores": os.cpu_count(), "packages": pkgs}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   capability=list(torch.cuda.get_device_capability(device)), cuda=torch.version.cuda)
    return env


def parity(device, parity_dir, quick):
    """The parity fixtures on the device (against the official outputs), and device fp32 against CPU fp32."""
    import subprocess

    if parity_dir is None or not Path(parity_dir).is_dir():
        raise Skip(f"no parity fixtures (looked in {parity_dir}; set FASTMETRO_PARITY or run scripts/device_wheels.sh)")
    out = {"fixtures": {}}
    fixtures = sorted(Path(parity_dir).glob("*.json"))
    for fx in fixtures:
        for dev in dict.fromkeys(["cpu", str(device)]):  # the official outputs were made on a CPU
            r = subprocess.run([sys.executable, str(REPO / "scripts" / "check_parity.py"), str(fx), "--device", dev],
                               capture_output=True, text=True, timeout=300)
            lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
            out["fixtures"][f"{fx.stem} on {dev}"] = {"exit": r.returncode, "output": lines[-8:]}
    if device.type == "cuda":  # our engine on the device against the same engine on the CPU
        crops = fixed_crops(4)
        for variant in ("fastmetro-s-r50", "fastmetro-hand-s-r50"):
            model = _model(variant)
            cpu = Engine(EngineOptions(device="cpu", max_batch=4), model=copy.deepcopy(model))(crops)
            gpu = Engine(EngineOptions(device=str(device), max_batch=4), model=copy.deepcopy(model))(crops)
            out[f"{variant} cuda fp32 vs cpu fp32 (max abs, m)"] = {
                k: float(np.abs(gpu[k] - cpu[k]).max()) for k in cpu}
    bad = {k: v for k, v in out["fixtures"].items() if v["exit"] != 0}
    if bad:
        raise RuntimeError(f"parity failed: {bad}")
    return out


def precision(device):
    names = ["fp16", "bf16"] if device.type == "cuda" else (["bf16"] if any(
        n == "bf16" for n, _ in candidates(device, False, False)) else [])
    if not names:
        raise Skip("this CPU has no native bf16 (AVX-512 BF16 or AMX) and fp16 needs CUDA")
    crops = fixed_crops(4)
    model = _model("fastmetro-s-r50")
    ref = Engine(EngineOptions(device=str(device), max_batch=4), model=copy.deepcopy(model))(crops)
    out = {}
    for name in names:
        res = Engine(EngineOptions(device=str(device), max_batch=4, precision=name), model=copy.deepcopy(model))(crops)
        out[name] = {"mesh_max_mm": float(np.linalg.norm(res["vertices"] - ref["vertices"], axis=-1).max() * 1000),
                     "mesh_mean_mm": float(np.linalg.norm(res["vertices"] - ref["vertices"], axis=-1).mean() * 1000),
                     "joints_max_mm": float(np.linalg.norm(res["joints3d"] - ref["joints3d"], axis=-1).max() * 1000)}
    return out


def _timed(engine, crops, seconds, device):
    engine(crops)
    engine(crops)
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while True:
        engine(crops)
        n += 1
        if time.perf_counter() - t0 >= seconds and n >= 3:
            break
    _sync(device)
    return n * len(crops) / (time.perf_counter() - t0)


def speed(device, quick, report):
    cuda = device.type == "cuda"
    variants = ["fastmetro-s-r50"] if quick else ["fastmetro-s-r50", "fastmetro-m-r50", "fastmetro-l-r50"]
    batches = [1] if quick else ([1, 8, 32] if cuda else [1, 4])
    seconds = 0.5 if quick else 1.5
    crops_all = fixed_crops(max(batches))
    engines = [("fp32", {})]
    if cuda:
        engines += [("fp16", {"precision": "fp16"}), ("bf16", {"precision": "bf16"}),
                    ("fp16-cudagraphs", {"precision": "fp16", "cuda_graphs": True})]
    elif not quick:
        engines += [(n, s) for n, s in candidates(device, False, False) if n not in ("fp32",)]
    if cuda:  # (on a CPU the candidates above hold it where it is installed)
        import importlib.util

        if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
            engines.append(("onnxruntime", {"backend": "onnxruntime"}))
    out = {"batches": batches, "crops_per_s": {}, "vs_eager_fp32": {}, "paths": {}}
    for variant in variants:
        model = _model(variant)
        rates, ratios = {}, {}
        compile_here = cuda and not quick and variant == "fastmetro-s-r50"  # compiling is minutes per variant
        todo = engines + ([("fp16-compile", {"precision": "fp16", "compile": True})] if compile_here else [])
        for name, settings in todo:
            if report.left() < (20 if quick else 60):
                rates[name] = "skipped: budget"
                continue
            opts = EngineOptions(device=str(device), max_batch=max(batches), **settings)
            if settings.get("compile") or settings.get("cuda_graphs"):
                opts.graph_batch_sizes = tuple(batches)
            try:
                engine = Engine(opts, model=copy.deepcopy(model))
            except Exception as e:  # e.g. an ONNX Runtime without the CUDA provider
                rates[name] = f"unavailable: {str(e).splitlines()[0][:200]}"
                continue
            rates[name] = {b: round(_timed(engine, crops_all[:b], seconds, device), 2) for b in batches}
            out["paths"][f"{variant} {name}"] = engine_paths(engine)
            del engine
            if cuda:
                torch.cuda.empty_cache()
        base = rates["fp32"]
        for name, r in rates.items():
            if isinstance(r, dict) and isinstance(base, dict):
                ratios[name] = {b: round(r[b] / base[b], 2) for b in batches}
        out["crops_per_s"][variant], out["vs_eager_fp32"][variant] = rates, ratios
    if not quick and report.left() > 120:
        names = ("fp16", "bf16", "fp16-cudagraphs", "onnxruntime") if cuda else None
        c = choose(EngineOptions(device=str(device), max_batch=16 if cuda else 4, engine="auto"),
                   _model("fastmetro-s-r50"), rounds=3, names=names, build=Engine, device=device)
        out["auto"] = {"choice": c.name, "reason": c.reason, "tried": list(c.results)}
    return out


def engine_paths(engine) -> dict:
    o = engine.options
    p = {"precision": o.precision, "backend": o.backend, "compile": o.compile, "device": str(engine.device)}
    if getattr(engine, "_graphs", None):
        p["cuda_graphs_captured"] = sorted(engine._graphs)
    if getattr(engine, "compiled_paths", None):
        p["compiled_ahead"] = [Path(x).name for x in engine.compiled_paths]
    elif o.compile:
        p["compiled_just_in_time"] = list(engine._sizes)
    if getattr(engine, "_onnx", None) is not None:
        p["onnx_providers"] = engine._onnx.session.get_providers()
    return p


class GpuSampler:
    """The GPU's busy fraction (NVML utilisation, sampled every 0.2 s) while a block runs."""

    def __init__(self, device):
        self.device, self.samples, self.stop = device, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(0.2):
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:
                return

    def __enter__(self):
        if self.device.type == "cuda":
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()

    def busy(self):
        return round(float(np.mean(self.samples)) / 100, 3) if self.samples else None


def live(device, quick):
    from fastmetro_stream.api import run
    from fastmetro_stream.config import load_config

    n_sources = 2 if quick else 4
    frames = 3 if quick else 120
    sample = REPO / "samples" / "sample.mp4"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    overrides = ["mode=live", "progress=false", f"publish.endpoint={endpoint}", "decode.realtime=true",
                 "decode.loop=true", f"decode.max_frames={frames}", "detect.detector=hog", f"detect.max_persons={1 if quick else 2}",
                 "infer.hands=true", f"infer.device={device}", "smooth.offline=none"]
    if device.type == "cuda":
        overrides.append("infer.precision=fp16")
    config = load_config(None, overrides,
                         sources=[{"id": f"cam{i}", "source": str(sample)} for i in range(n_sources)]).resolved()
    t0 = time.perf_counter()
    with GpuSampler(device) as gpu:
        summary = run(config)
    wall = time.perf_counter() - t0
    if summary.exit_code != 0:
        raise RuntimeError(f"the live run failed: {summary.reason} {summary.error or ''}")
    last = summary.stages[-1]
    counters = {m.name: dict(m.counters) for m in summary.stages}
    return {"sources": n_sources, "frames_per_source": frames, "published_frames": summary.frames,
            "published_fps": round(summary.fps, 2), "drops": summary.drops, "per_source": summary.sources,
            "capture_to_publish_ms": {k: round(v, 1) for k, v in last.e2e_ms.items()},
            "gpu_busy_fraction": gpu.busy(), "wall_s": round(wall, 1),
            "paths": {"counters": counters, "hand_pass_ran": counters.get("infer", {}).get("hand_forwards", 0) > 0}}


# --- the report ---------------------------------------------------------------------------------------

def markdown(data) -> str:
    lines = [f"# Device check ({data['started']}, {data.get('seconds', 0)} s)", ""]
    for name, sec in data["sections"].items():
        lines.append(f"## {name}: {sec['status']} ({sec.get('seconds')} s)")
        body = {k: v for k, v in sec.items() if k not in ("status", "seconds", "traceback")}
        lines += ["```", json.dumps(body, indent=1, default=str), "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="each section small (CI on the CPU)")
    ap.add_argument("--out", default=os.environ.get("OUT") or "device_check_out")
    ap.add_argument("--budget-s", type=float, default=None, help="stop starting sections after this (default 420; "
                                                                   "240 with --quick)")
    ap.add_argument("--parity", default=os.environ.get("FASTMETRO_PARITY"), help="parity fixtures directory")
    args = ap.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = 240.0 if args.quick else 420.0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available here", file=sys.stderr)
        return 2
    os.environ.setdefault("FASTMETRO_ENGINE", "manual")  # sections choose their engines themselves
    report = Report(args)
    report.section("environment", lambda: environment(device))
    report.section("parity", lambda: parity(device, args.parity, args.quick))
    report.section("precision", lambda: precision(device))
    report.section("speed", lambda: speed(device, args.quick, report))
    report.section("live", lambda: live(device, args.quick))
    failed = [n for n, s in report.data["sections"].items() if s["status"] == "failed"]
    report.data["failed"] = failed
    report.save()
    print(f"report: {Path(args.out) / 'device_check.md'} ({report.data['seconds']} s); "
          f"{'failed: ' + ', '.join(failed) if failed else 'every section ran'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
