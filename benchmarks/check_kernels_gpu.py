"""GPU correctness check of the Triton kernels against the fp64 PyTorch reference; run it before every timing.

Random shapes (odd N, N = 1, large key logits, padding masks, head dims 32/64/128, E != D, fp16/bf16/fp32,
MD-LRPE, initial states), forward ``(o, S, z)`` and gradients ``(dq, dk, dv)`` through a loss that also touches the
final state. Errors are ‖ours − ref‖ / ‖ref‖ with the reference computed in fp64 from the same (rounded) inputs.
Also checks ``backend='auto'`` against ``backend='torch'`` and a decode loop against one causal pass.
Exits non-zero on any failure.

    PYTHONPATH=. python benchmarks/check_kernels_gpu.py [--seed N] [--quick]
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List, Optional, Tuple

import torch

from _report import rel  # the script's folder is on sys.path when it runs as a file
from lightnet.kernels import additive_attention
from lightnet.kernels.reference import additive_attention_torch

# expected error level of each input dtype (bf16 operands in the products, tf32 for fp16, fp32 for fp32)
TOL = {torch.bfloat16: 2e-2, torch.float16: 5e-3, torch.float32: 5e-4}
LARGE_LOGIT_TOL = {torch.bfloat16: 3e-2, torch.float16: 1e-2, torch.float32: 5e-3}

# (causal, B, N, H, D, E, dtype, mask, lrpe, init, k_scale)
CASES: List[Tuple] = [
    (False, 2, 1, 3, 64, 64, torch.bfloat16, False, False, False, 1.0),
    (False, 3, 197, 2, 64, 64, torch.bfloat16, True, False, False, 1.0),
    (False, 1, 5001, 2, 64, 64, torch.bfloat16, True, True, True, 1.0),
    (False, 2, 999, 2, 32, 64, torch.float16, False, False, False, 1.0),
    (False, 1, 4099, 2, 128, 128, torch.float32, False, True, False, 1.0),
    (False, 2, 300, 2, 64, 32, torch.float32, True, False, False, 1e4),
    (False, 1, 3001, 1, 128, 64, torch.bfloat16, False, False, True, 1.0),
    (False, 1, 20000, 2, 64, 64, torch.bfloat16, True, True, True, 1.0),  # > 8 ranges: separate merge and dS sum
    (True, 2, 1, 2, 64, 64, torch.bfloat16, False, False, True, 1.0),
    (True, 2, 333, 2, 64, 64, torch.bfloat16, True, False, False, 1.0),
    (True, 1, 2049, 2, 64, 64, torch.bfloat16, False, True, True, 1.0),
    (True, 2, 517, 2, 32, 64, torch.float16, False, False, False, 1.0),
    # fp32 at the causal head-dim limit (CAUSAL_FP32_MAX_HEAD_DIM = 64; D = 128 needed 269-273 KB of shared memory in
    # runs E/F and is refused): the largest fp32 ask, LRPE with D = 64, E = 128 (222,720 B by smem_report.py)
    (True, 1, 700, 2, 64, 128, torch.float32, True, True, False, 1.0),
    (True, 2, 200, 2, 64, 64, torch.float32, True, False, False, 1e4),
    (True, 1, 1000, 2, 128, 64, torch.bfloat16, False, False, False, 30.0),
    # fp32, > 32 segments per (batch, head) on a GPU with ≥ 33 SMs (129 one-chunk segments): the reverse segment scan
    # carries between groups of 32 (run E's dk/dv fault), with a tolerance fp32 can meet
    (True, 1, 4097, 1, 64, 64, torch.float32, True, True, True, 1.0),
    # the widest shape, bf16 D = E = 128 with LRPE and an initial state (191,488 B by smem_report.py)
    (True, 1, 1500, 2, 128, 128, torch.bfloat16, False, True, True, 1.0),
    # many (batch, head) with few segments each (8 segments of 2 chunks on 132 SMs): wide segment-scan tiles
    # (BLOCK_J = 8, BLOCK_X = 512 of an 8,192-element LRPE state)
    (True, 16, 512, 4, 64, 64, torch.bfloat16, True, True, False, 1.0),
    # one segment per (batch, head) because the heads fill the GPU (BH = 288 ≥ 2 · 132, 33 chunks)
    (True, 48, 1030, 6, 64, 64, torch.bfloat16, True, False, True, 1.0),
    # non-causal shared-memory guards (smem_report.py --noncausal, 2026-12-04): fp32 / fp16 LRPE states of 2·64·128
    # values run one pipeline stage (the fused backward asked 262,144 / 266,240 B with 3), and fp16 LRPE D = E = 128
    # on a long sequence keeps ≤ 8 ranges in the backward (the separate-sum dk / dv launch asked 278,528 B)
    (False, 2, 700, 2, 128, 64, torch.float32, True, True, False, 1.0),
    (False, 2, 700, 2, 64, 128, torch.float16, False, True, True, 1.0),
    (False, 1, 20000, 2, 128, 128, torch.float16, True, True, False, 1.0),
    # the models' short-sequence MD-LRPE shape with the 4 / 16-warp launches (224 px, 6 heads of 64)
    (False, 16, 196, 6, 64, 64, torch.bfloat16, False, True, False, 1.0),
    # the precomputed cos / sin table (default for LRPE with D <= 64 since run J3) in fp32 and fp16, split ranges
    (False, 2, 3000, 2, 64, 64, torch.float32, True, True, False, 1.0),
    (False, 3, 1000, 2, 32, 128, torch.float16, True, True, True, 1.0),
]


def run_case(case: Tuple, gen: torch.Generator, dev: str = "cuda") -> Dict[str, float]:
    causal, B, N, H, D, E, dtype, mask, lrpe, init, k_scale = case
    q = torch.randn(B, N, H, D, device=dev, generator=gen).to(dtype)
    k = (torch.randn(B, N, H, D, device=dev, generator=gen) * k_scale).to(dtype)
    v = torch.randn(B, N, H, E, device=dev, generator=gen).to(dtype)
    kpm: Optional[torch.Tensor] = None
    if mask:
        kpm = torch.rand(B, N, device=dev, generator=gen) < 0.2
        kpm[0] = False
        if B > 1:
            kpm[1, : N // 2] = True
    Dp = 2 * D if lrpe else D
    theta = torch.rand(N, D, device=dev, generator=gen) * 6.0 if lrpe else None
    state = None
    if init:
        state = (torch.randn(B, H, Dp, E, device=dev, generator=gen), torch.randn(B, H, D, device=dev, generator=gen))
    do = torch.randn(B, N, H, E, device=dev, generator=gen)
    wS = torch.randn(B, H, Dp, E, device=dev, generator=gen)
    wz = torch.randn(B, H, D, device=dev, generator=gen)
    outs = []
    for backend in ("torch", "triton"):
        xs = [t.detach().clone() for t in (q, k, v)]
        if backend == "torch":
            xs = [t.double() for t in xs]
        xs = [t.requires_grad_() for t in xs]
        th = theta.double() if (theta is not None and backend == "torch") else theta
        st = tuple(s.double() for s in state) if (state is not None and backend == "torch") else state
        o, (S, z) = additive_attention(
            *xs, causal=causal, scale=0.5, key_padding_mask=kpm, lrpe_theta=th, initial_state=st,
            output_final_state=True, backend=backend,
        )
        loss = (o.double() * do.double()).sum() + (S.double() * wS.double()).sum() + (z.double() * wz.double()).sum()
        loss.backward()
        outs.append((o, S, z, *(t.grad for t in xs)))
    names = ("o", "S", "z", "dq", "dk", "dv")
    errs = {}
    for n, r, t in zip(names, *outs):
        errs[n] = rel(t, r) if torch.isfinite(t).all() else float("nan")
    return errs


def check_auto_and_decode(gen: torch.Generator, dev: str = "cuda") -> Dict[str, float]:
    """backend='auto' picks Triton on CUDA and agrees with 'torch'; a decode loop equals one causal pass."""
    B, N, H, D = 2, 77, 3, 64
    q, k, v = (torch.randn(B, N, H, D, device=dev, generator=gen, dtype=torch.bfloat16) for _ in range(3))
    errs = {}
    for causal in (False, True):
        a = additive_attention(q, k, v, causal=causal, backend="auto")
        t = additive_attention(q, k, v, causal=causal, backend="torch")
        errs[f"auto_vs_torch_causal{int(causal)}"] = rel(a, t)
    full, (S, z) = additive_attention(q, k, v, causal=True, output_final_state=True, backend="triton")
    state, steps = None, []
    with torch.no_grad():
        for i in range(N):
            o_i, state = additive_attention(
                q[:, i : i + 1], k[:, i : i + 1], v[:, i : i + 1], causal=True, initial_state=state,
                output_final_state=True, backend="triton",
            )
            steps.append(o_i)
    errs["decode_o"] = rel(torch.cat(steps, 1), full)
    errs["decode_S"] = rel(state[0], S)
    errs["decode_z"] = rel(state[1], z)
    # fp32 causal calls with D > CAUSAL_FP32_MAX_HEAD_DIM are refused by name on the Triton path (the fp32 D = 128
    # LRPE cases needed more shared memory than sm_90 has); the limit applies to CUDA only
    if dev == "cuda":
        big = [torch.randn(1, 8, 1, 128, device=dev, generator=gen) for _ in range(3)]
        try:
            additive_attention(*big, causal=True, lrpe_theta=torch.zeros(8, 128, device=dev), backend="triton")
            errs["fp32_head_dim_limit_refused"] = float("nan")
        except ValueError as exc:
            errs["fp32_head_dim_limit_refused"] = 0.0 if "shared memory" in str(exc) else 1.0
    return errs


def select_cases(spec: Optional[str], max_cases: Optional[int]) -> Tuple[List[Tuple], bool]:
    """``(cases, run the auto/decode check)`` from ``--cases`` (indices and/or ``auto``; None = all) and
    ``--max-cases``."""
    if spec is None:
        return CASES[:max_cases], True
    cases, run_auto = [], False
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        if token == "auto":
            run_auto = True
        elif token.isdigit() and int(token) < len(CASES):
            cases.append(CASES[int(token)])
        else:
            raise SystemExit(f"check_kernels_gpu: --cases takes indices 0..{len(CASES) - 1} or 'auto', got {token!r}")
    return cases[:max_cases], run_auto


def apply_tuning(items: List[str]) -> None:
    """Set ``KEY=INT`` launch overrides in ``TUNING`` (unknown keys are an error)."""
    from lightnet.kernels.triton_common import TUNING

    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in TUNING:
            raise SystemExit(f"check_kernels_gpu: --tuning takes KEY=INT with KEY in {sorted(TUNING)}, got {item!r}")
        TUNING[key] = int(value)
    if items:
        print(f"TUNING overrides: {items}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    parser.add_argument("--device", default="cuda", help="'cpu' with TRITON_INTERPRET=1 dry-runs the script")
    parser.add_argument("--max-cases", type=int, default=None, help="only the first cases (dry runs)")
    parser.add_argument("--cases", default=None,
                        help="comma-separated subset: indices into CASES and/or 'auto' (the auto/decode check); "
                             "split the list over parallel processes to spread the kernel compilation")
    parser.add_argument("--tuning", nargs="*", default=[], metavar="KEY=INT",
                        help="launch overrides set in lightnet.kernels.triton_common.TUNING (e.g. c_zpass=0)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("check_kernels_gpu: no CUDA device", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    gen = torch.Generator(device=args.device).manual_seed(seed)
    name = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    print(f"seed {seed}  device {name}  torch {torch.__version__}")
    selected, run_auto = select_cases(args.cases, args.max_cases)
    apply_tuning(args.tuning)
    failures = 0
    t0 = time.time()
    if run_auto:
        try:
            extra = check_auto_and_decode(gen, args.device)
        except Exception as exc:
            extra = {"error": float("nan")}
            print(f"auto/decode check raised: {str(exc)[:300]}")
        bad = [n for n, e in extra.items() if not e <= TOL[torch.bfloat16]]
        failures += bool(bad)
        print(f"{'FAIL' if bad else 'ok  '} auto/decode | " + " ".join(f"{n}={e:.1e}" for n, e in extra.items()))
    for case in selected:
        causal, B, N, H, D, E, dtype, mask, lrpe, init, k_scale = case
        tol = (LARGE_LOGIT_TOL if k_scale > 10 else TOL)[dtype]
        label = (f"{'causal' if causal else 'noncausal':9s} B{B} N{N} H{H} D{D} E{E} {str(dtype)[6:]:8s} "
                 f"mask{int(mask)} lrpe{int(lrpe)} init{int(init)} kx{k_scale:g}")
        try:
            errs = run_case(case, gen, args.device)
            bad = [n for n, e in errs.items() if not e <= tol]
        except Exception as exc:  # report and continue with the other cases
            errs, bad = {"error": str(exc)[:300]}, ["error"]
        failures += bool(bad)
        body = " ".join(f"{n}={e:.1e}" if isinstance(e, float) else f"{n}={e}" for n, e in errs.items())
        print(f"{'FAIL' if bad else 'ok  '} {label} tol {tol:.0e} | {body}", flush=True)
    print(f"{failures} failing checks, {time.time() - t0:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
