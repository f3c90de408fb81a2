"""The FastMETRO body and hand networks (Cho et al., ECCV 2022), same parameters and outputs as the official code.

    crop (B, 3, 224, 224), ImageNet-normalised
      -> backbone (ResNet-50 or HRNet-W64) -> 2048 x 7 x 7 -> conv 1x1 -> 49 image tokens (512)
      -> transformer 1 (512): encoder over [camera token, image tokens], decoder of 14 joint + 431 vertex
         tokens over the image tokens, vertex-vertex self-attention masked by the mesh adjacency
      -> linear 512 -> 128 for camera, image and decoder tokens -> transformer 2 (128), same shape
      -> camera head (s, tx, ty) and xyz head (14 joints, 431 coarse vertices)
      -> learned upsampling 431 -> 1723, fixed SMPL upsampling 1723 -> 6890
      -> optional SMPL-parameter head on the 1723 vertices: 24 rotations and 10 betas

The hand network (official FastMETRO_Hand_Network, trained on FreiHAND) is the same design on the MANO
hand mesh: 21 joint + 195 vertex tokens, the mask from the 195-vertex MANO adjacency, and the fixed MANO
upsampling 195 -> 778 straight from the coarse vertices (no learned layer, no intermediate mesh). Both
classes share `_FastMETRO` (everything up to the xyz and camera heads); only the mesh side differs.

Everything in forward is batched: no Python loop over the batch, and one crop's output does not depend
on the other crops in its batch. Constant tensors (attention mask, positional encodings, upsampling
weights) are non-persistent buffers, so state_dict() holds exactly the official keys.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .assets import HandMeshData, MeshData
from .backbones import build_backbone
from .transformer import Transformer

NUM_JOINTS = 14
NUM_COARSE = 431
NUM_INTERMEDIATE = 1723
NUM_FINE = 6890
HAND_NUM_JOINTS = 21
HAND_NUM_COARSE = 195
HAND_NUM_FINE = 778

LAYERS = {"s": 1, "m": 2, "l": 3}
BACKBONES = {"r50": "resnet50", "h64": "hrnet-w64"}


@dataclass(frozen=True)
class Variant:
    """One FastMETRO configuration; `name` is what users type (e.g. "fastmetro-l-h64-smpl")."""

    name: str
    size: str  # "s" | "m" | "l": 1, 2 or 3 encoder and decoder layers per transformer
    backbone: str  # "resnet50" | "hrnet-w64"
    smpl_head: bool
    network: str = "body"  # "body" (SMPL mesh) | "hand" (MANO right-hand mesh)

    @property
    def layers(self) -> int:
        return LAYERS[self.size]

    @property
    def official_model_name(self) -> str:  # the official code's --model_name
        return f"FastMETRO-{self.size.upper()}"


VARIANTS: dict[str, Variant] = {
    f"fastmetro-{size}-{bb}{'-smpl' if smpl else ''}": Variant(
        f"fastmetro-{size}-{bb}{'-smpl' if smpl else ''}", size, BACKBONES[bb], smpl
    )
    for size in LAYERS
    for bb in BACKBONES
    for smpl in (False, True)
}
# Hand networks: fastmetro-hand-{s,m,l}-{r50,h64} (the released FreiHAND checkpoint is fastmetro-hand-l-h64).
VARIANTS.update({
    f"fastmetro-hand-{size}-{bb}": Variant(f"fastmetro-hand-{size}-{bb}", size, BACKBONES[bb], False, "hand")
    for size in LAYERS
    for bb in BACKBONES
})


def get_variant(name: str) -> Variant:
    key = name.lower()
    if key not in VARIANTS:
        raise ValueError(f"unknown FastMETRO variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[key]


def variant_from_official(model_name: str, backbone: str, smpl_head: bool, network: str = "body") -> Variant:
    """The variant of the official code's (model_name, arch, use_smpl_param_regressor) for its
    FastMETRO_Body_Network (network "body") or FastMETRO_Hand_Network ("hand")."""
    size = model_name.split("-")[-1].lower()
    bb = {v: k for k, v in BACKBONES.items()}.get(backbone.lower())
    if size not in LAYERS or bb is None or network not in ("body", "hand"):
        raise ValueError(f"no variant for model_name={model_name!r}, backbone={backbone!r}, network={network!r}")
    if network == "hand":
        if smpl_head:
            raise ValueError("the hand network has no SMPL-parameter head")
        return get_variant(f"fastmetro-hand-{size}-{bb}")
    return get_variant(f"fastmetro-{size}-{bb}{'-smpl' if smpl_head else ''}")


def sine_position_encoding(h: int, w: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """DETR's normalised sine encoding of an h x w grid: (h * w, dim), y features then x features."""
    half = dim // 2
    y = torch.arange(1, h + 1, dtype=torch.float32)[:, None].expand(h, w)
    x = torch.arange(1, w + 1, dtype=torch.float32)[None, :].expand(h, w)
    eps, scale = 1e-6, 2 * math.pi
    y = y / (h + eps) * scale
    x = x / (w + eps) * scale
    dim_t = torch.arange(half, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)

    def encode(v: Tensor) -> Tensor:
        p = v[..., None] / dim_t
        return torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2)

    return torch.cat((encode(y), encode(x)), dim=-1).reshape(h * w, dim)


class FCBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.fc_block = nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_block(x)


class FCResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.fc_block = nn.Sequential(
            nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU(inplace=True),
            nn.Linear(cout, cout), nn.BatchNorm1d(cout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.fc_block(x))


class SMPLParameterRegressor(nn.Module):
    """MLP from the 1723 intermediate vertices to 24 joint rotations and 10 shape betas."""

    def __init__(self):
        super().__init__()
        self.regressor = nn.Sequential(
            FCBlock(NUM_INTERMEDIATE * 3, 1024),
            FCResBlock(1024, 1024),
            FCResBlock(1024, 1024),
            nn.Linear(1024, 24 * 3 * 3 + 10),
        )

    def forward(self, vertices: Tensor) -> tuple[Tensor, Tensor]:
        b = vertices.shape[0]
        out = self.regressor(vertices.reshape(b, NUM_INTERMEDIATE * 3))
        raw = out[:, : 24 * 9].reshape(b * 24, 3, 3)
        betas = out[:, 24 * 9 :].contiguous()
        # Nearest rotation by SVD, all matrices at once on the model's device (the official code
        # runs this one matrix at a time on the CPU). Scaling by det(U V^T) = +-1 keeps det +1.
        u, _, vh = torch.linalg.svd(raw.float())
        rot = u @ vh
        rot = rot * torch.linalg.det(rot)[:, None, None]
        return rot.reshape(b, 24, 3, 3).to(vertices.dtype), betas


def upsample_rows(x: Tensor, cols: Tensor, weights: Tensor) -> Tensor:
    """(B, n, 3) -> (B, m, 3) by a fixed sparse matrix stored as a few (column, weight) pairs a row
    (fastmetro.assets.SparseRows): one batched gather instead of a sparse product per sample."""
    return (x[:, cols] * weights.to(x.dtype)[None, :, :, None]).sum(dim=2)


class _FastMETRO(nn.Module):
    """What the body and hand networks share: backbone, image tokens, the two transformers with the
    camera, joint and vertex tokens, and the camera and xyz heads (official parameter names)."""

    def __init__(self, variant: Variant, num_joints: int, adjacency: Tensor, dropout: float = 0.1):
        super().__init__()
        self.variant = variant
        self.num_joints = num_joints
        num_vertices = adjacency.shape[0]
        dims, ff = (512, 128), (2048, 512)
        self.backbone = build_backbone(variant.backbone)
        self.transformer_1 = Transformer(dims[0], 8, variant.layers, ff[0], dropout)
        self.transformer_2 = Transformer(dims[1], 8, variant.layers, ff[1], dropout)
        self.dim_reduce_enc_cam = nn.Linear(dims[0], dims[1])
        self.dim_reduce_enc_img = nn.Linear(dims[0], dims[1])
        self.dim_reduce_dec = nn.Linear(dims[0], dims[1])
        self.cam_token_embed = nn.Embedding(1, dims[0])
        self.joint_token_embed = nn.Embedding(num_joints, dims[0])
        self.vertex_token_embed = nn.Embedding(num_vertices, dims[0])
        self.xyz_regressor = nn.Linear(dims[1], 3)
        self.cam_predictor = nn.Linear(dims[1], 3)
        self.conv_1x1 = nn.Conv2d(2048, dims[0], kernel_size=1)

        # Decoder self-attention: True = may attend. Joints attend to all tokens; every token may
        # attend to the joints; vertex-vertex pairs only along mesh edges (and self loops).
        n = num_joints + num_vertices
        allowed = torch.ones(n, n, dtype=torch.bool)
        allowed[num_joints:, num_joints:] = adjacency
        self.register_buffer("attention_allowed", allowed, persistent=False)
        self.register_buffer("pos_1", sine_position_encoding(7, 7, dims[0])[None], persistent=False)
        self.register_buffer("pos_2", sine_position_encoding(7, 7, dims[1])[None], persistent=False)
        self.pretrained = False  # set by the checkpoint loader

    def regress(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """images (B, 3, 224, 224) -> pred_cam (B, 3), joints (B, J, 3), coarse vertices (B, V, 3)."""
        b = images.shape[0]
        feats = self.backbone(images)
        if feats.shape[-2:] != (7, 7):
            raise ValueError(f"expected 224 x 224 crops (7 x 7 features), got input {tuple(images.shape)}")
        img = self.conv_1x1(feats).flatten(2).transpose(1, 2)  # (B, 49, 512)
        cam = self.cam_token_embed.weight[None].expand(b, -1, -1)
        jv = torch.cat([self.joint_token_embed.weight, self.vertex_token_embed.weight])[None].expand(b, -1, -1)
        pos_1, pos_2 = self.pos_1.to(img.dtype), self.pos_2.to(img.dtype)

        cam_1, img_1, jv_1 = self.transformer_1(img, cam, jv, pos_1, self.attention_allowed)
        cam_2, _, jv_2 = self.transformer_2(
            self.dim_reduce_enc_img(img_1),
            self.dim_reduce_enc_cam(cam_1),
            self.dim_reduce_dec(jv_1),
            pos_2,
            self.attention_allowed,
        )
        pred_cam = self.cam_predictor(cam_2).reshape(b, 3)
        xyz = self.xyz_regressor(jv_2)
        return pred_cam, xyz[:, : self.num_joints], xyz[:, self.num_joints :]

    def extra_repr(self) -> str:
        return f"variant={self.variant.name}, pretrained={self.pretrained}"


class FastMETROBody(_FastMETRO):
    """FastMETRO for body meshes. Build it with fastmetro.build_model(); forward() documents the I/O."""

    def __init__(self, variant: Variant, mesh: MeshData, dropout: float = 0.1):
        if variant.network != "body":
            raise ValueError(f"{variant.name} is a hand network: build it with FastMETROHand")
        super().__init__(variant, NUM_JOINTS, mesh.adjacency_431, dropout)
        self.coarse2intermediate_upsample = nn.Linear(NUM_COARSE, NUM_INTERMEDIATE)
        if variant.smpl_head:
            self.smpl_parameter_regressor = SMPLParameterRegressor()
        self.register_buffer("upsample_cols", mesh.upsample.cols, persistent=False)
        self.register_buffer("upsample_weights", mesh.upsample.weights, persistent=False)
        self.register_buffer(
            "j_regressor_h36m", torch.from_numpy(mesh.j_regressor_h36m), persistent=False
        )

    def upsample_fine(self, intermediate: Tensor) -> Tensor:
        """(B, 1723, 3) -> (B, 6890, 3) with the fixed SMPL upsampling matrix (<= 3 entries a row)."""
        return upsample_rows(intermediate, self.upsample_cols, self.upsample_weights)

    def h36m_joints(self, vertices: Tensor) -> Tensor:
        """The 17 Human3.6M joints (B, 17, 3) regressed from the fine mesh (B, 6890, 3)."""
        return torch.einsum("jv,bvc->bjc", self.j_regressor_h36m.to(vertices.dtype), vertices)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """images: (B, 3, 224, 224) RGB crops, ImageNet mean/std normalised (fastmetro.normalize_crops).

        Returns the official output names:
          pred_cam (B, 3)                      weak-perspective camera s, tx, ty in the crop's [-1, 1]
          pred_3d_joints (B, 14, 3)            network joints (JOINT_NAMES order)
          pred_3d_vertices_coarse (B, 431, 3)
          pred_3d_vertices_intermediate (B, 1723, 3)
          pred_3d_vertices_fine (B, 6890, 3)   the SMPL-topology mesh
          pred_rotmat (B, 24, 3, 3), pred_betas (B, 10)   with the SMPL head only
        """
        pred_cam, joints, coarse = self.regress(images)
        intermediate = self.coarse2intermediate_upsample(coarse.transpose(1, 2)).transpose(1, 2)
        out = {
            "pred_cam": pred_cam,
            "pred_3d_joints": joints,
            "pred_3d_vertices_coarse": coarse,
            "pred_3d_vertices_intermediate": intermediate,
            "pred_3d_vertices_fine": self.upsample_fine(intermediate),
        }
        if self.variant.smpl_head:
            out["pred_rotmat"], out["pred_betas"] = self.smpl_parameter_regressor(intermediate.detach())
        return out


class FastMETROHand(_FastMETRO):
    """FastMETRO for right-hand MANO meshes (official FastMETRO_Hand_Network). Build it with
    fastmetro.build_model("fastmetro-hand-..."); mirror left hands in (fastmetro.hand_crops)."""

    def __init__(self, variant: Variant, mesh: HandMeshData, dropout: float = 0.1):
        if variant.network != "hand":
            raise ValueError(f"{variant.name} is a body network: build it with FastMETROBody")
        super().__init__(variant, HAND_NUM_JOINTS, mesh.adjacency_195, dropout)
        self.register_buffer("upsample_cols", mesh.upsample.cols, persistent=False)
        self.register_buffer("upsample_weights", mesh.upsample.weights, persistent=False)

    def upsample_fine(self, coarse: Tensor) -> Tensor:
        """(B, 195, 3) -> (B, 778, 3) with the fixed MANO upsampling matrix U[0] (<= 3 entries a row)."""
        return upsample_rows(coarse, self.upsample_cols, self.upsample_weights)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """images: (B, 3, 224, 224) right-hand crops, ImageNet mean/std normalised.

        Returns the official output names:
          pred_cam (B, 3)                      weak-perspective camera s, tx, ty in the crop's [-1, 1]
          pred_3d_joints (B, 21, 3)            hand joints (HAND_JOINT_NAMES order)
          pred_3d_vertices_coarse (B, 195, 3)
          pred_3d_vertices_fine (B, 778, 3)    the MANO-topology right-hand mesh
        """
        pred_cam, joints, coarse = self.regress(images)
        return {
            "pred_cam": pred_cam,
            "pred_3d_joints": joints,
            "pred_3d_vertices_coarse": coarse,
            "pred_3d_vertices_fine": self.upsample_fine(coarse),
        }


def network_class(variant: Variant) -> type:
    """FastMETROBody or FastMETROHand, whichever builds this variant."""
    return FastMETROHand if variant.network == "hand" else FastMETROBody
