"""Conditioning and patch embeddings of the LightNet diffusion transformer.

* :class:`PatchEmbed2d` — ``[B, C, H, W]`` → ``[B, (H/p)·(W/p), D]`` tokens (a strided convolution, no absolute
  position table: position comes from MD-TPE and MD-LRPE, which are relative and work at any size).
* :class:`ClassEmbedding` — ``num_classes + 1`` rows; the last row is the *null class* used for classifier-free
  guidance (label dropout during training, the unconditional branch at sampling time).
* :class:`TimestepClassEmbedding` — sinusoidal timestep features through diffusers' ``TimestepEmbedding`` MLP plus
  the class embedding: the conditioning vector ``c [B, D]`` that modulates every block.
"""
from __future__ import annotations

from typing import Optional

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

__all__ = ["ClassEmbedding", "PatchEmbed2d", "TimestepClassEmbedding"]


class PatchEmbed2d(nn.Module):
    """Non-overlapping ``p × p`` patches projected to ``dim`` channels.

    Shapes: ``[B, C, H, W]`` → ``([B, h·w, D], (h, w))`` with ``h = H/p``, ``w = W/p`` (row-major tokens).
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)  # [B, D, h, w]
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), grid


class ClassEmbedding(nn.Module):
    """Class labels → ``[B, D]``, with a null class at index ``num_classes`` for classifier-free guidance.

    In training mode each label is replaced by the null class with probability ``dropout_prob`` (DiT's label
    dropout). ``num_classes`` itself is a valid input (the unconditional branch).
    """

    def __init__(self, num_classes: int, dim: int, dropout_prob: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"ClassEmbedding: num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= dropout_prob < 1.0:
            raise ValueError(f"ClassEmbedding: dropout_prob must be in [0, 1), got {dropout_prob}")
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.dropout_prob
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels)


class TimestepClassEmbedding(nn.Module):
    """``c = MLP(sinusoid(t)) + E[y]``: ``t [B]`` (int or float), ``y [B]`` (long) → ``[B, D]``."""

    def __init__(self, dim: int, num_classes: int, class_dropout_prob: float = 0.1, frequency_dim: int = 256) -> None:
        super().__init__()
        self.time_proj = Timesteps(num_channels=frequency_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.timestep_embedder = TimestepEmbedding(in_channels=frequency_dim, time_embed_dim=dim)
        self.class_embedder = ClassEmbedding(num_classes, dim, class_dropout_prob)

    def forward(self, timestep: torch.Tensor, class_labels: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        t = self.time_proj(timestep)
        t = self.timestep_embedder(t.to(dtype or self.timestep_embedder.linear_1.weight.dtype))
        return t + self.class_embedder(class_labels).to(t.dtype)
