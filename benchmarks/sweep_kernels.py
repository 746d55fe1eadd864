"""Where the time of our Triton kernels goes, and which launch configuration is fastest (GPU only).

Printed as they run (and written as CSV/JSON under ``--out``):

1. **Per-launch profile** of the default configuration: ``torch.profiler`` CUDA time of every kernel launched by one
   forward+backward, non-causal and causal, at the issue's shape (bf16, 6 heads × 64, B·N = 65,536). (The profile
   keeps the leaves' gradients, so an elementwise accumulation kernel appears that a real step does not have.)
2. **As called vs GPU time**: one forward+backward through autograd timed by ``do_bench`` (host cost included when it
   dominates) and replayed from a CUDA graph, non-causal and causal, at N = 196, 4,096 and 65,536.
3. **Non-causal launch sweep**: forward-only, backward-only and forward+backward GPU time (CUDA graph) of
   ``noncausal_forward`` / ``noncausal_backward`` under each configuration of ``TUNING`` (token block, warps,
   pipeline stages, programs per SM, one- or two-sweep key maximum), at N = 196, 4,096 and 65,536. Every
   configuration is first checked against the fp32 PyTorch reference on the timed inputs (norm-relative error of
   o and of dq, dk, dv); a failing configuration is reported and not timed.

4. ``--causal chunk:warps:segment:scan_j:scan_x[:bwd_warps[:zpass[:stages]]],...``: the causal configurations, checked
   against the fp32 chunked reference at N = 4,096, then timed both ways at N = 4,096, 65,536, 1,024 and 196.
   Fields 1-6: 0 = the built-in default. Field 7 (zpass): omitted = the default (the zpass path), 1 = zpass, 0 = the
   memory-lean path (``TUNING["c_zpass"] = 0``, not the default). The default is zpass with 8-warp backward launches
   (``0:0:0:0:0``); the previous default, lean with 4 warps, is ``0:0:0:0:0:0:0``.

    PYTHONPATH=. python benchmarks/sweep_kernels.py --out outputs/sweep [--budget-s 300] [--defaults-only]
    PYTHONPATH=. python benchmarks/sweep_kernels.py --out outputs/sweep --causal-only \
        --causal 0:0:0:0:0,0:0:0:0:0:4,0:0:0:0:0:0:0,0:0:0:0:0:8:0
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from triton.testing import do_bench_cudagraph

from lightnet.kernels.reference import noncausal_attention_torch
from lightnet.kernels.triton_common import TUNING
from lightnet.kernels.triton_noncausal import noncausal_backward, noncausal_forward
from lightnet.kernels.triton_ops import additive_attention_triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernels import time_fwd_bwd, time_fwd_bwd_graph  # noqa: E402

TOKENS = 65536
HEADS = 6
DIM = 64
SHAPES = [(TOKENS // 196 + 1, 196), (TOKENS // 4096, 4096), (1, TOKENS)]


def make_inputs(B: int, N: int, seed: int = 0) -> Tuple[torch.Tensor, ...]:
    """bf16 ``q, k, v, dO [B, N, 6, 64]`` on the GPU."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    return tuple(torch.randn(B, N, HEADS, DIM, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(4))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def profile_launches(causal: bool, B: int, N: int, steps: int = 5) -> List[Tuple[str, float]]:
    """``[(kernel name, mean µs per forward+backward)]`` of the default configuration, largest first."""
    q, k, v, do = make_inputs(B, N)
    for t in (q, k, v):
        t.requires_grad_()

    def step() -> None:
        additive_attention_triton(q, k, v, causal=causal)[0].backward(do)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        total = getattr(e, "device_time_total", None)
        if total is None:
            total = getattr(e, "cuda_time_total", 0.0)
        if total > 0:
            rows.append((e.key[:60], total / steps))
    return sorted(rows, key=lambda r: -r[1])


