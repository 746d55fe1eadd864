"""Run a test body in ``world`` CPU processes joined by a gloo process group (init through a file in tmp_path)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, world: int, init_file: str, fn: Callable[..., None], args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # success: leave without the interpreter's teardown, where a still-joinable gloo / intra-op thread can abort the
    # process ("terminate called without an active exception", SIGABRT) after the test has passed
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_in_processes(fn: Callable[..., None], world: int, tmp_path: Path, *args: Any) -> None:
    """``fn(rank, world, *args)`` in ``world`` spawned processes (fn must be a module-level function); a failure in
    any process (an AssertionError included) fails the caller with that process's traceback."""
    init_file = str(Path(tmp_path) / f"dist_init_{os.getpid()}_{world}")
    mp.spawn(_entry, args=(world, init_file, fn, args), nprocs=world, join=True)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖ / ‖b‖`` (``‖a − b‖`` when b is zero)."""
    diff = (a.double() - b.double()).norm().item()
    ref = b.double().norm().item()
    return diff / ref if ref > 0 else diff
