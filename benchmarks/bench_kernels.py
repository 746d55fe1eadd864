"""Forward+backward timing of LightNet's additive attention kernels against their peers, side by side in one process.

Peers: the PyTorch reference (eager), ``torch.compile`` of the non-causal reference, SDPA (FlashAttention) non-causal
and causal, and fla's ``chunk_lightnet`` (``fla-core==0.6.0``, causal). bf16, 6 heads of dim 64, batch × tokens =
65,536, N in {196, 1024, 4096, 16384, 65536}, plus head dims 32 and 128 at N = 4096. Times are the median of
``triton.testing.do_bench`` (as users call it: the host's launch cost counts when it exceeds the GPU work) and, for
every method but the eager references, of ``do_bench_cudagraph`` (the same call replayed from a CUDA graph: GPU time
alone). The memory floor of one forward+backward is (read q, k, v, dO once; write o, dq, dk, dv
once) = 8 · B·N·H·D · 2 bytes over the copy bandwidth measured here (a device-to-device copy, bytes read + written).
Also reports peak memory of forward+backward (above the inputs) against SDPA.

    PYTHONPATH=. python benchmarks/bench_kernels.py --out outputs/bench_kernels [--quick] [--sizes 4096,65536]
        [--budget-s 420]
Run ``benchmarks/check_kernels_gpu.py`` first. Compilation dominates a first run (torch.compile of the reference and
fla's autotuning happen again for every new shape): on the device machine two shapes with every peer fit one
10-minute call; ``--budget-s`` stops starting new shapes so the tables still get written.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench, do_bench_cudagraph

from lightnet.kernels.reference import causal_attention_chunked_torch, noncausal_attention_torch
from lightnet.kernels.triton_ops import additive_attention_triton

TOKENS = 65536
HEADS = 6


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + written)."""
    x = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")  # 256 MiB
    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x), warmup=25, rep=200, return_mode="median")
    return 2 * x.numel() / (ms * 1e-3)


