"""Where a whole training step spends its GPU time: LightNet vs its peer, kernel by kernel, in one process.

Runs full training steps (forward + backward + AdamW, bf16 autocast) of each model under ``torch.profiler`` and sorts
every device kernel into a category by its name (GEMM, softmax attention, LightNet recurrence, FFT, inductor-fused
normalisation / elementwise, optimizer, other aten). For each model and size it prints the GPU time per step of each
category, the GPU busy time per step next to the wall time per step (busy ≪ wall: the host is the limit), and the
top kernels. Complements ``profile_block.py`` (which times the pieces of one block in isolation) with what a real,
possibly compiled, step runs.

Families:
* ``vision``: timm models (default ``lightnet_small`` vs ``vit_small_patch16_224``, ``dynamic_img_size=True``),
  input ``[B, 3, S, S]``, cross-entropy loss;
* ``dit``: the diffusion transformers of ``lightnet train-dit`` (default ``LightNet-DiT-S/2`` vs diffusers'
  ``DiT-S/2``), input ``[B, 1, S, S]`` with timesteps and class labels, ε-MSE-like loss on the output.

GPU:  PYTHONPATH=. python3 benchmarks/profile_step.py --sizes 224 1024 --batches 128 8 --compile-mode default --out $OUT
Redraw from saved JSON (tables and a stacked-bar plot, no GPU):
      python benchmarks/profile_step.py --from-json A.json B.json --plot steps.png
      PYTHONPATH=. python3 benchmarks/profile_step.py --family dit --sizes 32 --batches 256 --out $OUT
CPU smoke run:  python benchmarks/profile_step.py --device cpu --sizes 32 --batches 2 --steps 1 --warmup 1
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_models import COMPILE_MODES, _build, _environment, _sync  # noqa: E402

# (category, pattern on the kernel name), first match wins. Inductor names its fused kernels after the aten ops they
# contain (``triton_red_fused__fused_rms_norm_...``), so the norm rule also catches fused norm chains.
CATEGORIES: Tuple[Tuple[str, str], ...] = (
    ("LightNet recurrence", r"^_(nc|c|z)_\w+_kernel|lightnet"),
    ("softmax attention", r"flash|fmha|attention|sdpa|attn"),
    ("GEMM", r"gemm|cutlass|nvjet|cublas|xmma|wgmma|sm\d+_|_mm_|^triton_tem_fused_(mm|addmm|bmm)|^aten::(mm|addmm|bmm)$"),
    ("FFT", r"fft"),
    ("optimizer", r"adam|foreach|multi_tensor|_fused_sgd"),
    ("normalisation", r"rms_norm|layer_norm|rmsnorm|layernorm|group_norm"),
    ("fused elementwise (inductor)", r"^triton_(poi|red|per)_"),
    ("copies / layout", r"copy|cat|transpose|permute|contiguous|memcpy|memset|fill"),
    ("reductions (aten)", r"reduce"),
    ("elementwise (aten)", r"elementwise|vectorized|unrolled"),
)
DIT_PEERS = ("LightNet-DiT-S/2", "DiT-S/2")


def categorize(name: str) -> str:
    """Category of a device kernel from its name (``'other'`` when no rule matches)."""
    low = name.lower()
    for category, pattern in CATEGORIES:
        if re.search(pattern, low if not pattern.startswith("^_") else name):
            return category
    return "other"


def _device_time_us(evt) -> float:
    """Self device time (µs) of a profiler event, across torch versions."""
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        value = getattr(evt, attr, None)
        if value is not None:
            return float(value)
    return 0.0


def build_dit(preset: str, size: int, device: torch.device, mode: str, fullgraph: bool) -> torch.nn.Module:
    """LightNet-DiT preset (``LightNet-...``) or diffusers' DiT of the same size, 1 channel, 10 classes."""
    from lightnet.train.dit import DiTModelConfig, build_dit_model

    arch = "lightnet" if preset.startswith("LightNet-") else "dit"
    model = build_dit_model(DiTModelConfig(arch=arch, preset=preset), 1, 10, size).to(device)
    if mode == "eager":
        return model
    torch._dynamo.reset()
    return torch.compile(model, mode=None if mode == "default" else mode, fullgraph=fullgraph, dynamic=False)


