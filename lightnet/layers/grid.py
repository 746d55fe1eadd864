"""Small shared helpers for the positional encodings' grid arguments."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

__all__ = ["reference_grid_or_none"]


def reference_grid_or_none(owner: str, grid_shape: Optional[Sequence[int]], num_axes: int) -> Optional[Tuple[int, ...]]:
    """``grid_shape`` as a tuple of ``num_axes`` positive ints (None stays None), else a ValueError naming ``owner``."""
    if grid_shape is None:
        return None
    ref = tuple(int(s) for s in grid_shape)
    if len(ref) != num_axes or any(s < 1 for s in ref):
        raise ValueError(f"{owner}: reference_grid must give {num_axes} positive axis lengths, got {tuple(grid_shape)}")
    return ref