def register_report() -> List[str]:
    """``name warps stages regs spills`` of every compiled variant of our kernels (best effort across Triton versions)."""
    from lightnet.kernels import triton_causal, triton_causal_zpass, triton_noncausal

    lines = []
    for module in (triton_noncausal, triton_causal, triton_causal_zpass):
        for name in dir(module):
            fn = getattr(module, name)
            caches = getattr(fn, "device_caches", None)
            if not name.startswith("_") or caches is None:
                continue
            for entry in list(caches.values()):
                for kernel in list(entry[0].values()):
                    try:
                        kernel._init_handles()
                        meta = kernel.metadata
                        lines.append(f"{name:28s} warps={meta.num_warps} stages={meta.num_stages} "
                                     f"regs={kernel.n_regs} spills={kernel.n_spills} shared={meta.shared}")
                    except Exception as exc:  # the attribute layout differs between Triton versions
                        lines.append(f"{name}: {type(exc).__name__} {exc}"[:160])
    return lines


def check_config(q, k, v, do) -> Dict[str, float]:
    """Norm-relative errors of our forward and gradients against the fp32 reference on the same inputs."""
    qf, kf, vf = (t.float().requires_grad_() for t in (q, k, v))
    o_ref = noncausal_attention_torch(qf, kf, vf)[0]
    o_ref.backward(do.float())
    o, S, z = noncausal_forward(q, k, v, 1.0, None, None, None)
    dq, dk, dv = noncausal_backward(do, None, None, q, k, v, S, z, 1.0, None, None)
    return {"o": rel(o, o_ref), "dq": rel(dq, qf.grad), "dk": rel(dk, kf.grad), "dv": rel(dv, vf.grad)}


def time_config(q, k, v, do, theta=None, rep: int = 40) -> Dict[str, float]:
    """Median ms of forward, backward and forward+backward (``theta``: MD-LRPE angle table ``[N, D]`` or None),
    replayed from a CUDA graph (GPU time alone: the host's launch cost, measured by
    ``benchmarks/host_overhead.py``, is excluded)."""
    o, S, z = noncausal_forward(q, k, v, 1.0, None, theta, None)

    def fwd() -> None:
        noncausal_forward(q, k, v, 1.0, None, theta, None)

    def bwd() -> None:
        noncausal_backward(do, None, None, q, k, v, S, z, 1.0, None, theta)

    def both() -> None:
        o, S_, z_ = noncausal_forward(q, k, v, 1.0, None, theta, None)
        noncausal_backward(do, None, None, q, k, v, S_, z_, 1.0, None, theta)

    return {name: do_bench_cudagraph(f, rep=rep, return_mode="median") for name, f in
            (("fwd", fwd), ("bwd", bwd), ("fwd_bwd", both))}


