"""Differentiable collectives on ``torch.distributed`` (the true adjoints: each rank's output feeds its own loss term).

* :func:`all_reduce_sum` — forward: sum over the group; backward: sum of the incoming gradients over the group.
* :func:`all_gather_states` — forward: every rank's tensor stacked in rank order ``[R, ...]``; backward: the gradients
  of every rank summed, each rank keeping the part of its own tensor.

With these adjoints the gradient a rank computes is that of ``Σ_r loss_r``; when every rank returns the same
(replicated) loss, the parameter gradients summed over the group are ``R`` times the single-process gradient, so
averaging them (what ``DistributedDataParallel`` does over its world) gives it exactly.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.distributed as dist

__all__ = ["all_gather_states", "all_reduce_sum", "group_rank", "group_size", "is_sequence_parallel"]


def _require_initialized(owner: str) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{owner}: torch.distributed is not initialised (call dist.init_process_group first, or "
                           "launch with torchrun / accelerate launch)")


def group_size(group: Optional[dist.ProcessGroup] = None) -> int:
    """Ranks in ``group`` (None: the default group); raises if torch.distributed is not initialised."""
    _require_initialized("lightnet.distributed")
    return dist.get_world_size(group)


def group_rank(group: Optional[dist.ProcessGroup] = None) -> int:
    """This process's rank inside ``group`` (None: the default group)."""
    _require_initialized("lightnet.distributed")
    return dist.get_rank(group)


def is_sequence_parallel(group: Optional[dist.ProcessGroup]) -> bool:
    """Whether a sequence-parallel ``group`` (None = not sequence parallel here) splits the sequence over > 1 rank."""
    return group is not None and group_size(group) > 1


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group: Optional[dist.ProcessGroup]) -> torch.Tensor:
        ctx.group = group
        out = x.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g = grad.contiguous().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)
        return g, None


def all_reduce_sum(x: torch.Tensor, group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """``Σ_r x_r`` over ``group`` on every rank, differentiable (backward: the gradients summed over the group)."""
    _require_initialized("all_reduce_sum")
    return _AllReduceSum.apply(x, group)


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group: Optional[dist.ProcessGroup]) -> torch.Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        x = x.contiguous()
        parts: List[torch.Tensor] = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x, group=group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g = grad.contiguous().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)
        return g[ctx.rank], None


def all_gather_states(x: torch.Tensor, group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """Every rank's ``x`` (same shape on all ranks) stacked in rank order: ``[R, *x.shape]``, differentiable."""
    _require_initialized("all_gather_states")
    return _AllGather.apply(x, group)
