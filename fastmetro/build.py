"""Building the network: `fastmetro.build_model` and `fastmetro.normalize_crops` (see the package)."""
from __future__ import annotations

import functools
import logging
import os
import warnings
from typing import Optional, Union

import torch

from . import IMAGENET_MEAN, IMAGENET_STD, UNTRAINED_MESSAGE, UntrainedWeightsWarning
from .assets import load_hand_mesh_data, load_mesh_data
from .checkpoints import CheckpointError, infer_variant, load_into, read_state_dict, resolve
from .model import FastMETROBody, FastMETROHand, get_variant

log = logging.getLogger("fastmetro")


def build_model(
    variant: Optional[str] = None,
    checkpoint: Union[str, os.PathLike, None] = None,
    assets_dir: Union[str, os.PathLike, None] = None,
    device: Union[str, torch.device] = "cpu",
) -> Union[FastMETROBody, FastMETROHand]:
    """Build a FastMETRO body or hand network in eval mode.

    variant: e.g. "fastmetro-s-r50", "fastmetro-l-h64", "fastmetro-l-h64-smpl", or a hand network
        "fastmetro-hand-l-h64" (MANO right hand). If None, it is the checkpoint's (read off its keys), or
        "fastmetro-s-r50" without a checkpoint.
    checkpoint: a registry name (see fastmetro.CHECKPOINTS, e.g. "fastmetro-hand-l-h64-freihand";
        downloaded if missing) or a file path to an official state_dict. None builds untrained weights,
        with a loud warning.
    assets_dir: directory of the SMPL (body) or MANO (hand) mesh data files (see fastmetro.assets for
        the lookup order).
    """
    state_dict, source = None, None
    if checkpoint is not None:
        path, entry = resolve(checkpoint)
        state_dict, source = read_state_dict(path), str(path)
        found = infer_variant(state_dict.keys())
        if variant is None:
            variant = found.name
        elif get_variant(variant).name != found.name:
            raise CheckpointError(
                f"checkpoint {path} is a {found.name} checkpoint, but variant {variant!r} was asked for; "
                f"use variant={found.name!r} (or leave the variant out)"
            )
    v = get_variant(variant or "fastmetro-s-r50")
    mesh = load_hand_mesh_data(assets_dir) if v.network == "hand" else load_mesh_data(assets_dir)
    network = FastMETROHand if v.network == "hand" else FastMETROBody
    if state_dict is None:
        # untrained: the same weights every run (seed 0), so runs without a checkpoint can be compared and
        # tests on them repeat; the caller's random state is left as it was
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = network(v, mesh)
    else:
        model = network(v, mesh)
    if state_dict is not None:
        load_into(model, state_dict, source)
        log.info("loaded %s weights from %s", v.name, source)
    else:
        log.warning(UNTRAINED_MESSAGE)
        warnings.warn(UNTRAINED_MESSAGE, UntrainedWeightsWarning, stacklevel=2)
    return model.to(device).eval()


def normalize_crops(crops: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 224, 224, 3) uint8 RGB (any device) -> (B, 3, 224, 224) ImageNet-normalised `dtype`."""
    if crops.dtype != torch.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"expected (B, H, W, 3) uint8 RGB crops, got {tuple(crops.shape)} {crops.dtype}")
    x = crops.permute(0, 3, 1, 2).to(dtype).div_(255.0)
    mean, std = _imagenet_stats(x.device, dtype)
    return (x - mean) / std


@functools.lru_cache(maxsize=16)
def _imagenet_stats(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std as (3, 1, 1) tensors on the device, made once: a copy from the host while a CUDA
    graph is being captured would fail (the engine's warm-up runs make them before any capture)."""
    with torch.inference_mode(False):
        mean = torch.tensor(IMAGENET_MEAN, dtype=dtype, device=device)[:, None, None]
        std = torch.tensor(IMAGENET_STD, dtype=dtype, device=device)[:, None, None]
    return mean, std
