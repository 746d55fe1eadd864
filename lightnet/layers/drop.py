"""Stochastic depth (drop path), as timm's ``timm.layers.DropPath`` (the same semantics and random draws)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["DropPath", "drop_path"]


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False,
              scale_by_keep: bool = True) -> torch.Tensor:
    """Zero whole samples of ``x [B, ...]`` with probability ``drop_prob`` while training (one Bernoulli draw per
    sample, ``x.new_empty([B, 1, ...]).bernoulli_(1 - drop_prob)``), scaling the kept ones by ``1 / (1 - drop_prob)``
    when ``scale_by_keep``; the identity in eval mode or for ``drop_prob == 0``."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class DropPath(nn.Module):
    """Drop paths per sample (stochastic depth) in the residual branch: :func:`drop_path` in a module.

    Shapes: ``[B, ...]`` → ``[B, ...]``. No parameters or buffers (state dicts are unaffected).
    """

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"drop_prob={round(self.drop_prob, 3):0.3f}"