def plain_vs_graph(B: int, N: int, causal: bool = False) -> Dict[str, float]:
    """Forward+backward through autograd, timed as users call it (``do_bench``: host cost included when it
    dominates) and replayed from a CUDA graph (GPU time alone), with ``bench_kernels``' timers."""
    q, k, v, do = make_inputs(B, N)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]

    def ours(a, b, c):
        return additive_attention_triton(a, b, c, causal=causal)[0]

    plain = time_fwd_bwd(ours, *leaves, do)
    try:
        graph = time_fwd_bwd_graph(ours, *leaves, do)
    except Exception as exc:  # capture not possible: report the plain time only
        print(f"CUDA graph capture failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
        graph = float("nan")
    for t in leaves:
        t.grad = None
    row = {"B": B, "N": N, "causal": causal, "plain_autograd_ms": plain, "graph_ms": graph}
    print(json.dumps(row), flush=True)
    return row


CAUSAL_KEYS = ("c_chunk", "c_warps", "c_segment", "c_scan_j", "c_scan_x", "c_bwd_warps", "c_zpass", "c_stages")


def parse_causal_spec(spec: str) -> Dict[str, Optional[int]]:
    """``chunk:warps:segment:scan_j:scan_x[:bwd_warps[:zpass[:stages]]]`` → ``TUNING`` values of every causal key.

    Fields 1-6 and 8: 0 (or omitted) = None, the built-in default. Field 7: omitted = None (the default, the zpass
    path), ``1`` = zpass, ``0`` = the memory-lean path (kept as 0: it is not the default). Field 8: ``num_stages`` of
    the chunk-walk launches.
    """
    fields = spec.split(":")
    if not 5 <= len(fields) <= len(CAUSAL_KEYS):
        raise ValueError(f"causal spec {spec!r}: expected chunk:warps:segment:scan_j:scan_x[:bwd_warps[:zpass[:stages]]]")
    try:
        vals = [int(f) for f in fields]
    except ValueError:
        raise ValueError(f"causal spec {spec!r}: every field must be an integer") from None
    cfg: Dict[str, Optional[int]] = {key: None for key in CAUSAL_KEYS}
    cfg.update({key: (val or None) for key, val in zip(CAUSAL_KEYS[:6], vals[:6])})
    if len(vals) >= 7:
        if vals[6] not in (0, 1):
            raise ValueError(f"causal spec {spec!r}: zpass must be 0 (lean path) or 1 (zpass, the default)")
        cfg["c_zpass"] = vals[6]
    if len(vals) == 8:
        cfg["c_stages"] = vals[7] or None
    return cfg


def print_profile(causal: bool, B: int, N: int, label: str = "") -> None:
    """Print :func:`profile_launches` of one shape (reported, not raised, on failure)."""
    try:
        rows = profile_launches(causal, B, N)
    except Exception as exc:  # report and go on
        print(f"profile causal={causal} failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
        return
    total = sum(t for _, t in rows)
    kind = "causal" if causal else "non-causal"
    print(f"\nprofile {kind} {label}B={B} N={N}: {total:.1f} µs of kernels", flush=True)
    for name, t in rows:
        print(f"  {t:9.1f} µs  {name}", flush=True)


def causal_sweep(specs: List[str], shapes: List[Tuple[int, int]], profile_sizes: List[int] = ()) -> List[Dict]:
    """Causal launch configurations (:func:`parse_causal_spec`): correctness at the first shape against the fp32
    chunked reference, then forward+backward time (plain and CUDA graph) per shape, then (``profile_sizes``) the
    per-launch profile at ``B = 65,536 / N``."""
    from lightnet.kernels.reference import causal_attention_chunked_torch

    rows = []
    cfgs = [(spec, parse_causal_spec(spec)) for spec in specs]  # every spec checked before any GPU work
    for spec, cfg in cfgs:
        TUNING.update(cfg)
        try:
            for i, (B, N) in enumerate(shapes):
                row = dict(spec=spec, B=B, N=N)
                if i == 0:
                    q, k, v, do = make_inputs(B, N)
                    qf, kf, vf = (t.float().requires_grad_() for t in (q, k, v))
                    o_ref = causal_attention_chunked_torch(qf, kf, vf)[0]
                    o_ref.backward(do.float())
                    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
                    o = additive_attention_triton(*leaves, causal=True)[0]
                    o.backward(do)
                    row.update(err_o=rel(o, o_ref), err_dq=rel(leaves[0].grad, qf.grad),
                               err_dk=rel(leaves[1].grad, kf.grad), err_dv=rel(leaves[2].grad, vf.grad))
                    del qf, kf, vf, leaves, o, o_ref
                row.update(plain_vs_graph(B, N, causal=True))
                rows.append(row)
                print("causal " + json.dumps(row), flush=True)
            for N in profile_sizes:
                print_profile(True, max(1, TOKENS // N), N, label=f"{spec} ")
        except Exception as exc:
            print(f"causal config {spec} failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
        for key in CAUSAL_KEYS:
            TUNING[key] = None
    return rows


def configs() -> List[Dict]:
    """First stage: warps × stages × one/two sweeps at 64-token blocks, 4 programs per SM."""
    out = []
    for two_pass in (1, 0):
        for warps, stages in ((8, 1), (8, 2), (8, 3), (4, 2), (4, 3)):
            out.append(dict(nc_block_n=64, nc_warps=warps, nc_stages=stages, nc_splits_per_sm=4,
                            nc_two_pass=two_pass, nc_min_blocks=16))
    return out


def second_stage(best: Dict) -> List[Dict]:
    """Around the best first-stage configuration: token block, programs per SM, range length."""
    out = []
    for key, values in (("nc_block_n", (32, 128)), ("nc_splits_per_sm", (2, 3, 8)), ("nc_min_blocks", (4, 8))):
        for val in values:
            cfg = dict(best)
            cfg[key] = val
            out.append(cfg)
    return out


def run_config(cfg: Dict, inputs: Dict, results: List[Dict]) -> float:
    """Check then time one configuration at every shape; returns its summed forward+backward time."""
    TUNING.update(cfg)
    total = 0.0
    for (B, N), (q, k, v, do) in inputs.items():
        row = dict(cfg, B=B, N=N)
        try:
            err = check_config(q, k, v, do) if N == 4096 else {}
            bad = {key: val for key, val in err.items() if not val < 2e-2}
            if bad:
                row.update(status=f"FAILED {bad}")
                total = float("inf")
            else:
                row.update(status="ok", **{f"err_{key}": val for key, val in err.items()}, **time_config(q, k, v, do))
                total += row["fwd_bwd"]
        except Exception as exc:  # a configuration that does not compile (shared memory) is reported, not fatal
            row.update(status=f"error {type(exc).__name__}: {str(exc)[:120]}")
            total = float("inf")
        results.append(row)
        print(json.dumps(row), flush=True)
    for key in cfg:
        TUNING[key] = None
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/sweep")
    ap.add_argument("--budget-s", type=float, default=300.0, help="stop starting new configurations after this")
    ap.add_argument("--skip-profile", action="store_true")
    ap.add_argument("--defaults-only", action="store_true", help="check and time the built-in configuration only")
    ap.add_argument("--causal", default="", help="comma-separated causal configs "
                    "chunk:warps:segment:scan_j:scan_x[:bwd_warps[:zpass]]; fields 1-6: 0 = built-in default; "
                    "zpass: omitted = default (zpass, 8-warp backward), 1 = zpass, 0 = memory-lean path")
    ap.add_argument("--causal-only", action="store_true")
    ap.add_argument("--causal-sizes", default="4096,65536,1024,196", help="N of the causal timings (B = 65,536 / N)")
    ap.add_argument("--profile-sizes", default="", help="N of a per-launch causal profile after each causal config")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    print(f"GPU {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    if args.causal:
        sizes = [int(n) for n in args.causal_sizes.split(",") if n]
        profile_sizes = [int(n) for n in args.profile_sizes.split(",") if n]
        rows = causal_sweep(args.causal.split(","), [(max(1, -(-TOKENS // n)), n) for n in sizes], profile_sizes)
        with open(os.path.join(args.out, "sweep_causal.json"), "w") as f:
            json.dump(rows, f, indent=1)
        if args.causal_only:
            print("\ncompiled variants:")
            for line in register_report():
                print("  " + line)
            return
    if not args.skip_profile:
        for causal in (False, True):
            for B, N in SHAPES[1:]:
                print_profile(causal, B, N)
    extra = {"plain_vs_graph": [plain_vs_graph(B, N, c) for c in (False, True) for B, N in SHAPES]}
    with open(os.path.join(args.out, "host_and_graph.json"), "w") as f:
        json.dump(extra, f, indent=1)
    inputs = {(B, N): make_inputs(B, N) for B, N in SHAPES}
    results: List[Dict] = []
    scores = []
    for cfg in ([{}] if args.defaults_only else configs()):
        if time.time() - t0 > args.budget_s:
            print("budget spent; stopping the sweep", flush=True)
            break
        scores.append((run_config(cfg, inputs, results), cfg))
    if scores and time.time() - t0 < args.budget_s and not args.defaults_only:
        best = min(scores, key=lambda s: s[0])[1]
        print(f"\nbest first-stage config: {best}", flush=True)
        for cfg in second_stage(best):
            if time.time() - t0 > args.budget_s:
                break
            scores.append((run_config(cfg, inputs, results), cfg))
    with open(os.path.join(args.out, "sweep_noncausal.json"), "w") as f:
        json.dump(results, f, indent=1)
    keys = sorted({key for r in results for key in r})
    with open(os.path.join(args.out, "sweep_noncausal.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(results)
    print("\ncompiled variants:")
    for line in register_report():
        print("  " + line)
    ranked = sorted(scores, key=lambda s: s[0])
    print("\nranked (sum of fwd+bwd ms over the shapes):")
    for total, cfg in ranked:
        print(f"  {total:8.3f}  {cfg}")


if __name__ == "__main__":
    main()
