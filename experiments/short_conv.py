"""A short causal convolution on q / k / v (the idea of fla's ``conv_size=4`` option), for the LM ablation.

:func:`add_short_conv` wraps every mixer's ``qkv`` projection of a model so that its output ``[B, N, 3C]`` goes
through a depthwise causal convolution over the tokens (kernel ``K``, one filter per channel of q, k and v, i.e. a
separate short convolution on each of q, k and v) before the mixer splits it. Training / full-sequence forward only:
the decoder of :class:`lightnet.lm.LightNetForCausalLM` keeps no convolution state, so a model changed here is for
measuring bits per byte, not for ``generate``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CausalShortConv", "add_short_conv"]


class CausalShortConv(nn.Module):
    """``x [B, N, C]`` → ``[B, N, C]``: ``x_t + Σ_{i<K} w_{c,i} x_{t−i}`` per channel (zeros before the first
    token). The residual keeps the identity one weight away at any initialisation; there is no activation."""

    def __init__(self, channels: int, kernel_size: int = 4) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"CausalShortConv: kernel_size must be >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.conv.in_channels:
            raise ValueError(f"CausalShortConv: expected [B, N, {self.conv.in_channels}], got {tuple(x.shape)}")
        h = F.pad(x.transpose(1, 2), (self.kernel_size - 1, 0))  # [B, C, K − 1 + N]
        return x + self.conv(h).transpose(1, 2)


def add_short_conv(model: nn.Module, kernel_size: int = 4) -> int:
    """Follow every mixer's ``qkv`` linear (a module with a ``qkv`` ``nn.Linear``) with a
    :class:`CausalShortConv` over its output channels, in place; returns how many mixers were changed."""
    changed = 0
    for module in list(model.modules()):
        qkv = getattr(module, "qkv", None)
        if isinstance(qkv, nn.Linear):
            conv = CausalShortConv(qkv.out_features, kernel_size).to(qkv.weight.device, qkv.weight.dtype)
            module.qkv = nn.Sequential(qkv, conv)
            changed += 1
    if not changed:
        raise ValueError("add_short_conv: the model has no mixer with a qkv projection")
    return changed
