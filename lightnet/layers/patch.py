"""Tubelet (space-time patch) embedding: non-overlapping ``t × p × p`` cubes of a clip, linearly projected."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

__all__ = ["TubeletEmbed", "check_clip_divisible"]


def check_clip_divisible(owner: str, size: Tuple[int, int, int], tubelet: Tuple[int, int, int]) -> None:
    """Raise a ``ValueError`` naming ``owner`` when a clip size ``(T, H, W)`` is not a multiple of the tubelet
    ``(t, p, p)`` (the convolution would silently drop the remainder frames / rows / columns)."""
    if any(s % k for s, k in zip(size, tubelet)):
        raise ValueError(
            f"{owner}: clip size (T, H, W) = {tuple(size)} is not divisible by the tubelet (t, p, p) = {tuple(tubelet)} "
            "(the remainder frames/pixels would be dropped); crop or pad the clip to a multiple"
        )


class TubeletEmbed(nn.Module):
    """``Conv3d`` with kernel = stride = ``(t, p, p)``.

    Shapes: clip ``[B, C_in, T, H, W]`` → tokens ``[B, T/t, H/p, W/p, D]`` (channels last). ``T``, ``H``, ``W`` must be
    multiples of the tubelet (``ValueError`` otherwise; checked by :func:`check_clip_divisible`).

    Args:
        in_chans: clip channels ``C_in``.
        embed_dim: token width ``D``.
        tubelet: ``(t, p, p)`` (time, height, width of one cube).
        bias: bias of the projection.
    """

    def __init__(self, in_chans: int, embed_dim: int, tubelet: Tuple[int, int, int], bias: bool = True) -> None:
        super().__init__()
        tubelet = tuple(int(k) for k in tubelet)
        if len(tubelet) != 3 or any(k < 1 for k in tubelet):
            raise ValueError(f"TubeletEmbed: tubelet must be 3 positive sizes (t, p, p), got {tubelet}")
        self.tubelet = tubelet
        self.in_chans = in_chans
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=tubelet, stride=tubelet, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"TubeletEmbed: expected a clip batch [B, C, T, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"TubeletEmbed: expected {self.in_chans} channels, got {x.shape[1]} "
                             f"(input shape {tuple(x.shape)}; layout [B, C, T, H, W])")
        check_clip_divisible("TubeletEmbed", tuple(x.shape[2:]), self.tubelet)
        return self.proj(x).permute(0, 2, 3, 4, 1)  # [B, T', H', W', D]