def make_step(family: str, name: str, size: int, batch: int, device: torch.device, amp_dtype: Optional[torch.dtype],
              mode: str, fullgraph: bool) -> Callable[[], None]:
    """One training step (forward, backward, fused AdamW) of model ``name`` on random data."""
    if family == "vision":
        model = _build(name, device, mode, fullgraph).train()
        x = torch.randn(batch, 3, size, size, device=device)
        y = torch.randint(0, 1000, (batch,), device=device)

        def loss_fn() -> torch.Tensor:
            return torch.nn.functional.cross_entropy(model(x), y)
    elif family == "dit":
        model = build_dit(name, size, device, mode, fullgraph).train()
        x = torch.randn(batch, 1, size, size, device=device)
        t = torch.randint(0, 1000, (batch,), device=device)
        y = torch.randint(0, 10, (batch,), device=device)

        def loss_fn() -> torch.Tensor:
            return model(x, timestep=t, class_labels=y).sample.float().pow(2).mean()
    else:
        raise ValueError(f"profile_step: unknown family {family!r}; choose 'vision' or 'dit'")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def op_tables(prof, device: torch.device, rows: int = 40, depth: int = 8) -> str:
    """The profiled aten ops grouped by input shapes, then (when the profiler recorded Python stacks) by the source
    lines that issued them, each sorted by the device time they launched (CPU time on a CPU): which tensors the
    copies and elementwise kernels touch, and where they come from."""
    averages = prof.key_averages()
    sort = "self_cpu_time_total"
    if device.type == "cuda" and len(averages):
        sort = "self_device_time_total" if hasattr(averages[0], "self_device_time_total") else "self_cuda_time_total"
    width = dict(sort_by=sort, row_limit=rows, max_name_column_width=60)
    parts = ["# ops by input shapes\n", prof.key_averages(group_by_input_shape=True).table(**width)]
    if any(evt.stack for evt in prof.events() if getattr(evt, "stack", None)):
        parts += ["\n# ops by source stack\n", prof.key_averages(group_by_stack_n=depth).table(**width)]
    else:
        parts.append("\n(no Python stacks recorded by this profiler build)\n")
    return "".join(parts)


def profile_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int,
                  tables: bool = False) -> Dict[str, object]:
    """Wall time per step (unprofiled) and per-kernel device time per step (profiled run of ``steps`` steps); on a
    CPU device the aten ops' self CPU time stands in for the kernels. ``tables`` adds ``op_tables`` (ops by input
    shape and by source line, :func:`op_tables`)."""
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    wall_ms = 1e3 * (time.perf_counter() - t0) / steps
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, record_shapes=tables, with_stack=tables) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    kernels: Dict[str, Dict[str, float]] = {}
    for evt in prof.key_averages():
        if device.type == "cuda":  # device kernels and their self time
            is_kernel = str(getattr(evt, "device_type", "")).endswith("CUDA")
            us = _device_time_us(evt)
        else:  # no device: the aten ops' self CPU time stands in (smoke runs)
            is_kernel = evt.key.startswith("aten::")
            us = float(evt.self_cpu_time_total)
        if not is_kernel or us <= 0:
            continue
        k = kernels.setdefault(evt.key, {"ms": 0.0, "calls": 0.0})
        k["ms"] += us / 1e3 / steps
        k["calls"] += evt.count / steps
    by_cat: Dict[str, float] = defaultdict(float)
    for name, k in kernels.items():
        by_cat[categorize(name)] += k["ms"]
    out = {"wall_ms": wall_ms, "gpu_ms": sum(k["ms"] for k in kernels.values()), "categories": dict(by_cat),
           "kernels": kernels}
    if tables:
        out["op_tables"] = op_tables(prof, device)
    return out


def markdown(rows: List[Dict[str, object]], top: int) -> str:
    """Category table (GPU ms per step and share) per size, models side by side, then each row's top kernels."""
    lines = []
    for size in sorted({r["size"] for r in rows}):
        group = [r for r in rows if r["size"] == size]
        cats = sorted({c for r in group for c in r["categories"]}, key=lambda c: -max(r["categories"].get(c, 0) for r in group))
        lines.append(f"\n### {size} px, batch {group[0]['batch']} ({group[0]['mode']})\n")
        lines.append("| category | " + " | ".join(f"{r['model']} ms/step | share" for r in group) + " |")
        lines.append("|---|" + "---:|---:|" * len(group))
        for c in cats:
            cells = [f"{r['categories'].get(c, 0):.2f} | {100 * r['categories'].get(c, 0) / max(r['gpu_ms'], 1e-9):.0f}%"
                     for r in group]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("| **GPU busy per step** | " + " | ".join(f"**{r['gpu_ms']:.2f}** | 100%" for r in group) + " |")
        lines.append("| wall time per step (unprofiled) | " + " | ".join(f"{r['wall_ms']:.2f} | " for r in group) + " |")
        for r in group:
            lines.append(f"\n{r['model']} @ {size}: top {top} kernels (ms per step, calls per step)\n")
            lines.append("| kernel | category | ms | calls |")
            lines.append("|---|---|---:|---:|")
            ranked = sorted(r["kernels"].items(), key=lambda kv: -kv[1]["ms"])[:top]
            for name, k in ranked:
                short = name if len(name) <= 90 else name[:87] + "..."
                lines.append(f"| `{short}` | {categorize(name)} | {k['ms']:.3f} | {k['calls']:.0f} |")
    return "\n".join(lines)


