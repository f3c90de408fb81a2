"""FastMETRO body- and hand-mesh networks, usable on their own: one crop in, mesh out.

    import fastmetro
    model = fastmetro.build_model("fastmetro-s-r50", checkpoint="fastmetro-s-r50-3dpw")
    out = model(fastmetro.normalize_crops(crops))   # crops: (B, 224, 224, 3) uint8 RGB
    out["pred_3d_vertices_fine"]                     # (B, 6890, 3)

    hand = fastmetro.build_model(checkpoint="fastmetro-hand-l-h64-freihand")   # right-hand crops
    hand(fastmetro.normalize_crops(crops))["pred_3d_vertices_fine"]             # (B, 778, 3) MANO

Variants: fastmetro-{s,m,l}-{r50,h64}[-smpl] (body), fastmetro-hand-{s,m,l}-{r50,h64} (hand); official
checkpoints: `fastmetro-stream weights`. Hand crops from a body mesh: fastmetro.hand_crops (numpy only).
"""
from __future__ import annotations

import importlib
from typing import Any

# The network and its loaders need torch; they load on first use (PEP 562), so `import fastmetro` for a
# constant (a runtime process that never runs the network) stays cheap.
_LAZY = {
    "build_model": "build", "normalize_crops": "build",
    "AssetError": "assets", "MeshData": "assets", "load_mesh_data": "assets",
    "HandMeshData": "assets", "load_hand_mesh_data": "assets", "FastMETROHand": "model",
    "CHECKPOINTS": "checkpoints", "CheckpointError": "checkpoints", "infer_variant": "checkpoints",
    "load_into": "checkpoints", "read_state_dict": "checkpoints", "resolve": "checkpoints",
    "VARIANTS": "model", "FastMETROBody": "model", "Variant": "model", "get_variant": "model",
    "variant_from_official": "model",
}
_SUBMODULES = ("assets", "backbones", "build", "camera", "checkpoints", "cli", "crops", "engine", "hand_crops", "model",
               "onnx_export", "transformer")

__all__ = [
    "build_model", "normalize_crops", "load_mesh_data", "infer_variant", "get_variant",
    "variant_from_official", "FastMETROBody", "FastMETROHand", "Variant", "VARIANTS", "CHECKPOINTS", "MeshData",
    "HandMeshData", "load_hand_mesh_data", "AssetError", "CheckpointError", "UntrainedWeightsWarning",
    "JOINT_NAMES", "H36M_JOINT_NAMES", "HAND_JOINT_NAMES",
    "IMAGENET_MEAN", "IMAGENET_STD", "UNTRAINED_MESSAGE", "CROP_SIZE",
]

# The network's input: square RGB crops of this side (the crop contract: fastmetro/crops.py). Here, not in
# crops.py, so that the message types can name it without importing OpenCV.
CROP_SIZE = 224

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

# The 21 hand-network joints, in output order (the official FreiHAND / manopth order: the wrist, then
# each finger from its base to its tip).
HAND_JOINT_NAMES = (
    "Wrist", "Thumb_1", "Thumb_2", "Thumb_3", "Thumb_4", "Index_1", "Index_2", "Index_3", "Index_4",
    "Middle_1", "Middle_2", "Middle_3", "Middle_4", "Ring_1", "Ring_2", "Ring_3", "Ring_4",
    "Pinky_1", "Pinky_2", "Pinky_3", "Pinky_4",
)

UNTRAINED_MESSAGE = (
    "NO FASTMETRO CHECKPOINT LOADED: the network has untrained weights and its meshes are meaningless. "
    "Give a checkpoint (e.g. checkpoint='fastmetro-s-r50-3dpw'; `fastmetro-stream weights` lists them)."
)


class UntrainedWeightsWarning(UserWarning):
    """Raised (as a warning) whenever a model is built without trained weights."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
