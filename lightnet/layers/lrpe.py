"""MD-LRPE: multi-dimensional linearised relative positional encoding (cosine form).

Each head's ``D`` key channels are split into one group per grid axis. Channel ``c`` of group ``a`` rotates with
angle ``θ_{n,c} = p_a(n) · ω_c`` where ``p_a(n)`` is token ``n``'s coordinate along axis ``a`` and
``ω_c = base^(−j/g)`` (``j`` the channel's index inside its group of size ``g``). The cosine form maps a vector ``x``
to ``[x ⊙ cos θ_n, x ⊙ sin θ_n]`` (width ``2D``), so that

    q̄_mᵀ k̄_n = Σ_c q_{m,c} k_{n,c} cos(θ_{m,c} − θ_{n,c})

depends only on the relative offset of the two tokens on every axis (translation invariant). Leading prefix tokens
(class or condition tokens) get ``θ = 0``; channels left over when ``D`` is not divisible by the axis count also get
``θ = 0`` (they carry no position).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["MDLRPE", "grid_coordinates"]


def grid_coordinates(grid_shape: Sequence[int], device: Optional[torch.device] = None, offset: int = 0) -> torch.Tensor:
    """Row-major integer coordinates of every cell of ``grid_shape``: ``[prod(grid), len(grid)]`` (fp32).

    ``offset`` shifts the first axis (used by 1-D causal decoding, where token ``t`` sits at ``offset + t``).
    """
    axes = [torch.arange(s, device=device, dtype=torch.float32) for s in grid_shape]
    axes[0] = axes[0] + offset
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


class MDLRPE(nn.Module):
    """Multi-dimensional LRPE angles and their application.

    Args:
        head_dim: channels per head ``D``.
        num_axes: grid dimensionality (1 text, 2 images, 3 video).
        base: frequency base (``ω = base^(−j/g)``).
        num_prefix_tokens: leading tokens left unencoded.
        learnable: learn the per-channel frequencies (initialised to the fixed schedule).
    """

    def __init__(
        self,
        head_dim: int,
        num_axes: int = 1,
        base: float = 10000.0,
        num_prefix_tokens: int = 0,
        learnable: bool = False,
    ) -> None:
        super().__init__()
        if num_axes < 1:
            raise ValueError(f"MDLRPE: num_axes must be >= 1, got {num_axes}")
        if head_dim < num_axes:
            raise ValueError(f"MDLRPE: head_dim {head_dim} is smaller than num_axes {num_axes}")
        self.head_dim = head_dim
        self.num_axes = num_axes
        self.base = base
        self.num_prefix_tokens = num_prefix_tokens
        group = head_dim // num_axes
        j = torch.arange(group, dtype=torch.float32)
        omega = base ** (-j / group)  # [g]
        freqs = torch.zeros(num_axes, head_dim)  # [A, D]: channel c uses axis a iff freqs[a, c] != 0
        for a in range(num_axes):
            freqs[a, a * group : (a + 1) * group] = omega
        if learnable:
            self.freqs = nn.Parameter(freqs)
        else:
            self.register_buffer("freqs", freqs, persistent=False)
        self.learnable = learnable

    def init_non_persistent_buffers(self) -> None:
        """Recreate the fixed frequency table (timm's meta-device init hook)."""
        if not self.learnable:
            fresh = MDLRPE(self.head_dim, self.num_axes, self.base, self.num_prefix_tokens)
            self.freqs = fresh.freqs.to(self.freqs.device)

    def angles(
        self,
        grid_shape: Sequence[int],
        num_prefix_tokens: Optional[int] = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """Angle table ``θ``: ``[P + prod(grid_shape), D]`` fp32 (prefix rows are zero)."""
        grid_shape = tuple(int(s) for s in grid_shape)
        if len(grid_shape) != self.num_axes:
            raise ValueError(f"MDLRPE: grid_shape {grid_shape} has {len(grid_shape)} axes, expected {self.num_axes}")
        if any(s < 0 for s in grid_shape):
            raise ValueError(f"MDLRPE: grid_shape {grid_shape} has a negative size")
        P = self.num_prefix_tokens if num_prefix_tokens is None else num_prefix_tokens
        coords = grid_coordinates(grid_shape, device=self.freqs.device, offset=offset)  # [M, A]
        theta = coords @ self.freqs.float()  # [M, D]
        if P:
            theta = torch.cat([theta.new_zeros(P, self.head_dim), theta], dim=0)
        return theta

    def forward(self, x: torch.Tensor, grid_shape: Sequence[int], num_prefix_tokens: Optional[int] = None) -> torch.Tensor:
        """Apply the cosine map: ``[B, N, H, D]`` → ``[B, N, H, 2D]``."""
        if x.dim() != 4 or x.shape[-1] != self.head_dim:
            raise ValueError(f"MDLRPE: expected [B, N, H, {self.head_dim}], got {tuple(x.shape)}")
        theta = self.angles(grid_shape, num_prefix_tokens)
        if theta.shape[0] != x.shape[1]:
            raise ValueError(f"MDLRPE: grid {tuple(grid_shape)} plus prefix gives {theta.shape[0]} tokens, input has {x.shape[1]}")
        t = theta[None, :, None, :]
        return torch.cat([x * torch.cos(t), x * torch.sin(t)], dim=-1)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, num_axes={self.num_axes}, base={self.base}, prefix={self.num_prefix_tokens}"
