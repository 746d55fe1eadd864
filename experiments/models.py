"""Classifiers for the side-by-side evidence runs: one isotropic backbone, the token mixer swapped.

Every variant is built at the same width / depth / heads / patch (``ModelSize``) and differs only where its name
says. ``build_classifier('lightnet', size)`` is timm's ``lightnet_tiny`` reconfigured to ``size``; ``'vit'`` is timm's
``vit_tiny_patch16_224`` (softmax attention, class token, learned absolute position embedding, 4× MLP)
reconfigured the same way with ``dynamic_img_size=True``; the ``scan*`` variants are the LightNet model with every
``blocks[i].attn`` replaced by :class:`experiments.multiscan.MultiScanDecayAttention` (same MD-TPE, same MD-LRPE, same
norm / gate / projection; only the recurrence and the number of scan directions change).

Variant groups (see ``VARIANTS``):

* main comparison: ``lightnet``, ``vit``, ``scan2`` (Vim-style), ``scan4`` (VMamba-style);
* positional encoding: ``pe_none``, ``pe_tpe`` (MD-TPE only), ``pe_lrpe`` (MD-LRPE only), ``lightnet`` (both);
* additive vs multiplicative decay: ``lightnet`` (additive, one scan) vs ``mult_scan1`` (multiplicative, one scan)
  and ``scan2`` / ``scan4``; ``scan2_mamba2`` swaps the GLA-style decay for a Mamba2-style per-head decay;
* design switches of ``docs/design.md``: ``scale_sqrt``, ``no_gate``, ``gate_silu``, ``no_out_norm``, ``q_identity``,
  ``q_elu1``, ``layernorm``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Tuple

import timm
import torch
from timm.layers import trunc_normal_
from timm.models import register_model
from torch import nn

import lightnet  # noqa: F401  registers the lightnet_* timm models

from experiments.multiscan import MultiScanDecayAttention

__all__ = ["DESCRIPTIONS", "GROUPS", "ModelSize", "VARIANTS", "build_classifier", "count_parameters", "describe",
           "register_timm_variants"]


@dataclass
class ModelSize:
    """Shared architecture size and input geometry of every variant."""

    img_size: int = 32
    patch_size: int = 4
    in_chans: int = 1
    num_classes: int = 10
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    drop_path_rate: float = 0.0


# name → (family, keyword overrides). Families: 'lightnet' (LightNet kwargs), 'vit' (timm VisionTransformer
# kwargs), 'scan' (LightNet model kwargs under 'model', MultiScanDecayAttention kwargs under 'mixer').
_SCAN_MIXER = dict(q_act="silu", use_lrpe=True, scale="sqrt")  # LightNet's mixer switches; only the recurrence differs
VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "lightnet": ("lightnet", {}),
    "vit": ("vit", {}),
    "scan2": ("scan", {"mixer": dict(_SCAN_MIXER, num_directions=2)}),
    "scan4": ("scan", {"mixer": dict(_SCAN_MIXER, num_directions=4)}),
    "pe_none": ("lightnet", {"use_tpe": False, "use_lrpe": False}),
    "pe_tpe": ("lightnet", {"use_lrpe": False}),
    "pe_lrpe": ("lightnet", {"use_tpe": False}),
    "mult_scan1": ("scan", {"mixer": dict(_SCAN_MIXER, num_directions=1)}),
    "scan2_mamba2": ("scan", {"mixer": dict(_SCAN_MIXER, num_directions=2, decay="mamba2")}),
    "scale_sqrt": ("lightnet", {"scale": "sqrt"}),
    "no_gate": ("lightnet", {"gate_rank": 0}),
    "gate_silu": ("lightnet", {"gate_act": "silu"}),
    "no_out_norm": ("lightnet", {"out_norm": False}),
    "q_identity": ("lightnet", {"q_act": "identity"}),
    "q_elu1": ("lightnet", {"q_act": "elu1"}),
    "layernorm": ("lightnet", {"norm": "layernorm"}),
    "tpe_mass": ("lightnet", {"tpe_kernel_norm": "mass"}),
    "paper_positions": ("lightnet", {"tpe_match_mass": False, "lrpe_interpolate": False}),
}


DESCRIPTIONS: Dict[str, str] = {
    "lightnet": "LightNet (additive, 1 scan, MD-TPE + MD-LRPE)",
    "vit": "ViT/DeiT softmax attention (timm vit_tiny reconfigured)",
    "scan2": "multiplicative decay, 2 scans (Vim-style)",
    "scan4": "multiplicative decay, 4 scans (VMamba-style)",
    "pe_none": "LightNet, no positional encoding",
    "pe_tpe": "LightNet, MD-TPE only",
    "pe_lrpe": "LightNet, MD-LRPE only",
    "mult_scan1": "multiplicative decay, 1 scan (causal)",
    "scan2_mamba2": "multiplicative decay, 2 scans, Mamba2-style per-head decay",
    "scale_sqrt": "LightNet, output scale D^-1/2",
    "no_gate": "LightNet, no output gate",
    "gate_silu": "LightNet, SiLU output gate",
    "no_out_norm": "LightNet, no per-head output norm",
    "q_identity": "LightNet, identity query map",
    "q_elu1": "LightNet, ELU+1 query map",
    "layernorm": "LightNet, LayerNorm instead of RMSNorm",
    "tpe_mass": "LightNet, MD-TPE kernels rescaled to a learned mass at every grid size",
    "paper_positions": "LightNet, the paper's encodings at every size (no MD-TPE mass matching, no MD-LRPE interpolation)",
}

# Table groups (also the ``--models`` shorthands of run_classification): group → variants, in table order.
GROUPS: Dict[str, Tuple[str, ...]] = {
    "main": ("lightnet", "vit", "scan2", "scan4"),
    "pe": ("pe_none", "pe_tpe", "pe_lrpe", "lightnet"),
    "decay": ("lightnet", "mult_scan1", "scan2", "scan4", "scan2_mamba2"),
    "design": ("lightnet", "scale_sqrt", "no_gate", "gate_silu", "no_out_norm", "q_identity", "q_elu1", "layernorm"),
}


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _vit_init(module: nn.Module) -> None:
    """The LightNet/ViT Linear init (truncated normal, std 0.02, zero bias) for freshly swapped mixers."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _timm_model(name: str, size: ModelSize, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name)`` reconfigured to ``size``, with ``dynamic_img_size=True``."""
    return timm.create_model(
        name,
        pretrained=False,
        img_size=size.img_size,
        patch_size=size.patch_size,
        in_chans=size.in_chans,
        num_classes=size.num_classes,
        embed_dim=size.embed_dim,
        depth=size.depth,
        num_heads=size.num_heads,
        drop_path_rate=size.drop_path_rate,
        dynamic_img_size=True,
        **kwargs,
    )


