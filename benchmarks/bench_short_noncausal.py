"""Short non-causal sequences: the Triton kernels vs the two-GEMM form under ``torch.compile`` (GPU; CPU smoke test).

Both paths are called as the models call them — ``additive_attention(..., backend="triton")`` inside a
``torch.compile``'d function, bf16, 6 heads × 64, 2-D MD-LRPE — once with ``TUNING["nc_gemm_max_tokens"] = 0`` (the
Triton custom ops) and once with it above N (``lightnet.kernels.gemm_noncausal``: softmax and LRPE products fused
by inductor around two cuBLAS GEMMs). Per shape ``BxN``: the forward and the three gradients checked against the
fp32 reference (norm-relative error), forward + backward time (median ms, ``mode="reduce-overhead"``: CUDA graphs,
so mostly GPU time) and the memory the forward keeps for the backward; the ratio Triton / GEMM (> 1: GEMM faster).

    PYTHONPATH=. python benchmarks/bench_short_noncausal.py --shapes 128x196,256x256,32x1024,8x4096 --out $OUT
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import rel, two_path_table, write_report  # noqa: E402
from sweep_lrpe import make_inputs, parse_shape  # noqa: E402

from lightnet.kernels import additive_attention  # noqa: E402
from lightnet.kernels.reference import noncausal_attention_torch  # noqa: E402
from lightnet.kernels.triton_common import TUNING  # noqa: E402

PATHS = {"triton": 0, "gemm": 1 << 30}  # TUNING["nc_gemm_max_tokens"] per path


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    return additive_attention(q, k, v, lrpe_theta=theta, backend="triton")


def compiled_path(path: str, mode: Optional[str]) -> Callable:
    """A fresh compiled attention for ``path`` (TUNING is read while dynamo traces, so set it per compile)."""
    torch._dynamo.reset()
    TUNING["nc_gemm_max_tokens"] = PATHS[path]
    return torch.compile(_attention, fullgraph=True, mode=mode)


def check(fn: Callable, q, k, v, do, theta) -> Dict[str, float]:
    """Norm-relative errors of o, dq, dk, dv vs the fp32 reference on the same bf16 inputs."""
    ref_in = [t.float().requires_grad_() for t in (q, k, v)]
    o_ref = noncausal_attention_torch(*ref_in, lrpe_theta=theta)[0]
    o_ref.backward(do.float())
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    o = fn(*leaves, theta)
    o.backward(do)
    errs = {"o": rel(o, o_ref)}
    errs.update({f"d{n}": rel(t.grad, r.grad) for n, t, r in zip("qkv", leaves, ref_in)})
    return errs


def time_and_memory(fn: Callable, q, k, v, do, theta, rep: int = 50, graphs: bool = False) -> Dict[str, float]:
    """Median forward + backward ms (triton.testing.do_bench) and MiB held between forward and backward (NaN with
    ``graphs``: under CUDA graphs the tensors live in the graph's private pool, which memory_allocated does not see
    change; run J7 printed 0.0 there)."""
    import triton.testing

    leaves = [t.clone().requires_grad_() for t in (q, k, v)]

    def step() -> None:
        for t in leaves:
            t.grad = None
        fn(*leaves, theta).backward(do)

    for _ in range(3):
        step()
    ms = triton.testing.do_bench(step, rep=rep, return_mode="median")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    o = fn(*leaves, theta)
    held = float("nan") if graphs else (torch.cuda.memory_allocated() - base) / 2**20
    o.backward(do)
    return {"fwd_bwd_ms": ms, "held_mib": held}


def run(shapes: Sequence[str], device: str, timed: bool, mode: Optional[str], tol: float = 2e-2) -> List[Dict]:
    rows = []
    saved = TUNING.get("nc_gemm_max_tokens")
    try:
        for spec in shapes:
            B, N = parse_shape(spec)
            tensors = make_inputs(B, N, device)
            for path in PATHS:
                row: Dict[str, object] = {"path": path, "B": B, "N": N}
                fn = compiled_path(path, mode)
                err = check(fn, *tensors)
                row.update({f"err_{k}": v for k, v in err.items()})
                row["status"] = "ok" if all(v < tol for v in err.values()) else "FAILED"
                if timed and row["status"] == "ok":
                    row.update(time_and_memory(fn, *tensors, graphs=mode == "reduce-overhead"))
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        TUNING["nc_gemm_max_tokens"] = saved
        torch._dynamo.reset()
    return rows


def table(rows: List[Dict]) -> str:
    return two_path_table(rows, ("B", "N"), ("triton", "gemm"), ("Triton", "GEMM"), lambda r: f"{r['B']} × {r['N']}",
                          extra=(("held_mib", "MiB held", ".1f"),))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="128x196,256x256,32x1024,8x4096")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--mode", default="reduce-overhead", help="torch.compile mode ('none' = default mode)")
    ap.add_argument("--no-time", action="store_true", help="check only (CPU: TRITON_INTERPRET=1, --mode none)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    mode = None if args.mode == "none" else args.mode
    rows = run(args.shapes.split(","), args.device, not args.no_time, mode)
    md = table(rows)
    print(md)
    if args.out:
        write_report(args.out, "bench_short_noncausal", rows, md)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
