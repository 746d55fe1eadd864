"""BERT-style masking for masked-language-model training (80 % ``<mask>``, 10 % random token, 10 % unchanged)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch

__all__ = ["mask_tokens", "MLMCollator"]

IGNORE_INDEX = -100


def mask_tokens(
    input_ids: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    special_ids: Sequence[int] = (),
    attention_mask: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    random_token_range: Optional[Tuple[int, int]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Select ``mlm_probability`` of the maskable tokens and corrupt them BERT-style.

    Args:
        input_ids: ``[B, N]`` long.
        mask_token_id: id written at 80 % of the selected positions.
        vocab_size: vocabulary size (random replacements are drawn from ``random_token_range``, default
            ``[0, vocab_size)``).
        mlm_probability: selection probability per maskable token.
        special_ids: ids never selected (padding, bos, eos, ...).
        attention_mask: ``[B, N]``; positions with 0 are never selected.
        generator: randomness (CPU generator for CPU tensors).
        random_token_range: ``(low, high)`` of random replacement ids (e.g. ``(0, 256)`` for bytes only).
    Returns:
        ``(corrupted_ids [B, N], labels [B, N])`` with labels = original id at selected positions, -100 elsewhere.
    """
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mask_tokens: mlm_probability must be in (0, 1), got {mlm_probability}")
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(f"mask_tokens: attention_mask {tuple(attention_mask.shape)} does not match input_ids {tuple(input_ids.shape)}")
    device = input_ids.device
    maskable = torch.ones_like(input_ids, dtype=torch.bool)
    for s in special_ids:
        maskable &= input_ids != s
    if attention_mask is not None:
        maskable &= attention_mask != 0

    def rand() -> torch.Tensor:
        return torch.rand(input_ids.shape, generator=generator, device=device)

    selected = (rand() < mlm_probability) & maskable
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    u = rand()
    to_mask = selected & (u < 0.8)
    to_random = selected & (u >= 0.8) & (u < 0.9)  # the remaining 10 % stay unchanged
    lo, hi = random_token_range or (0, vocab_size)
    random_ids = torch.randint(lo, hi, input_ids.shape, generator=generator, device=device, dtype=input_ids.dtype)
    corrupted = input_ids.clone()
    corrupted[to_mask] = mask_token_id
    corrupted[to_random] = random_ids[to_random]
    return corrupted, labels


class MLMCollator:
    """Turn a batch of equal-length id tensors (``[B, N]``, or a list of ``[N]``) into MLM inputs.

    Returns ``{'input_ids', 'labels', 'attention_mask'}``; padding (``pad_token_id``) is never masked.
    """

    def __init__(
        self,
        mask_token_id: int,
        vocab_size: int,
        pad_token_id: Optional[int] = None,
        special_ids: Sequence[int] = (),
        mlm_probability: float = 0.15,
        random_token_range: Optional[Tuple[int, int]] = None,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        self.mask_token_id = mask_token_id
        self.vocab_size = vocab_size
        self.pad_token_id = pad_token_id
        self.special_ids = tuple(special_ids) + (() if pad_token_id is None else (pad_token_id,))
        self.mlm_probability = mlm_probability
        self.random_token_range = random_token_range
        self.generator = generator

    def __call__(self, batch) -> Dict[str, torch.Tensor]:
        ids = batch if isinstance(batch, torch.Tensor) else torch.stack([torch.as_tensor(b) for b in batch])
        attn = torch.ones_like(ids) if self.pad_token_id is None else (ids != self.pad_token_id).long()
        corrupted, labels = mask_tokens(
            ids, self.mask_token_id, self.vocab_size, self.mlm_probability, self.special_ids,
            attention_mask=attn, generator=self.generator, random_token_range=self.random_token_range,
        )
        return {"input_ids": corrupted, "labels": labels, "attention_mask": attn}
