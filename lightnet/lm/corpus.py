"""Offline text corpora as byte streams, with a deterministic held-out split, and LM window datasets.

Default corpus: the reStructuredText sources of the Python 3.11 documentation shipped by Debian's ``python3.11-doc``
(``/usr/share/doc/python3.11/html/_sources/**/*.txt``, ~11 MB of English). Any text file, or folder of text files, can
be used instead. The split is by file (a file goes to validation when a CRC32 of its relative path falls under
``val_fraction``), so validation text is never seen in training; a single file is split by its last bytes instead.

A prepared corpus (``train.bin`` + ``val.bin`` raw bytes, written by :func:`save_prepared`) is a folder that loads
without the Debian package (used to carry the corpus to a GPU machine).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

__all__ = [
    "PYDOC_ROOT",
    "TextCorpus",
    "list_text_files",
    "load_corpus",
    "save_prepared",
    "CausalWindowDataset",
    "MaskedWindowDataset",
    "eval_windows",
]

PYDOC_ROOT = Path("/usr/share/doc/python3.11/html/_sources")
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
DOC_SEPARATOR = b"\n\n"


@dataclass
class TextCorpus:
    """Train/validation byte streams (``uint8`` 1-D tensors) and where they came from."""

    train: torch.Tensor
    val: torch.Tensor
    source: str
    num_files: Tuple[int, int] = (0, 0)

    def describe(self) -> str:
        files = [f" ({n} files)" if n else "" for n in self.num_files]
        return (f"{self.source}: train {self.train.numel() / 1e6:.2f} MB{files[0]}, "
                f"val {self.val.numel() / 1e6:.2f} MB{files[1]}")


def list_text_files(paths: Union[str, Path, Sequence[Union[str, Path]]], suffixes: Sequence[str] = TEXT_SUFFIXES) -> List[Path]:
    """Files named directly, plus files under folders (recursively) whose name ends with one of ``suffixes``."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: List[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(tuple(suffixes))))
        else:
            raise FileNotFoundError(f"corpus path not found: {p}")
    return out


def _is_val(rel: str, val_fraction: float) -> bool:
    return (zlib.crc32(rel.encode()) % 10_000) < val_fraction * 10_000


def _bytes_tensor(chunks: Iterable[bytes]) -> torch.Tensor:
    data = DOC_SEPARATOR.join(chunks)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def load_corpus(paths: Union[None, str, Path, Sequence[Union[str, Path]]] = None, val_fraction: float = 0.05) -> TextCorpus:
    """Read a corpus into train/validation byte streams.

    Args:
        paths: ``None`` for the Debian Python docs; a prepared folder (``train.bin``/``val.bin``); text files or
            folders of text files.
        val_fraction: share of files (or, for a single file, of bytes) held out for validation.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if paths is None:
        if not PYDOC_ROOT.is_dir():
            raise FileNotFoundError(
                f"default corpus {PYDOC_ROOT} not found: install it with `apt-get install python3.11-doc`, "
                "or pass text files / a folder (data.paths=...)"
            )
        paths = [PYDOC_ROOT]
        suffixes: Sequence[str] = (".txt",)
    else:
        suffixes = TEXT_SUFFIXES
    plist = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if len(plist) == 1 and (plist[0] / "train.bin").is_file() and (plist[0] / "val.bin").is_file():
        root = plist[0]
        train = torch.from_file(str(root / "train.bin"), size=(root / "train.bin").stat().st_size, dtype=torch.uint8)
        val = torch.from_file(str(root / "val.bin"), size=(root / "val.bin").stat().st_size, dtype=torch.uint8)
        return TextCorpus(train.clone(), val.clone(), f"prepared {root}")
    files = list_text_files(plist, suffixes)
    if not files:
        raise ValueError(f"no text files ({', '.join(suffixes)}) found under {[str(p) for p in plist]}")
    source = ", ".join(str(p) for p in plist)
    if len(files) == 1:
        data = files[0].read_bytes()
        cut = int(len(data) * (1 - val_fraction))
        return TextCorpus(_bytes_tensor([data[:cut]]), _bytes_tensor([data[cut:]]), source, (1, 1))
    train_docs, val_docs = [], []
    for f in files:
        rel = next((str(f.relative_to(p)) for p in plist if p.is_dir() and p in f.parents), f.name)
        (val_docs if _is_val(rel, val_fraction) else train_docs).append(f.read_bytes())
    if not val_docs:  # tiny corpora: hold out the last file
        val_docs.append(train_docs.pop())
    if not train_docs:
        raise ValueError(f"corpus {source} is too small to split into train and validation")
    return TextCorpus(_bytes_tensor(train_docs), _bytes_tensor(val_docs), source, (len(train_docs), len(val_docs)))


def save_prepared(corpus: TextCorpus, out_dir: Union[str, Path]) -> Path:
    """Write ``train.bin`` / ``val.bin`` (raw bytes) into ``out_dir``; :func:`load_corpus` reads the folder back."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.bin").write_bytes(corpus.train.numpy().tobytes())
    (out / "val.bin").write_bytes(corpus.val.numpy().tobytes())
    (out / "SOURCE.txt").write_text(corpus.describe() + "\n")
    return out


