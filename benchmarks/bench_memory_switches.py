"""LightNet-S's memory switches one by one, trained side by side with ViT-S in one process: img/s and peak memory.

Three changes of 2026-12-04 (night) make a LightNet block keep less for the backward (``benchmarks/saved_activations.py``
counts the bytes on the CPU); this script measures what each costs or saves on a GPU, cumulatively:

* ``before``: the query SiLU applied before the kernel, the output norm and gate kept, the fp32 state ``S`` kept;
* ``+q_silu``: the SiLU inside the non-causal kernels (``LightNetAttention.fuse_q_act``; −2C bytes per token and
  block, and one elementwise pass less each way);
* ``+out_recompute``: the output norm, gate projection and product checkpointed (``recompute_output``: ``'compiled'``
  in a compiled run, ``'always'`` in an eager one; −(4C + 24) bytes per token and block, compiled);
* ``+state_recompute``: the backward rebuilds ``S`` from k and v (``TUNING["nc_recompute_state"] = 1``; −4·2D·E·H / N
  bytes per token and block: 1 003 B at 196 tokens, 48 at 4 096).

The library's defaults are ``+out_recompute`` (the state is kept until this script has timed its recomputation).
Each variant is a fresh ``torch.compile`` of the whole model (``--compile-mode``; ``eager`` for none). Ratios: img/s
and peak memory against ``before`` and against ViT-S.

    PYTHONPATH=. python benchmarks/bench_memory_switches.py --sizes 224 1024 --batches 128 8 \
        --compile-mode reduce-overhead --fullgraph --out $OUT
    PYTHONPATH=. python benchmarks/bench_memory_switches.py --device cpu --sizes 32 --batches 2 --iters 1 --warmup 1 \\
        --compile-mode eager
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import write_report  # noqa: E402
from bench_models import COMPILE_MODES, _environment, bench_train  # noqa: E402

from lightnet.kernels.triton_common import TUNING  # noqa: E402
from lightnet.layers import LightNetAttention  # noqa: E402

PEER = "vit_small_patch16_224"
VARIANTS = ("before", "+q_silu", "+out_recompute", "+state_recompute")


def _switches(variant: str, mode: str) -> Dict[str, object]:
    """``fuse_q_act``, ``recompute_output`` and the state flag of one variant (cumulative, in ``VARIANTS`` order)."""
    level = VARIANTS.index(variant)
    return dict(fuse_q_act=level >= 1,
                recompute_output=("always" if mode == "eager" else "compiled") if level >= 2 else "never",
                recompute_state=level >= 3)


def _configure(fuse_q_act: bool, recompute_output: str, **_: object) -> Callable[[torch.nn.Module], None]:
    def apply(model: torch.nn.Module) -> None:
        mixers = [m for m in model.modules() if isinstance(m, LightNetAttention)]
        if not mixers:
            raise ValueError("bench_memory_switches: the model has no LightNetAttention to switch")
        for m in mixers:
            m.fuse_q_act, m.recompute_output = fuse_q_act, recompute_output
    return apply


def run(model: str, sizes: List[int], batches: List[int], device: torch.device, mode: str, warmup: int,
        iters: int, fullgraph: bool = False) -> List[Dict[str, object]]:
    rows = []
    for size, batch in zip(sizes, batches):
        common = dict(size=size, batch=batch, device=device, amp_dtype=torch.bfloat16, warmup=warmup, iters=iters,
                      mode=mode, fullgraph=fullgraph)
        rows.append(dict(bench_train(PEER, **common), variant="peer"))
        for variant in VARIANTS:
            switches = _switches(variant, mode)
            saved = TUNING["nc_recompute_state"]
            TUNING["nc_recompute_state"] = 1 if switches["recompute_state"] else None
            try:
                row = bench_train(model, configure=_configure(**switches), **common)
            finally:
                TUNING["nc_recompute_state"] = saved
            rows.append(dict(row, variant=variant, **switches))
            print(f"{size} px b{batch} {variant}: {row['status']} {row['img_per_s']:.1f} img/s "
                  f"{row['peak_gib']:.2f} GiB", flush=True)
    return rows


def render(rows: List[Dict[str, object]]) -> str:
    lines = ["| size | batch | variant | img/s | / before | / ViT-S | peak GiB | / before | / ViT-S |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for size, batch in dict.fromkeys((r["size"], r["batch"]) for r in rows):
        at = [r for r in rows if r["size"] == size and r["batch"] == batch]
        peer = next(r for r in at if r["variant"] == "peer")
        base = next(r for r in at if r["variant"] == "before")
        for r in at:
            name = PEER if r["variant"] == "peer" else r["variant"]
            cells = [f"{r['img_per_s']:.1f}", f"{r['img_per_s'] / base['img_per_s']:.3f}",
                     f"{r['img_per_s'] / peer['img_per_s']:.3f}", f"{r['peak_gib']:.2f}",
                     f"{r['peak_gib'] / base['peak_gib']:.3f}", f"{r['peak_gib'] / peer['peak_gib']:.3f}"]
            lines.append(f"| {size} | {batch} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lightnet_small")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 1024])
    p.add_argument("--batches", type=int, nargs="+", default=[128, 8])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default="default")
    p.add_argument("--fullgraph", action="store_true", help="a graph break is an error (as in runs J7 / K1)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if len(args.sizes) != len(args.batches):
        p.error("--sizes and --batches need the same number of values")
    device = torch.device(args.device)
    rows = run(args.model, args.sizes, args.batches, device, args.compile_mode, args.warmup, args.iters,
               args.fullgraph)
    table = render(rows)
    print(table)
    if args.out:
        write_report(args.out, "bench_memory_switches", [dict(r, env=_environment(device)) for r in rows], table)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
