"""MD-TPE on a 2-D grid: the FFT product vs the direct short-axis product, compiled forward + backward (GPU).

Run J9's op tables showed the compiled 224 px LightNet-S step spending 2.3 ms in layout copies around MD-TPE's FFT
custom op and 1.1 ms in the FFT itself (more than the 3.3 ms of the recurrence). ``TPE_TUNING["direct_max_len"]``
switches axes of up to that many tokens to the direct ``[n, n]`` Toeplitz product, which inductor fuses into one
reduction. For each grid ``BxS`` (batch × a square side, the models' channel width, bf16 input as under autocast) and
path, this script checks the output and the input / parameter gradients against the eager FFT form, then times
forward + backward of the compiled module (``do_bench`` median, ms) and prints FFT / direct (> 1: direct faster).

    PYTHONPATH=. python benchmarks/bench_tpe.py --grids 128x14,32x32,8x64,2x128 --out $OUT
    PYTHONPATH=. python benchmarks/bench_tpe.py --device cpu --grids 2x6 --dim 16 --no-time --backend aot_eager
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import rel, two_path_table, write_report  # noqa: E402

from lightnet.layers import MDTPE, TPE_TUNING  # noqa: E402

PATHS = {"fft": 0, "direct": 1 << 30}  # TPE_TUNING["direct_max_len"] per path


def parse_grid(spec: str) -> Tuple[int, int]:
    try:
        B, S = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise ValueError(f"grid {spec!r}: expected BxS (batch x square side), e.g. 128x14") from None
    return B, S


def grads(tpe: MDTPE, fn, x: torch.Tensor, S: int, w: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    tpe.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_()
    y = fn(xi, (S, S))
    (y.float() * w).sum().backward()
    return (y.detach(), xi.grad) + tuple(p.grad.clone() for p in tpe.parameters())


def run(grids: Sequence[str], dim: int, device: str, timed: bool, backend: str, mode: Optional[str],
        tol: float = 2e-2) -> List[Dict[str, object]]:
    rows = []
    saved = TPE_TUNING["direct_max_len"]
    try:
        for spec in grids:
            B, S = parse_grid(spec)
            torch.manual_seed(0)
            tpe = MDTPE(dim, num_axes=2, init_std=0.5).to(device)
            x = torch.randn(B, S * S, dim, device=device).to(torch.bfloat16)
            w = torch.randn(B, S * S, dim, device=device)
            TPE_TUNING["direct_max_len"] = 0
            ref = grads(tpe, tpe, x, S, w)
            for path, limit in PATHS.items():
                row: Dict[str, object] = {"path": path, "B": B, "side": S, "dim": dim}
                torch._dynamo.reset()
                TPE_TUNING["direct_max_len"] = limit
                fn = torch.compile(tpe, fullgraph=True, backend=backend, mode=mode)
                out = grads(tpe, fn, x, S, w)
                errs = [rel(a, b) for a, b in zip(out, ref)]
                row.update(err_y=errs[0], err_dx=errs[1], err_params=max(errs[2:]))
                row["status"] = "ok" if max(errs) < tol else "FAILED"
                if timed and row["status"] == "ok":
                    import triton.testing

                    xi = x.clone().requires_grad_()

                    def step() -> None:
                        xi.grad = None
                        (fn(xi, (S, S)).float() * w).sum().backward()

                    for _ in range(3):
                        step()
                    row["fwd_bwd_ms"] = triton.testing.do_bench(step, rep=50, return_mode="median")
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        TPE_TUNING["direct_max_len"] = saved
        torch._dynamo.reset()
    return rows


def table(rows: List[Dict[str, object]]) -> str:
    return two_path_table(rows, ("B", "side"), tuple(PATHS), ("FFT", "direct"), lambda r: f"{r['B']} × {r['side']}²")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grids", default="128x14,32x32,8x64,2x128")
    ap.add_argument("--dim", type=int, default=384, help="channels (LightNet-S: 384)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (CPU smoke test: aot_eager)")
    ap.add_argument("--mode", default="none", help="torch.compile mode ('none' = default)")
    ap.add_argument("--no-time", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = run(args.grids.split(","), args.dim, args.device, not args.no_time, args.backend,
               None if args.mode == "none" else args.mode)
    md = table(rows)
    print(md)
    if args.out:
        write_report(args.out, "bench_tpe", rows, md)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
