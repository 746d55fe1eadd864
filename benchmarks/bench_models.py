"""End-to-end speed and memory: ``lightnet_small`` vs timm ``vit_small_patch16_224``, side by side in one process.

Training throughput (images/s of forward + backward + AdamW step under bf16 autocast) and peak memory at several
resolutions (both models built with ``dynamic_img_size=True``), then inference latency at batch 1 and 64. Prints
markdown tables with LightNet/ViT ratios and writes ``bench_models.csv`` / ``bench_models.json`` to ``--out``.

GPU run (the numbers in docs/performance.md):
    PYTHONPATH=. python3 benchmarks/bench_models.py --out $OUT
Eager vs torch.compile side by side (both models compiled the same way, ``dynamic=False``; one table set per mode,
then compiled/eager ratios; ``--fullgraph`` makes a graph break an error instead of a split):
    PYTHONPATH=. python3 benchmarks/bench_models.py --compile-mode eager default reduce-overhead --fullgraph --out $OUT
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
from typing import Callable, Dict, List, Optional, Tuple

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
    return _time_with_first(fn, device, warmup, iters)[1]


def _time_with_first(
    fn: Callable[[], None], device: torch.device, warmup: int, iters: int
) -> Tuple[float, List[float]]:
    """``(first call s, per-iteration times s)``: the first warmup call alone (it holds compilation), then as
    :func:`_time`."""
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return first, times


COMPILE_MODES = ("eager", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")


def _build(
    name: str, device: torch.device, mode: str, fullgraph: bool = False,
    configure: Optional[Callable[[torch.nn.Module], None]] = None,
) -> torch.nn.Module:
    """timm model ``name`` on ``device``, eager (``mode='eager'``) or ``torch.compile``'d with ``mode``.

    Every model goes through the same call: ``torch.compile(model, mode=..., fullgraph=..., dynamic=False)``
    (static shapes: each benchmarked size gets its own graph, as a training run at one resolution would).
    ``configure(model)`` runs before compiling (e.g. to switch a layer option for an A/B run).
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"bench_models: unknown compile mode {mode!r}; choose from {COMPILE_MODES}")
    model = timm.create_model(name, dynamic_img_size=True, num_classes=1000).to(device)
    if configure is not None:
        configure(model)
    if mode == "eager":
        return model
    torch._dynamo.reset()  # fresh caches per model: no recompilation limits or automatic-dynamic carry-over
    return torch.compile(model, mode=None if mode == "default" else mode, fullgraph=fullgraph, dynamic=False)


def _step_begin(mode: str) -> None:
    """Tell cudagraph trees a new iteration starts (modes with CUDA graphs reuse their output buffers)."""
    if mode in _CUDAGRAPH_MODES:
        torch.compiler.cudagraph_mark_step_begin()


