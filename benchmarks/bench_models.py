"""End-to-end speed and memory: ``lightnet_small`` vs timm ``vit_small_patch16_224``, side by side in one process.

Training throughput (images/s of forward + backward + AdamW step under bf16 autocast) and peak memory at several
resolutions (both models built with ``dynamic_img_size=True``), then inference latency at batch 1 and 64. Prints
markdown tables with LightNet/ViT ratios and writes ``bench_models.csv`` / ``bench_models.json`` to ``--out``.

GPU run (the numbers in docs/performance.md):
    PYTHONPATH=. python3 benchmarks/bench_models.py --out $OUT
CPU smoke run:
    python benchmarks/bench_models.py --device cpu --sizes 64 --batches 2 --iters 1 --warmup 1 --latency-size 64
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import time
from typing import Callable, Dict, List, Optional

import timm
import torch

import lightnet
from lightnet.kernels import available_backends

PEERS = ("lightnet_small", "vit_small_patch16_224")
DEFAULT_SIZES = (224, 512, 1024, 2048)
DEFAULT_BATCHES = (128, 32, 8, 2)  # ViT-S anchors of issue 7: 128 @ 224, 32 @ 512, 8 @ 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def _time(fn: Callable[[], None], device: torch.device, warmup: int, iters: int) -> List[float]:
    """Per-iteration wall times (s) after ``warmup`` untimed calls, synchronised on CUDA."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _build(name: str, device: torch.device, compile_model: bool) -> torch.nn.Module:
    model = timm.create_model(name, dynamic_img_size=True, num_classes=1000).to(device)
    return torch.compile(model) if compile_model else model


