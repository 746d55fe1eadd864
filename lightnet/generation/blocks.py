"""adaLN-Zero LightNet blocks for the diffusion transformer.

Built from the layer pieces in :mod:`lightnet.layers` (non-causal :class:`~lightnet.layers.LightNetAttention` with
2-D MD-LRPE, :class:`~lightnet.layers.GLU` or a GELU MLP). Conditioning follows DiT: the vector ``c [B, D]``
produces per-block shift/scale/gate triples for the token mixer and the channel mixer; the gate projections are
zero-initialised so every block starts as the identity (adaLN-Zero).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from timm.layers import Mlp
from torch import nn

from ..layers import GLU, LightNetAttention, MixerConfig

__all__ = ["AdaLNFinalLayer", "LightNetDiTBlock", "modulate"]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x [B, N, D] · (1 + scale [B, D]) + shift [B, D]``."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def make_channel_mixer(kind: str, dim: int, mlp_ratio: float) -> nn.Module:
    """``'glu'`` (SiLU-gated, LightNet's default) or ``'mlp'`` (DiT's tanh-GELU MLP)."""
    if kind == "glu":
        return GLU(dim, mlp_ratio, act="silu")
    if kind == "mlp":
        return Mlp(dim, int(dim * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"))
    raise ValueError(f"unknown mlp_type {kind!r}; choose 'glu' or 'mlp'")


class LightNetDiTBlock(nn.Module):
    """``x + g₁ · mixer(mod(norm(x), s₁, c₁))``, then ``x + g₂ · mlp(mod(norm(x), s₂, c₂))``.

    Args:
        dim: width ``D``.
        num_heads: mixer heads.
        mlp_type: ``'glu'`` or ``'mlp'``.
        mlp_ratio: hidden width of the channel mixer over ``D``.
        norm_eps: epsilon of the (affine-free) LayerNorms.
        mixer: the token mixer's options (:class:`~lightnet.layers.MixerConfig`, how the model passes them); without
            it ``attn_kwargs`` are the mixer's keyword arguments.
        num_axes: token-grid axes of the MD-LRPE (2 images ``(h, w)``, 3 video ``(t, h, w)``).
        **attn_kwargs: forwarded to :class:`LightNetAttention` (``lrpe_base``, ``gate_rank``, ``backend``, ...).

    Shapes: ``forward(x [B, N, D], c [B, D], grid_shape (h, w) or (t, h, w))`` → ``[B, N, D]``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_type: str = "glu",
        mlp_ratio: float = 8 / 3,
        norm_eps: float = 1e-6,
        *,
        mixer: Optional[MixerConfig] = None,
        num_axes: int = 2,
        **attn_kwargs: Any,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        if mixer is None:
            self.attn = LightNetAttention(dim, num_heads, causal=False, num_axes=num_axes, **attn_kwargs)
        else:
            self.attn = mixer.build(dim, num_heads, causal=False, num_axes=num_axes, **attn_kwargs)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.mlp = make_channel_mixer(mlp_type, dim, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, grid_shape: Sequence[int]) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1), grid_shape)
        x = x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x


class AdaLNFinalLayer(nn.Module):
    """Final adaLN modulation and linear map to patch pixels: ``[B, N, D]`` → ``[B, N, t·p·p·C_out]`` (``t`` =
    ``temporal_patch_size``, 1 for images)."""

    def __init__(self, dim: int, patch_size: int, out_channels: int, norm_eps: float = 1e-6,
                 temporal_patch_size: int = 1) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, temporal_patch_size * patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))
