"""LightNet's additive attention kernels vs their peers: correctness on the GPU, then forward + backward time.

1. Correctness: random shapes (odd N, N = 1, masks, MD-LRPE angles, initial states, head dims 32 / 64 / 128, E != D,
   bf16 / fp16 / fp32, key logits × 1e4) through ``lightnet.kernels.additive_attention(backend="triton")``: the
   output, the final state and the gradients of q, k, v against the PyTorch reference in fp64 on the same (rounded)
   inputs, ‖ours − ref‖ / ‖ref‖ under a per-dtype bound. Exit status 1 on any failure.
2. Timing, all methods in one process: LightNet non-causal and causal, ``torch.compile`` of the non-causal reference,
   SDPA (FlashAttention) non-causal and causal, and fla's ``chunk_lightnet`` (causal) where fla is installed; bf16,
   6 heads, batch × tokens = 65 536. Each forward + backward is timed as called (``do_bench``: the host's launch cost
   counts) and replayed from a CUDA graph (the GPU's time alone). The floor is 8 tensor passes (read q, k, v, dO;
   write o, dq, dk, dv) at the copy bandwidth measured here. Peak memory of one forward + backward above the inputs.

    python benchmarks/kernels.py --out $OUT/kernels                       # check, then N = 1K, 4K, 16K, 64K
    python benchmarks/kernels.py --check-only                             # correctness alone
    python benchmarks/kernels.py --no-check --sizes 4096 --head-dims 64 32 --eager-ref
    python benchmarks/kernels.py --smoke --out /tmp/kernels               # CPU, Triton interpreter, seconds
"""
from __future__ import annotations

import functools
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

if not __package__:  # run as a file: the repository root replaces this folder on the path (no shadowed packages)
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from benchmarks.common import Row, environment, log, md_table, num, parser, rel_err, time_calls, write_result  # noqa: E402

TOKENS, HEADS = 65536, 6
DEVICE = torch.device("cpu")  # set by main
TOL = {torch.bfloat16: 2e-2, torch.float16: 5e-3, torch.float32: 5e-4}
LARGE_LOGIT_TOL = {torch.bfloat16: 3e-2, torch.float16: 1e-2, torch.float32: 5e-3}
BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32
# (causal, B, N, H, D, E, dtype, mask, lrpe, initial state, key scale)
CASES: List[Tuple] = [
    (False, 2, 1, 3, 64, 64, BF16, False, False, False, 1.0),
    (False, 3, 197, 2, 64, 64, BF16, True, False, False, 1.0),
    (False, 1, 5001, 2, 64, 64, BF16, True, True, True, 1.0),
    (False, 2, 999, 2, 32, 64, FP16, False, False, False, 1.0),
    (False, 1, 4099, 2, 128, 128, FP32, False, True, False, 1.0),
    (False, 2, 300, 2, 64, 32, FP32, True, False, False, 1e4),
    (False, 1, 3001, 1, 128, 64, BF16, False, False, True, 1.0),
    (False, 1, 20000, 2, 64, 64, BF16, True, True, True, 1.0),  # many token ranges: separate merge and dS sum
    (False, 2, 700, 2, 128, 64, FP32, True, True, False, 1.0),  # shared-memory guards of wide LRPE states
    (False, 2, 700, 2, 64, 128, FP16, False, True, True, 1.0),
    (False, 1, 20000, 2, 128, 128, FP16, True, True, False, 1.0),
    (False, 16, 196, 6, 64, 64, BF16, False, True, False, 1.0),  # the vision models' shape at 224 px
    (False, 2, 3000, 2, 64, 64, FP32, True, True, False, 1.0),
    (False, 3, 1000, 2, 32, 128, FP16, True, True, True, 1.0),
    (True, 2, 1, 2, 64, 64, BF16, False, False, True, 1.0),
    (True, 2, 333, 2, 64, 64, BF16, True, False, False, 1.0),
    (True, 1, 2049, 2, 64, 64, BF16, False, True, True, 1.0),
    (True, 2, 517, 2, 32, 64, FP16, False, False, False, 1.0),
    (True, 1, 700, 2, 64, 128, FP32, True, True, False, 1.0),  # the widest fp32 causal launch
    (True, 2, 200, 2, 64, 64, FP32, True, False, False, 1e4),
    (True, 1, 1000, 2, 128, 64, BF16, False, False, False, 30.0),
    (True, 1, 4097, 1, 64, 64, FP32, True, True, True, 1.0),  # > 32 segments: the reverse scan's carry
    (True, 1, 1500, 2, 128, 128, BF16, False, True, True, 1.0),
    (True, 16, 512, 4, 64, 64, BF16, True, True, False, 1.0),  # many heads, few segments each
    (True, 48, 1030, 6, 64, 64, BF16, True, False, True, 1.0),  # one segment per head
]
SMOKE_CASES = [(False, 2, 37, 2, 16, 16, FP32, True, True, True, 1.0), (True, 1, 40, 1, 16, 32, FP32, True, True, True, 1.0)]


