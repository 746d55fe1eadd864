"""The multi-scan baselines' decay recurrence at issue 7's Fashion-MNIST shape: which form is fast (GPU; CPU smoke).

Run K3 timed the 2-scan classifier's training step at ~650 ms (three processes sharing an H200, blocks compiled),
far above LightNet's. This script times forward + backward of the recurrence alone — ``S_t = diag(exp(g_t)) S_{t−1}
+ k_t v_tᵀ`` on ``[B, N, H, D]`` = 1024 × 64 × 3 × 64 (a 2-scan call stacks two directions of batch 512) — in each
of its forms, so the next call can pick one:

* ``eager`` / ``compiled`` (``torch.compile``) :func:`benchmarks.baselines.decay_recurrence_chunked` with
  ``intra`` = ``pairwise`` (exact for any decay, ``[L, L, D]`` weights per chunk), ``subchunk`` (exact for any
  decay: GEMMs between sub-chunks of 8 tokens, pairwise inside them; at L = 64 one chunk holds the whole sequence, so
  no loop over chunk states) or ``factorised`` (two ``[L, L]`` GEMMs; needs every chunk's total log decay above −60,
  which a per-token floor of −60 / L guarantees), at chunk lengths 8 / 16 / 32 / 64;
* ``fla``: fla's ``chunk_gla`` Triton kernel (``--fla``; its first call autotunes for minutes).

Decay: ``g = logsigmoid(z) / 16`` (GLA's normaliser) with ``z ~ N(−40, 20)`` ("strong": ≈ −2.5 per token, so chunk
totals pass −60 and the ``auto`` form goes pairwise) or ``z ~ N(0, 1)`` ("weak", for the factorised rows). Every
row is checked against the fp32 eager pairwise form on the same inputs (output and the four gradients,
norm-relative) before it is timed (``do_bench`` median ms); the ratio is the eager-pairwise row's time / the row's.

    PYTHONPATH=. python benchmarks/bench_decay_recurrence.py --out $OUT [--fla]
    PYTHONPATH=. python benchmarks/bench_decay_recurrence.py --device cpu --shape 2x16x2x8 --no-time --backend aot_eager
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import rel, write_report  # noqa: E402

from benchmarks.baselines.multiscan import _load_chunk_gla, decay_recurrence_chunked  # noqa: E402

# (name, decay, mode, chunk, intra): mode 'eager' | 'compiled' | 'fla'
VARIANTS: List[Tuple[str, str, str, int, str]] = [
    ("eager pairwise L=32 (run K3's eager path)", "strong", "eager", 32, "pairwise"),
    ("eager pairwise L=16", "strong", "eager", 16, "pairwise"),
    ("eager pairwise L=8", "strong", "eager", 8, "pairwise"),
    ("compiled pairwise L=32 (run K3's path)", "strong", "compiled", 32, "pairwise"),
    ("compiled pairwise L=16", "strong", "compiled", 16, "pairwise"),
    ("compiled pairwise L=8", "strong", "compiled", 8, "pairwise"),
    ("eager subchunk L=64 (s=8)", "strong", "eager", 64, "subchunk"),
    ("compiled subchunk L=64 (s=8)", "strong", "compiled", 64, "subchunk"),
    ("compiled subchunk L=16 (s=8)", "strong", "compiled", 16, "subchunk"),
    ("eager factorised L=16", "weak", "eager", 16, "factorised"),
    ("eager factorised L=64", "weak", "eager", 64, "factorised"),
    ("compiled factorised L=16", "weak", "compiled", 16, "factorised"),
    ("compiled factorised L=64", "weak", "compiled", 64, "factorised"),
]
FLA_VARIANT = ("fla chunk_gla", "strong", "fla", 64, "-")


def parse_shape(spec: str) -> Tuple[int, int, int, int]:
    try:
        B, N, H, D = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise ValueError(f"shape {spec!r}: expected BxNxHxD, e.g. 1024x64x3x64") from None
    return B, N, H, D


def make_inputs(shape: Sequence[int], decay: str, device: str, seed: int = 0) -> List[torch.Tensor]:
    """``q, k, v`` in bf16 (as under autocast) and the fp32 log decay, ``[B, N, H, D]`` each."""
    B, N, H, D = shape
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, N, H, D, generator=gen) * D**-0.5 for _ in range(3))
    z = torch.randn(B, N, H, D, generator=gen) * (20.0 if decay == "strong" else 1.0) + (-40.0 if decay == "strong" else 0.0)
    g = F.logsigmoid(z) / 16
    return [q.to(device, torch.bfloat16), k.to(device, torch.bfloat16), v.to(device, torch.bfloat16), g.to(device)]


def make_fn(mode: str, chunk: int, intra: str, backend: str) -> Callable:
    if mode == "fla":
        chunk_gla = _load_chunk_gla()
        if chunk_gla is None:
            raise RuntimeError("fla is not installed")
        return lambda q, k, v, g: chunk_gla(q, k, v, g, scale=1.0)[0]

    def fn(q, k, v, g):
        return decay_recurrence_chunked(q, k, v, g, chunk_size=chunk, intra=intra)

    if mode == "compiled":
        torch._dynamo.reset()
        return torch.compile(fn, backend=backend, fullgraph=True)
    return fn


def outputs_and_grads(fn: Callable, inputs: Sequence[torch.Tensor], w: torch.Tensor, fp32: bool = False):
    leaves = [(t.float() if fp32 else t).clone().requires_grad_() for t in inputs]
    o = fn(*leaves)
    (o.float() * w).sum().backward()
    return [o.detach()] + [t.grad for t in leaves]


def run(shape: Sequence[int], device: str, timed: bool, backend: str, with_fla: bool, tol: float = 3e-2,
        variants: Optional[Sequence[Tuple[str, str, str, int, str]]] = None) -> List[Dict[str, object]]:
    rows: List[Dict[str, object]] = []
    base_ms: Optional[float] = None
    exact = lambda q, k, v, g: decay_recurrence_chunked(q, k, v, g, chunk_size=32, intra="pairwise")  # noqa: E731
    checked: Dict[str, Tuple[List[torch.Tensor], torch.Tensor, List[torch.Tensor]]] = {}  # decay → inputs, w, ref
    for name, decay, mode, chunk, intra in list(variants or VARIANTS) + ([FLA_VARIANT] if with_fla else []):
        row: Dict[str, object] = {"variant": name, "decay": decay, "mode": mode, "chunk": chunk, "intra": intra}
        rows.append(row)
        if decay not in checked:  # the fp32 reference once per decay: every row of that decay shares the inputs
            inputs = make_inputs(shape, decay, device)
            w = torch.randn(*inputs[2].shape, generator=torch.Generator().manual_seed(1)).to(device)
            checked[decay] = (inputs, w, outputs_and_grads(exact, inputs, w, fp32=True))
        inputs, w, ref = checked[decay]
        try:
            fn = make_fn(mode, chunk, intra, backend)
            got = outputs_and_grads(fn, inputs, w)
        except Exception as exc:  # a failing row is reported, the others still run
            row["status"] = f"failed: {type(exc).__name__}: {str(exc)[:160]}"
            continue
        for label, a, b in zip(("o", "dq", "dk", "dv", "dg"), got, ref):
            row[f"err_{label}"] = rel(a, b)
        worst = max(v for k, v in row.items() if k.startswith("err_"))
        row["status"] = "ok" if worst < tol else f"error {worst:.1e} above {tol:.0e}"
        if timed and row["status"] == "ok":
            import triton.testing

            leaves = [t.clone().requires_grad_() for t in inputs]

            def step() -> None:
                for t in leaves:
                    t.grad = None
                (fn(*leaves).float() * w).sum().backward()

            for _ in range(3):
                step()
            row["fwd_bwd_ms"] = triton.testing.do_bench(step, rep=100, return_mode="median")
            base_ms = base_ms if base_ms is not None else row["fwd_bwd_ms"]
            row["speedup"] = base_ms / row["fwd_bwd_ms"]
        print(row, flush=True)
    return rows


def markdown(rows: Sequence[Dict[str, object]], shape: Sequence[int]) -> str:
    lines = [f"Shape B × N × H × D = {' × '.join(map(str, shape))}, bf16 inputs, fp32 recurrence; forward + backward.",
             "", "| form | decay | ms | vs first row | max error vs fp32 pairwise | status |",
             "|---|---|---:|---:|---:|---|"]
    for r in rows:
        errs = [v for k, v in r.items() if k.startswith("err_")]
        ms = f"{r['fwd_bwd_ms']:.3f}" if "fwd_bwd_ms" in r else "—"
        sp = f"**{r['speedup']:.2f}×**" if "speedup" in r else "—"
        err = f"{max(errs):.1e}" if errs else "—"
        lines.append(f"| {r['variant']} | {r['decay']} | {ms} | {sp} | {err} | {r['status']} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="1024x64x3x64", help="BxNxHxD")
    p.add_argument("--device", default="cuda")
    p.add_argument("--no-time", dest="timed", action="store_false", help="check only (the CPU smoke test)")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager for a CPU check)")
    p.add_argument("--fla", action="store_true", help="also fla's chunk_gla (autotunes on its first call)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    shape = parse_shape(args.shape)
    rows = run(shape, args.device, args.timed, args.backend, args.fla)
    md = markdown(rows, shape)
    print(md)
    if args.out:
        write_report(args.out, "bench_decay_recurrence", rows, md)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
