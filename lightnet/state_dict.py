"""Compare a checkpoint's state dict with a model's: the one check every loader in the package makes."""
from __future__ import annotations

from typing import Callable, List, Mapping, Tuple

import torch

__all__ = ["diff_state_dicts"]


def diff_state_dicts(
    own: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    include: Callable[[str], bool] = lambda k: True,
    shape_ok: Callable[[str], bool] = lambda k: False,
) -> Tuple[List[str], List[str], List[str]]:
    """``(missing, unexpected, mismatched)`` keys of ``given`` against the model's ``own`` state dict.

    Only keys for which ``include(key)`` holds are compared; ``shape_ok(key)`` exempts a key from the shape check
    (e.g. a tensor the caller adapts). Lists keep the order of ``own`` (missing, mismatched) and ``given`` (unexpected).
    """
    missing = [k for k in own if include(k) and k not in given]
    unexpected = [k for k in given if include(k) and k not in own]
    mismatched = [k for k in own if include(k) and k in given and tuple(given[k].shape) != tuple(own[k].shape)
                  and not shape_ok(k)]
    return missing, unexpected, mismatched
