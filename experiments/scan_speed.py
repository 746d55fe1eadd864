"""Training-step speed, LightNet vs the same model with every mixer scanned 1 / 2 / 4 ways (multiplicative decay).

Times whole training steps (forward + backward + AdamW, bf16 autocast on CUDA, synthetic input, blocks compiled as
``run_classification.py --compile blocks`` does) for ``variant[:chunk]`` specs in one process (``chunk``: the PyTorch
recurrence's chunk length), and profiles the last spec's step by kernel.
Two shapes back the docs: the Fashion-MNIST classifier of the issue-size runs (default: width 192, depth 12,
3 heads, patch 4 on 32², batch 512), and LightNet-S's size at 1024 px (the multi-scan speed claim).

    python -m experiments.scan_speed --specs lightnet scan2:8 --no-recompute --out $OUT/scan_speed
    python -m experiments.scan_speed --specs lightnet scan2 scan4 --scan-backend fla --img-size 1024 --in-chans 3 \
        --patch 16 --embed-dim 384 --depth 12 --heads 6 --num-classes 1000 --batch-size 8 --out $OUT/scan_speed_1024
    python -m experiments.scan_speed --device cpu --specs lightnet scan2:8 --batch-size 4 --embed-dim 16 --depth 2 \
        --heads 2 --steps 1 --warmup 1 --no-profile
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch.nn import functional as F

from .models import VARIANTS, ModelSize, build_classifier
from .run_classification import compile_for_training


def parse_spec(spec: str) -> Tuple[str, Optional[int]]:
    """``'scan2:8'`` → ``('scan2', 8)``; ``'lightnet'`` → ``('lightnet', None)``."""
    variant, _, chunk = spec.partition(":")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} in {spec!r}")
    if chunk and VARIANTS[variant][0] != "scan":
        raise ValueError(f"{spec!r}: a chunk length only applies to the scan baselines")
    return variant, int(chunk) if chunk else None


def build(variant: str, chunk: Optional[int], size: ModelSize, device: str, recompute: bool = True,
          backend: str = "torch") -> torch.nn.Module:
    mixer = {"backend": backend, "recompute": recompute, **({"chunk_size": chunk} if chunk else {})}
    kwargs = {"mixer": mixer} if VARIANTS[variant][0] == "scan" else {}
    return build_classifier(variant, size, **kwargs).to(device)


def time_steps(model: torch.nn.Module, size: ModelSize, batch: int, steps: int, warmup: int, device: str,
               profile: bool = False) -> Dict[str, object]:
    """Seconds of the first step (compilation), the mean ms of ``steps`` later steps, peak GiB, and with
    ``profile`` the top CUDA kernels of two more steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, size.in_chans, size.img_size, size.img_size, generator=gen).to(device)
    y = torch.randint(0, size.num_classes, (batch,), generator=gen).to(device)
    amp = device.startswith("cuda")

    def step() -> None:
        with torch.autocast("cuda" if amp else "cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if amp:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    step()
    sync()
    first_s = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        step()
    sync()
    if amp:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    row: Dict[str, object] = {"first_step_s": first_s, "step_ms": 1e3 * (time.perf_counter() - t0) / steps}
    if amp:
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CUDA if amp else ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                step()
            sync()
        key = "self_cuda_time_total" if amp else "self_cpu_time_total"
        row["top_kernels"] = prof.key_averages().table(sort_by=key, row_limit=15)
    return row


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--specs", nargs="+", default=["lightnet", "scan2:32", "scan2:8"])
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--embed-dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--no-recompute", dest="recompute", action="store_false",
                   help="scan baselines: save the recurrence's intermediates instead of recomputing them")
    p.add_argument("--scan-backend", default="torch", choices=["torch", "fla"])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    specs = [parse_spec(s) for s in args.specs]  # every spec is checked before anything runs
    size = ModelSize(img_size=args.img_size, patch_size=args.patch, in_chans=args.in_chans,
                     num_classes=args.num_classes, embed_dim=args.embed_dim, depth=args.depth, num_heads=args.heads,
                     drop_path_rate=0.1)
    rows = []
    for i, (variant, chunk) in enumerate(specs):
        torch.manual_seed(0)
        model = build(variant, chunk, size, args.device, args.recompute, args.scan_backend)
        # with fla the scan models run eagerly (its autotuned launchers are not traced by torch.compile)
        eager = args.scan_backend == "fla" and VARIANTS[variant][0] == "scan"
        model = compile_for_training(model, None if eager else "blocks")
        row = {"spec": args.specs[i], **time_steps(model, size, args.batch_size, args.steps, args.warmup, args.device,
                                                   profile=args.profile and i == len(specs) - 1)}
        rows.append(row)
        print({k: v for k, v in row.items() if k != "top_kernels"}, flush=True)
        del model
    lines = [f"{args.img_size}² px, patch {args.patch}, batch {args.batch_size}, width {args.embed_dim}, depth {args.depth}, blocks compiled (scan models "
             f"eager with fla), bf16 autocast, recompute {args.recompute}, scan backend {args.scan_backend}.",
             "", "| model | first step s | step ms | vs first row | peak GiB |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        gib = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "—"
        lines.append(f"| `{r['spec']}` | {r['first_step_s']:.1f} | {r['step_ms']:.1f} | "
                     f"{r['step_ms'] / rows[0]['step_ms']:.2f}× | {gib} |")
    md = "\n".join(lines)
    print(md)
    for r in rows:
        if "top_kernels" in r:
            print(f"\nTop kernels of `{r['spec']}` (two steps):\n{r['top_kernels']}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scan_speed.json").write_text(json.dumps(rows, indent=1))
        (args.out / "scan_speed.md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