def additive_attention(*args, **kwargs):
    from lightnet.kernels import additive_attention as call  # imported late: the interpreter flag must come first

    return call(*args, **kwargs)


def check_case(case: Tuple, gen: torch.Generator, dev: torch.device) -> Row:
    """Errors of the Triton path against the fp64 reference for one case (forward values and gradients)."""
    causal, B, N, H, D, E, dtype, mask, lrpe, init, k_scale = case
    rand = lambda *s: torch.randn(*s, device=dev, generator=gen)  # noqa: E731
    q, k, v = rand(B, N, H, D).to(dtype), (rand(B, N, H, D) * k_scale).to(dtype), rand(B, N, H, E).to(dtype)
    kpm = None
    if mask:
        kpm = torch.rand(B, N, device=dev, generator=gen) < 0.2
        kpm[0] = False
        if B > 1:
            kpm[1, : N // 2] = True
    P = 2 * D if lrpe else D
    theta = torch.rand(N, D, device=dev, generator=gen) * 6.0 if lrpe else None
    state = (rand(B, H, P, E), rand(B, H, D)) if init else None
    do, w_s, w_z = rand(B, N, H, E), rand(B, H, P, E), rand(B, H, D)
    outs = []
    for backend in ("torch", "triton"):
        cast = (lambda t: t.double()) if backend == "torch" else (lambda t: t)  # noqa: E731
        xs = [cast(t.detach().clone()).requires_grad_() for t in (q, k, v)]
        o, (S, z) = additive_attention(
            *xs, causal=causal, scale=0.5, key_padding_mask=kpm, lrpe_theta=None if theta is None else cast(theta),
            initial_state=None if state is None else tuple(cast(s) for s in state), output_final_state=True,
            backend=backend)
        loss = (o.double() * do.double()).sum() + (S.double() * w_s.double()).sum() + (z.double() * w_z.double()).sum()
        loss.backward()
        outs.append((o, S, z, *(t.grad for t in xs)))
    errs = {n: rel_err(t, r) for n, r, t in zip(("o", "S", "z", "dq", "dk", "dv"), *outs)}
    tol = (LARGE_LOGIT_TOL if k_scale > 1 else TOL)[dtype]
    name = (f"{'causal' if causal else 'non-causal'} B{B} N{N} H{H} D{D} E{E} {str(dtype)[6:]}"
            + " mask" * mask + " LRPE" * lrpe + " init" * init + (f" k×{k_scale:g}" if k_scale != 1 else ""))
    return dict(part="check", case=name, tol=tol, max_err=max(errs.values()), errors=errs,
                status="ok" if all(e <= tol for e in errs.values()) else "FAILED")


def check(cases: List[Tuple], dev: torch.device, seed: int, budget_s: float) -> List[Row]:
    gen, rows, t0 = torch.Generator(device=dev).manual_seed(seed), [], time.time()
    for case in cases:
        if time.time() - t0 > budget_s:
            left = len(cases) - len(rows)
            rows.append(dict(part="check", case=f"{left} cases left out", cases=left, status="cut"))
            break
        try:
            row = check_case(case, gen, dev)
        except Exception as exc:  # a launch failure is a failed case, not the end of the check
            row = dict(part="check", case=str(case), status="FAILED", error=str(exc)[:300])
        log(row)
        rows.append(row)
    return rows


def methods() -> Dict[str, Callable]:
    """name → f(q, k, v, theta) returning o ``[B, N, H, E]``; every one differentiable; ``theta``: the MD-LRPE angles
    ``[N, D]`` of a square grid (only LightNet's non-causal call with LRPE takes them)."""
    from lightnet.kernels import causal_attention_chunked_torch, noncausal_attention_torch

    def sdpa(q, k, v, causal):
        t = lambda x: x.transpose(1, 2)  # noqa: E731
        return t(F.scaled_dot_product_attention(t(q), t(k), t(v), is_causal=causal))

    compiled_ref = torch.compile(lambda q, k, v: noncausal_attention_torch(q, k, v)[0], dynamic=False)
    out = {
        "lightnet_noncausal": lambda q, k, v: additive_attention(q, k, v, causal=False, backend="triton"),
        "lightnet_noncausal_lrpe": lambda q, k, v: additive_attention(q, k, v, causal=False, backend="triton",
                                                                      lrpe_theta=lrpe_angles(q.shape[1], q.shape[-1])),
        "compiled_ref_noncausal": compiled_ref,
        "eager_ref_noncausal": lambda q, k, v: noncausal_attention_torch(q, k, v)[0],
        "sdpa_noncausal": lambda q, k, v: sdpa(q, k, v, False),
        "lightnet_causal": lambda q, k, v: additive_attention(q, k, v, causal=True, backend="triton"),
        "eager_ref_causal": lambda q, k, v: causal_attention_chunked_torch(q, k, v)[0],
        "sdpa_causal": lambda q, k, v: sdpa(q, k, v, True),
    }
    try:
        from fla.ops.lightnet import chunk_lightnet

        out["fla_causal"] = lambda q, k, v: chunk_lightnet(q, k, v, scale=1.0)[0]
    except Exception as exc:  # fla is optional: its columns say '—'
        print(f"fla not available: {str(exc)[:120]}", flush=True)
    return out


@functools.lru_cache(maxsize=None)
def lrpe_angles(N: int, D: int) -> torch.Tensor:
    """MD-LRPE angles of the square grid of ``N`` tokens, as the vision models pass them (``[N, D]`` fp32)."""
    from lightnet.layers import MDLRPE

    side = math.isqrt(N)
    if side * side != N:
        raise ValueError(f"--lrpe needs square token counts (the vision grids), got N = {N}")
    return MDLRPE(D, num_axes=2).angles((side, side)).to(DEVICE)


def copy_bandwidth(dev: torch.device) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + written)."""
    from triton.testing import do_bench

    x = torch.empty(1 << 28, dtype=torch.uint8, device=dev)
    y = torch.empty_like(x)
    return 2 * x.numel() / (do_bench(lambda: y.copy_(x), warmup=25, rep=200, return_mode="median") * 1e-3)


def time_method(fn: Callable, q, k, v, do, dev: torch.device, graph: bool) -> Dict[str, float]:
    """ms as called, ms replayed from a CUDA graph (``graph``), peak MiB of one forward + backward."""
    step = lambda: fn(q, k, v).backward(do)  # noqa: E731
    if dev.type != "cuda":
        return dict(ms=1e3 * time_calls(step, dev, 1, 1)[1])
    from triton.testing import do_bench, do_bench_cudagraph

    out = dict(ms=do_bench(step, warmup=10, rep=60, grad_to_none=[q, k, v], return_mode="median"))
    if graph:
        out["gpu_ms"] = do_bench_cudagraph(step, rep=40, grad_to_none=[q, k, v], return_mode="median")
    for t in (q, k, v):
        t.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    out["mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return out


def bench(shapes: List[Tuple[int, int, int]], dev: torch.device, eager_ref: bool, graph: bool, budget_s: float,
          dtype: torch.dtype = BF16, lrpe: bool = False) -> List[Row]:
    bw = copy_bandwidth(dev) if dev.type == "cuda" else float("nan")
    fns, rows, t0 = methods(), [], time.time()
    for B, N, D in shapes:
        if rows and time.time() - t0 > budget_s:
            print(f"time budget spent: N={N} D={D} and later shapes left out", flush=True)
            break
        g = torch.Generator(device=dev).manual_seed(N)
        q, k, v, do = (torch.randn(B, N, HEADS, D, device=dev, generator=g, dtype=dtype) for _ in range(4))
        for t in (q, k, v):
            t.requires_grad_()
        row: Row = dict(part="time", B=B, N=N, H=HEADS, D=D, floor_ms=8 * q.numel() * q.element_size() / bw * 1e3,
                        copy_TBps=bw / 1e12)
        for name, fn in fns.items():
            if ((name.startswith("eager_ref") and not eager_ref) or (name.startswith("compiled") and dev.type == "cpu")
                    or (name.endswith("lrpe") != lrpe and name != "lightnet_noncausal")):
                continue  # eager references: minutes on a GPU; no inductor compile on the CPU; LRPE only with --lrpe
            try:
                t_m = time.time()
                res = time_method(fn, q, k, v, do, dev, graph and not name.startswith("eager_ref"))
                row.update({f"{name}_{key}": val for key, val in res.items()})
                print(f"{name} N={N} D={D}: {res} ({time.time() - t_m:.0f} s)", flush=True)
            except Exception as exc:
                print(f"{name} N={N} D={D} failed: {str(exc)[:200]}", flush=True)
        log(row)
        rows.append(row)
        del q, k, v, do
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def render(rows: List[Row]) -> str:
    checks, times = [r for r in rows if r["part"] == "check"], [r for r in rows if r["part"] == "time"]
    nan = float("nan")
    f = lambda r, key, fmt=".3f": format(r[key], fmt) if key in r and r[key] == r[key] else "—"  # noqa: E731
    over = lambda r, a, b: f"{r[a] / r[b]:.1f}×" if r.get(a, nan) == r.get(a) and r.get(b, nan) == r.get(b) else "—"  # noqa: E731
    t = lambda r, m: f"{m}_gpu_ms" if f"{m}_gpu_ms" in r else f"{m}_ms"  # noqa: E731  GPU time where measured
    parts = []
    if checks:
        ran = [r for r in checks if r["status"] != "cut"]
        failed = [r for r in ran if r["status"] != "ok"]
        cut = sum(int(r.get("cases", 1)) for r in checks if r["status"] == "cut")
        parts.append(f"### Correctness vs the fp64 reference: {len(ran) - len(failed)} of {len(ran)} cases run "
                     f"pass" + (f" ({cut} cut by the time budget)" if cut else "") + "\n\n" + md_table(["case", "max rel. error", "bound", "status"], [
                         (r["case"], f(r, "max_err", ".1e"), r.get("tol", "—"), r["status"]) for r in checks]))
    if times:
        parts.append("### Non-causal forward + backward, ms (GPU time from CUDA-graph replay; as called in brackets)\n\n"
                     + md_table(["B", "N", "D", "floor", "LightNet", "× floor", "compiled ref", "SDPA",
                                 "compiled ref / LightNet", "SDPA / LightNet", "MiB LightNet / SDPA"], [
                         (r["B"], r["N"], r["D"], f(r, "floor_ms"),
                          f"{f(r, t(r, 'lightnet_noncausal'))} ({f(r, 'lightnet_noncausal_ms')})",
                          over(r, t(r, "lightnet_noncausal"), "floor_ms").rstrip("×"),
                          f(r, t(r, "compiled_ref_noncausal")), f(r, t(r, "sdpa_noncausal")),
                          over(r, t(r, "compiled_ref_noncausal"), t(r, "lightnet_noncausal")),
                          over(r, t(r, "sdpa_noncausal"), t(r, "lightnet_noncausal")),
                          f"{f(r, 'lightnet_noncausal_mib', '.0f')} / {f(r, 'sdpa_noncausal_mib', '.0f')}")
                         for r in times]))
        if any("lightnet_noncausal_lrpe_ms" in r for r in times):
            parts.append("### Non-causal with MD-LRPE (2-D angles of the square grid), ms (GPU time; as called)\n\n"
                         + md_table(["B", "N", "D", "LightNet", "LightNet with MD-LRPE", "with / without"], [
                             (r["B"], r["N"], r["D"], f"{f(r, t(r, 'lightnet_noncausal'))} ({f(r, 'lightnet_noncausal_ms')})",
                              f"{f(r, t(r, 'lightnet_noncausal_lrpe'))} ({f(r, 'lightnet_noncausal_lrpe_ms')})",
                              over(r, t(r, "lightnet_noncausal_lrpe"), t(r, "lightnet_noncausal"))) for r in times]))
        if any(t(r, "lightnet_causal") in r for r in times):
            parts.append("### Causal forward + backward, ms (GPU time; as called in brackets)\n\n"
                         + md_table(["B", "N", "D", "LightNet", "SDPA causal", "fla chunk_lightnet", "fla / LightNet",
                                     "SDPA / LightNet", "LightNet µs per 1k tokens", "MiB LightNet / SDPA / fla"], [
                             (r["B"], r["N"], r["D"], f"{f(r, t(r, 'lightnet_causal'))} ({f(r, 'lightnet_causal_ms')})",
                              f(r, t(r, "sdpa_causal")), f(r, t(r, "fla_causal")),
                              over(r, t(r, "fla_causal"), t(r, "lightnet_causal")),
                              over(r, t(r, "sdpa_causal"), t(r, "lightnet_causal")),
                              num(r.get(t(r, "lightnet_causal"), nan) * 1e6 / (r["B"] * r["N"]), ".1f"),
                              " / ".join(f(r, f"{m}_mib", ".0f") for m in ("lightnet_causal", "sdpa_causal", "fla_causal")))
                             for r in times]))
        if any("eager_ref_noncausal_ms" in r for r in times):
            parts.append("Eager references, as called, ms: " + "; ".join(
                f"N={r['N']} D={r['D']}: non-causal {f(r, 'eager_ref_noncausal_ms')}, causal (chunked) "
                f"{f(r, 'eager_ref_causal_ms')}" for r in times))
    return "\n\n".join(parts)


def plot(rows: List[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [r for r in rows if r["part"] == "time"]
    times = [r for r in times if r["D"] == times[0]["D"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    groups = {"non-causal": ("lightnet_noncausal", "compiled_ref_noncausal", "sdpa_noncausal"),
              "causal": ("lightnet_causal", "fla_causal", "sdpa_causal")}
    for ax, (title, names) in zip(axes, groups.items()):
        for name in names + ("floor",):
            key = "floor_ms" if name == "floor" else next((k for k in (f"{name}_gpu_ms", f"{name}_ms")
                                                           if any(k in r for r in times)), None)
            pts = [(r["N"], r[key]) for r in times if key in r and not math.isnan(r[key])]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name, linestyle="--" if name == "floor" else "-")
        ax.set(xscale="log", yscale="log", xlabel="tokens N (batch × N = 65 536)", ylabel="fwd + bwd ms",
               title=f"{title}, bf16, 6 heads × 64")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Optional[List[str]] = None) -> int:
    p = parser(__doc__)
    p.add_argument("--check-only", action="store_true")
    p.add_argument("--no-check", action="store_true")
    p.add_argument("--cases", default=None, help="check cases by index, e.g. 0-7,19 (default: all)")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384, 65536], help="N at head dim 64")
    p.add_argument("--head-dims", type=int, nargs="+", default=[64])
    p.add_argument("--shapes", nargs="+", default=None, help="BxN problems instead of --sizes (e.g. 128x196)")
    p.add_argument("--lrpe", action="store_true",
                   help="time LightNet's non-causal call with and without MD-LRPE (square N) instead of the peers")
    p.add_argument("--eager-ref", action="store_true", help="also time the eager references (slow: minutes)")
    p.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph (GPU time) timings")
    p.add_argument("--budget-s", type=float, default=480, help="start no new case or shape after this many seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.eager_ref = "cpu", True
    dev = torch.device(args.device)
    globals()["DEVICE"] = dev
    if dev.type == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # the Triton kernels run in the interpreter on the CPU
    env = environment(dev)
    cases = SMOKE_CASES if args.smoke else CASES
    if args.cases:
        pick = [range(int(a), int(b or a) + 1) for a, _, b in (s.partition("-") for s in args.cases.split(","))]
        cases = [CASES[i] for r in pick for i in r]
    rows = [] if args.no_check else check(cases, dev, args.seed, args.budget_s)
    if not args.check_only:
        shapes = [(1, 32, 16)] if args.smoke else (
            [(max(1, TOKENS // n), n, d) for d in args.head_dims for n in args.sizes])
        if args.shapes:
            shapes = [(int(b), int(n), d) for d in args.head_dims for b, n in (s.split("x") for s in args.shapes)]
        rows += bench(shapes, dev, args.eager_ref, not args.no_graph, args.budget_s,
                      FP32 if dev.type == "cpu" else BF16, args.lrpe)
    write_result(args.out, "kernels", env, args, rows, render(rows))
    if args.out and any(r["part"] == "time" for r in rows):
        plot(rows, os.path.join(args.out, "kernels.png"))
    return 1 if any(r["status"] == "FAILED" for r in rows if r["part"] == "check") else 0


if __name__ == "__main__":
    sys.exit(main())