def _lightnet(size: ModelSize, **kwargs: Any) -> nn.Module:
    return _timm_model("lightnet_tiny", size, **kwargs)


def _vit(size: ModelSize, **kwargs: Any) -> nn.Module:
    return _timm_model("vit_tiny_patch16_224", size, **kwargs)


def _scan(size: ModelSize, mixer: Mapping[str, Any] | None = None, model: Mapping[str, Any] | None = None) -> nn.Module:
    net = _lightnet(size, **dict(model or {}))
    for block in net.blocks:
        attn = block.attn
        block.attn = MultiScanDecayAttention(
            size.embed_dim, size.num_heads, num_axes=2, num_prefix_tokens=0, **dict(mixer or {})
        ).to(device=attn.proj.weight.device, dtype=attn.proj.weight.dtype)
        _vit_init(block.attn)
    return net


def build_classifier(variant: str, size: ModelSize | None = None, **overrides: Any) -> nn.Module:
    """Build the classifier ``variant`` (a key of ``VARIANTS``) at ``size``.

    Shapes: ``[B, in_chans, H, W] → [B, num_classes]`` for any ``H, W`` divisible by the patch (all variants are
    built with ``dynamic_img_size=True``; ViT interpolates its absolute position table, LightNet and the scan
    baselines need nothing). ``overrides`` update the variant's keyword arguments (for the ``scan`` family pass
    ``mixer={...}`` and/or ``model={...}``).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant {variant!r}; choose one of {sorted(VARIANTS)}")
    size = size or ModelSize()
    family, kwargs = VARIANTS[variant]
    kwargs = dict(kwargs)
    for key, value in overrides.items():
        if family == "scan" and key in ("mixer", "model"):
            kwargs[key] = {**kwargs.get(key, {}), **value}
        else:
            kwargs[key] = value
    if family == "lightnet":
        return _lightnet(size, **kwargs)
    if family == "vit":
        return _vit(size, **kwargs)
    unknown = set(kwargs) - {"mixer", "model"}
    if unknown:
        raise ValueError(f"scan variant {variant!r}: overrides go under 'mixer' or 'model', got {sorted(unknown)}")
    return _scan(size, **kwargs)


_SIZE_KEYS = {f.name for f in fields(ModelSize)}


def _timm_entry(variant: str, name: str, defaults: ModelSize) -> Callable[..., nn.Module]:
    """A timm model function ``name`` building ``variant`` (so ``lightnet train model=<name>`` can build it)."""

    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError(f"{name}: there are no pretrained weights")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "dynamic_img_size"):
            kwargs.pop(key, None)  # every variant is built with dynamic_img_size=True
        size = ModelSize(**{**asdict(defaults), **{k: kwargs.pop(k) for k in list(kwargs) if k in _SIZE_KEYS}})
        if VARIANTS[variant][0] == "scan" and kwargs:
            kwargs = {"model": kwargs}  # LightNet-model kwargs (e.g. mlp_ratio) of the swapped-mixer baselines
        return build_classifier(variant, size, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = f"Evidence variant {variant!r}: {DESCRIPTIONS[variant]} (kwargs: ModelSize fields + overrides)."
    return entry


def register_timm_variants(prefix: str = "evidence_", defaults: ModelSize | None = None) -> List[str]:
    """Register every variant with timm as ``<prefix><variant>`` (idempotent); returns the names.

    ``defaults`` is the size used for ``ModelSize`` fields the caller does not pass (``ModelSize()`` if None).
    """
    names = []
    for variant in VARIANTS:
        name = f"{prefix}{variant}"
        if not timm.is_model(name):
            register_model(_timm_entry(variant, name, defaults or ModelSize()))
        names.append(name)
    return names


def describe(variant: str, size: ModelSize) -> Dict[str, Any]:
    """A JSON-friendly description of a variant (for run summaries)."""
    family, kwargs = VARIANTS[variant]
    return {"variant": variant, "family": family, "overrides": kwargs, "size": asdict(size)}
