"""What a training step keeps for the backward, by module: LightNet-S vs ViT-S, per token and block.

Issue 7's memory target (LightNet-S below ViT-S's peak at every size) is missed: 1.07–1.13× ViT-S's peak, compiled,
on an H200 (runs J7 / K1, docs/results.md §5e). This script says where the difference sits. It runs one forward pass
under ``torch.autograd.graph.saved_tensors_hooks`` and charges every tensor autograd saves for the backward to the
module whose forward saved it (the innermost one running: ``attn`` itself is the mixer's body, e.g. the recurrence
kernel and the gate product; ``attn.qkv`` is what the projection saves, i.e. its input). Each storage counts once
(``q``, ``k`` and ``v`` are views of one ``qkv`` output); parameters and their autocast copies are left out. The sum
is the activation memory held when the backward starts, eager mode (torch.compile's partitioner may recompute some
elementwise outputs instead; the compiled peak is what ``bench_models.py`` measures on a GPU).

    PYTHONPATH=. python benchmarks/saved_activations.py --img-size 224 --batch 2            # CPU, ~1 min
    PYTHONPATH=. python benchmarks/saved_activations.py --device cuda --img-size 224 1024 --batch 8

On the CPU the LightNet kernels run under ``TRITON_INTERPRET=1`` (set by this script when no GPU is used), so the
Triton path's saved set is what is counted, as on a GPU; ``--attn-backend torch`` counts the PyTorch reference's.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from collections import defaultdict
from typing import Dict, List, Optional

import torch

_BLOCK = re.compile(r"^blocks\.\d+\.")


_VIEW_OPS = ("TBackward0", "ViewBackward0", "TransposeBackward0", "PermuteBackward0", "ExpandBackward0",
             "UnsqueezeBackward0", "ReshapeAliasBackward0", "AsStridedBackward0")


def _is_parameter_copy(t: torch.Tensor) -> bool:
    """Whether ``t`` is (a view of) a dtype copy of a parameter, such as autocast's bf16 weight copies: its autograd
    history is view ops, then one ``to(dtype)``, then the parameter itself."""
    fn = t.grad_fn
    while fn is not None and type(fn).__name__ in _VIEW_OPS:
        fn = fn.next_functions[0][0]
    if fn is None or type(fn).__name__ != "ToCopyBackward0":
        return False
    src = fn.next_functions[0][0]
    return src is not None and type(src).__name__ == "AccumulateGrad"


class CompiledRegion(torch.nn.Module):
    """``inner`` run through ``torch.compile``; hooks on this wrapper stay outside the compiled code."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.compiled = torch.compile(inner)

    def forward(self, *args, **kwargs):
        return self.compiled(*args, **kwargs)


def compile_block_parts(model: torch.nn.Module) -> torch.nn.Module:
    """Every child of every block (norms, mixer, MLP, ...) wrapped in a :class:`CompiledRegion`, as
    ``run_classification.py --compile blocks`` compiles them: what each compiled part saves is charged to it."""
    for block in model.blocks:
        for name, child in list(block.named_children()):
            if any(True for _ in child.parameters()):
                setattr(block, name, CompiledRegion(child))
    return model


def saved_bytes_by_module(model: torch.nn.Module, x: torch.Tensor, amp_dtype: Optional[torch.dtype]) -> Dict[str, int]:
    """``{module path: bytes}`` that one forward of ``model`` on ``x`` saves for the backward (see module doc).
    Block paths are kept whole (``blocks.3.attn.qkv``); ``'<top>'`` holds what no module saved. Inside a
    :class:`CompiledRegion` the compiled graph saves plain tensors without autograd history, so there a weight copy
    is recognised by its shape (a parameter's, or its transpose)."""
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    param_shapes = {s for p in model.parameters() for s in (tuple(p.shape), tuple(p.shape)[::-1])}
    stack: List[str] = []

    def enter(name: str):
        def hook(module, args) -> None:
            stack.append(name)
        return hook

    def leave(module, args, output) -> None:
        stack.pop()

    handles = []
    for name, module in model.named_modules():
        if ".inner" in name or ".compiled" in name:  # inside a compiled region: its wrapper takes the charge
            continue
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))
    seen = set()
    out: Dict[str, int] = defaultdict(int)

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in seen or ptr in param_storages:
            return t
        seen.add(ptr)
        weight_copy = _is_parameter_copy(t) or (t.grad_fn is None and tuple(t.shape) in param_shapes)
        if not weight_copy:  # autocast's bf16 copies of the weights are not activations
            out[stack[-1] if stack and stack[-1] else "<top>"] += storage.nbytes()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                model(x)
    finally:
        for h in handles:
            h.remove()
    return dict(out)


