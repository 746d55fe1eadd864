"""Untrusted files for the loader tests: a pickle payload that would create a sentinel file, and file corruption
(imported as ``from tests._untrusted_files import evil_torch_file, truncate``)."""
from __future__ import annotations

import os
from pathlib import Path

import torch


class Payload:
    """Pickles to ``os.system("touch <path>")``: loading it unsafely creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def evil_torch_file(path: Path, sentinel: Path, state: dict | None = None) -> Path:
    torch.save({**(state or {}), "payload": Payload(sentinel)}, path)
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
