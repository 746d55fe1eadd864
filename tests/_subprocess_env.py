"""Helpers for tests that start worker processes (torchrun / accelerate launch) from the checkout."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Dict

ROOT = Path(__file__).resolve().parents[1]

# Variables a parent launch may have set that would make the children join the wrong process group.
_LAUNCH_VARS = ("WORLD_SIZE", "LOCAL_RANK", "RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_FSDP")


def free_port() -> int:
    """A TCP port on localhost that is free right now (for ``--master_port`` / ``--main_process_port``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env() -> Dict[str, str]:
    """This environment with the checkout on ``PYTHONPATH``, one OpenMP thread, and no inherited launch variables."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    for k in _LAUNCH_VARS:
        env.pop(k, None)
    return env
