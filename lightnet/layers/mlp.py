"""Channel mixer: gated linear unit."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["GLU"]

_ACTS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu, "sigmoid": torch.sigmoid}


class GLU(nn.Module):
    """``fc2(act(gate(x)) * up(x))`` with one fused input projection.

    Shapes: ``[..., dim]`` → ``[..., dim]``; hidden width ``int(dim * mlp_ratio)``.
    """

    def __init__(self, dim: int, mlp_ratio: float = 8 / 3, act: str = "silu", bias: bool = False, drop: float = 0.0) -> None:
        super().__init__()
        if act not in _ACTS:
            raise ValueError(f"GLU: unknown activation {act!r}; choose one of {sorted(_ACTS)}")
        hidden = max(1, int(dim * mlp_ratio))
        self.hidden_features = hidden
        self.act_name = act
        self.fc1 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.fc1.in_features:
            raise ValueError(f"GLU: expected [..., {self.fc1.in_features}], got {tuple(x.shape)}")
        up, gate = self.fc1(x).chunk(2, dim=-1)
        return self.drop(self.fc2(self.drop(_ACTS[self.act_name](gate) * up)))
