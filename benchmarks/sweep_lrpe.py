"""Non-causal kernels with MD-LRPE at the shapes the models run (GPU only): launch configurations checked and timed.

The vision and DiT models always run the non-causal kernels with 2-D MD-LRPE (cos / sin halves: a ``[2D, E]``
state); ``sweep_kernels.py`` tunes them without it. For each configuration (``TUNING`` overrides, the first one is
the baseline) and each shape ``BxN`` (6 heads × 64, bf16, the 2-D angle table of a square grid), this script checks
the forward and the three gradients against the fp32 PyTorch reference (norm-relative error < 2e-2, else the
configuration is reported as failing and not timed), then times forward, backward and forward + backward replayed
from a CUDA graph (GPU time), and prints the times and their ratio to the baseline.

    PYTHONPATH=. python benchmarks/sweep_lrpe.py --out $OUT \
        --configs "nc_warps=4;nc_warps=8;nc_warps=8,nc_block_n=32;nc_warps=16" --shapes 128x196,8x4096,256x256

A configuration is ``key=int`` pairs joined by commas (keys of ``lightnet.kernels.triton_common.TUNING``); ``-``
is the built-in heuristic. Shapes: ``BxN`` with ``N`` a square number (the grid side is ``√N``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import rel, write_report  # noqa: E402

from lightnet.kernels.reference import noncausal_attention_torch  # noqa: E402
from lightnet.kernels.triton_common import TUNING, tuning_from_env  # noqa: E402
from lightnet.kernels.triton_noncausal import noncausal_backward, noncausal_forward  # noqa: E402
from lightnet.layers import MDLRPE  # noqa: E402

HEADS, DIM = 6, 64


def parse_config(spec: str) -> Dict[str, int]:
    """``'nc_warps=8,nc_block_n=32'`` → TUNING overrides; ``'-'`` or ``''`` → {} (the built-in heuristic)."""
    spec = spec.strip()
    if spec in ("", "-"):
        return {}
    saved = dict(TUNING)
    try:
        return tuning_from_env(spec)  # validates keys and values
    finally:
        TUNING.clear()
        TUNING.update(saved)


def parse_shape(spec: str) -> Tuple[int, int]:
    """``'128x196'`` → ``(128, 196)``; N must be a square (a square token grid)."""
    try:
        B, N = (int(x) for x in spec.lower().split("x"))
    except ValueError:
        raise ValueError(f"shape {spec!r}: expected BxN, e.g. 128x196") from None
    if math.isqrt(N) ** 2 != N:
        raise ValueError(f"shape {spec!r}: N = {N} is not a square grid")
    return B, N


def make_inputs(B: int, N: int, device: str, seed: int = 0) -> Tuple[torch.Tensor, ...]:
    """bf16 ``q, k, v, dO [B, N, 6, 64]`` and the fp32 angle table ``[N, 64]`` of a ``√N × √N`` grid."""
    g = torch.Generator(device=device).manual_seed(seed)
    q, k, v, do = (torch.randn(B, N, HEADS, DIM, device=device, generator=g, dtype=torch.bfloat16) for _ in range(4))
    side = math.isqrt(N)
    theta = MDLRPE(DIM, num_axes=2).angles((side, side)).to(device=device, dtype=torch.float32).contiguous()
    return q, k, v, do, theta


def check(q, k, v, do, theta) -> Dict[str, float]:
    """Norm-relative errors of o, dq, dk, dv against the fp32 reference on the same (bf16-rounded) inputs."""
    qf, kf, vf = (t.float().requires_grad_() for t in (q, k, v))
    o_ref = noncausal_attention_torch(qf, kf, vf, lrpe_theta=theta)[0]
    o_ref.backward(do.float())
    o, S, z = noncausal_forward(q, k, v, 1.0, None, theta, None)
    dq, dk, dv = noncausal_backward(do, None, None, q, k, v, S, z, 1.0, None, theta)
    return {"o": rel(o, o_ref), "dq": rel(dq, qf.grad), "dk": rel(dk, kf.grad), "dv": rel(dv, vf.grad)}


def time_gpu(q, k, v, do, theta) -> Dict[str, float]:
    """Median ms of forward, backward and both, replayed from a CUDA graph (``sweep_kernels.time_config``)."""
    from sweep_kernels import time_config

    return {f"{name}_ms": ms for name, ms in time_config(q, k, v, do, theta, rep=30).items()}


def run(configs: Sequence[str], shapes: Sequence[Tuple[int, int]], device: str, tol: float = 2e-2,
        timed: bool = True) -> List[Dict[str, object]]:
    """Check (and time) every configuration at every shape; rows in order, each with ``status``."""
    rows = []
    parsed = [(spec, parse_config(spec)) for spec in configs]  # every spec validated before any GPU work
    inputs = {shape: make_inputs(*shape, device) for shape in shapes}
    for spec, cfg in parsed:
        saved = dict(TUNING)
        TUNING.update(cfg)
        try:
            for (B, N), tensors in inputs.items():
                row: Dict[str, object] = {"config": spec or "-", "B": B, "N": N}
                try:
                    err = check(*tensors)
                    row.update({f"err_{k}": v for k, v in err.items()})
                    bad = {k: v for k, v in err.items() if not v < tol}
                    if bad:
                        row["status"] = f"FAILED {bad}"
                    else:
                        row["status"] = "ok"
                        if timed:
                            row.update(time_gpu(*tensors))
                except Exception as exc:  # e.g. out of shared memory: reported, the sweep goes on
                    row["status"] = f"error {type(exc).__name__}: {str(exc)[:160]}"
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            TUNING.clear()
            TUNING.update(saved)
    return rows


def table(rows: List[Dict[str, object]]) -> str:
    """Markdown: forward + backward ms per configuration and shape, and the ratio to the first configuration."""
    shapes = sorted({(r["B"], r["N"]) for r in rows}, key=lambda s: s[1])
    configs = list(dict.fromkeys(r["config"] for r in rows))
    base = {(r["B"], r["N"]): r.get("fwd_bwd_ms") for r in rows if r["config"] == configs[0]}
    head = " | ".join(f"B={B} N={N} fwd / bwd / both ms (vs first)" for B, N in shapes)
    lines = [f"| config | {head} |", "|---|" + "---|" * len(shapes)]
    for cfg in configs:
        cells = []
        for shape in shapes:
            r = next(x for x in rows if x["config"] == cfg and (x["B"], x["N"]) == shape)
            if r["status"] != "ok" or "fwd_bwd_ms" not in r:
                cells.append(str(r["status"])[:60])
                continue
            ratio = f"{base[shape] / r['fwd_bwd_ms']:.2f}×" if base.get(shape) else "—"
            cells.append(f"{r['fwd_ms']:.3f} / {r['bwd_ms']:.3f} / **{r['fwd_bwd_ms']:.3f}** ({ratio})")
        lines.append(f"| `{cfg}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="nc_warps=4;-", help="';'-separated configurations, the first = baseline")
    ap.add_argument("--shapes", default="128x196,8x4096,256x256")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-time", action="store_true", help="check only (e.g. on the CPU under TRITON_INTERPRET=1)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    shapes = [parse_shape(s) for s in args.shapes.split(",") if s]
    rows = run(args.configs.split(";"), shapes, args.device, timed=not args.no_time)
    md = table(rows)
    print(md)
    if args.out:
        write_report(args.out, "sweep_lrpe", rows, md)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
