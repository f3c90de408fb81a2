#!/usr/bin/env python
"""The inference engine against the official way and the bare backbone, on the same crops, in one run.

    python scripts/bench_infer.py [--variant fastmetro-s-r50] [--batches 1 2 4 8 16 32] [--seconds 3]
                                  [--device auto] [--checkpoint NAME_OR_PATH] [--no-compile]
                                  [--hand fastmetro-hand-s-r50 | --hand none] [--hand-checkpoint NAME_OR_PATH]
                                  [--settings fp32 int8-dynamic ...] [--no-bare]

Rows (crops/s, achieved GFLOP/s, share of this device's large-matmul GFLOP/s, peak memory, ratio to the
official way, largest deviation of the mesh from our fp32 output):
  - official way: one crop per forward, fp32 (see scripts/bench_model.py for what that runs);
  - bare torchvision ResNet-50 backbone (no avgpool/fc) at each batch size, fp32: the ceiling, since the
    backbone is 8.2 of FastMETRO-S-R50's 12.8 GFLOPs per crop;
  - our engine (fastmetro.engine) at each batch size in fp32, fp32 with torch.compile (frozen weights;
    compiled for the engine's fixed batch sizes, 1 and 4 on a CPU, larger batches run in pieces), then
    the faster settings this device supports: bf16 (CPUs with native bf16, and CUDA), fp16, fp16 with CUDA
    graphs and with compile (CUDA), int8 dynamic quantisation (CPU), ONNX Runtime (CPU, when onnxruntime
    and onnx are installed; its export is cached after the first run), OpenVINO fp32 and bf16 (CPU, when
    openvino and onnx are installed; the same export).
Then the latency of one 5-person frame (crops in, results on the host) for each, against the official way's
5 forwards. Deviations are measured on the weights given (random ones without --checkpoint, which exaggerate them).

Hand rows (unless --hand none): the hand network (--hand, default FastMETRO-S-R50's hand twin; the released
FreiHAND checkpoint is fastmetro-hand-l-h64) the official way (FastMETRO_Hand_Network's forward, one crop at
a time) and in our engine in fp32 (plus bf16 / int8-dynamic where the body rows have them) at each batch
size, as ratios to the official hand way, then its crops/s against the body engine's (same batch, same run),
and what hands add to a frame: one 5-person frame body only against body + 10 hand crops, fp32 engines.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fastmetro  # noqa: E402
from bench_model import OfficialWay, flops_per_crop, matmul_gflops, timed  # noqa: E402
from fastmetro.backbones import resnet50  # noqa: E402
from fastmetro.engine import Engine, EngineOptions, cpu_has_native_bf16, resolve_device  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="fastmetro-s-r50")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--assets", default=None)
    ap.add_argument("--hand", default="fastmetro-hand-s-r50", help="hand variant for the hand rows, or 'none'")
    ap.add_argument("--hand-checkpoint", default=None)
    ap.add_argument("--hand-assets", default=None, help="directory of the MANO mesh data files")
    ap.add_argument("--settings", nargs="+", default=None,
                    help="only these engine settings (fp32, 'fp32 compile', bf16, int8-dynamic, onnxruntime, ...)")
    ap.add_argument("--no-bare", dest="bare", action="store_false", help="leave out the bare-backbone rows")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="leave out the torch.compile rows (compiling takes about a minute on a CPU)")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    torch.manual_seed(0)  # the same random weights every run (so the ONNX export cache is reused)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)
        model = fastmetro.build_model(args.variant, checkpoint=args.checkpoint, assets_dir=args.assets,
                                      device=device)
    gflop = flops_per_crop(model, device) / 1e9
    mm = matmul_gflops(device)
    crops = np.random.default_rng(0).integers(0, 256, (max(args.batches), 224, 224, 3), dtype=np.uint8)
    print(f"{args.variant} on {device}: {gflop:.1f} GFLOP per crop; large fp32 matmul {mm:.0f} GFLOP/s; "
          f"torch threads {torch.get_num_threads()}; weights {'trained' if model.pretrained else 'random'}")

    def row(label, rate, mem, base, dev=None):
        ratio = f"{rate / base:5.2f}x" if base else "  -  "
        d = "" if dev is None else f"  mesh dev {dev:.1e}"
        print(f"  {label:30s} {rate:8.2f} crops/s {rate * gflop:7.1f} GFLOP/s ({rate * gflop / mm:4.0%}) "
              f"peak {mem:6.0f} MiB  {ratio}{d}")

    official = OfficialWay(model)
    x1 = fastmetro.normalize_crops(torch.from_numpy(crops[:1])).to(device)
    with torch.inference_mode():
        base, mem = timed(official, x1, args.seconds, device)
    row("official way b1 fp32", base, mem, base)
    five = crops[np.arange(5) % len(crops)]  # one frame of 5 persons: the latency a live frame sees
    latencies = {}

    def official_frame(c):
        with torch.inference_mode():
            for i in range(len(c)):
                official(fastmetro.normalize_crops(torch.from_numpy(c[i : i + 1])).to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()

    latencies["official way (5 forwards)"] = frame_latency(official_frame, five, args.seconds)

    bare = resnet50().to(device).eval()
    for b in args.batches if args.bare else ():
        x = fastmetro.normalize_crops(torch.from_numpy(crops[:b])).to(device)
        with torch.inference_mode():
            rate, mem = timed(bare, x, args.seconds, device)
        print(f"  {f'bare ResNet-50 b{b} fp32':30s} {rate:8.2f} crops/s {rate * 8.2:7.1f} GFLOP/s "
              f"(backbone only)       peak {mem:6.0f} MiB  {rate / base:5.2f}x")
    del bare

    settings = [("fp32", EngineOptions(precision="fp32"))]
    if args.compile:
        settings.append(("fp32 compile", EngineOptions(precision="fp32", compile=True)))
    if device.type == "cuda":
        settings += [("fp16", EngineOptions(precision="fp16")), ("bf16", EngineOptions(precision="bf16")),
                     ("fp16 CUDA graphs", EngineOptions(precision="fp16", cuda_graphs=True))]
        if args.compile:
            settings.append(("fp16 compile", EngineOptions(precision="fp16", compile=True)))
    else:
        if cpu_has_native_bf16():
            settings.append(("bf16", EngineOptions(precision="bf16")))
        settings.append(("int8-dynamic", EngineOptions(quantize="int8-dynamic")))
        if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
            settings.append(("onnxruntime", EngineOptions(backend="onnxruntime")))
        else:
            print("  (engine onnxruntime skipped: pip install onnxruntime onnx)")
        if importlib.util.find_spec("openvino") and importlib.util.find_spec("onnx"):
            sizes = tuple(sorted({1, 4, *args.batches}))  # a static compile per batch size measured
            settings.append(("openvino", EngineOptions(backend="openvino", graph_batch_sizes=sizes)))
            if cpu_has_native_bf16():
                settings.append(("openvino bf16", EngineOptions(backend="openvino", precision="bf16",
                                                                graph_batch_sizes=sizes)))
        else:
            print("  (engine openvino skipped: pip install openvino onnx)")
    if args.settings:
        settings = [s for s in settings if s[0] in args.settings or s[0] == "fp32"]  # fp32: the reference
    reference, body_fp32 = None, {}
    for name, opts in settings:
        opts.device = str(device)
        opts.max_batch = max(args.batches)
        engine = Engine(opts, model=copy.deepcopy(model))
        out = engine(crops)
        if reference is None:
            reference = out["vertices"]
        dev = float(np.abs(out["vertices"] - reference).max())
        for b in args.batches:
            rate, mem = timed(engine, crops[:b], args.seconds, device)
            row(f"engine {name} b{b}", rate, mem, base, dev)
            if name == "fp32":
                body_fp32[b] = rate
        latencies[f"engine {name}"] = frame_latency(engine, five, args.seconds)
        del engine
    print("one 5-person frame, crops in -> results on the host (ms):")
    ref = latencies["official way (5 forwards)"][0]
    for label, (p50, p95) in latencies.items():
        print(f"  {label:30s} p50 {p50:7.1f}  p95 {p95:7.1f}  {ref / p50:5.2f}x")
    if args.hand != "none":
        hand_rows(args, device, crops, body_fp32, [s for s in settings if s[0] in ("fp32", "bf16", "int8-dynamic")],
                  Engine(EngineOptions(precision="fp32", device=str(device), max_batch=max(args.batches)),
                         model=copy.deepcopy(model)))
    return 0


def hand_rows(args, device, crops, body_fp32, settings, body_engine) -> None:
    """The hand network's rows (see the module docstring), in the same run as the body's."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)
        hand = fastmetro.build_model(args.hand, checkpoint=args.hand_checkpoint, assets_dir=args.hand_assets,
                                     device=device)
    if hand.variant.network != "hand":
        raise SystemExit(f"--hand {args.hand}: not a hand variant (fastmetro-hand-{{s,m,l}}-{{r50,h64}})")
    gflop = flops_per_crop(hand, device) / 1e9
    official = OfficialWay(hand)
    x1 = fastmetro.normalize_crops(torch.from_numpy(crops[:1])).to(device)
    with torch.inference_mode():
        diff = max((official(x1)[k] - hand(x1)[k]).abs().max().item() for k in official(x1))
        base, mem = timed(official, x1, args.seconds, device)
    print(f"hand network {hand.variant.name}: {gflop:.1f} GFLOP per crop; official-way forward vs ours: "
          f"max abs diff {diff:.1e}; weights {'trained' if hand.pretrained else 'random'}")
    print(f"  {'hand official way b1 fp32':30s} {base:8.2f} crops/s {base * gflop:7.1f} GFLOP/s  peak {mem:6.0f} MiB  "
          f"1.00x")
    hand_fp32 = None
    for name, opts in settings:
        engine = Engine(EngineOptions(precision=opts.precision, quantize=opts.quantize, device=str(device),
                                      max_batch=max(args.batches)), model=copy.deepcopy(hand))
        for b in args.batches:
            rate, mem = timed(engine, crops[:b], args.seconds, device)
            vs_body = f"  hand/body {rate / body_fp32[b]:4.2f}x" if name == "fp32" else ""
            print(f"  {f'hand engine {name} b{b}':30s} {rate:8.2f} crops/s {rate * gflop:7.1f} GFLOP/s  "
                  f"peak {mem:6.0f} MiB  {rate / base:5.2f}x{vs_body}")
        if name == "fp32":
            hand_fp32 = engine
        else:
            del engine
    five = crops[np.arange(5) % len(crops)]
    ten = crops[np.arange(10) % len(crops)]

    def with_hands(c):
        body_engine(c)
        hand_fp32(ten)

    off = frame_latency(body_engine, five, args.seconds)
    on = frame_latency(with_hands, five, args.seconds)
    print("one 5-person frame, fp32 engines (ms): "
          f"body only p50 {off[0]:.1f}; body + 10 hands p50 {on[0]:.1f}: hands on costs {on[0] / off[0]:.2f}x "
          f"the frame time ({off[0] / on[0]:.2f}x the frames/s)")


def frame_latency(fn, crops, seconds):
    """p50 and p95 (ms) of fn(crops), after a warm-up, over about `seconds`."""
    import time

    fn(crops)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t0 = time.perf_counter()
        fn(crops)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


if __name__ == "__main__":
    sys.exit(main())
