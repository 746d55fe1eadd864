"""Where the host (Python) time of one call goes: cProfile of our launch path and of the peers at a tiny shape.

At the shapes of issue 4 the GPU work of our forward+backward is ~0.3 ms while a call through autograd costs the host
~0.5 ms on the device machine, so the host path decides the measured time. This script prints, for each case, the
host µs per call and the functions where it goes (cProfile, sorted by own time), plus the source of Triton's launch
path on this install (its signature differs between Triton versions).

    PYTHONPATH=. python benchmarks/host_overhead.py [--iters 200]
"""
from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import pstats
import time
from typing import Callable, Dict

import torch
import torch.nn.functional as F
import triton

from lightnet.kernels.triton_noncausal import noncausal_backward, noncausal_forward
from lightnet.kernels.triton_ops import additive_attention_triton


def host_us(fn: Callable[[], object], iters: int) -> float:
    """Host µs per call (the GPU work of the tiny shape is negligible next to it)."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / iters * 1e6


def profile(fn: Callable[[], object], iters: int, top: int = 18) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(iters):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--show-triton-source", action="store_true")
    args = ap.parse_args()
    print(f"torch {torch.__version__}  triton {triton.__version__}  {torch.cuda.get_device_name()}", flush=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(1, 256, 6, 64, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(4))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    o, S, z = noncausal_forward(q, k, v, 1.0, None, None, None)

    def ours_autograd() -> None:
        additive_attention_triton(*leaves)[0].backward(do)

    def sdpa_autograd() -> None:
        a, b, c = (t.transpose(1, 2) for t in leaves)
        F.scaled_dot_product_attention(a, b, c).transpose(1, 2).backward(do)

    def empty_autograd() -> None:  # the autograd machinery alone: one elementwise op forward and backward
        (leaves[0] * 1.0).backward(do)

    cases: Dict[str, Callable[[], object]] = {
        "noncausal_forward": lambda: noncausal_forward(q, k, v, 1.0, None, None, None),
        "noncausal_backward": lambda: noncausal_backward(do, None, None, q, k, v, S, z, 1.0, None, None),
        "ours fwd+bwd (autograd)": ours_autograd,
        "SDPA fwd+bwd (autograd)": sdpa_autograd,
        "x*1 fwd+bwd (autograd)": empty_autograd,
    }
    for name, fn in cases.items():
        print(f"\n=== {name}: {host_us(fn, args.iters):.1f} µs host per call", flush=True)
        print(profile(fn, args.iters), flush=True)
    if args.show_triton_source:
        from triton.compiler.compiler import CompiledKernel
        from triton.runtime.jit import JITFunction

        for obj in (JITFunction.run, CompiledKernel.__getitem__):
            try:
                print(inspect.getsource(obj), flush=True)
            except (OSError, TypeError) as exc:
                print(f"no source for {obj}: {exc}")


if __name__ == "__main__":
    main()
