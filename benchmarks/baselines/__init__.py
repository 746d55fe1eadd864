"""Peer token mixers for the evidence runs (issue 7): multi-scan multiplicative-decay baselines (Vim / VMamba style)."""
from .multiscan import (
    MultiScanDecayAttention,
    decay_recurrence,
    decay_recurrence_chunked,
    decay_recurrence_naive,
    fla_available,
    multiscan_decay,
    scan_orders,
)

__all__ = [
    "MultiScanDecayAttention",
    "decay_recurrence",
    "decay_recurrence_chunked",
    "decay_recurrence_naive",
    "fla_available",
    "multiscan_decay",
    "scan_orders",
]
