"""FastMETRO's encoder-decoder transformer (pre-norm, DETR-style), batch-first.

Parameter names and shapes are those of the official implementation (nn.MultiheadAttention's
in_proj_weight / out_proj, linear1/linear2, norm1..3), so official state_dicts load unchanged. The
computation is the same, written batch-first with PyTorch's fused scaled_dot_product_attention
instead of nn.MultiheadAttention's sequence-first path.

Official semantics kept exactly:
- encoder layer: the positional encoding is added to queries and keys of the image tokens, not to the
  camera token (token 0), and never to the values;
- decoder layer: its query positional encoding is all zeros in FastMETRO (so omitted); cross-attention
  keys are memory + pos, values are memory;
- a final LayerNorm after the encoder stack and after the decoder stack.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _attention(
    attn: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None
) -> Tensor:
    """Multi-head attention with attn's weights; q (B, Lq, D), k/v (B, Lk, D); mask: True = may attend."""
    b, lq, d = q.shape
    lk = k.shape[1]
    h = attn.num_heads
    w, bias = attn.in_proj_weight, attn.in_proj_bias
    if q is k and k is v:
        qp, kp, vp = F.linear(q, w, bias).chunk(3, dim=-1)
    elif q is k:
        qp, kp = F.linear(q, w[: 2 * d], bias[: 2 * d]).chunk(2, dim=-1)
        vp = F.linear(v, w[2 * d :], bias[2 * d :])
    else:
        qp = F.linear(q, w[:d], bias[:d])
        kp = F.linear(k, w[d : 2 * d], bias[d : 2 * d])
        vp = F.linear(v, w[2 * d :], bias[2 * d :])
    qp = qp.view(b, lq, h, d // h).transpose(1, 2)
    kp = kp.view(b, lk, h, d // h).transpose(1, 2)
    vp = vp.view(b, lk, h, d // h).transpose(1, 2)
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, dropout_p=dropout)
    out = out.transpose(1, 2).reshape(b, lq, d)
    return attn.out_proj(out)


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, nhead: int, ff_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nhead, dropout=dropout)
        self.linear1 = nn.Linear(dim, ff_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ff_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        # src: (B, 1 + HW, D) camera token first; pos: (1 or B, HW, D) for the image tokens only
        x = self.norm1(src)
        qk = torch.cat([x[:, :1], x[:, 1:] + pos], dim=1)
        src = src + self.dropout1(_attention(self.self_attn, qk, qk, x))
        x = self.norm2(src)
        return src + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x)))))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, nhead: int, ff_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(dim, nhead, dropout=dropout)
        self.linear1 = nn.Linear(dim, ff_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ff_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, self_mask: Tensor) -> Tensor:
        x = self.norm1(tgt)
        tgt = tgt + self.dropout1(_attention(self.self_attn, x, x, x, self_mask))
        x = self.norm2(tgt)
        tgt = tgt + self.dropout2(_attention(self.multihead_attn, x, memory + pos, memory))
        x = self.norm3(tgt)
        return tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x)))))


class Encoder(nn.Module):
    def __init__(self, layers: list[nn.Module], dim: int):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, pos)
        return self.norm(x)


class Decoder(nn.Module):
    def __init__(self, layers: list[nn.Module], dim: int):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, memory: Tensor, pos: Tensor, self_mask: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, memory, pos, self_mask)
        return self.norm(x)


class Transformer(nn.Module):
    """Encoder over [camera token, image tokens]; decoder of joint+vertex tokens over the image tokens."""

    def __init__(self, dim: int, nhead: int, layers: int, ff_dim: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = Encoder([EncoderLayer(dim, nhead, ff_dim, dropout) for _ in range(layers)], dim)
        self.decoder = Decoder([DecoderLayer(dim, nhead, ff_dim, dropout) for _ in range(layers)], dim)
        for p in self.parameters():  # the official initialisation (matters only for training)
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self, img: Tensor, cam: Tensor, jv: Tensor, pos: Tensor, self_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """img (B, HW, D), cam (B, 1, D), jv (B, J+V, D), pos (1, HW, D), self_mask (J+V, J+V) bool
        (True = may attend). Returns camera features (B, 1, D), encoded image (B, HW, D), jv (B, J+V, D)."""
        enc = self.encoder(torch.cat([cam, img], dim=1), pos)
        cam_out, img_out = enc[:, :1], enc[:, 1:]
        jv_out = self.decoder(jv, img_out, pos, self_mask)
        return cam_out, img_out, jv_out
