"""Reductions over a token axis split across a sequence-parallel group (the models' global pooling), differentiable
with the adjoints of :mod:`lightnet.distributed.comm`."""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from .comm import all_gather_states, all_reduce_sum

__all__ = ["sequence_length", "sequence_max", "sequence_mean"]


def sequence_length(n_local: int, group: Optional[dist.ProcessGroup] = None, device=None) -> int:
    """Tokens over the whole group: the sum of every rank's ``n_local`` (one all-reduce of one integer)."""
    t = torch.tensor([n_local], dtype=torch.int64, device=device)
    dist.all_reduce(t, group=group)
    return int(t.item())


def sequence_mean(x: torch.Tensor, group: Optional[dist.ProcessGroup] = None,
                  total: Optional[int] = None) -> torch.Tensor:
    """Mean over the whole split token axis: ``x [B, n, C]`` (this rank's slice) → ``[B, C]`` on every rank (one
    all-reduce of ``B·C`` floats; ``total``: the global token count, counted with :func:`sequence_length` if None)."""
    if total is None:
        total = sequence_length(x.shape[1], group, x.device)
    if total < 1:
        raise ValueError(f"sequence_mean: total must be >= 1 token, got {total}")
    return all_reduce_sum(x.sum(dim=1), group) / total


def sequence_max(x: torch.Tensor, group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """Max over the whole split token axis: ``x [B, n, C]`` → ``[B, C]`` on every rank (an all-gather of the local
    maxima, ``R·B·C`` floats; an empty slice contributes ``−inf``)."""
    if x.shape[1] > 0:
        local = x.amax(dim=1)
    else:
        local = x.sum(dim=1) * 0 + float("-inf")  # still tied to x, so this rank's backward joins the gather
    return all_gather_states(local, group).amax(dim=0)
