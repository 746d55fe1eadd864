"""GPU time per piece of one LightNet block vs one ViT block, forward + backward, per token, at a fixed step size.

The LightNet pieces are the modules of ``timm.create_model('lightnet_small').blocks[0]`` called on their own (the
same objects the model runs, nothing copied): the two norms, the qkv projection, the recurrence kernel
(``additive_attention`` with the query's SiLU and MD-LRPE, as the mixer calls it), MD-LRPE (the kernel with the
angles minus the kernel without them), the output epilogue (per-head norm × low-rank gate, both gate projections and
the output projection), the GLU, and the whole block; MD-TPE (applied once per model, after the embedding; also with
the FFT on every axis and with the direct product up to 64 tokens per axis) is listed as its own row and per block (÷
depth). The ViT pieces come from timm's ``Block`` of ``vit_small_patch16_224``: the two norms, qkv, SDPA attention,
output projection, MLP and the whole block. Each piece runs forward + backward (``out.backward(grad)``; inputs
require gradients; the attention pieces get bf16 q / k / v as the projections hand them over) under bf16 autocast,
eager and ``torch.compile`` (default mode), timed with CUDA events over ``--iters`` calls after warm-up; reported in
µs per token and as a ratio to the whole ViT block. Tokens per image 196 / 1024 / 4096 / 16384 with the same tokens
per step (``--tokens``, batch = tokens // N).

    python benchmarks/block_profile.py --out $OUT/block-profile                 # GPU, ~6 min
    python benchmarks/block_profile.py --smoke --out /tmp/bp                     # CPU, seconds
"""
from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

if not __package__:  # run as a file: the repository root replaces this folder on the path (no shadowed packages)
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from benchmarks.common import Row, environment, log, md_table, num, parser, sync, write_result  # noqa: E402

#: MD-TPE's direct / FFT thresholds timed beside the model's default (``lightnet.layers.tpe.DIRECT_MAX_LEN``)
TPE_DIRECT_MAX_LENS = (0, 64)
Piece = Tuple[str, Callable[..., torch.Tensor], List[torch.Tensor]]  # name, fn, inputs (requiring grad)


def _grid(n: int) -> Tuple[int, int]:
    side = int(math.isqrt(n))
    if side * side != n:
        raise ValueError(f"block_profile: tokens per image {n} is not a square grid")
    return side, side


def _inputs(device: torch.device) -> Tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """Makers of leaf inputs requiring gradients: ``x_`` fp32 (the residual stream, cast by autocast as in the
    model), ``h_`` in the dtype the model's projections hand the attention under autocast (bf16 on a GPU, fp32 on
    the CPU), so that the kernels run on the dtype they get inside the block."""
    half = torch.bfloat16 if device.type == "cuda" else torch.float32

    def x_(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device).requires_grad_()

    def h_(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=half).requires_grad_()
    return x_, h_


def lightnet_pieces(model: torch.nn.Module, B: int, N: int, device: torch.device) -> List[Piece]:
    """The pieces of ``model.blocks[0]`` (and the model's MD-TPE) with their inputs ``[B, N, C]``."""
    from lightnet.kernels import additive_attention

    block, grid = model.blocks[0], _grid(N)
    attn = block.attn
    C, H, D = attn.dim, attn.num_heads, attn.head_dim
    r = attn.gate[0].out_features if attn.gate is not None else 0

    x_, h_ = _inputs(device)

    theta = attn.lrpe.angles(grid, cache=True).to(device) if attn.lrpe is not None else None

    def kernel(q, k, v, lrpe=True):
        return additive_attention(q, k, v, scale=attn.scale, lrpe_theta=theta if lrpe else None,
                                  backend=attn.backend, q_activation="silu")

    def epilogue(o, x):
        gate_hidden = None if attn.gate is None else attn.gate[0](x)
        return attn.proj(attn._normed_and_gated(o, gate_hidden))

    pieces: List[Piece] = [
        ("norms (2)", lambda x: block.norm1(x) + block.norm2(x), [x_(B, N, C)]),
        ("qkv projection", attn.qkv, [x_(B, N, C)]),
        ("recurrence kernel (with MD-LRPE)", kernel, [h_(B, N, H, D), h_(B, N, H, D), h_(B, N, H, D)]),
        ("recurrence kernel (no MD-LRPE)", lambda q, k, v: kernel(q, k, v, lrpe=False),
         [h_(B, N, H, D), h_(B, N, H, D), h_(B, N, H, D)]),
        (f"output epilogue (norm × gate r={r}, proj)", epilogue, [h_(B, N, H, D), x_(B, N, C)]),
        ("MLP (GLU)", block.mlp, [x_(B, N, C)]),
        ("whole block", lambda x: block(x, grid), [x_(B, N, C)]),
    ]
    if model.tpe is not None:
        pieces.append(("MD-TPE (once per model)", lambda x: model.tpe(x, grid), [x_(B, N, C)]))
        for longest in TPE_DIRECT_MAX_LENS:  # the same MD-TPE with another direct / FFT threshold (same values)
            tpe = copy.deepcopy(model.tpe)
            tpe.direct_max_len = longest
            pieces.append((f"MD-TPE, direct product up to {longest} tokens per axis" if longest else
                           "MD-TPE, FFT on every axis", lambda x, tpe=tpe: tpe(x, grid), [x_(B, N, C)]))
    return pieces


