"""Training memory, LightNet-S vs ViT-S: what a step keeps for the backward (counted), and the GPU's peak.

``saved`` counts, for one training forward (bf16 autocast), every tensor autograd saves for the backward and
charges it to the module whose forward saved it (the innermost one running: ``attn`` is the mixer's own body, e.g.
the recurrence kernel and the gate product; ``attn.qkv`` is what that projection saves, its input). Each storage
counts once; parameters and their autocast copies are left out. Reported in bytes per token and block. With
``--compile`` every block part (norms, mixer, MLP) is compiled on its own and charged as a whole (inductor's
partitioner chooses what to keep). The bytes do not depend on the device, so this runs on the CPU (LightNet's Triton
path under ``TRITON_INTERPRET=1``; there RMSNorm keeps one fp32 ``[N, C]`` copy more than CUDA's fused kernel).
``peak`` trains each model on the GPU (forward + backward + fused AdamW, bf16) and reports the peak memory and
images/s; ``--recompute`` adds LightNet-S variants with other ``attn_recompute_output`` settings.

    python benchmarks/memory.py saved --img-size 224 1024 --batch 2 [--compile] --out $OUT/saved     # CPU, minutes
    python benchmarks/memory.py peak --sizes 224 1024 --batches 128 8 --compile-mode reduce-overhead --out $OUT/peak
    python benchmarks/memory.py saved --smoke                                                          # CPU, seconds
"""
from __future__ import annotations

import os
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

if not __package__:  # run as a file: the repository root replaces this folder on the path (no shadowed packages)
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from benchmarks.common import (  # noqa: E402
    COMPILE_MODES, Row, compile_model, environment, log, md_table, num, parser, peak_gib, reset_peak, step_begin,
    time_calls, write_result,
)

MODELS = ("lightnet_small", "vit_small_patch16_224")
_BLOCK = re.compile(r"^blocks\.\d+\.")
_VIEW_OPS = ("TBackward0", "ViewBackward0", "TransposeBackward0", "PermuteBackward0", "ExpandBackward0",
             "UnsqueezeBackward0", "ReshapeAliasBackward0", "AsStridedBackward0")


def is_parameter_copy(t: torch.Tensor) -> bool:
    """Whether ``t`` is (a view of) a dtype copy of a parameter, such as autocast's bf16 weights: view ops, then one
    ``to(dtype)``, then the parameter."""
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
        self.inner, self.compiled = inner, torch.compile(inner)

    def forward(self, *args, **kwargs):
        return self.compiled(*args, **kwargs)


def compile_block_parts(model: torch.nn.Module) -> torch.nn.Module:
    """Every child with parameters of every block wrapped in a :class:`CompiledRegion` (charged as a whole)."""
    for block in model.blocks:
        for name, child in list(block.named_children()):
            if any(True for _ in child.parameters()):
                setattr(block, name, CompiledRegion(child))
    return model


def saved_bytes_by_module(model: torch.nn.Module, x: torch.Tensor, amp: Optional[torch.dtype]) -> Dict[str, int]:
    """``{module path: bytes}`` one forward of ``model`` on ``x`` saves for the backward (``'<top>'``: no module).
    Inside a compiled region the graph saves plain tensors without history: a weight copy is told by its shape."""
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    param_shapes = {s for p in model.parameters() for s in (tuple(p.shape), tuple(p.shape)[::-1])}
    stack: List[str] = []
    handles = []

    def leave(module, args, output) -> None:  # a forward hook that returned a value would replace the output
        stack.pop()

    for name, module in model.named_modules():
        if ".inner" in name or ".compiled" in name:  # inside a compiled region: its wrapper takes the charge
            continue
        handles.append(module.register_forward_pre_hook(lambda m, a, name=name: stack.append(name)))
        handles.append(module.register_forward_hook(leave))
    seen, out = set(), defaultdict(int)

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in seen and ptr not in param_storages:
            seen.add(ptr)
            if not (is_parameter_copy(t) or (t.grad_fn is None and tuple(t.shape) in param_shapes)):
                out[stack[-1] if stack and stack[-1] else "<top>"] += storage.nbytes()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                model(x)
    finally:
        for h in handles:
            h.remove()
    return dict(out)


def per_token_block(saved: Dict[str, int], tokens: int, depth: int) -> Dict[str, float]:
    """Bytes per token and block by block-relative path (``attn.qkv``); the rest under ``(outside blocks)``."""
    row: Dict[str, float] = defaultdict(float)
    for path, nbytes in saved.items():
        key = (_BLOCK.sub("", path) if _BLOCK.match(path) else "(block)" if _BLOCK.match(path + ".")
               else "(outside blocks)")
        row[key] += nbytes / tokens / depth
    return dict(row)


def build(name: str, img_size: int, **kwargs) -> torch.nn.Module:
    import timm

    import lightnet  # noqa: F401  registers the lightnet_* models with timm

    if not name.startswith("lightnet"):  # the LightNet options do not apply to the peer
        kwargs = dict(dynamic_img_size=True, **{k: v for k, v in kwargs.items() if k == "depth"})
    return timm.create_model(name, img_size=img_size, **kwargs)


