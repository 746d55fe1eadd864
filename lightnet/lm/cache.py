"""Recurrent decoding cache of a causal LightNet LM: constant size in the context length."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Union

import torch

from ..kernels import State

__all__ = ["LightNetCache"]


@dataclass
class LightNetCache:
    """Everything a causal LightNet LM needs to continue a sequence.

    Attributes:
        layer_states: one ``(S [B, H, 2D, D], z [B, H, D])`` fp32 pair per block (``2D`` with LRPE).
        tpe_state: causal TPE state ``[B, C, J]`` fp32 (``None`` without TPE).
        seen_tokens: positions consumed so far, left padding included; the LRPE position of the next token (an int;
            a 0-dim long tensor on the device inside :class:`~lightnet.lm.graphs.GraphedDecoder`'s captured step).

    The size depends on batch, width and depth only — never on ``seen_tokens``. Left padding needs no bookkeeping
    here: padded positions add nothing to any state, and LRPE/TPE depend on relative offsets only, so a row that
    starts ``p`` positions late behaves exactly like the same row alone.
    """

    layer_states: List[Optional[State]] = field(default_factory=list)
    tpe_state: Optional[torch.Tensor] = None
    seen_tokens: Union[int, torch.Tensor] = 0

    def tensors(self) -> List[torch.Tensor]:
        out = [t for st in self.layer_states if st is not None for t in st]
        if self.tpe_state is not None:
            out.append(self.tpe_state)
        return out

    def memory_bytes(self) -> int:
        """Bytes held by the cache tensors (constant in ``seen_tokens``)."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    @property
    def batch_size(self) -> int:
        ts = self.tensors()
        return ts[0].shape[0] if ts else 0

    def select(self, index: torch.Tensor) -> "LightNetCache":
        """Keep (or reorder) batch rows: ``index`` is a 1-D long tensor of row indices."""
        states = [None if st is None else (st[0][index], st[1][index]) for st in self.layer_states]
        tpe = None if self.tpe_state is None else self.tpe_state[index]
        return LightNetCache(states, tpe, self.seen_tokens)
