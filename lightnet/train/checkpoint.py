"""Crash-safe checkpoints: atomic writes, safetensors weights, safe loading, a ``latest`` pointer, keep-last-N.

Layout of a checkpoint root (``<run_dir>/checkpoints``)::

    checkpoints/
      latest                  # text file: name of the newest complete checkpoint ("step_00000120")
      step_00000100/
        model.safetensors     # model weights (safetensors: no code can hide in it)
        training_state.pt     # optimizer/scheduler/counters/RNG; loaded with torch.load(weights_only=True)
        rng_rank0.pt ...      # per-process RNG states (multi-process runs write one each)
        config.yaml           # the run's config, so `lightnet eval` can rebuild the model
        meta.json             # {"step": ..., "epoch": ..., "complete": true}
      step_00000120/ ...

Atomicity: a checkpoint is written into ``step_X.tmp`` (each file written to a temp name, fsync'ed,
then ``os.replace``'d), the folder is fsync'ed and renamed to ``step_X`` in one ``os.replace``, and only
then is ``latest`` rewritten (temp file + fsync + ``os.replace``). A kill at any instant therefore leaves
``latest`` pointing at a complete checkpoint (or absent); half-written ``*.tmp`` folders are ignored and
cleaned up by the next save. :func:`find_latest` also falls back to the newest complete folder if the
pointer is missing.

Loading never unpickles arbitrary objects: weights come from safetensors and everything else through
``torch.load(weights_only=True)``; a pickle that carries code is refused with :class:`CheckpointError`.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..state_dict import diff_state_dicts

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "atomic_write",
    "atomic_write_text",
    "find_latest",
    "load_model_weights",
    "load_safetensors",
    "safe_torch_load",
    "save_safetensors",
    "atomic_torch_save",
]

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
META_FILE = "meta.json"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, unsafe, or does not fit the model."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write_fn: Callable[[Path], None]) -> None:
    """Write ``path`` atomically: ``write_fn(tmp_path)`` writes a temp file, which is fsync'ed and renamed.

    Readers see either the old file or the complete new one, never a partial write.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``."""
    atomic_write(path, lambda p: p.write_text(text))


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path,
                     metadata: dict[str, str] | None = None) -> None:
    """Atomically save a flat ``{name: tensor}`` dict as safetensors (tensors are copied to CPU, contiguous).

    Tensors that share storage (tied weights) are stored once per name as separate copies.
    """
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(flat, str(p), metadata=metadata))


def load_safetensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file, with :class:`CheckpointError` for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read safetensors file {path} (truncated or not safetensors?): {e}") from e


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Atomically ``torch.save`` an object made only of tensors and plain Python containers/scalars."""
    atomic_write(path, lambda p: torch.save(obj, p))


def safe_torch_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with clear errors.

    A pickle that would construct arbitrary objects or run code (``__reduce__`` payloads, custom
    classes) is refused: :class:`CheckpointError` says so. Truncated files also raise ``CheckpointError``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain tensor/state-dict file (weights_only=True rejected it; "
            f"it may contain code or arbitrary Python objects). Only safetensors or weights-only torch files "
            f"are accepted. Details: {str(e).splitlines()[0] if str(e) else e!r}"
        ) from e
    except Exception as e:  # truncated zip, foreign bytes, ...: torch raises many exception types here
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or not a torch file?): {e}") from e


def load_model_weights(model: torch.nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load ``model.safetensors`` (or a weights-only ``.pt``/``.pth`` state dict) into ``model``.

    Raises :class:`CheckpointError` naming missing/unexpected keys and shape mismatches, e.g. when the
    checkpoint belongs to another architecture or another size.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if path.suffix == ".safetensors":
        state = load_safetensors(path)
    else:
        state = safe_torch_load(path)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path} does not hold a state dict of tensors")
    own = model.state_dict()
    missing, unexpected, mismatched = diff_state_dicts(own, state)
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched]
    if mismatched or (strict and (missing or unexpected)):
        def show(xs: list[str]) -> str:
            return ", ".join(xs[:6]) + (f", ... ({len(xs)} in all)" if len(xs) > 6 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches: {show(mismatched)}")
        raise CheckpointError(f"checkpoint {path} does not fit model {type(model).__name__} "
                              f"(another architecture or size?); " + "; ".join(parts))
    model.load_state_dict(state, strict=strict)


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    out = []
    if root.is_dir():
        for p in root.iterdir():
            m = _STEP_DIR.match(p.name)
            if m and p.is_dir() and _is_complete(p):
                out.append((int(m.group(1)), p))
    return sorted(out)


def _is_complete(ckpt: Path) -> bool:
    try:
        return bool(json.loads((ckpt / META_FILE).read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def find_latest(root: str | Path) -> Path | None:
    """Newest complete checkpoint folder under ``root`` (via ``latest``, else by step number), or None.

    ``root`` may also be a run folder (then ``root/checkpoints`` is searched).
    """
    root = Path(root)
    if (root / "checkpoints").is_dir() and not (root / LATEST).exists():
        root = root / "checkpoints"
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_text().strip()
        cand = root / name
        if _STEP_DIR.match(name) and cand.is_dir() and _is_complete(cand):
            return cand
    dirs = _step_dirs(root)
    return dirs[-1][1] if dirs else None


class CheckpointManager:
    """Writes ``step_XXXXXXXX`` checkpoint folders under ``root`` atomically and keeps the last ``keep_last``.

    Multi-process use: every process calls :meth:`begin` / writes its own files / :meth:`commit`
    with ``is_main`` and a ``barrier`` callable (e.g. ``accelerator.wait_for_everyone``); only the main
    process renames the folder, updates ``latest`` and prunes.
    """

    def __init__(self, root: str | Path, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.root = Path(root)
        self.keep_last = keep_last

    def tmp_dir(self, step: int) -> Path:
        return self.root / f"step_{step:08d}.tmp"

    def final_dir(self, step: int) -> Path:
        return self.root / f"step_{step:08d}"

    def begin(self, step: int, is_main: bool = True) -> Path:
        """Create (main process) a fresh temp folder for ``step``; returns its path."""
        tmp = self.tmp_dir(step)
        if is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob("*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
        return tmp

    def commit(self, step: int, meta: dict[str, Any], is_main: bool = True) -> Path:
        """Mark the temp folder complete, rename it into place, repoint ``latest``, prune old ones."""
        tmp, final = self.tmp_dir(step), self.final_dir(step)
        if not is_main:
            return final
        atomic_write_text(tmp / META_FILE, json.dumps({**meta, "step": step, "complete": True}, indent=1))
        for f in tmp.iterdir():
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. end of training right after a periodic save)
            old = final.with_name(final.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(self.root)
        atomic_write_text(self.root / LATEST, final.name + "\n")
        self._prune(keep=final)
        return final

    def _prune(self, keep: Path) -> None:
        dirs = [p for _, p in _step_dirs(self.root)]
        for p in dirs[: max(0, len(dirs) - self.keep_last)]:
            if p != keep:
                shutil.rmtree(p, ignore_errors=True)

    def latest(self) -> Path | None:
        return find_latest(self.root)
