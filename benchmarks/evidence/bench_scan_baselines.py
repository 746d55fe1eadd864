"""Training throughput and peak memory: ``lightnet_small`` vs the same model with the 2-scan / 4-scan
multiplicative-decay mixer, side by side in one process (issue 7 targets: ≥ 2× the 2-scan and ≥ 4× the 4-scan
baseline at 1024 px).

    PYTHONPATH=. python -m benchmarks.evidence.bench_scan_baselines --out $OUT            # GPU (fla on CUDA if installed)
    python -m benchmarks.evidence.bench_scan_baselines --device cpu --sizes 64 --batches 2 --iters 1 --warmup 1

The baselines are LightNet-S (width 384, depth 12, 6 heads, patch 16) with every token mixer replaced by
:class:`benchmarks.baselines.MultiScanDecayAttention` (registered with timm as ``evidence_small_scan2`` /
``evidence_small_scan4``); the recurrence runs on fla's ``chunk_gla`` Triton kernel when fla is importable on CUDA
(``--scan-backend auto``), else on the PyTorch chunked form. The step itself (bf16 autocast, AdamW, median of
``--iters``) is :func:`benchmarks.bench_models.bench_train`, the same one used for the ViT-S comparison.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import List, Optional

import torch

from benchmarks.baselines import fla_available
from benchmarks.bench_models import COMPILE_MODES, _environment, _ratio, bench_train

from .models import ModelSize, register_timm_variants

SMALL = ModelSize(img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=384, depth=12, num_heads=6)
TARGETS = {"evidence_small_scan2": 2.0, "evidence_small_scan4": 4.0}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 512, 1024])
    p.add_argument("--batches", type=int, nargs="+", default=[128, 32, 8])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--compile-mode", default="eager", choices=COMPILE_MODES,
                   help="eager, or the torch.compile mode every model runs under")
    p.add_argument("--fullgraph", action="store_true", help="torch.compile(fullgraph=True): a graph break raises")
    p.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16"])
    args = p.parse_args(argv)
    if len(args.batches) == 1:
        args.batches = args.batches * len(args.sizes)
    if len(args.batches) != len(args.sizes):
        p.error("--batches needs one value or one per size")
    register_timm_variants("evidence_small_", SMALL)
    device = torch.device(args.device)
    amp = getattr(torch, args.amp_dtype)
    env = _environment(device)
    env["scan_recurrence"] = "fla chunk_gla" if device.type == "cuda" and fla_available() else "PyTorch chunked"
    print("# " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    models = ["lightnet_small", "evidence_small_scan2", "evidence_small_scan4"]
    rows = []
    for size, batch in zip(args.sizes, args.batches):
        for name in models:
            row = bench_train(name, size, batch, device, amp, args.warmup, args.iters, args.compile_mode,
                              args.fullgraph)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n## Training step, LightNet-S vs multi-scan baselines ({args.amp_dtype}, AdamW, {args.compile_mode}, "
          f"recurrence: {env['scan_recurrence']})\n")
    print("| size | batch | LightNet-S img/s | 2-scan img/s | 4-scan img/s | vs 2-scan (target 2×) | vs 4-scan (target 4×) "
          "| LightNet-S GiB | 2-scan GiB | 4-scan GiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, batch in zip(args.sizes, args.batches):
        r = {m: next(x for x in rows if x["model"] == m and x["size"] == size) for m in models}
        ips = lambda m: r[m]["status"] if r[m]["status"] != "ok" else f"{r[m]['img_per_s']:.1f}"  # noqa: E731
        gib = lambda m: r[m]["status"] if r[m]["status"] != "ok" else f"{r[m]['peak_gib']:.2f}"  # noqa: E731
        ours = r["lightnet_small"]["img_per_s"]
        print(f"| {size} | {batch} | {ips('lightnet_small')} | {ips('evidence_small_scan2')} | "
              f"{ips('evidence_small_scan4')} | {_ratio(ours, r['evidence_small_scan2']['img_per_s'])} | "
              f"{_ratio(ours, r['evidence_small_scan4']['img_per_s'])} | {gib('lightnet_small')} | "
              f"{gib('evidence_small_scan2')} | {gib('evidence_small_scan4')} |")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_scan_baselines.json"), "w") as f:
            json.dump(dict(env=env, args=vars(args), train=rows, targets=TARGETS), f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
