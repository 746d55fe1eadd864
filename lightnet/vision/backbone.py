"""Pieces every LightNet backbone shares (image and video): block-index selection for ``forward_intermediates``,
the ViT-style weight init, and global pooling over all token axes."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from timm.layers import trunc_normal_
from torch import nn

from ..distributed import sequence_max, sequence_mean

__all__ = ["POOL_TYPES", "global_pool_split_tokens", "global_pool_tokens", "take_indices", "vit_init_weights"]

#: the ``global_pool`` choices of the LightNet backbones
POOL_TYPES = ("", "avg", "max", "avgmax")


def take_indices(num_blocks: int, indices: Optional[Union[int, Sequence[int]]]) -> Tuple[List[int], int]:
    """Absolute block indices to return and the largest one.

    ``None`` → all blocks; an int ``n`` → the last ``n`` blocks; a sequence → those indices (negative from the end).
    The selection of timm's ``feature_take_indices``, which is not used: it lives in the private
    ``timm.models._features`` and reports bad indices with an ``AssertionError`` (``torch._assert``) and an empty
    list with ``max()``'s error, where these are ``ValueError`` s naming the model's block count.
    """
    if indices is None:
        indices = num_blocks
    if isinstance(indices, int):
        if not 0 < indices <= num_blocks:
            raise ValueError(f"LightNet: asked for the last {indices} blocks, the model has {num_blocks}")
        taken = list(range(num_blocks - indices, num_blocks))
    else:
        taken = []
        for i in indices:
            j = num_blocks + i if i < 0 else i
            if not 0 <= j < num_blocks:
                raise ValueError(f"LightNet: block index {i} is out of range for {num_blocks} blocks")
            taken.append(j)
        if not taken:
            raise ValueError("LightNet: empty list of block indices")
    return taken, max(taken)


def vit_init_weights(module: nn.Module, name: str = "") -> None:
    """ViT-style init: truncated normal (std 0.02) on every Linear, zero biases. Other modules keep their own init."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def global_pool_tokens(x: torch.Tensor, pool_type: str) -> torch.Tensor:
    """Pool over all token axes: ``[B, *grid, C]`` or ``[B, N, C]`` → ``[B, C]`` (identity for ``''``).

    Written so that TorchScript compiles it (the scripted timm models call it).
    """
    if pool_type == "":
        return x
    x = x.flatten(1, -2)  # [B, N, C]
    if pool_type == "avg":
        return x.mean(dim=1)
    if pool_type == "max":
        return x.amax(dim=1)
    if pool_type == "avgmax":
        return 0.5 * (x.mean(dim=1) + x.amax(dim=1))
    raise ValueError("LightNet: global_pool must be one of '', 'avg', 'max', 'avgmax', got '" + pool_type + "'")


def global_pool_split_tokens(x: torch.Tensor, pool_type: str, group: object) -> torch.Tensor:
    """:func:`global_pool_tokens` of a sequence split over a ``torch.distributed`` group: ``x`` ``[B, n_local, C]``
    holds this rank's tokens; the mean / max are reduced over the group, so every rank returns the pool ``[B, C]`` of
    the whole sequence."""
    if pool_type == "":
        return x
    x = x.flatten(1, -2)
    if pool_type == "avg":
        return sequence_mean(x, group)
    if pool_type == "max":
        return sequence_max(x, group)
    if pool_type == "avgmax":
        return 0.5 * (sequence_mean(x, group) + sequence_max(x, group))
    raise ValueError(f"LightNet: global_pool must be one of {POOL_TYPES}, got {pool_type!r}")
