"""Named elementwise activations of the layers (one function rather than a table of callables, so that TorchScript
compiles it)."""
from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["ACTIVATIONS", "apply_activation"]

#: every name :func:`apply_activation` knows (each layer accepts its own subset)
ACTIVATIONS = ("silu", "gelu", "relu", "sigmoid", "elu1", "identity")


def apply_activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """``name`` (one of :data:`ACTIVATIONS`; ``'elu1'`` is ``elu(x) + 1``) applied to ``x`` of any shape."""
    if name == "silu":
        return F.silu(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "relu":
        return F.relu(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "elu1":
        return F.elu(x) + 1
    if name == "identity":
        return x
    raise ValueError("unknown activation '" + name + "'")
