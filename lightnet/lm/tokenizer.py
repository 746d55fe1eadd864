"""Tokenization: a built-in byte-level tokenizer and an adapter for any object with ``encode``/``decode``.

The byte tokenizer maps UTF-8 bytes to ids ``0 … 255`` and adds four special tokens: ``<pad>`` 256, ``<bos>`` 257,
``<eos>`` 258, ``<mask>`` 259 (``vocab_size`` 260). Nothing is downloaded. Any tokenizer from ``tokenizers``
(``encode`` returns an ``Encoding`` with ``.ids``) or ``transformers`` (``encode`` returns a list) can be used instead
through :func:`encode_text` / :func:`decode_ids`.
"""
from __future__ import annotations

from typing import Any, Iterable, List, Sequence

__all__ = ["ByteTokenizer", "encode_text", "decode_ids"]


class ByteTokenizer:
    """UTF-8 byte tokenizer with ``pad``/``bos``/``eos``/``mask`` special tokens.

    Example::

        tok = ByteTokenizer()
        ids = tok.encode("héllo", add_bos=True)   # [257, 104, 195, 169, 108, 108, 111]
        tok.decode(ids)                            # 'héllo'
    """

    num_bytes = 256
    pad_token_id = 256
    bos_token_id = 257
    eos_token_id = 258
    mask_token_id = 259
    vocab_size = 260
    special_tokens = {"<pad>": 256, "<bos>": 257, "<eos>": 258, "<mask>": 259}

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> List[int]:
        """``str`` → list of ids (one per UTF-8 byte, plus optional ``<bos>``/``<eos>``)."""
        if not isinstance(text, str):
            raise TypeError(f"ByteTokenizer.encode: expected str, got {type(text).__name__}")
        ids = list(text.encode("utf-8"))
        if add_bos:
            ids.insert(0, self.bos_token_id)
        if add_eos:
            ids.append(self.eos_token_id)
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """ids → ``str`` (invalid UTF-8 sequences become U+FFFD; special tokens dropped or spelled out)."""
        out = bytearray()
        names = {v: k for k, v in self.special_tokens.items()}
        for i in ids:
            i = int(i)
            if 0 <= i < self.num_bytes:
                out.append(i)
            elif i in names:
                if not skip_special_tokens:
                    out.extend(names[i].encode())
            else:
                raise ValueError(f"ByteTokenizer.decode: id {i} is outside the vocabulary [0, {self.vocab_size})")
        return out.decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={self.vocab_size}, specials={self.special_tokens})"


def encode_text(tokenizer: Any, text: str) -> List[int]:
    """Encode with any tokenizer: a list of ids, or an object with ``.ids`` (HF ``tokenizers`` ``Encoding``)."""
    if not hasattr(tokenizer, "encode"):
        raise TypeError(f"tokenizer {type(tokenizer).__name__} has no encode() method")
    out = tokenizer.encode(text)
    if hasattr(out, "ids"):
        out = out.ids
    return [int(i) for i in out]


def decode_ids(tokenizer: Any, ids: Sequence[int]) -> str:
    """Decode with any tokenizer that has ``decode(list_of_ids)``."""
    if not hasattr(tokenizer, "decode"):
        raise TypeError(f"tokenizer {type(tokenizer).__name__} has no decode() method")
    return tokenizer.decode([int(i) for i in ids])