def bench_train(
    name: str, size: int, batch: int, device: torch.device, amp_dtype: torch.dtype, warmup: int, iters: int,
    mode: str = "eager", fullgraph: bool = False, configure: Optional[Callable[[torch.nn.Module], None]] = None,
) -> Dict[str, object]:
    """Images/s and peak memory of full training steps at ``size``² and ``batch`` (``mode``, ``configure``: see
    :func:`_build`)."""
    row: Dict[str, object] = dict(model=name, size=size, batch=batch, compiled=mode != "eager", mode=mode)
    model = None
    try:
        _reset_memory(device)
        model = _build(name, device, mode, fullgraph, configure).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
        x = torch.randn(batch, 3, size, size, device=device)
        y = torch.randint(0, 1000, (batch,), device=device)

        def step() -> None:
            _step_begin(mode)
            with torch.autocast(device.type, dtype=amp_dtype):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        first, times = _time_with_first(step, device, warmup, iters)
        median = sorted(times)[len(times) // 2]
        row.update(img_per_s=batch / median, step_ms=1e3 * median, peak_gib=_peak_memory_gib(device), status="ok",
                   first_step_s=first)
    except torch.OutOfMemoryError:
        row.update(img_per_s=float("nan"), step_ms=float("nan"), peak_gib=float("nan"), status="OOM")
    finally:
        del model
        _reset_memory(device)
    return row


def bench_latency(
    name: str, size: int, batch: int, device: torch.device, amp_dtype: torch.dtype, warmup: int, iters: int,
    mode: str = "eager", fullgraph: bool = False,
) -> Dict[str, object]:
    """Median inference latency (ms) of one forward at ``batch`` × ``size``² (``mode``: see :func:`_build`)."""
    model = _build(name, device, mode, fullgraph).eval()
    x = torch.randn(batch, 3, size, size, device=device)

    def fwd() -> None:
        _step_begin(mode)
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype):
            model(x)

    first, times = _time_with_first(fwd, device, warmup, iters)
    median = sorted(times)[len(times) // 2]
    del model
    _reset_memory(device)
    return dict(model=name, size=size, batch=batch, compiled=mode != "eager", mode=mode, latency_ms=1e3 * median,
                first_call_s=first)


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


def _mode_label(mode: str) -> str:
    return "eager" if mode == "eager" else f"torch.compile mode={mode}"


def _pick(rows: List[Dict[str, object]], **keys: object) -> Dict[str, object]:
    """The one row whose fields equal ``keys``."""
    return next(r for r in rows if all(r[k] == v for k, v in keys.items()))


def _cell(row: Dict[str, object], key: str, fmt: str) -> str:
    return str(row["status"]) if row.get("status", "ok") != "ok" else format(row[key], fmt)


def _print_mode_tables(
    args: argparse.Namespace, mode: str, ours: str, peer: str, train_rows: List[Dict[str, object]],
    latency_rows: List[Dict[str, object]],
) -> None:
    """LightNet-vs-peer training and latency tables of one compile mode."""
    label = _mode_label(mode)
    print(f"\n## Training step ({args.amp_dtype} autocast, AdamW, {label})\n")
    print(f"| size | batch | {ours} img/s | {peer} img/s | speed ratio | {ours} peak GiB | {peer} peak GiB | memory ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, batch in zip(args.sizes, args.batches):
        a = _pick(train_rows, model=ours, size=size, mode=mode)
        b = _pick(train_rows, model=peer, size=size, mode=mode)
        print(
            f"| {size} | {batch} | {_cell(a, 'img_per_s', '.1f')} | {_cell(b, 'img_per_s', '.1f')} | "
            f"{_ratio(a['img_per_s'], b['img_per_s'])} | {_cell(a, 'peak_gib', '.2f')} | "
            f"{_cell(b, 'peak_gib', '.2f')} | {_ratio(a['peak_gib'], b['peak_gib'])} |"
        )
    print(f"\n## Inference latency at {args.latency_size}² ({args.amp_dtype} autocast, {label})\n")
    print(f"| batch | {ours} ms | {peer} ms | latency ratio |")
    print("|---:|---:|---:|---:|")
    for batch in args.latency_batches:
        a = _pick(latency_rows, model=ours, batch=batch, mode=mode)
        b = _pick(latency_rows, model=peer, batch=batch, mode=mode)
        print(f"| {batch} | {a['latency_ms']:.2f} | {b['latency_ms']:.2f} | {_ratio(a['latency_ms'], b['latency_ms'])} |")


def _print_mode_ratios(
    args: argparse.Namespace, train_rows: List[Dict[str, object]], latency_rows: List[Dict[str, object]]
) -> None:
    """Each model's training step time and latency in every mode relative to the first mode listed."""
    base, others = args.compile_mode[0], args.compile_mode[1:]
    heads = " | ".join(f"{m} ms | {m} / {base}" for m in others)
    print(f"\n## Training step time by mode (relative to {base}; first step incl. compilation in the JSON)\n")
    print(f"| model | size | batch | {base} ms | {heads} |")
    print("|---|---:|---:|---:|" + "---:|---:|" * len(others))
    for name in args.models:
        for size, batch in zip(args.sizes, args.batches):
            ref = _pick(train_rows, model=name, size=size, mode=base)
            cells = []
            for m in others:
                r = _pick(train_rows, model=name, size=size, mode=m)
                cells.append(f"{_cell(r, 'step_ms', '.2f')} | {_ratio(r['step_ms'], ref['step_ms'])}")
            print(f"| {name} | {size} | {batch} | {_cell(ref, 'step_ms', '.2f')} | {' | '.join(cells)} |")
    print(f"\n## Inference latency by mode at {args.latency_size}² (relative to {base})\n")
    print(f"| model | batch | {base} ms | {heads} |")
    print("|---|---:|---:|" + "---:|---:|" * len(others))
    for name in args.models:
        for batch in args.latency_batches:
            ref = _pick(latency_rows, model=name, batch=batch, mode=base)
            cells = [
                f"{r['latency_ms']:.2f} | {_ratio(r['latency_ms'], ref['latency_ms'])}"
                for r in (_pick(latency_rows, model=name, batch=batch, mode=m) for m in others)
            ]
            print(f"| {name} | {batch} | {ref['latency_ms']:.2f} | {' | '.join(cells)} |")


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
    parser.add_argument("--latency-batches", type=int, nargs="*", default=[1, 64],
                        help="inference latency batch sizes (none: skip the latency rows)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile both models (shorthand for --compile-mode default)")
    parser.add_argument("--compile-mode", nargs="+", choices=COMPILE_MODES, default=None,
                        help="one or more of: eager, or a torch.compile mode; every mode runs every row (default: "
                             "eager, or default with --compile)")
    parser.add_argument("--fullgraph", action="store_true",
                        help="torch.compile(fullgraph=True): a graph break raises instead of splitting the graph")
    parser.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16"])
    args = parser.parse_args(argv)
    if args.compile_mode is None:
        args.compile_mode = ["default"] if args.compile else ["eager"]
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

    train_rows, latency_rows = [], []
    for mode in args.compile_mode:
        for size, batch in zip(args.sizes, args.batches):
            for name in args.models:
                row = bench_train(name, size, batch, device, amp_dtype, args.warmup, args.iters, mode, args.fullgraph)
                print(json.dumps(row), flush=True)
                train_rows.append(row)
        for batch in args.latency_batches:
            for name in args.models:
                row = bench_latency(
                    name, args.latency_size, batch, device, amp_dtype, args.warmup, args.iters, mode, args.fullgraph
                )
                print(json.dumps(row), flush=True)
                latency_rows.append(row)

    ours, peer = args.models[0], args.models[1] if len(args.models) > 1 else args.models[0]
    for mode in args.compile_mode:
        _print_mode_tables(args, mode, ours, peer, train_rows, latency_rows)
    if len(args.compile_mode) > 1:
        _print_mode_ratios(args, train_rows, latency_rows)

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