def plot_categories(rows: List[Dict[str, object]], path: str, title: str = "") -> None:
    """Stacked bars of GPU ms per step by category, one bar per (model, size, mode) row; saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [c for c, _ in CATEGORIES] + ["other"]
    mode = lambda m: "eager" if m == "eager" else f"compiled ({m})"  # noqa: E731
    labels = [f"{r['model']}\n{r['size']} px, {mode(r['mode'])}" + (f"\n{r['tag']}" if r.get("tag") else "")
              for r in rows]
    fig, ax = plt.subplots(figsize=(1.6 + 1.7 * len(rows), 4.8))
    bottom = [0.0] * len(rows)
    colors = plt.get_cmap("tab20").colors
    for i, cat in enumerate(order):
        vals = [float(r["categories"].get(cat, 0.0)) for r in rows]
        if not any(vals):
            continue
        ax.bar(range(len(rows)), vals, bottom=bottom, label=cat, color=colors[i % len(colors)])
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("GPU ms per training step")
    ax.set_title(title or "GPU time per training step, by kernel category", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="vision", choices=["vision", "dit"])
    ap.add_argument("--models", nargs="+", default=None, help="default: lightnet_small vit_small_patch16_224 "
                    "(vision) or LightNet-DiT-S/2 DiT-S/2 (dit)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 1024])
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 8])
    ap.add_argument("--compile-mode", default="eager", choices=[m for m in COMPILE_MODES if "reduce" not in m
                                                                and m != "max-autotune"],
                    help="modes without CUDA graphs, so that every kernel is visible to the profiler")
    ap.add_argument("--fullgraph", action="store_true")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16", "none"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="folder for profile_step.json / .md")
    ap.add_argument("--plot", default=None, help="also save a stacked-bar PNG of the categories here")
    ap.add_argument("--op-tables", action="store_true",
                    help="record shapes and stacks: --out gets ops_<model>_<size>.txt per row (ops by input shape and "
                         "by source line)")
    ap.add_argument("--from-json", nargs="+", default=None,
                    help="only redraw: tables and --plot from earlier profile_step JSON files (nothing is run)")
    ap.add_argument("--tags", nargs="+", default=None, help="with --from-json: one label per file (e.g. the run)")
    ap.add_argument("--drop-models", nargs="*", default=[], help="with --from-json: leave these models' rows out")
    args = ap.parse_args(argv)
    if args.from_json:
        tags = args.tags or [""] * len(args.from_json)
        if len(tags) != len(args.from_json):
            raise SystemExit(f"profile_step: {len(args.from_json)} JSON files but {len(tags)} --tags")
        rows = [dict(row, tag=tag) for path, tag in zip(args.from_json, tags)
                for row in json.loads(Path(path).read_text())["rows"] if row["model"] not in args.drop_models]
        print(markdown(rows, args.top))
        if args.plot:
            plot_categories(rows, args.plot)
        return 0
    if len(args.sizes) != len(args.batches):
        raise SystemExit(f"profile_step: --sizes {args.sizes} and --batches {args.batches} differ in length")
    models = args.models or (list(DIT_PEERS) if args.family == "dit" else ["lightnet_small", "vit_small_patch16_224"])
    device = torch.device(args.device)
    amp = None if args.amp_dtype == "none" else getattr(torch, args.amp_dtype)
    rows = []
    for size, batch in zip(args.sizes, args.batches):
        for name in models:
            step = make_step(args.family, name, size, batch, device, amp, args.compile_mode, args.fullgraph)
            res = profile_steps(step, device, args.warmup, args.steps, tables=args.op_tables)
            rows.append(dict(model=name, size=size, batch=batch, mode=args.compile_mode, **res))
            print(f"{name} @ {size} px batch {batch}: GPU busy {res['gpu_ms']:.2f} ms/step, wall {res['wall_ms']:.2f} "
                  f"ms/step", flush=True)
            del step
            if device.type == "cuda":
                torch.cuda.empty_cache()
    env = _environment(device)
    md = (f"Training-step profile ({args.family}, {args.amp_dtype} autocast, fused AdamW, {args.compile_mode}"
          f"{', fullgraph' if args.fullgraph else ''}; {env['device']}, torch {env['torch']}, {env['date']})\n"
          + markdown(rows, args.top))
    print(md)
    if args.plot:
        plot_categories(rows, args.plot, f"GPU time per training step ({args.family}, {args.compile_mode}, {env['device']})")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for r in rows:
            table = r.pop("op_tables", None)
            if table:
                (out / f"ops_{r['model'].replace('/', '-')}_{r['size']}.txt").write_text(table)
        stem = f"profile_step_{args.family}_{args.compile_mode}"
        (out / f"{stem}.json").write_text(json.dumps({"env": env, "args": vars(args), "rows": rows}, indent=1))
        (out / f"{stem}.md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