def vit_pieces(model: torch.nn.Module, B: int, N: int, device: torch.device) -> List[Piece]:
    """The pieces of timm's ViT ``model.blocks[0]`` with their inputs."""
    from torch.nn import functional as F

    block = model.blocks[0]
    attn = block.attn
    C, H = model.embed_dim, attn.num_heads
    D = C // H

    x_, h_ = _inputs(device)

    return [
        ("norms (2)", lambda x: block.norm1(x) + block.norm2(x), [x_(B, N, C)]),
        ("qkv projection", attn.qkv, [x_(B, N, C)]),
        ("attention (SDPA)", lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
         [h_(B, H, N, D), h_(B, H, N, D), h_(B, H, N, D)]),
        ("output projection", attn.proj, [x_(B, N, C)]),
        ("MLP", block.mlp, [x_(B, N, C)]),
        ("whole block", block, [x_(B, N, C)]),
    ]


def time_piece(fn: Callable, inputs: Sequence[torch.Tensor], device: torch.device, mode: str, warmup: int,
               iters: int) -> float:
    """Seconds per forward + backward of ``fn(*inputs)`` (CUDA events on a GPU, perf_counter on the CPU)."""
    if mode != "eager":
        torch.compiler.reset()
        fn = torch.compile(fn, dynamic=False)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    grad = None

    def call() -> None:
        nonlocal grad
        with autocast:
            out = fn(*inputs)
        if grad is None:
            grad = torch.randn_like(out)
        out.backward(grad)
        for t in inputs:
            t.grad = None

    for _ in range(warmup):
        call()
    sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            call()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        call()
    return (time.perf_counter() - t0) / iters


def run(args, device: torch.device) -> List[Row]:
    import timm

    import lightnet  # noqa: F401  registers the lightnet_* models with timm

    rows: List[Row] = []
    for name, builder in (("lightnet", lightnet_pieces), ("vit", vit_pieces)):
        model = timm.create_model(args.models[name], dynamic_img_size=True, **args.model_kwargs).to(device)
        depth = len(model.blocks)
        for N in args.tokens_per_image:
            B = max(1, args.tokens // N)
            for mode in args.compile_modes:
                for piece, fn, inputs in builder(model, B, N, device):
                    row = dict(model=name, piece=piece, N=N, B=B, mode=mode, depth=depth)
                    try:
                        s = time_piece(fn, inputs, device, mode, args.warmup, args.iters)
                        row.update(us_per_token=1e6 * s / (B * N), ms=1e3 * s, status="ok")
                    except torch.OutOfMemoryError:
                        row.update(status="OOM")
                    except Exception as e:  # one piece that fails to compile must not lose the others
                        row.update(status=f"failed: {type(e).__name__}: {str(e)[:160]}")
                    log(row)
                    rows.append(row)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                if name == "lightnet":  # MD-LRPE's share: the kernel with the angles minus the kernel without
                    got = {r["piece"]: r for r in rows if r["model"] == name and r["N"] == N and r["mode"] == mode}
                    a, b = got["recurrence kernel (with MD-LRPE)"], got["recurrence kernel (no MD-LRPE)"]
                    row = dict(model=name, piece="MD-LRPE (kernel with − without)", N=N, B=B, mode=mode, depth=depth,
                               status="ok" if a["status"] == b["status"] == "ok" else "failed")
                    if row["status"] == "ok":
                        row.update(us_per_token=a["us_per_token"] - b["us_per_token"], ms=a["ms"] - b["ms"])
                    rows.append(row)
        model.cpu()
    return rows


def render(rows: List[Row]) -> str:
    out = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        Ns = list(dict.fromkeys(r["N"] for r in rows))
        vit_block: Dict[int, float] = {r["N"]: r.get("us_per_token", float("nan")) for r in rows
                                       if r["model"] == "vit" and r["piece"] == "whole block" and r["mode"] == mode}
        lines = []
        for model in ("lightnet", "vit"):
            for piece in dict.fromkeys(r["piece"] for r in rows if r["model"] == model):
                cells = []
                for N in Ns:
                    r = next((x for x in rows if x["model"] == model and x["piece"] == piece and x["N"] == N
                              and x["mode"] == mode), {})
                    us = r.get("us_per_token", float("nan"))
                    if r.get("status", "ok") != "ok":
                        cells.append(r["status"].split(":")[0])
                        continue
                    ratio = us / vit_block.get(N, float("nan")) if vit_block.get(N) else float("nan")
                    cells.append(f"{num(us, '.4f')} ({num(ratio, '.2f')}×)")
                lines.append((model, piece, *cells))
        depth = next((r["depth"] for r in rows if r["model"] == "lightnet"), 1)
        out.append(f"**{mode}**: µs per token, forward + backward (× the whole ViT block at that N); MD-TPE runs once "
                   f"per model: ÷ {depth} per block\n\n"
                   + md_table(["model", "piece", *[f"N = {N}" for N in Ns]], lines, align="ll" + "r" * len(Ns)))
    return "\n\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    p = parser(__doc__)
    p.add_argument("--tokens-per-image", type=int, nargs="+", default=[196, 1024, 4096, 16384])
    p.add_argument("--tokens", type=int, default=32768, help="tokens per step (batch = tokens // N)")
    p.add_argument("--compile-modes", nargs="+", default=["eager", "default"], choices=["eager", "default"])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    args = p.parse_args(argv)
    args.models = dict(lightnet="lightnet_small", vit="vit_small_patch16_224")
    args.model_kwargs = {}
    if args.smoke:
        args.device, args.tokens_per_image, args.tokens = "cpu", [16, 64], 128
        args.compile_modes, args.warmup, args.iters = ["eager"], 1, 1
        args.model_kwargs = dict(embed_dim=32, depth=2, num_heads=2, img_size=32, patch_size=4)
    device = torch.device(args.device)
    rows = run(args, device)
    write_result(args.out, "block_profile", environment(device), args, rows, render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
