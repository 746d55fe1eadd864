"""Pieces every LightNet backbone shares (image and video): block-index selection for ``forward_intermediates``,
the ViT-style weight init, global pooling over all token axes, and sequence parallelism
(:class:`SequenceParallelBackbone`)."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from timm.layers import trunc_normal_
from torch import nn

from ..distributed import is_sequence_parallel, sequence_max, sequence_mean, shard_tokens
from ..layers import set_sequence_parallel_group as _set_mixers_group

__all__ = [
    "POOL_TYPES",
    "SequenceParallelBackbone",
    "global_pool_split_tokens",
    "global_pool_tokens",
    "take_indices",
    "vit_init_weights",
]

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


class SequenceParallelBackbone:
    """Sequence parallelism of an isotropic LightNet classifier (image or video), mixed into the ``nn.Module``.

    The model embeds and applies MD-TPE on the full token grid (a global convolution) on every rank, then keeps this
    rank's contiguous slice of the row-major tokens (:meth:`_shard`, :func:`lightnet.distributed.shard_tokens`) for
    the blocks, which are given the global grid; :meth:`pool` reduces over the group. The model sets
    ``self.sequence_parallel_group = None`` in its ``__init__`` and keeps every split path behind
    ``if not torch.jit.is_scripting():`` (the helpers here are eager only), so it still scripts.
    """

    @torch.jit.ignore
    def set_sequence_parallel_group(self, group: Optional[Any]) -> None:
        """Split every input's tokens over the ranks of ``group`` (a ``torch.distributed`` process group; None: no
        split, the default). Every rank of the group is given the same inputs; the embedding and MD-TPE run on the
        full token grid, then each rank keeps its contiguous slice of the row-major tokens for the blocks, whose
        mixers exchange only their states. ``forward_features`` then returns this rank's tokens ``[B, n_local, C]``
        and the pooling reduces over the group, so every rank returns the full logits. Averaging the parameter
        gradients over the group (``DistributedDataParallel`` does) gives the unsplit model's gradients.
        ``docs/distributed.md``."""
        self.sequence_parallel_group = group
        _set_mixers_group(self, group)

    @torch.jit.unused
    def _split(self) -> bool:
        """Whether this model runs with a sequence-parallel group of more than one rank (eager only)."""
        return is_sequence_parallel(self.sequence_parallel_group)

    @torch.jit.unused
    def _shard(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens ``[B, N, C]`` → this rank's slice ``[B, n_local, C]`` (eager only)."""
        return shard_tokens(x, self.sequence_parallel_group)

    @torch.jit.unused
    def _refuse_split(self, owner: str, what: str) -> None:
        """A ValueError when the model is split (``what``: the method that needs the whole sequence on one rank)."""
        if self._split():
            raise ValueError(f"{owner}: {what} returns full feature maps; it does not run with a sequence-parallel "
                             "group (set_sequence_parallel_group(None) first)")

    def pool(self, x: torch.Tensor, pool_type: Optional[str] = None) -> torch.Tensor:
        """Global pool over all token axes: ``[B, *grid, C]`` or ``[B, N, C]`` → ``[B, C]`` (identity for ``''``);
        split (eager only), over the whole sequence of the group: every rank returns the same ``[B, C]``."""
        pool_type = self.global_pool if pool_type is None else pool_type
        if not torch.jit.is_scripting():
            if self._split():
                return global_pool_split_tokens(x, pool_type, self.sequence_parallel_group)
        return global_pool_tokens(x, pool_type)
