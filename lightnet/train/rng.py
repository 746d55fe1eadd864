"""Random-state handling for reproducible, resumable training.

* :func:`seed_everything` seeds Python, NumPy and torch (CPU and CUDA).
* :func:`capture_rng_state` / :func:`restore_rng_state` snapshot all of them as a dict of tensors and
  plain Python values, safe to store with ``torch.save`` and load with ``torch.load(weights_only=True)``.
* :func:`isolated_seed` runs a block (e.g. one sample's augmentation) under its own seed and restores
  the outer random state afterwards, so data augmentation depends only on ``(seed, epoch, index)`` and
  not on how many samples were drawn before: skipping already-seen batches on resume, or loading with
  several workers, gives the same augmented samples.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch

__all__ = ["capture_rng_state", "derive_seed", "isolated_seed", "restore_rng_state", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (SplitMix64-style), stable across runs and platforms."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
        x = (x * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x & 0x7FFFFFFFFFFFFFFF


def capture_rng_state() -> dict[str, Any]:
    """Snapshot of the Python, NumPy, torch CPU and (if present) CUDA generators."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


@contextlib.contextmanager
def isolated_seed(seed: int) -> Iterator[None]:
    """Run the block with Python/NumPy/torch-CPU seeded from ``seed``; restore the outer state afterwards (a state
    save/restore of three generators per call)."""
    py = random.getstate()
    npst = np.random.get_state()
    th = torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    # CPU generator only: torch.manual_seed would also queue lazy CUDA seeding, which records a
    # traceback on every call (milliseconds per sample); augmentation runs on the CPU anyway.
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npst)
        torch.set_rng_state(th)
