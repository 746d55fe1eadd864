"""Resolve a pretrained location: a local folder, or a Hugging Face Hub repo id (``"org/name"``).

Hub ids go through ``huggingface_hub.snapshot_download``, so the usual cache, ``HF_HUB_OFFLINE=1`` and
``local_files_only=True`` apply; nothing in this library downloads unless a user passes a hub id.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence, Union

__all__ = ["resolve_pretrained_dir", "looks_like_hub_id"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(name: str) -> bool:
    """True for ``"org/name"`` strings (one slash, hub-legal characters)."""
    return bool(_HUB_ID.match(name))


def resolve_pretrained_dir(
    name_or_path: Union[str, Path],
    files: Sequence[str],
    *,
    revision: Optional[str] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    local_files_only: bool = False,
) -> Path:
    """A local folder holding ``files``: ``name_or_path`` itself when it is a folder, else the hub snapshot.

    Raises:
        FileNotFoundError: neither a folder nor a hub id, or the hub snapshot lacks one of ``files``.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists() or not looks_like_hub_id(name):
        raise FileNotFoundError(f"{name!r} is neither a local folder nor a Hugging Face Hub repo id ('org/name')")
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(
            name, revision=revision, cache_dir=cache_dir, allow_patterns=list(files), local_files_only=local_files_only,
        ))
    except Exception as e:  # offline with an empty cache, unknown repo, no network, ...
        raise FileNotFoundError(f"cannot resolve hub repo {name!r} (revision {revision or 'main'}): {e}") from e
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"hub repo {name!r} has no {missing} in {folder}")
    return folder