def make_inputs(B: int, N: int, H: int, D: int, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v, do = (torch.randn(B, N, H, D, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_()
    return q, k, v, do


def methods(compiled_ref: Callable) -> Dict[str, Callable]:
    """name → f(q, k, v) returning o ``[B, N, H, E]`` (all differentiable)."""

    def ours_nc(q, k, v):
        return additive_attention_triton(q, k, v, causal=False)[0]

    def ours_c(q, k, v):
        return additive_attention_triton(q, k, v, causal=True)[0]

    def ref_nc(q, k, v):
        return noncausal_attention_torch(q, k, v)[0]

    def sdpa(q, k, v, causal):
        return F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal
        ).transpose(1, 2)

    def ref_c(q, k, v):
        return causal_attention_chunked_torch(q, k, v)[0]

    out = {
        "ours_noncausal": ours_nc,
        "ref_noncausal": ref_nc,
        "compiled_ref_noncausal": lambda q, k, v: compiled_ref(q, k, v),
        "sdpa_noncausal": lambda q, k, v: sdpa(q, k, v, False),
        "ours_causal": ours_c,
        "ref_causal": ref_c,
        "sdpa_causal": lambda q, k, v: sdpa(q, k, v, True),
    }
    try:
        from fla.ops.lightnet import chunk_lightnet

        out["fla_chunk_lightnet"] = lambda q, k, v: chunk_lightnet(q, k, v, scale=1.0)[0]
    except Exception as exc:  # fla is optional; say so in the table
        print(f"fla not available: {exc}")
    return out


def time_fwd_bwd(fn: Callable, q, k, v, do) -> float:
    def step():
        fn(q, k, v).backward(do)

    return do_bench(step, warmup=10, rep=60, grad_to_none=[q, k, v], return_mode="median")


def time_fwd_bwd_graph(fn: Callable, q, k, v, do) -> float:
    """GPU time of one forward+backward replayed from a CUDA graph (the host's launch cost excluded)."""

    def step():
        fn(q, k, v).backward(do)

    return do_bench_cudagraph(step, rep=40, grad_to_none=[q, k, v], return_mode="median")


def peak_memory_mb(fn: Callable, q, k, v, do) -> float:
    for t in (q, k, v):
        t.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn(q, k, v).backward(do)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    for t in (q, k, v):
        t.grad = None
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/bench_kernels", help="output folder (JSON, CSV, PNG)")
    parser.add_argument("--quick", action="store_true", help="only N = 4096 and 65536, no extra head dims")
    parser.add_argument("--methods", default=None, help="comma-separated subset of methods to time (default: all)")
    parser.add_argument("--skip-slow-ref", type=int, default=4096, help="skip eager causal reference above this N")
    parser.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph (GPU-time-only) timings")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no new shape after this many seconds (the tables cover the shapes done)")
    parser.add_argument("--sizes", default=None, help="comma-separated N at head dim 64 (default: all)")
    parser.add_argument("--warmup-only", action="store_true",
                        help="call every method once per shape and print how long each took (compilation, fla's "
                             "autotuning), then stop: fills the on-disk caches for a later timed run")
    parser.add_argument("--head-dims", default=None,
                        help="comma-separated extra head dims timed at N = 4096 (default: 32,128 unless --quick or "
                             "--sizes is given)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = True

    bw = copy_bandwidth()
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s", flush=True)
    # dynamic=False: one static specialisation per shape, as a user timing one shape gets (a second shape in this process
    # would otherwise switch inductor to dynamic shapes)
    compiled_ref = torch.compile(lambda q, k, v: noncausal_attention_torch(q, k, v)[0], dynamic=False)
    ms = methods(compiled_ref)
    if args.methods:
        keep = set(args.methods.split(","))
        unknown = keep - set(ms)
        if unknown:
            raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {sorted(ms)}")
        ms = {k2: f for k2, f in ms.items() if k2 in keep}
    sizes = (4096, 65536) if args.quick else (196, 1024, 4096, 16384, 65536)
    if args.sizes:
        sizes = tuple(int(n) for n in args.sizes.split(","))
    shapes = [(max(1, TOKENS // n), n, 64) for n in sizes]
    extra_dims = "" if (args.quick or args.sizes) else "32,128"
    if args.head_dims is not None:
        extra_dims = args.head_dims
    shapes += [(TOKENS // 4096, 4096, int(d)) for d in extra_dims.split(",") if d]
    rows: List[Dict] = []
    t_start = time.time()
    for B, N, D in shapes:
        if args.budget_s is not None and rows and time.time() - t_start > args.budget_s:
            print(f"time budget of {args.budget_s:.0f} s spent: shapes from N={N} D={D} on are left out", flush=True)
            break
        q, k, v, do = make_inputs(B, N, HEADS, D)
        floor_ms = 8 * q.numel() * 2 / bw * 1e3
        row: Dict = {"B": B, "N": N, "H": HEADS, "D": D, "floor_ms": floor_ms}
        for name, fn in ms.items():
            if name == "ref_causal" and N > args.skip_slow_ref:
                continue
            t_method = time.time()
            if args.warmup_only:
                try:
                    fn(q, k, v).backward(do)
                    torch.cuda.synchronize()
                    print(f"warm-up {name} N={N} D={D}: {time.time() - t_method:.1f} s", flush=True)
                except Exception as exc:
                    print(f"warm-up {name} N={N} D={D} failed: {str(exc)[:200]}", flush=True)
                continue
            try:
                row[name] = time_fwd_bwd(fn, q, k, v, do)
            except Exception as exc:
                print(f"{name} N={N} D={D} failed: {str(exc)[:200]}")
                row[name] = float("nan")
            if name not in ("ref_noncausal", "ref_causal") and not args.no_graph:
                try:
                    row[f"graph_{name}"] = time_fwd_bwd_graph(fn, q, k, v, do)
                except Exception as exc:
                    print(f"{name} N={N} D={D} CUDA graph failed: {str(exc)[:200]}")
                    row[f"graph_{name}"] = float("nan")
            print(f"{name} N={N} D={D}: {row[name]:.3f} ms, graph {row.get(f'graph_{name}', float('nan')):.3f} ms "
                  f"({time.time() - t_method:.1f} s)", flush=True)
        if args.warmup_only:
            del q, k, v, do
            torch.cuda.empty_cache()
            continue
        for name in ("ours_noncausal", "sdpa_noncausal", "ours_causal", "sdpa_causal", "fla_chunk_lightnet"):
            if name in ms:
                try:
                    row[f"mem_{name}"] = peak_memory_mb(ms[name], q, k, v, do)
                except Exception:
                    row[f"mem_{name}"] = float("nan")
        rows.append(row)
        with open(os.path.join(args.out, "bench_kernels_rows.json"), "w") as f:  # partial results survive a timeout
            json.dump(rows, f, indent=1)
        print(json.dumps({k2: (round(v2, 4) if isinstance(v2, float) else v2) for k2, v2 in row.items()}), flush=True)
        del q, k, v, do
        torch.cuda.empty_cache()
    if args.warmup_only:
        return

    lines, mem = format_tables(rows)
    env = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "copy_bandwidth_TBps": bw / 1e12,
    }
    try:
        import fla

        env["fla"] = getattr(fla, "__version__", "?")
    except Exception:
        env["fla"] = None
    print(json.dumps(env))
    print("\n".join(lines))
    print()
    print("\n".join(mem))
    with open(os.path.join(args.out, "bench_kernels.json"), "w") as f:
        json.dump({"env": env, "rows": rows}, f, indent=1)
    keys = sorted({k2 for r in rows for k2 in r})
    with open(os.path.join(args.out, "bench_kernels.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(args.out, "bench_kernels.md"), "w") as f:
        f.write(json.dumps(env) + "\n\n" + "\n".join(lines) + "\n\n" + "\n".join(mem) + "\n")
    plot(rows, os.path.join(args.out, "bench_kernels.png"), env)


def format_tables(rows: List[Dict]) -> Tuple[List[str], List[str]]:
    """Markdown tables (times and ratios; peak memory) from the benchmark rows."""

    def get(r, key):
        return r.get(key, float("nan"))

    def time_table(prefix: str, eager: bool) -> List[str]:
        """One table of times and ratios for the keys ``prefix + method``; ``eager`` adds the eager references."""

        ref_nc, ref_c = ("ref NC | ", "ref C | ") if eager else ("", "")
        head = (f"| B | N | D | floor | ours NC | ×floor | {ref_nc}compiled ref | SDPA NC | ours/compiled | ours/SDPA NC "
                f"| ours C | {ref_c}SDPA C | fla | fla/ours C | SDPA C/ours C | ours C µs/ktok |")
        out = [head, "|" + "---|" * (head.count("|") - 1)]
        for r in rows:
            def t(name, r=r):
                return get(r, prefix + name)

            onc, oc = t("ours_noncausal"), t("ours_causal")
            eager_nc = f"| {t('ref_noncausal'):.3f} " if eager else ""
            eager_c = f"| {t('ref_causal'):.3f} " if eager else ""
            out.append(
                f"| {r['B']} | {r['N']} | {r['D']} | {r['floor_ms']:.3f} | {onc:.3f} | {onc / r['floor_ms']:.2f} "
                f"{eager_nc}| {t('compiled_ref_noncausal'):.3f} | {t('sdpa_noncausal'):.3f} "
                f"| {t('compiled_ref_noncausal') / onc:.1f}× faster | {t('sdpa_noncausal') / onc:.1f}× faster "
                f"| {oc:.3f} {eager_c}| {t('sdpa_causal'):.3f} | {t('fla_chunk_lightnet'):.3f} "
                f"| {t('fla_chunk_lightnet') / oc:.1f}× | {t('sdpa_causal') / oc:.1f}× "
                f"| {oc * 1e3 / (r['B'] * r['N'] / 1000):.2f} |"
            )
        return out

    lines = time_table("", eager=True)
    lines += ["", "GPU time alone (the same calls replayed from a CUDA graph, ms):"] + time_table("graph_", eager=False)
    mem = ["| N | D | ours NC MiB | SDPA NC MiB | ours C MiB | SDPA C MiB | fla MiB |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        mem.append(f"| {r['N']} | {r['D']} | {get(r, 'mem_ours_noncausal'):.0f} | {get(r, 'mem_sdpa_noncausal'):.0f} "
                   f"| {get(r, 'mem_ours_causal'):.0f} | {get(r, 'mem_sdpa_causal'):.0f} "
                   f"| {get(r, 'mem_fla_chunk_lightnet'):.0f} |")
    return lines, mem


def plot(rows: List[Dict], path: str, env: Dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main_rows = [r for r in rows if r["D"] == 64]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    groups = {
        "non-causal": ["ours_noncausal", "compiled_ref_noncausal", "ref_noncausal", "sdpa_noncausal", "floor_ms"],
        "causal": ["ours_causal", "fla_chunk_lightnet", "sdpa_causal", "ref_causal", "floor_ms"],
    }
    for ax, (title, names) in zip(axes, groups.items()):
        for name in names:
            pts = [(r["N"], r[name]) for r in main_rows if name in r and not math.isnan(r[name])]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name.replace("_ms", ""), linestyle="--" if name == "floor_ms" else "-")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens N (batch × N = 65,536)")
        ax.set_ylabel("forward+backward ms (median)")
        ax.set_title(f"{title}, bf16, 6 heads × 64")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{env['gpu']}, torch {env['torch']}, triton {env['triton']}, {env['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
