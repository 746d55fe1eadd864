"""The SiLU GLU with and without recomputing ``silu(gate)`` in the backward: time and saved memory, side by side.

``GLU(recompute_act=True)`` (the default since 2026-12-04, :class:`lightnet.layers.mlp.SiluGatedProduct`) keeps one
``[N, hidden]`` tensor less for the backward (2 KiB per token and block of ``lightnet_small`` in bf16,
``benchmarks/saved_activations.py``) for one more elementwise kernel in the backward. For each token count and mode
(eager, or ``torch.compile``), this script checks that both paths give the same output and gradients, then times
forward + backward (``do_bench`` median on CUDA, the mean of ``--iters`` elsewhere; ms) and measures the bytes saved
for the backward; keep / recompute > 1 means recomputing is faster.

    PYTHONPATH=. python benchmarks/bench_glu.py --tokens 25088 32768 --out $OUT          # LightNet-S 224 b128, 1024 b8
    PYTHONPATH=. python benchmarks/bench_glu.py --device cpu --tokens 64 --dim 32 --iters 2
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import rel, two_path_table, write_report  # noqa: E402
from bench_models import _time  # noqa: E402

from lightnet.layers import GLU  # noqa: E402

PATHS = {"keep": False, "recompute": True}  # GLU.recompute_act per path


def _saved_mib(fn) -> float:
    """MiB of the distinct storages autograd saves while ``fn()`` runs (parameters included: equal for both paths)."""
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values()) / 2**20


def _time_ms(step, device: torch.device, iters: int) -> float:
    """``do_bench``'s median on CUDA, else the mean of ``iters`` calls after one warm-up (bench_models' timer)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(step, warmup=10, rep=max(50, iters)))
    return 1e3 * sum(_time(step, device, 1, iters)) / iters


def run(tokens: Sequence[int], dim: int, modes: Sequence[str], device: torch.device, iters: int,
        timed: bool = True) -> List[Dict[str, object]]:
    rows = []
    for n in tokens:
        torch.manual_seed(0)
        glu = GLU(dim).to(device)
        x = torch.randn(n, dim, device=device, requires_grad=True)
        go = torch.randn(n, dim, device=device)
        for mode in modes:
            outs = {}
            for path, recompute in PATHS.items():
                glu.recompute_act = recompute
                torch._dynamo.reset()
                fn = glu if mode == "eager" else torch.compile(glu)

                def forward():
                    with torch.autocast(device.type, dtype=torch.bfloat16):
                        return fn(x)

                def step():
                    forward().backward(go)

                x.grad = None
                glu.zero_grad(set_to_none=True)
                y = forward()
                y.backward(go)
                outs[path] = (y.detach().float(), x.grad.clone(), glu.fc1.weight.grad.clone())
                row = dict(tokens=n, mode=mode, path=path, status="ok", saved_mib=_saved_mib(forward))
                if path == "recompute":
                    row.update({f"err_{i}": rel(a, b) for i, (a, b) in enumerate(zip(outs["recompute"], outs["keep"]))})
                else:
                    row.update(err_0=0.0)
                if timed:
                    row["fwd_bwd_ms"] = _time_ms(step, device, iters)
                rows.append(row)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[25088, 32768],
                   help="rows of the [N, dim] input (batch x tokens per image)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--no-time", dest="timed", action="store_false")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    rows = run(args.tokens, args.dim, args.modes, torch.device(args.device), args.iters, args.timed)
    md = two_path_table(rows, ("tokens", "mode"), list(PATHS), ["keep", "recompute"],
                        label=lambda r: f"{r['mode']}, {r['tokens']} × {args.dim}",
                        extra=(("saved_mib", "saved MiB", ".1f"),))
    print(f"SiLU GLU (hidden {int(args.dim * 8 / 3)}), bf16 autocast, forward + backward, {args.device}\n\n{md}")
    bad = [r for r in rows if max(v for k, v in r.items() if k.startswith("err_")) > 1e-6]
    if args.out:
        write_report(args.out, "bench_glu", rows, md)
    if bad:
        print(f"paths disagree: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
