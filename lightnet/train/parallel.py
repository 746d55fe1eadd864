"""How a launch's processes divide the work: ``world = data × sequence``.

``parallel.sequence = S`` groups the processes into ``world / S`` sequence groups of ``S`` consecutive ranks
(rank = ``data_rank · S + sequence_rank``, so on a multi-GPU host a group's GPUs are neighbours). Every process of a
group is given the same samples and splits each one's tokens (:mod:`lightnet.distributed`); the data sampler, the
global batch and the evaluation count the ``world / S`` groups as the data-parallel world. Gradients are averaged over
the whole world (accelerate's DDP), which is exact: see :mod:`lightnet.distributed.comm`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch.distributed as dist

__all__ = ["ParallelConfig", "ParallelLayout", "parallel_layout"]


@dataclass
class ParallelConfig:
    """``sequence``: processes that split one sample's tokens (sequence parallelism, LASP); 1 = data parallel only.
    The launch's process count must be a multiple of it."""

    sequence: int = 1


@dataclass(frozen=True)
class ParallelLayout:
    """This process's place in ``world = data × sequence`` and its sequence group (None when ``sequence == 1``)."""

    data_rank: int = 0
    data_world: int = 1
    sequence_rank: int = 0
    sequence_world: int = 1
    group: Optional[Any] = None


def parallel_layout(accelerator, parallel: ParallelConfig) -> ParallelLayout:
    """The layout of this launch; creates the sequence process groups (every process calls this, in the same
    order). ``parallel.sequence`` must divide the process count (a ValueError names both otherwise)."""
    seq = parallel.sequence
    world, rank = accelerator.num_processes, accelerator.process_index
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError(f"parallel.sequence must be an integer >= 1, got {seq!r}")
    if world % seq:
        raise ValueError(f"parallel.sequence={seq} does not divide the {world} launched process(es); launch a "
                         f"multiple of {seq} (world = data x sequence)")
    if seq == 1:
        return ParallelLayout(data_rank=rank, data_world=world)
    group = None
    for d in range(world // seq):  # every process creates every group (torch.distributed's rule), keeps its own
        g = dist.new_group(list(range(d * seq, (d + 1) * seq)))
        if d == rank // seq:
            group = g
    return ParallelLayout(rank // seq, world // seq, rank % seq, seq, group)