def per_block_row(saved: Dict[str, int], tokens: int, depth: int) -> Dict[str, float]:
    """Bytes per token and block by the block-relative module path (``attn.qkv``), averaged over the ``depth``
    blocks; what lies outside the blocks goes under ``(outside blocks)``, per token and per block too."""
    row: Dict[str, float] = defaultdict(float)
    for path, nbytes in saved.items():
        if _BLOCK.match(path):
            key = _BLOCK.sub("", path)
        elif _BLOCK.match(path + "."):  # the block's own forward (e.g. its residual adds), outside its children
            key = "(block)"
        else:
            key = "(outside blocks)"
        row[key] += nbytes / tokens / depth
    return dict(row)


def measure(name: str, img_size: int, batch: int, device: torch.device, amp_dtype: Optional[torch.dtype],
            attn_backend: str, compiled: bool = False) -> Dict[str, object]:
    import timm

    import lightnet  # noqa: F401  (registers the lightnet_* models with timm)

    kwargs = dict(img_size=img_size)
    if name.startswith("lightnet"):
        kwargs["attn_backend"] = attn_backend
    else:
        kwargs["dynamic_img_size"] = True
    model = timm.create_model(name, **kwargs).to(device).train()
    if compiled:
        compile_block_parts(model)
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    saved = saved_bytes_by_module(model, x, amp_dtype)
    grid = img_size // 16
    tokens = batch * grid * grid
    depth = len(model.blocks)
    return dict(model=name, img_size=img_size, batch=batch, compiled=compiled, tokens_per_image=grid * grid,
                total_mib=sum(saved.values()) / 2**20, per_token_block=per_block_row(saved, tokens, depth))


def render(rows: List[Dict[str, object]]) -> str:
    """One markdown table per image size: bytes per token and block, by module, with the models side by side."""
    lines = []
    for size in sorted({r["img_size"] for r in rows}):
        at = [r for r in rows if r["img_size"] == size]
        keys = sorted({k for r in at for k in r["per_token_block"]})
        lines += [f"\n### {size} px ({at[0]['tokens_per_image']} tokens), bytes saved per token and block", "",
                  "| module | " + " | ".join(r["model"] for r in at) + " |", "|---|" + "---:|" * len(at)]
        for k in keys:
            lines.append(f"| `{k}` | " + " | ".join(f"{r['per_token_block'].get(k, 0.0):.0f}" for r in at) + " |")
        lines.append("| **sum** | " + " | ".join(f"**{sum(r['per_token_block'].values()):.0f}**" for r in at) + " |")
        first = sum(at[0]["per_token_block"].values())
        lines.append(f"| sum / `{at[0]['model']}`'s | " + " | ".join(
            f"{sum(r['per_token_block'].values()) / first:.2f}×" for r in at) + " |")
        lines.append("| whole model, MiB | " + " | ".join(f"{r['total_mib']:.1f}" for r in at) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lightnet_small", "vit_small_patch16_224"])
    p.add_argument("--img-size", type=int, nargs="+", default=[224])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16", "none"])
    p.add_argument("--attn-backend", default="triton", choices=["auto", "torch", "triton"],
                   help="LightNet's kernel backend (triton on the CPU runs under TRITON_INTERPRET=1)")
    p.add_argument("--compile", action="store_true",
                   help="compile every block's parts (norms, mixer, MLP) as run_classification.py --compile does")
    p.add_argument("--out", default=None, help="folder for saved_activations.{json,md}")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu" and args.attn_backend == "triton":
        os.environ["TRITON_INTERPRET"] = "1"
    amp = None if args.amp_dtype == "none" else getattr(torch, args.amp_dtype)
    rows = [measure(m, s, args.batch, device, amp, args.attn_backend, args.compile)
            for s in args.img_size for m in args.models]
    md = render(rows)
    print(md)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "saved_activations.json"), "w") as f:
            json.dump(dict(args=vars(args), rows=rows), f, indent=1)
        with open(os.path.join(args.out, "saved_activations.md"), "w") as f:
            f.write(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
