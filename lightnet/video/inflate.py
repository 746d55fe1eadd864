"""Initialise a video model from an image model's weights ("inflation", as I3D / TimeSformer / ViViT do from
ImageNet checkpoints).

Everything but the stem carries over unchanged: the blocks of :class:`lightnet.vision.LightNet` and
:class:`~lightnet.video.LightNetVideo` have the same parameters (MD-LRPE's fixed frequency tables are derived from the
axis count, not stored). The 2-D patch kernel ``[D, C, p, p]`` becomes a tubelet kernel ``[D, C, t, p, p]``, and the
image MD-TPE's height / width axes become the video MD-TPE's height / width axes (axes 1 and 2); its time axis (0) keeps
its initialisation (``w0 = 0``: no mixing along time at first beyond small random weights).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Union

import torch
from torch import nn

__all__ = ["INFLATE_MODES", "inflate_image_state_dict", "inflate_patch_kernel", "read_state_dict"]

#: ways to spread the 2-D patch kernel over the tubelet's frames
INFLATE_MODES = ("average", "center")


def inflate_patch_kernel(weight: torch.Tensor, frames: int, inflate: str = "average") -> torch.Tensor:
    """``[D, C, p, p]`` → ``[D, C, t, p, p]``.

    ``'average'``: the kernel on every frame divided by ``t`` (a clip constant over time embeds exactly as its frame
    does through the image kernel); ``'center'``: the kernel on frame ``t // 2``, zeros elsewhere (the centre frame
    embeds as the image, whatever the others hold).
    """
    if weight.dim() != 4:
        raise ValueError(f"inflate_patch_kernel: expected a 2-D patch kernel [D, C, p, p], got {tuple(weight.shape)}")
    if frames < 1:
        raise ValueError(f"inflate_patch_kernel: frames must be >= 1, got {frames}")
    if inflate == "average":
        return weight.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames
    if inflate == "center":
        out = weight.new_zeros(weight.shape[0], weight.shape[1], frames, *weight.shape[2:])
        out[:, :, frames // 2] = weight
        return out
    raise ValueError(f"inflate_patch_kernel: inflate must be one of {INFLATE_MODES}, got {inflate!r}")


def read_state_dict(source: Union[str, Path, nn.Module, Mapping[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """A plain state dict from a module, a (wrapped) state dict, a ``.safetensors`` file or a ``torch.save`` file
    (``weights_only=True``)."""
    from ..vision.lightnet_vit import unwrap_checkpoint

    if isinstance(source, nn.Module):
        return dict(source.state_dict())
    if isinstance(source, Mapping):
        return unwrap_checkpoint(dict(source))
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"image checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, foreign pickle, ...
        raise ValueError(f"cannot read image checkpoint {path} (safetensors or torch.save weights expected): "
                         f"{type(e).__name__}: {e}") from e
    if not isinstance(loaded, dict):
        raise ValueError(f"image checkpoint {path} holds a {type(loaded).__name__}, not a state dict")
    return unwrap_checkpoint(loaded)


def inflate_image_state_dict(image_state: Mapping[str, torch.Tensor], video_model: nn.Module,
                             inflate: str = "average", load_head: bool = False) -> Dict[str, torch.Tensor]:
    """The image state dict mapped onto ``video_model``'s keys (a full state dict for ``load_state_dict``).

    Raises ``ValueError`` naming the keys when the image model has another width / depth / head count, or lacks a
    part the video model has (e.g. MD-TPE).
    """
    from .model import _checked_state

    own = video_model.state_dict()
    frames = int(video_model.tubelet[0])
    out: Dict[str, torch.Tensor] = {}
    for key, value in image_state.items():
        if key.startswith("head.") and not load_head:
            continue
        if key == "patch_embed.proj.weight":
            value = inflate_patch_kernel(value, frames, inflate)
        elif key.startswith("tpe.axes."):
            axis, rest = key[len("tpe.axes."):].split(".", 1)
            key = f"tpe.axes.{int(axis) + 1}.{rest}"  # image (H, W) → video (T, H, W) axes 1, 2
        out[key] = value
    fresh = [k for k in own if k.startswith("tpe.axes.0.") or (k.startswith("head.") and not load_head)]
    for key in fresh:
        out[key] = own[key]
    return _checked_state(video_model, out, "image checkpoint", fresh=fresh)
