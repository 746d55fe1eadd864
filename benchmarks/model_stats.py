"""Parameters and FLOPs of the LightNet timm models (and ViT/DeiT peers) at a given resolution.

Usage: ``python benchmarks/model_stats.py [--img-size 224] [--models lightnet_tiny vit_tiny_patch16_224 ...]``

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one image (forward only, batch 1):
matrix multiplies, convolutions, attention products (GFLOPs = 2 × GMACs). Element-wise work (norms, activations,
softmax) and LightNet's MD-TPE FFTs are not counted, as in timm/fvcore-style tables. Peers run timm's explicit
attention (``set_fused_attn(False)``) so that their quadratic ``QKᵀ`` / ``AV`` products are counted (the CPU SDPA
kernel is invisible to the counter).
"""
from __future__ import annotations

import argparse

import timm
import torch
from timm.layers import set_fused_attn
from torch.utils.flop_counter import FlopCounterMode

import lightnet  # noqa: F401  registers lightnet_* with timm

DEFAULT_MODELS = [
    "lightnet_tiny", "vit_tiny_patch16_224",
    "lightnet_small", "vit_small_patch16_224",
    "lightnet_base", "vit_base_patch16_224",
    "lightnet_small_patch8", "vit_small_patch8_224",
]


def model_stats(name: str, img_size: int) -> dict:
    """``{'model', 'params_m', 'gflops', 'gmacs'}`` for one model at ``img_size``² (batch 1, forward)."""
    model = timm.create_model(name, img_size=img_size, weight_init="skip" if name.startswith("lightnet") else "")
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.randn(1, 3, img_size, img_size))
    flops = counter.get_total_flops()
    return dict(model=name, params_m=params / 1e6, gflops=flops / 1e9, gmacs=flops / 2e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    args = parser.parse_args()
    set_fused_attn(False)  # count the attention matmuls of the ViT peers
    print(f"| model | params (M) | GMACs @ {args.img_size}² | GFLOPs @ {args.img_size}² |")
    print("|---|---:|---:|---:|")
    for name in args.models:
        s = model_stats(name, args.img_size)
        print(f"| {s['model']} | {s['params_m']:.2f} | {s['gmacs']:.2f} | {s['gflops']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
