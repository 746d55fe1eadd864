"""Semantic-segmentation models with a timm encoder (LightNet or a ViT) and a ``segmentation_models_pytorch`` decoder.

LightNet needs nothing special from smp: ``smp.DPT("tu-lightnet_small", encoder_weights=None, dynamic_img_size=True,
decoder_readout="ignore")`` works as it is, because the model provides what smp's ``TimmViTEncoder`` reads
(``forward_intermediates(x, indices=[...], intermediates_only=True)`` returning NCHW maps, ``feature_info`` with
``num_chs`` / ``reduction`` per block, ``num_prefix_tokens = 0``, ``pretrained_cfg``). ``dynamic_img_size=True``
lets the encoder take any ``H, W`` divisible by the patch (both positional encodings are relative; nothing is
resampled). smp's DPT decoder itself resamples the ``n`` block outputs it reads to strides 4, 8, ..., ``2^(n+1)``
(strided convolutions down, transposed convolutions up) and adds them level by level, so the model as a whole takes
``H, W`` divisible by ``max(patch, 2^(n+1))`` (:func:`input_multiple`; 32 px for the default ``n = 4`` at patch 8
or 16). smp checks only the patch multiple, and other sizes fail inside the decoder with a tensor-size mismatch, so
:func:`check_segmentation_input` checks the real multiple first.
:func:`create_segmentation_model` is that call with the choices spelled out once, so the trainer, the study and
the benchmark build the same model for every encoder.

smp's hierarchical decoders (``Unet``, ``FPN``, ``UPerNet``, ...) go through ``TimmUniversalEncoder``, which accepts
only encoders whose feature strides are 2-4-8-16-32 (CNN-like) or 4-8-16-32 (Swin-like); an isotropic encoder
(LightNet, ViT: every block at stride ``p``) is refused there with smp's "Unsupported model downsampling pattern".
DPT is smp's decoder for isotropic encoders.

``segmentation_models_pytorch`` is an optional extra: ``pip install "lightnet-yoso[segmentation]"``.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn

__all__ = ["DECODERS", "create_segmentation_model", "check_segmentation_input", "input_multiple"]

DECODERS = ("dpt",)


def _import_smp():
    try:
        import segmentation_models_pytorch as smp
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "segmentation needs segmentation_models_pytorch: pip install \"lightnet-yoso[segmentation]\" "
            "(or pip install segmentation-models-pytorch)"
        ) from e
    return smp


def create_segmentation_model(
    encoder: str,
    num_classes: int,
    in_chans: int = 3,
    decoder: str = "dpt",
    encoder_kwargs: Optional[Mapping[str, Any]] = None,
    decoder_kwargs: Optional[Mapping[str, Any]] = None,
    encoder_depth: int = 4,
    encoder_file: Optional[str] = None,
) -> nn.Module:
    """An smp segmentation model: image ``[B, in_chans, H, W]`` → logits ``[B, num_classes, H, W]``.

    The encoder is pruned to what the decoder reads (blocks up to the last one read; no final norm, no head), so
    its state dict is that of the pruned model (save and load it with this function, not ``smp.from_pretrained``).

    Args:
        encoder: a timm model name (``lightnet_small``, ``test_lightnet``, ``vit_small_patch16_224``, ...), with or
            without smp's ``tu-`` prefix.
        num_classes: output channels (classes, background included).
        in_chans: image channels.
        decoder: ``'dpt'`` (smp's ``DPT``; the only smp decoder for isotropic encoders).
        encoder_kwargs: extra ``timm.create_model`` arguments (``embed_dim``, ``num_heads``, ``patch_size``, ...).
            ``dynamic_img_size`` defaults to True (any size divisible by the patch). ``depth`` (block count) keeps
            the first ``depth`` blocks of the registered variant (which must have at least that many; a stochastic
            depth rate is then spread over the variant's own depth).
        decoder_kwargs: extra ``smp.DPT`` arguments (``decoder_intermediate_channels``, ``decoder_fusion_channels``,
            ``decoder_readout``; the readout defaults to ``'ignore'``, so that encoders with and without a class
            token get the same decoder).
        encoder_depth: number of encoder blocks the decoder reads (sampled uniformly over the depth).
        encoder_file: a local weights file for the encoder (safetensors or a torch checkpoint, e.g. a
            ``lightnet train`` run's ``model.safetensors``), loaded through timm's ``pretrained_cfg_overlay``.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    smp = _import_smp()
    import lightnet.vision  # noqa: F401  registers the lightnet_* timm models

    name = encoder if encoder.startswith("tu-") else f"tu-{encoder}"
    enc = {"dynamic_img_size": True, **dict(encoder_kwargs or {})}
    dec = {"decoder_readout": "ignore", **dict(decoder_kwargs or {})}
    # smp's encoder takes its own `depth` (the number of levels), so a block count cannot reach timm through it:
    # the registered variant is built and cut to its first `depth` blocks (timm's prune_intermediate_layers below)
    blocks = enc.pop("depth", None)
    if blocks is not None:
        if blocks < encoder_depth:
            raise ValueError(f"encoder_kwargs depth={blocks} is smaller than encoder_depth={encoder_depth} (the "
                             f"number of block outputs the decoder reads)")
        if "encoder_output_indices" in dec:
            raise ValueError("give either encoder_kwargs depth or decoder_kwargs encoder_output_indices, not both")
        dec["encoder_output_indices"] = [int(blocks / encoder_depth * k) - 1 for k in range(1, encoder_depth + 1)]
    if dec.get("encoder_output_indices") is not None:
        dec["encoder_output_indices"] = list(dec["encoder_output_indices"])
    weights = None
    if encoder_file is not None:
        enc["pretrained_cfg_overlay"] = {**enc.get("pretrained_cfg_overlay", {}), "file": str(encoder_file)}
        weights = "file"  # any non-None value makes smp ask timm for pretrained weights (here: the local file)
    for key in ("encoder_name", "classes", "in_channels", "encoder_depth", "encoder_weights"):
        if key in dec or key in enc:
            raise ValueError(f"{key} is set by create_segmentation_model's own arguments, not by the kwargs")
    model = smp.DPT(name, encoder_depth=encoder_depth, encoder_weights=weights, in_channels=in_chans,
                    classes=num_classes, **dec, **enc)
    # the decoder reads block outputs only: drop the blocks after the last one it reads, the final norm and the
    # classifier head (timm's prune_intermediate_layers), so that every parameter gets a gradient (DDP needs that)
    read = dec.get("encoder_output_indices")
    if read is None:  # smp's default: block outputs sampled uniformly over the depth
        n = len(model.encoder.model.feature_info)
        read = [int(n / encoder_depth * k) - 1 for k in range(1, encoder_depth + 1)]
    model.encoder.model.prune_intermediate_layers(list(read), prune_norm=True, prune_head=True)
    return model


def input_multiple(model: nn.Module) -> int:
    """The side multiple an smp DPT model accepts: ``max(patch, 2^(n+1))`` for ``n`` levels (module docstring)."""
    return max(int(model.encoder.output_stride), 2 ** (len(model.encoder.output_strides) + 1))


def check_segmentation_input(images: torch.Tensor, masks: Optional[torch.Tensor], multiple: int,
                             num_classes: int) -> None:
    """Raise a ``ValueError`` naming the problem when ``images [B, C, H, W]`` / ``masks [B, H, W]`` do not fit a
    model taking sides divisible by ``multiple`` (:func:`input_multiple`) with ``num_classes`` classes."""
    if images.dim() != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
    H, W = images.shape[-2:]
    if H % multiple or W % multiple:
        raise ValueError(f"image size {(H, W)} is not divisible by {multiple} (the patch and the DPT decoder's "
                         f"coarsest level); pad or crop to a multiple, e.g. "
                         f"{(-(-H // multiple) * multiple, -(-W // multiple) * multiple)}")
    if masks is not None:
        if masks.shape != (images.shape[0], H, W):
            raise ValueError(f"masks must be [B, H, W] = {(images.shape[0], H, W)}, got {tuple(masks.shape)}")
        if masks.numel() and (int(masks.min()) < 0 or int(masks.max()) >= num_classes):
            raise ValueError(f"mask labels must be in [0, {num_classes}), got [{int(masks.min())}, "
                             f"{int(masks.max())}]")