def run_saved(args, device: torch.device) -> List[Row]:
    amp = None if args.amp_dtype == "none" else getattr(torch, args.amp_dtype)
    rows = []
    for size in args.img_size:
        for name in args.models:
            model = build(name, size, attn_backend=args.attn_backend).to(device).train()
            if args.compile:
                compile_block_parts(model)
            saved = saved_bytes_by_module(model, torch.randn(args.batch, 3, size, size, device=device), amp)
            grid = size // 16
            rows.append(dict(part="saved", model=name, img_size=size, batch=args.batch, compiled=args.compile,
                             tokens_per_image=grid * grid, total_mib=sum(saved.values()) / 2**20,
                             per_token_block=per_token_block(saved, args.batch * grid * grid, len(model.blocks))))
            log(rows[-1])
    return rows


def run_peak(args, device: torch.device) -> List[Row]:
    variants = [(MODELS[1], {}), (MODELS[0], {})] + [(MODELS[0], dict(attn_recompute_output=v)) for v in args.recompute]
    rows = []
    for size, batch in zip(args.sizes, args.batches):
        x, y = torch.randn(batch, 3, size, size, device=device), torch.randint(0, 1000, (batch,), device=device)
        for name, kwargs in variants:
            row = dict(part="peak", model=name, variant=" ".join(f"{k}={v}" for k, v in kwargs.items()) or "default",
                       size=size, batch=batch, mode=args.compile_mode)
            model = None
            try:
                reset_peak(device)
                model = compile_model(build(name, size, **kwargs, **args.model_kwargs).to(device).train(),
                                      args.compile_mode, args.fullgraph)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

                def step() -> None:
                    step_begin(args.compile_mode)
                    with torch.autocast(device.type, dtype=torch.bfloat16):
                        F.cross_entropy(model(x), y).backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                first, median = time_calls(step, device, args.warmup, args.iters)
                row.update(img_per_s=batch / median, peak_gib=peak_gib(device), first_s=first, status="ok")
            except torch.OutOfMemoryError:
                row.update(status="OOM")
            finally:
                del model
                reset_peak(device)
            log(row)
            rows.append(row)
    return rows


def render(rows: List[Row]) -> str:
    parts = []
    for size in dict.fromkeys(r.get("img_size", r.get("size")) for r in rows):
        at = [r for r in rows if r["part"] == "saved" and r["img_size"] == size]
        if at:
            keys = sorted({k for r in at for k in r["per_token_block"]})
            sums = [sum(r["per_token_block"].values()) for r in at]
            parts.append(f"### {size} px ({at[0]['tokens_per_image']} tokens), bytes saved per token and block"
                         f"{', block parts compiled' if at[0]['compiled'] else ', eager'}\n\n" + md_table(
                             ["module"] + [r["model"] for r in at],
                             [[f"`{k}`"] + [f"{r['per_token_block'].get(k, 0.0):.0f}" for r in at] for k in keys]
                             + [["**sum**"] + [f"**{s:.0f}**" for s in sums],
                                [f"sum / {at[-1]['model']}"] + [f"{s / sums[-1]:.2f}×" for s in sums],
                                ["whole model, MiB"] + [f"{r['total_mib']:.1f}" for r in at]]))
        peak = [r for r in rows if r["part"] == "peak" and r["size"] == size]
        if peak:
            ref = peak[0]
            parts.append(f"### {size} px, batch {ref['batch']}, training step ({ref['mode']})\n\n" + md_table(
                ["model", "variant", "img/s", "peak GiB", f"peak / {ref['model']}"],
                [(r["model"], r["variant"], num(r.get("img_per_s", float("nan")), ".1f"),
                  num(r.get("peak_gib", float("nan")), ".2f"),
                  num(r.get("peak_gib", float("nan")) / ref.get("peak_gib", float("nan")), ".3f")) for r in peak]))
    return "\n\n".join(parts)


def main(argv: Optional[List[str]] = None) -> int:
    p = parser(__doc__)
    p.add_argument("part", choices=("saved", "peak"))
    p.add_argument("--models", nargs="+", default=list(MODELS), help="saved: the models counted")
    p.add_argument("--img-size", type=int, nargs="+", default=[224], help="saved: image sizes")
    p.add_argument("--batch", type=int, default=2, help="saved: images per forward")
    p.add_argument("--compile", action="store_true", help="saved: compile every block part")
    p.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16", "none"])
    p.add_argument("--attn-backend", default="triton", choices=["auto", "torch", "triton"],
                   help="saved: LightNet's kernel backend (triton on the CPU runs in the interpreter)")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 1024], help="peak: image sizes")
    p.add_argument("--batches", type=int, nargs="+", default=[128, 8], help="peak: batch per size")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default="reduce-overhead", help="peak")
    p.add_argument("--fullgraph", action="store_true")
    p.add_argument("--recompute", nargs="*", default=["never", "always"],
                   help="peak: extra LightNet-S variants with these attn_recompute_output values")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    args = p.parse_args(argv)
    args.model_kwargs = dict(depth=2) if args.smoke else {}  # smoke: 2 blocks, the plumbing not the numbers
    if args.smoke:
        args.device, args.img_size, args.batch, args.warmup, args.iters = "cpu", [64], 1, 1, 1
        args.sizes, args.batches, args.compile_mode = [32], [2], "eager"
    if len(args.sizes) != len(args.batches):
        p.error("--sizes and --batches need the same number of values")
    device = torch.device(args.device)
    if device.type == "cpu" and args.attn_backend == "triton":
        os.environ["TRITON_INTERPRET"] = "1"
    rows = run_saved(args, device) if args.part == "saved" else run_peak(args, device)
    write_result(args.out, f"memory_{args.part}", environment(device), args, rows, render(rows))
    return 0 if all(r.get("status", "ok") in ("ok", "OOM") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