def bench_train(
    name: str, size: int, batch: int, device: torch.device, amp_dtype: torch.dtype, warmup: int, iters: int,
    compile_model: bool,
) -> Dict[str, object]:
    """Images/s and peak memory of full training steps at ``size``² and ``batch``."""
    row: Dict[str, object] = dict(model=name, size=size, batch=batch, compiled=compile_model)
    model = None
    try:
        _reset_memory(device)
        model = _build(name, device, compile_model).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
        x = torch.randn(batch, 3, size, size, device=device)
        y = torch.randint(0, 1000, (batch,), device=device)

        def step() -> None:
            with torch.autocast(device.type, dtype=amp_dtype):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        times = _time(step, device, warmup, iters)
        median = sorted(times)[len(times) // 2]
        row.update(img_per_s=batch / median, step_ms=1e3 * median, peak_gib=_peak_memory_gib(device), status="ok")
    except torch.OutOfMemoryError:
        row.update(img_per_s=float("nan"), step_ms=float("nan"), peak_gib=float("nan"), status="OOM")
    finally:
        del model
        _reset_memory(device)
    return row


def bench_latency(
    name: str, size: int, batch: int, device: torch.device, amp_dtype: torch.dtype, warmup: int, iters: int,
    compile_model: bool,
) -> Dict[str, object]:
    """Median inference latency (ms) of one forward at ``batch`` × ``size``²."""
    model = _build(name, device, compile_model).eval()
    x = torch.randn(batch, 3, size, size, device=device)

    def fwd() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype):
            model(x)

    times = _time(fwd, device, warmup, iters)
    median = sorted(times)[len(times) // 2]
    del model
    _reset_memory(device)
    return dict(model=name, size=size, batch=batch, compiled=compile_model, latency_ms=1e3 * median)


def _environment(device: torch.device) -> Dict[str, str]:
    env = dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        torch=torch.__version__,
        timm=timm.__version__,
        lightnet=lightnet.__version__,
        lightnet_backends=",".join(available_backends(device)),
    )
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = "n/a"
    return env


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b == b and b and a == a else "—"  # NaN-safe


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for bench_models.csv / .json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--batches", type=int, nargs="+", default=list(DEFAULT_BATCHES))
    parser.add_argument("--models", nargs="+", default=list(PEERS), help="first = LightNet, second = peer")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--latency-size", type=int, default=224)
    parser.add_argument("--latency-batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--compile", action="store_true", help="torch.compile both models (default: eager)")
    parser.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16"])
    args = parser.parse_args(argv)
    if len(args.batches) == 1:
        args.batches = args.batches * len(args.sizes)
    if len(args.batches) != len(args.sizes):
        parser.error(f"--batches needs one value or one per size ({len(args.sizes)}), got {len(args.batches)}")

    device = torch.device(args.device)
    amp_dtype = getattr(torch, args.amp_dtype)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    env = _environment(device)
    print("# " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)

    ours_model = timm.create_model(args.models[0], dynamic_img_size=True).to(device).eval()
    torch._dynamo.reset()
    with torch.autocast(device.type, dtype=amp_dtype):
        explained = torch._dynamo.explain(ours_model)(torch.randn(2, 3, args.sizes[0], args.sizes[0], device=device))
    env["dynamo_graphs"], env["dynamo_graph_breaks"] = explained.graph_count, explained.graph_break_count
    env["dynamo_break_reasons"] = [str(r.reason)[:200] for r in explained.break_reasons]
    print(f"# torch._dynamo.explain({args.models[0]}) on {device}: {explained.graph_count} graph(s), "
          f"{explained.graph_break_count} break(s) {env['dynamo_break_reasons']}", flush=True)
    del ours_model
    torch._dynamo.reset()

    train_rows = []
    for size, batch in zip(args.sizes, args.batches):
        for name in args.models:
            row = bench_train(name, size, batch, device, amp_dtype, args.warmup, args.iters, args.compile)
            print(json.dumps(row), flush=True)
            train_rows.append(row)
    latency_rows = []
    for batch in args.latency_batches:
        for name in args.models:
            row = bench_latency(
                name, args.latency_size, batch, device, amp_dtype, args.warmup, args.iters, args.compile
            )
            print(json.dumps(row), flush=True)
            latency_rows.append(row)

    ours, peer = args.models[0], args.models[1] if len(args.models) > 1 else args.models[0]
    mode = "torch.compile" if args.compile else "eager"
    print(f"\n## Training step ({args.amp_dtype} autocast, AdamW, {mode})\n")
    print(f"| size | batch | {ours} img/s | {peer} img/s | speed ratio | {ours} peak GiB | {peer} peak GiB | memory ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, batch in zip(args.sizes, args.batches):
        a = next(r for r in train_rows if r["model"] == ours and r["size"] == size)
        b = next(r for r in train_rows if r["model"] == peer and r["size"] == size)
        cell = lambda r, k, f: r["status"] if r["status"] != "ok" else format(r[k], f)  # noqa: E731
        print(
            f"| {size} | {batch} | {cell(a, 'img_per_s', '.1f')} | {cell(b, 'img_per_s', '.1f')} | "
            f"{_ratio(a['img_per_s'], b['img_per_s'])} | {cell(a, 'peak_gib', '.2f')} | {cell(b, 'peak_gib', '.2f')} | "
            f"{_ratio(a['peak_gib'], b['peak_gib'])} |"
        )
    print(f"\n## Inference latency at {args.latency_size}² ({args.amp_dtype} autocast, {mode})\n")
    print(f"| batch | {ours} ms | {peer} ms | latency ratio |")
    print("|---:|---:|---:|---:|")
    for batch in args.latency_batches:
        a = next(r for r in latency_rows if r["model"] == ours and r["batch"] == batch)
        b = next(r for r in latency_rows if r["model"] == peer and r["batch"] == batch)
        print(f"| {batch} | {a['latency_ms']:.2f} | {b['latency_ms']:.2f} | {_ratio(a['latency_ms'], b['latency_ms'])} |")

    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_models.json"), "w") as f:
            json.dump(dict(env=env, args=vars(args), train=train_rows, latency=latency_rows), f, indent=2)
        with open(os.path.join(args.out, "bench_models.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted({k for r in train_rows + latency_rows for k in r}))
            writer.writeheader()
            writer.writerows(train_rows + latency_rows)


if __name__ == "__main__":
    main()
