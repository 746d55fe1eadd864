"""How the models split a token axis over a sequence-parallel group: contiguous slices in rank order, the first
``N mod R`` ranks one token longer (``torch.tensor_split``'s rule), so every rank knows every slice without talking."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.distributed as dist

from .comm import group_rank, group_size

__all__ = ["shard_bounds", "shard_sizes", "shard_tokens"]


def shard_sizes(total: int, parts: int) -> List[int]:
    """Lengths of the ``parts`` contiguous slices of ``total`` tokens (the first ``total % parts`` one longer)."""
    if parts < 1:
        raise ValueError(f"shard_sizes: parts must be >= 1, got {parts}")
    if total < 0:
        raise ValueError(f"shard_sizes: total must be >= 0, got {total}")
    base, extra = divmod(total, parts)
    return [base + (1 if r < extra else 0) for r in range(parts)]


def shard_bounds(total: int, group: Optional[dist.ProcessGroup] = None) -> Tuple[int, int]:
    """``(start, stop)`` of this rank's slice of ``total`` tokens over ``group`` (None: the default group)."""
    sizes = shard_sizes(total, group_size(group))
    rank = group_rank(group)
    start = sum(sizes[:rank])
    return start, start + sizes[rank]


def shard_tokens(x: torch.Tensor, group: Optional[dist.ProcessGroup] = None, dim: int = 1) -> torch.Tensor:
    """This rank's slice of ``x`` along ``dim`` (a view; autograd sends the slice's gradient back into ``x``)."""
    start, stop = shard_bounds(x.shape[dim], group)
    return x.narrow(dim, start, stop - start)
