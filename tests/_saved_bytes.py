"""What autograd keeps for the backward: shared by the tests that count it (imported as ``_saved_bytes`` from the
tests folder, also by the interpreter worker subprocesses, which run with that folder on ``sys.path``)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import torch


def saved_bytes(fn: Callable[[], Any]) -> Tuple[Any, int]:
    """``(fn(), bytes)``: the result of ``fn()`` and the bytes of the distinct storages autograd saved while it ran
    (each storage once, parameters included)."""
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())
