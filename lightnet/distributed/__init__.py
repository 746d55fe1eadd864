"""Sequence parallelism (LASP): one sequence split over the ranks of a ``torch.distributed`` process group.

Each rank holds a contiguous slice of the token axis (rank order = sequence order). The recurrence's whole past is the
``[D', E]`` state and ``[D]`` log-normaliser per head, so the ranks exchange states, never tokens
(``docs/design.md`` §6, ``docs/distributed.md``). This package imports only :mod:`lightnet.kernels` and
``torch.distributed``; the layers and models build on it.
"""
from .attention import sequence_parallel_attention
from .comm import all_gather_states, all_reduce_sum, group_rank, group_size, is_sequence_parallel
from .reduce import sequence_length, sequence_max, sequence_mean
from .shard import shard_bounds, shard_sizes, shard_tokens

__all__ = [
    "all_gather_states",
    "all_reduce_sum",
    "group_rank",
    "group_size",
    "is_sequence_parallel",
    "sequence_length",
    "sequence_max",
    "sequence_mean",
    "sequence_parallel_attention",
    "shard_bounds",
    "shard_sizes",
    "shard_tokens",
]
