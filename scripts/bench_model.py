#!/usr/bin/env python
"""Crops/s and peak memory of the FastMETRO network per batch size, next to the official way of running it.

    python scripts/bench_model.py [--variants fastmetro-s-r50 fastmetro-l-h64 fastmetro-hand-l-h64] [--batches 1 2 4 8 16]
                                  [--seconds 3] [--device cpu|cuda] [--dtypes fp32 fp16 bf16]

"official way": the official code's forward on the same weights, one crop per forward, fp32:
nn.MultiheadAttention on sequence-first tensors with the boolean mask moved to the device on every call,
positional encodings recomputed every call, the fine mesh upsampled one sample at a time with a sparse
matrix product, and the SMPL head's rotations orthonormalised one matrix at a time on the CPU (for a hand
variant, FastMETRO_Hand_Network's forward: MANO upsampling 195 -> 778 one sample at a time). It is
written here in our words from the official code's structure and checked against our forward (max abs
difference printed) before it is timed. Every figure comes from this one run, on this machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fastmetro  # noqa: E402
from fastmetro.model import sine_position_encoding  # noqa: E402


# --- the official way --------------------------------------------------------------------------

def _official_encoder_layer(layer, src, pos):
    x = layer.norm1(src)
    qk = torch.cat([x[:1], x[1:] + pos], dim=0)
    src = src + layer.self_attn(qk, qk, value=x)[0]
    x = layer.norm2(src)
    return src + layer.linear2(F.relu(layer.linear1(x)))


def _official_decoder_layer(layer, tgt, memory, pos, mask):
    x = layer.norm1(tgt)
    zero = torch.zeros_like(tgt)
    q = x + zero
    tgt = tgt + layer.self_attn(q, q, value=x, attn_mask=mask)[0]
    x = layer.norm2(tgt)
    tgt = tgt + layer.multihead_attn(query=x + zero, key=memory + pos, value=memory)[0]
    x = layer.norm3(tgt)
    return tgt + layer.linear2(F.relu(layer.linear1(x)))


def _official_transformer(t, img, cam, jv, pos, mask):
    x = torch.cat([cam, img], dim=0)
    for layer in t.encoder.layers:
        x = _official_encoder_layer(layer, x, pos)
    x = t.encoder.norm(x)
    cam_f, img_f = x.split([1, img.shape[0]], dim=0)
    y = jv
    for layer in t.decoder.layers:
        y = _official_decoder_layer(layer, y, img_f, pos, mask)
    return cam_f, img_f, t.decoder.norm(y)


class OfficialWay:
    """The official forward (FastMETRO_Body_Network or, for a hand variant, FastMETRO_Hand_Network)."""

    def __init__(self, model):
        self.m = model
        self.hand = model.variant.network == "hand"
        self.mask_cpu = ~model.attention_allowed.cpu()  # official: True = masked, kept on the CPU
        u = model.upsample_cols.cpu(), model.upsample_weights.cpu()
        rows = torch.arange(u[0].shape[0])[:, None].expand_as(u[0])
        keep = u[1] != 0
        shape = (778, 195) if self.hand else (6890, 1723)
        self.U = torch.sparse_coo_tensor(torch.stack([rows[keep], u[0][keep]]), u[1][keep], shape,
                                         check_invariants=True).coalesce()
        self.U = self.U.to(next(model.parameters()).device)

    @torch.no_grad()
    def __call__(self, images):
        m, b, dev = self.m, images.shape[0], images.device
        cam = m.cam_token_embed.weight.unsqueeze(1).repeat(1, b, 1)
        jv = torch.cat([m.joint_token_embed.weight, m.vertex_token_embed.weight]).unsqueeze(1).repeat(1, b, 1)
        mask = self.mask_cpu.to(dev)
        feats = m.backbone(images)
        img = m.conv_1x1(feats).flatten(2).permute(2, 0, 1)
        pos1 = sine_position_encoding(7, 7, 512).to(dev)[:, None].repeat(1, b, 1)
        pos2 = sine_position_encoding(7, 7, 128).to(dev)[:, None].repeat(1, b, 1)
        c1, i1, j1 = _official_transformer(m.transformer_1, img, cam, jv, pos1, mask)
        c2, _, j2 = _official_transformer(
            m.transformer_2, m.dim_reduce_enc_img(i1), m.dim_reduce_enc_cam(c1), m.dim_reduce_dec(j1), pos2, mask)
        out = {"pred_cam": m.cam_predictor(c2).view(b, 3)}
        xyz = m.xyz_regressor(j2.transpose(0, 1))
        out["pred_3d_joints"], coarse = xyz[:, :m.num_joints], xyz[:, m.num_joints:]
        if self.hand:  # the MANO upsampling straight from the coarse mesh, one sample at a time
            out["pred_3d_vertices_fine"] = torch.stack([torch.sparse.mm(self.U, coarse[i]) for i in range(b)])
            return out
        inter = m.coarse2intermediate_upsample(coarse.transpose(1, 2)).transpose(1, 2)
        out["pred_3d_vertices_fine"] = torch.stack([torch.sparse.mm(self.U, inter[i]) for i in range(b)])
        if m.variant.smpl_head:
            raw = m.smpl_parameter_regressor.regressor(inter.reshape(b, -1))
            rot = raw[:, : 24 * 9].reshape(-1, 3, 3).cpu()
            mats = []
            for r in rot:  # one matrix at a time, on the CPU
                u, _, v = torch.svd(r)
                q = u @ v.t()
                mats.append(q * torch.det(q))
            out["pred_rotmat"] = torch.stack(mats).view(b, 24, 3, 3).to(dev)
        return out


# --- measuring ---------------------------------------------------------------------------------

def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        try:  # Linux: reset the process's peak RSS (VmHWM)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def peak_mib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def timed(fn, x, seconds, device):
    fn(x)  # warm-up
    fn(x)
    reset_peak(device)
    n, start = 0, time.perf_counter()
    while True:
        fn(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 2:
            return n * x.shape[0] / elapsed, peak_mib(device)


def matmul_gflops(device, seconds=1.0):
    n = 2048
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    k, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        k += 1
    return 2 * n**3 * k / (time.perf_counter() - start) / 1e9


def flops_per_crop(model, device):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:  # (breaks under no_grad/inference_mode)
        model(torch.randn(1, 3, 224, 224, device=device))
    return fc.get_total_flops()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["fastmetro-s-r50", "fastmetro-l-h64"])
    ap.add_argument("--batches", nargs="+", type=int, default=None, help="default 1 2 4 8 (cpu), 1..64 (cuda)")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", nargs="+", default=None, help="fp32 fp16 bf16 (default fp32; cuda adds fp16 bf16)")
    ap.add_argument("--assets", default=None, help="directory of the SMPL mesh data files")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    batches = args.batches or ([1, 2, 4, 8] if device.type == "cpu" else [1, 4, 8, 16, 32, 64])
    dtypes = args.dtypes or (["fp32"] if device.type == "cpu" else ["fp32", "fp16", "bf16"])
    autocast = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else os.cpu_count()} "
          f"{'' if device.type == 'cuda' else 'cores'}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    mm = matmul_gflops(device)
    print(f"large fp32 matmul on this device: {mm:.0f} GFLOP/s")

    for name in args.variants:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastmetro.UntrainedWeightsWarning)
            model = fastmetro.build_model(name, assets_dir=args.assets, device=device)
        gflop = flops_per_crop(model, device) / 1e9
        official = OfficialWay(model)
        x1 = torch.randn(1, 3, 224, 224, device=device)
        with torch.inference_mode():
            ref, ours = official(x1), model(x1)
        diff = max((ref[k].float() - ours[k].float()).abs().max().item() for k in ref)
        print(f"\n{name}: {gflop:.1f} GFLOP per crop; official-way forward vs ours: max abs diff {diff:.2e}")
        with torch.inference_mode():
            base, base_mem = timed(official, x1, args.seconds, device)
        print(f"  {'official way (batch 1, fp32)':34s} {base:8.2f} crops/s  {base * gflop:7.1f} GFLOP/s "
              f"({base * gflop / mm:4.0%} of matmul)  peak {base_mem:7.0f} MiB   1.00x")
        for dt in dtypes:
            for b in batches:
                x = torch.randn(b, 3, 224, 224, device=device)

                def run(inp, dt=dt, model=model):
                    with torch.inference_mode(), torch.autocast(device.type, dtype=autocast[dt],
                                                                enabled=autocast[dt] is not None):
                        return model(inp)

                try:
                    rate, mem = timed(run, x, args.seconds, device)
                except RuntimeError as e:  # out of memory, unsupported dtype
                    print(f"  ours {dt} batch {b:3d}: {str(e).splitlines()[0]}")
                    break
                print(f"  {f'ours {dt} batch {b}':34s} {rate:8.2f} crops/s  {rate * gflop:7.1f} GFLOP/s "
                      f"({rate * gflop / mm:4.0%} of matmul)  peak {mem:7.0f} MiB  {rate / base:5.2f}x")
        del model, official
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
