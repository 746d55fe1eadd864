"""Video classifiers for the side-by-side study: LightNet vs a joint space-time ViT vs the 6-scan multiplicative model.

Every variant takes clips ``[B, C, T, H, W]``, embeds ``t × p × p`` tubelets with :class:`lightnet.layers.TubeletEmbed`,
runs ``depth`` blocks of width ``D`` over all ``T/t · H/p · W/p`` tokens, mean-pools them and classifies:

* ``lightnet`` — :class:`lightnet.video.LightNetVideo` (additive recurrence, one scan, 3-D MD-TPE + MD-LRPE);
* ``vit`` — :class:`SpaceTimeViT`, joint space-time softmax attention over all tokens (ViViT model 1 / VideoMAE
  style) from timm's ``Block``, a learned absolute position table over ``(T', H', W')`` (trilinearly resized for other
  clip sizes), mean pooling;
* ``scan6`` — ``LightNetVideo`` with every ``blocks[i].attn`` replaced by
  :class:`experiments.multiscan.MultiScanDecayAttention` with 6 scans (± along T, H and W; same MD-TPE, MD-LRPE,
  norm, gate and projection — only the recurrence and the number of scans change).

The MLP widths are matched in parameters: LightNet's GLU of hidden ratio ``r`` has three ``D × rD`` matrices, the
ViT's two-matrix MLP gets ratio ``1.5 r``. The variants are registered with timm as ``evidence_video_<variant>`` so the
shared trainer builds them by name (``lightnet train -c moving_fashion_mnist model=evidence_video_vit``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Tuple, Union

import timm
import torch
from timm.layers import trunc_normal_
from timm.models import register_model
from timm.models.vision_transformer import Block
from torch import nn
from torch.nn import functional as F

from experiments.multiscan import MultiScanDecayAttention
from lightnet.layers import TubeletEmbed, check_clip_divisible
from lightnet.video import LightNetVideo

__all__ = ["VIDEO_DESCRIPTIONS", "VIDEO_VARIANTS", "SpaceTimeViT", "VideoSize", "build_video_classifier",
           "register_timm_video_variants"]

_SCAN_MIXER = dict(q_act="silu", use_lrpe=True, scale="sqrt", chunk_size=8)  # LightNet's mixer switches; 8: the fastest chunk at 64 tokens


@dataclass
class VideoSize:
    """Shared size and clip geometry of every variant."""

    img_size: int = 32
    num_frames: int = 8
    patch_size: int = 8
    tubelet_size: int = 2
    in_chans: int = 1
    num_classes: int = 4
    embed_dim: int = 64
    depth: int = 4
    num_heads: int = 2
    mlp_ratio: float = 2.0  # LightNet GLU ratio; the ViT gets 1.5× (same parameters)
    drop_path_rate: float = 0.0


VIDEO_VARIANTS: Tuple[str, ...] = ("lightnet", "vit", "scan6")
VIDEO_DESCRIPTIONS: Dict[str, str] = {
    "lightnet": "LightNet video (additive, 1 scan over T·H·W, 3-D MD-TPE + MD-LRPE)",
    "vit": "ViT, joint space-time softmax attention (timm Block), learned 3-D position table",
    "scan6": "multiplicative decay, 6 scans (± along T, H, W), LightNet's encodings / norm / gate",
}


class SpaceTimeViT(nn.Module):
    """Joint space-time ViT: ``[B, C, T, H, W]`` → ``[B, num_classes]``.

    Tubelet embedding → + learned position table ``[1, T', H', W', D]`` (trilinear resize when the clip's token grid
    differs from the nominal one) → ``depth`` timm ``Block`` (softmax attention over all ``T'·H'·W'`` tokens) → norm
    → mean over tokens → linear head. ``forward_features`` returns ``[B, T', H', W', D]`` like ``LightNetVideo``.
    """

    def __init__(self, img_size: int = 32, num_frames: int = 8, patch_size: int = 8, tubelet_size: int = 2,
                 in_chans: int = 1, num_classes: int = 4, embed_dim: int = 64, depth: int = 4, num_heads: int = 2,
                 mlp_ratio: float = 3.0, drop_path_rate: float = 0.0, qkv_bias: bool = True) -> None:
        super().__init__()
        self.tubelet = (tubelet_size, patch_size, patch_size)
        check_clip_divisible("SpaceTimeViT", (num_frames, img_size, img_size), self.tubelet)
        self.grid_size = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.num_classes, self.embed_dim = num_classes, embed_dim
        self.patch_embed = TubeletEmbed(in_chans, embed_dim, self.tubelet)
        self.pos_embed = nn.Parameter(torch.zeros(1, *self.grid_size, embed_dim))
        dpr = [r.item() for r in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                                            drop_path=dpr[i]) for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init)

    def _pos(self, grid: Tuple[int, int, int]) -> torch.Tensor:
        if tuple(grid) == self.grid_size:
            return self.pos_embed
        table = F.interpolate(self.pos_embed.permute(0, 4, 1, 2, 3), size=grid, mode="trilinear", align_corners=False)
        return table.permute(0, 2, 3, 4, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # [B, T', H', W', D]
        B, T, H, W, C = x.shape
        x = (x + self._pos((T, H, W))).reshape(B, T * H * W, C)
        return self.norm(self.blocks(x)).reshape(B, T, H, W, C)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.flatten(1, 3).mean(1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _lightnet(size: VideoSize, **kwargs: Any) -> LightNetVideo:
    return LightNetVideo(img_size=size.img_size, num_frames=size.num_frames, patch_size=size.patch_size,
                         tubelet_size=size.tubelet_size, in_chans=size.in_chans, num_classes=size.num_classes,
                         embed_dim=size.embed_dim, depth=size.depth, num_heads=size.num_heads,
                         mlp_ratio=size.mlp_ratio, drop_path_rate=size.drop_path_rate, **kwargs)


def _scan6(size: VideoSize, **mixer: Any) -> LightNetVideo:
    net = _lightnet(size)
    for block in net.blocks:
        ref = block.attn.proj.weight
        block.attn = MultiScanDecayAttention(size.embed_dim, size.num_heads, num_directions=6, num_axes=3,
                                             **{**_SCAN_MIXER, **mixer}).to(device=ref.device, dtype=ref.dtype)
        block.attn.apply(_init)
    return net


def _vit(size: VideoSize, **kwargs: Any) -> SpaceTimeViT:
    return SpaceTimeViT(img_size=size.img_size, num_frames=size.num_frames, patch_size=size.patch_size,
                        tubelet_size=size.tubelet_size, in_chans=size.in_chans, num_classes=size.num_classes,
                        embed_dim=size.embed_dim, depth=size.depth, num_heads=size.num_heads,
                        mlp_ratio=1.5 * size.mlp_ratio, drop_path_rate=size.drop_path_rate, **kwargs)


_BUILDERS: Dict[str, Callable[..., nn.Module]] = {"lightnet": _lightnet, "vit": _vit, "scan6": _scan6}


def build_video_classifier(variant: str, size: Union[VideoSize, None] = None, **overrides: Any) -> nn.Module:
    """Build ``variant`` (one of :data:`VIDEO_VARIANTS`) at ``size``; ``overrides`` go to the variant (LightNet:
    ``LightNetVideo`` options such as ``attn_backend``; scan6: ``MultiScanDecayAttention`` options; ViT: ``qkv_bias``)."""
    if variant not in _BUILDERS:
        raise ValueError(f"unknown video variant {variant!r}; choose one of {list(VIDEO_VARIANTS)}")
    return _BUILDERS[variant](size or VideoSize(), **overrides)


_SIZE_KEYS = set(VideoSize.__dataclass_fields__)


def _timm_entry(variant: str, name: str) -> Callable[..., nn.Module]:
    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError(f"{name}: there are no pretrained weights")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        size = VideoSize(**{k: kwargs.pop(k) for k in list(kwargs) if k in _SIZE_KEYS})
        if variant != "lightnet":
            kwargs.pop("attn_backend", None)  # LightNet's kernel choice; the peers have their own
        return build_video_classifier(variant, size, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = f"Video study variant {variant!r}: {VIDEO_DESCRIPTIONS[variant]}."
    return entry


def register_timm_video_variants(prefix: str = "evidence_video_") -> List[str]:
    """Register every variant with timm as ``<prefix><variant>`` (idempotent); returns the names."""
    names = []
    for variant in VIDEO_VARIANTS:
        name = f"{prefix}{variant}"
        if not timm.is_model(name):
            register_model(_timm_entry(variant, name))
        names.append(name)
    return names


def describe(variant: str, size: VideoSize) -> Dict[str, Any]:
    """JSON-friendly description of a variant."""
    return {"variant": variant, "description": VIDEO_DESCRIPTIONS[variant], "size": asdict(size)}
