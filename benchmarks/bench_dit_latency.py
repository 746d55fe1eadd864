"""Denoising-step latency: LightNet-DiT-B/2 vs diffusers' DiT-B/2, side by side in one process (issue 7).

One denoising step is one forward of the transformer on SD-VAE latents (4 channels, ``image size / 8`` per side,
1000 classes, learned sigma: 8 output channels, as DiT's ImageNet models), under bf16 autocast and
``torch.inference_mode``. Timed at each image size and batch (a batch of 2 is one image with classifier-free
guidance), eager and optionally compiled, median of ``--iters`` after ``--warmup`` calls; peak memory per row.
Prints a markdown table with LightNet / DiT ratios and writes ``bench_dit_latency.json`` to ``--out``.

GPU:  PYTHONPATH=. python3 benchmarks/bench_dit_latency.py --compile-mode eager reduce-overhead --out $OUT
CPU smoke run:  python benchmarks/bench_dit_latency.py --device cpu --model-size S --sizes 64 --batches 1 \
    --iters 1 --warmup 1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_models import (  # noqa: E402
    COMPILE_MODES, _environment, _peak_memory_gib, _ratio, _reset_memory, _step_begin, _time_with_first,
)
from lightnet.train.dit import DiTModelConfig, build_dit_model  # noqa: E402

VAE_FACTOR, LATENT_CHANNELS, NUM_CLASSES = 8, 4, 1000


def build(arch: str, model_size: str, patch: int, latent: int, device: torch.device, mode: str) -> torch.nn.Module:
    """``LightNet-DiT-{size}/{patch}`` (``arch='lightnet'``) or diffusers' ``DiT-{size}/{patch}`` (``'dit'``)."""
    preset = f"LightNet-DiT-{model_size}/{patch}" if arch == "lightnet" else f"DiT-{model_size}/{patch}"
    cfg = DiTModelConfig(arch=arch, preset=preset, learn_sigma=True)
    model = build_dit_model(cfg, LATENT_CHANNELS, NUM_CLASSES, latent).to(device).eval()
    if mode == "eager":
        return model
    torch._dynamo.reset()
    return torch.compile(model, mode=None if mode == "default" else mode, dynamic=False)


def bench_step(arch: str, args: argparse.Namespace, size: int, batch: int, mode: str,
               device: torch.device) -> Dict[str, object]:
    """Median ms of one denoising step (a forward at ``batch`` latents of ``size / 8``) and the peak memory."""
    if size % (VAE_FACTOR * args.patch):
        raise ValueError(f"image size {size} is not divisible by VAE factor {VAE_FACTOR} x patch {args.patch}")
    latent = size // VAE_FACTOR
    row: Dict[str, object] = dict(arch=arch, size=size, latent=latent, batch=batch, mode=mode)
    _reset_memory(device)
    model = build(arch, args.model_size, args.patch, latent, device, mode)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, LATENT_CHANNELS, latent, latent, device=device, generator=g)
    t = torch.randint(0, 1000, (batch,), device=device, generator=g)
    y = torch.randint(0, NUM_CLASSES, (batch,), device=device, generator=g)
    amp = getattr(torch, args.amp_dtype)

    def step() -> None:
        _step_begin(mode)
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp):
            model(x, timestep=t, class_labels=y)

    try:
        first, times = _time_with_first(step, device, args.warmup, args.iters)
        row.update(ms=1e3 * sorted(times)[len(times) // 2], first_call_s=first, peak_gib=_peak_memory_gib(device),
                   status="ok")
    except torch.OutOfMemoryError:
        row.update(ms=float("nan"), peak_gib=float("nan"), status="OOM")
    finally:
        del model
        _reset_memory(device)
    return row


def table(rows: List[Dict[str, object]], args: argparse.Namespace) -> str:
    """Markdown: one line per (mode, size, batch), both models, the latency ratio and peak memory."""
    names = {"lightnet": f"LightNet-DiT-{args.model_size}/{args.patch}", "dit": f"DiT-{args.model_size}/{args.patch}"}
    out = [f"| mode | image px (latent) | batch | {names['lightnet']} ms | {names['dit']} ms | LightNet / DiT time "
           f"| {names['lightnet']} GiB | {names['dit']} GiB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in args.compile_mode:
        for size in args.sizes:
            for batch in args.batches:
                r = {a: next(x for x in rows if x["arch"] == a and x["size"] == size and x["batch"] == batch
                             and x["mode"] == mode) for a in ("lightnet", "dit")}
                cell = lambda a, k, f: format(r[a][k], f) if r[a]["status"] == "ok" else r[a]["status"]  # noqa: E731
                out.append(f"| {mode} | {size} ({size // VAE_FACTOR}) | {batch} | {cell('lightnet', 'ms', '.2f')} | "
                           f"{cell('dit', 'ms', '.2f')} | {_ratio(r['lightnet']['ms'], r['dit']['ms'])} | "
                           f"{cell('lightnet', 'peak_gib', '.2f')} | {cell('dit', 'peak_gib', '.2f')} |")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-size", default="B", choices=["S", "B", "L", "XL"])
    p.add_argument("--patch", type=int, default=2, choices=[2, 4, 8])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="image sizes in pixels (latents: / 8)")
    p.add_argument("--batches", type=int, nargs="+", default=[2, 32], help="latents per step (2 = one image + CFG)")
    p.add_argument("--compile-mode", nargs="+", default=["eager"], choices=COMPILE_MODES)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    env = _environment(device)
    print("# " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    rows = []
    for mode in args.compile_mode:
        for size in args.sizes:
            for batch in args.batches:
                for arch in ("lightnet", "dit"):
                    row = bench_step(arch, args, size, batch, mode, device)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    md = table(rows, args)
    print(f"\n## Denoising step latency ({args.amp_dtype} autocast, inference mode, learned sigma, 1000 classes)\n")
    print(md)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_dit_latency.json"), "w") as f:
            json.dump(dict(env=env, args=vars(args), rows=rows), f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
