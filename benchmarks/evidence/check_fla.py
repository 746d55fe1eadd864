"""GPU check: fla's ``chunk_gla`` (the fast path of the scan baselines) against our PyTorch chunked recurrence.

    PYTHONPATH=. python -m benchmarks.evidence.check_fla        # needs CUDA and fla-core

For a few shapes, compares outputs and gradients (q, k, v, log decay) of ``decay_recurrence(backend='fla')`` with
``decay_recurrence_chunked`` in fp32 on the same inputs, prints the relative errors, and exits non-zero if any
exceeds ``--tol`` (bf16 inputs are compared against the fp32 reference of the bf16-rounded inputs).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import torch
from torch.nn import functional as F

from benchmarks.baselines import decay_recurrence, decay_recurrence_chunked, fla_available


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tol", type=float, default=2e-2)
    args = p.parse_args(argv)
    if not torch.cuda.is_available() or not fla_available():
        print(f"skipped: cuda={torch.cuda.is_available()} fla={fla_available()}")
        return 0
    worst = 0.0
    for B, N, H, D, dtype in [(2, 64, 3, 64, torch.float32), (2, 1000, 6, 128, torch.bfloat16), (4, 4096, 6, 64, torch.bfloat16)]:
        g = torch.Generator(device="cuda").manual_seed(0)
        mk = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
        q, k, v = mk(B, N, H, D).to(dtype), mk(B, N, H, D).to(dtype), mk(B, N, H, D).to(dtype)
        log_decay = F.logsigmoid(mk(B, N, H, D) + 3.0) / 4.0
        leaves = [t.clone().requires_grad_() for t in (q, k, v, log_decay)]
        ref_leaves = [t.detach().float().clone().requires_grad_() for t in (q, k, v, log_decay)]
        w = mk(B, N, H, D)
        o = decay_recurrence(*leaves, scale=D ** -0.5, backend="fla")
        (o.float() * w).sum().backward()
        o_ref = decay_recurrence_chunked(*ref_leaves, scale=D ** -0.5, chunk_size=64)
        (o_ref * w).sum().backward()
        errs = {"out": rel(o.float(), o_ref)}
        errs.update({f"d{n}": rel(a.grad.float(), b.grad) for n, a, b in zip("qkvg", leaves, ref_leaves)})
        worst = max(worst, *errs.values())
        print(f"B={B} N={N} H={H} D={D} {str(dtype).replace('torch.', '')}: "
              + "  ".join(f"{k} {v:.2e}" for k, v in errs.items()))
    print(f"worst relative error {worst:.2e} (tolerance {args.tol:g})")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
