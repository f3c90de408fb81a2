"""FastMETRO body-mesh network, usable on its own: one crop in, mesh out.

    import fastmetro
    model = fastmetro.build_model("fastmetro-s-r50", checkpoint="fastmetro-s-r50-3dpw")
    out = model(fastmetro.normalize_crops(crops))   # crops: (B, 224, 224, 3) uint8 RGB
    out["pred_3d_vertices_fine"]                     # (B, 6890, 3)

Variants: fastmetro-{s,m,l}-{r50,h64}[-smpl]; official checkpoints: `fastmetro-stream weights`.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Optional, Union

import torch

from . import camera
from .assets import AssetError, MeshData, load_mesh_data
from .checkpoints import CHECKPOINTS, CheckpointError, infer_variant, load_into, read_state_dict, resolve
from .model import VARIANTS, FastMETROBody, Variant, get_variant, variant_from_official

__all__ = [
    "build_model", "normalize_crops", "load_mesh_data", "infer_variant", "get_variant",
    "variant_from_official", "FastMETROBody", "Variant", "VARIANTS", "CHECKPOINTS", "MeshData",
    "AssetError", "CheckpointError", "UntrainedWeightsWarning", "JOINT_NAMES", "H36M_JOINT_NAMES",
    "IMAGENET_MEAN", "IMAGENET_STD",
]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The 14 network joints, in output order (the official H36M_J17_TO_J14 selection).
JOINT_NAMES = (
    "R_Ankle", "R_Knee", "R_Hip", "L_Hip", "L_Knee", "L_Ankle", "R_Wrist", "R_Elbow", "R_Shoulder",
    "L_Shoulder", "L_Elbow", "L_Wrist", "Neck", "Head",
)
# The 17 Human3.6M joints regressed from the fine mesh (J_regressor_h36m_correct order).
H36M_JOINT_NAMES = (
    "Pelvis", "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "Torso", "Neck", "Nose",
    "Head", "L_Shoulder", "L_Elbow", "L_Wrist", "R_Shoulder", "R_Elbow", "R_Wrist",
)

UNTRAINED_MESSAGE = (
    "NO FASTMETRO CHECKPOINT LOADED: the network has untrained weights and its meshes are meaningless. "
    "Give a checkpoint (e.g. checkpoint='fastmetro-s-r50-3dpw'; `fastmetro-stream weights` lists them)."
)


class UntrainedWeightsWarning(UserWarning):
    """Raised (as a warning) whenever a model is built without trained weights."""


def build_model(
    variant: Optional[str] = None,
    checkpoint: Union[str, os.PathLike, None] = None,
    assets_dir: Union[str, os.PathLike, None] = None,
    device: Union[str, torch.device] = "cpu",
) -> FastMETROBody:
    """Build a FastMETRO body network in eval mode.

    variant: e.g. "fastmetro-s-r50", "fastmetro-l-h64", "fastmetro-l-h64-smpl". If None, it is the
        checkpoint's (read off its keys), or "fastmetro-s-r50" without a checkpoint.
    checkpoint: a registry name (see fastmetro.CHECKPOINTS; downloaded if missing) or a file path to an
        official state_dict. None builds untrained weights, with a loud warning.
    assets_dir: directory of the SMPL mesh data files (see fastmetro.assets for the lookup order).
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
    model = FastMETROBody(v, load_mesh_data(assets_dir))
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
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=dtype, device=x.device)[:, None, None]
    return (x - mean) / std
