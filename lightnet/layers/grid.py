"""Small shared helpers for the positional encodings' grid arguments."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

__all__ = ["reference_grid_or_none", "tracing"]


def tracing() -> bool:
    """True while ``torch.compile`` / ``torch.export`` trace (sizes may be symbolic: no ``int()`` of them and no
    branch on their values), False in eager code and in TorchScript."""
    if torch.jit.is_scripting():
        return False
    else:
        return torch.compiler.is_compiling()


def reference_grid_or_none(owner: str, grid_shape: Optional[Sequence[int]], num_axes: int) -> Optional[Tuple[int, ...]]:
    """``grid_shape`` as a tuple of ``num_axes`` positive ints (None stays None), else a ValueError naming ``owner``."""
    if grid_shape is None:
        return None
    ref = tuple(int(s) for s in grid_shape)
    if len(ref) != num_axes or any(s < 1 for s in ref):
        raise ValueError(f"{owner}: reference_grid must give {num_axes} positive axis lengths, got {tuple(grid_shape)}")
    return ref