class CausalWindowDataset(Dataset):
    """Byte windows of ``seq_len`` tokens for next-token training: item ``i`` → ``{'input_ids': [seq_len]}``.

    Windows tile the stream; each fetch shifts its start by a random offset inside the tile (drawn from the global
    torch RNG, which :class:`lightnet.train.data.SeededDataset` seeds per (epoch, index): resumable, and every byte
    is seen in a different context each epoch). With ``num_windows`` the dataset instead has that many items, each a
    window at a random position of the whole stream (short "epochs" for CPU recipes). With ``bos_token_id`` the
    window starts with ``<bos>``.
    """

    def __init__(self, data: torch.Tensor, seq_len: int, bos_token_id: Optional[int] = None, jitter: bool = True,
                 num_windows: Optional[int] = None) -> None:
        if data.dim() != 1:
            raise ValueError(f"data must be a 1-D byte stream, got shape {tuple(data.shape)}")
        self.body = seq_len - (1 if bos_token_id is not None else 0)
        if self.body < 1:
            raise ValueError(f"seq_len {seq_len} is too short")
        if data.numel() < self.body + 1:
            raise ValueError(f"corpus has {data.numel()} bytes, fewer than one window of {self.body + 1}")
        self.data, self.seq_len, self.bos, self.jitter = data, seq_len, bos_token_id, jitter
        if num_windows is not None and num_windows < 1:
            raise ValueError(f"num_windows must be >= 1, got {num_windows}")
        self.num_windows = num_windows
        self.n = (data.numel() - 1) // self.body if num_windows is None else int(num_windows)

    def __len__(self) -> int:
        return self.n

    def _window(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.n:
            raise IndexError(index)
        if self.num_windows is not None:
            start = int(torch.randint(0, self.data.numel() - self.body + 1, ()))
        else:
            start = index * self.body
            if self.jitter:
                start += int(torch.randint(0, self.body, ()))
        start = min(start, self.data.numel() - self.body)
        ids = self.data[start:start + self.body].long()
        if self.bos is not None:
            ids = torch.cat([ids.new_tensor([self.bos]), ids])
        return ids

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        return {"input_ids": self._window(index)}


class MaskedWindowDataset(CausalWindowDataset):
    """Byte windows with BERT masking applied per item (randomness seeded per item by ``SeededDataset``).

    Item → ``{'input_ids', 'labels', 'attention_mask'}`` (see :func:`lightnet.lm.masking.mask_tokens`).
    """

    def __init__(self, data: torch.Tensor, seq_len: int, mask_token_id: int, vocab_size: int,
                 mlm_probability: float = 0.15, special_ids: Sequence[int] = (), jitter: bool = True,
                 random_token_range: Optional[Tuple[int, int]] = (0, 256), num_windows: Optional[int] = None) -> None:
        super().__init__(data, seq_len, None, jitter, num_windows)
        self.mask_token_id, self.vocab_size = mask_token_id, vocab_size
        self.mlm_probability, self.special_ids = mlm_probability, tuple(special_ids)
        self.random_token_range = random_token_range

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        from .masking import mask_tokens

        ids = self._window(index)[None]
        corrupted, labels = mask_tokens(ids, self.mask_token_id, self.vocab_size, self.mlm_probability,
                                        self.special_ids, random_token_range=self.random_token_range)
        return {"input_ids": corrupted[0], "labels": labels[0], "attention_mask": torch.ones_like(ids[0])}


def eval_windows(data: torch.Tensor, seq_len: int, max_bytes: Optional[int] = None) -> torch.Tensor:
    """Consecutive non-overlapping windows ``[W, seq_len]`` (long) covering the first ``max_bytes`` of ``data``."""
    n = data.numel() if max_bytes is None else min(data.numel(), int(max_bytes))
    w = n // seq_len
    if w == 0:
        raise ValueError(f"validation stream has {n} bytes, fewer than one window of {seq_len}")
    return data[: w * seq_len].long().view(w, seq_len)


def bits_per_byte(mean_nats_per_byte: float) -> float:
    """Convert a mean cross-entropy in nats per byte to bits per byte."""
    return mean_nats_per_byte / math.log(2)
