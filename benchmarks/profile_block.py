"""Where the time of one LightNet block goes: projections, normalisation, recurrence, positional encoding, MLP.

    python benchmarks/profile_block.py                                   # CPU, lightnet_tiny width, 224 px
    python benchmarks/profile_block.py --device cuda --dtype bf16 --model lightnet_small --img-size 1024 --batch 8

Method (manual timing; no change to the library). The block of the chosen timm model is run piece by piece with
exactly the calls its ``forward`` makes (the pieces are checked to reproduce ``block(x, grid)`` before timing), and
every piece is timed in isolation on inputs of the right shape — forward only, and forward + backward (leaf inputs
with ``requires_grad``). Minimum (``--stat min``, robust on a shared machine) or median over ``--repeats`` after
warm-up; CUDA is synchronised around each timing. The
pieces:

* projections: the fused ``qkv`` linear, the low-rank output gate, the output projection ``W_o``;
* normalisation: the two pre-norms and the per-head output RMSNorm;
* recurrence: :func:`lightnet.kernels.additive_attention` without positional encoding;
* PE: MD-LRPE (angle table + the cos/sin expansion inside the kernel: the kernel time with angles minus without),
  and MD-TPE, which runs once per model (reported per block: total ÷ depth);
* MLP: the GLU channel mixer;
* elementwise: query activation, gate multiply, residual adds.

The sum of the pieces is printed next to the measured whole block (their ratio shows the overhead the split misses).
``--markdown`` prints the table for ``docs/results.md``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import timm
import torch

import lightnet  # noqa: F401  registers the lightnet_* timm models
from lightnet.kernels import additive_attention
from lightnet.layers.mixer import _GATE_ACTS, _Q_ACTS

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_CLOCK = {"wall": time.perf_counter, "thread": time.thread_time}
_clock = time.perf_counter


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int, stat: str = "min") -> float:
    """Seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs (the minimum or the median), on the selected
    clock: wall clock, or the CPU time of this thread (``--clock thread``: immune to other processes taking the
    cores, valid for single-threaded CPU runs, where autograd also runs on the calling thread)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = _clock()
        fn()
        _sync(device)
        times.append(_clock() - t0)
    return min(times) if stat == "min" else statistics.median(times)


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def _fwd_bwd(fn: Callable[..., object], inputs: Sequence[torch.Tensor]) -> Callable[[], None]:
    """Closure: forward ``fn(*inputs)`` then backward of the sum of its outputs into the (leaf) inputs and parameters."""

    def run() -> None:
        for t in inputs:
            t.grad = None
        out = fn(*inputs)
        outs = out if isinstance(out, (tuple, list)) else [out]
        torch.autograd.backward([o for o in outs], [torch.ones_like(o) for o in outs])

    return run


def _no_grad(fn: Callable[..., object], inputs: Sequence[torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            fn(*inputs)

    return run


def decomposed_block(block: torch.nn.Module, x: torch.Tensor, grid: Tuple[int, int]) -> Dict[str, torch.Tensor]:
    """The block's forward written out call by call (same modules, same kernel); returns the intermediates."""
    attn = block.attn
    B, N, C = x.shape
    H, D = attn.num_heads, attn.head_dim
    h = block.norm1(x)
    q, k, v = attn.qkv(h).view(B, N, 3, H, D).unbind(dim=2)
    q_act = _Q_ACTS[attn.q_act]
    qa = q_act(q) if q_act is not None else q
    theta = None if attn.lrpe is None else attn.lrpe.angles(grid).to(x.device)
    o = additive_attention(qa, k, v, causal=attn.causal, scale=attn.scale, lrpe_theta=theta, backend=attn.backend)
    on = attn.out_norm(o).reshape(B, N, C)
    gate = attn.gate(h) if attn.gate is not None else None
    gated = on * _GATE_ACTS[attn.gate_act](gate) if gate is not None else on
    mixed = attn.proj(gated)
    x1 = x + mixed
    h2 = block.norm2(x1)
    out = x1 + block.mlp(h2)
    return dict(h=h, q=q, qa=qa, k=k, v=v, theta=theta, o=o, on=on, gate=gate, gated=gated, mixed=mixed, x1=x1, h2=h2,
                out=out)


def profile(model_name: str, img_size: int, batch: int, device: torch.device, dtype: torch.dtype,
            repeats: int, warmup: int, backend: str, stat: str = "min") -> List[Tuple[str, float, float]]:
    """``[(piece, forward seconds, forward+backward seconds)]`` for one block of ``model_name``; last row: whole block."""
    model = timm.create_model(model_name, pretrained=False, img_size=img_size, attn_backend=backend).to(device, dtype)
    model.init_non_persistent_buffers()
    block = model.blocks[0]
    attn = block.attn
    p = model.patch_embed.patch_size[0]
    grid = (img_size // p, img_size // p)
    N, C = grid[0] * grid[1], model.embed_dim
    x = torch.randn(batch, N, C, device=device, dtype=dtype)
    with torch.no_grad():
        parts = decomposed_block(block, x, grid)
        ref = block(x, grid)
    err = float((parts["out"].float() - ref.float()).norm() / ref.float().norm())
    if err > 1e-3:
        raise RuntimeError(f"the decomposed block does not reproduce block(x): relative error {err:.2e}")

    act_q = _Q_ACTS[attn.q_act] or (lambda t: t)
    act_g = _GATE_ACTS[attn.gate_act] if attn.gate is not None else None
    theta = parts["theta"]
    kw = dict(causal=attn.causal, scale=attn.scale, backend=attn.backend)
    pieces: Dict[str, List[Tuple[Callable[..., object], List[torch.Tensor]]]] = {
        "projections (qkv, gate, W_o)": [
            (attn.qkv, [parts["h"]]),
            *([(attn.gate, [parts["h"]])] if attn.gate is not None else []),
            (attn.proj, [parts["gated"]]),
        ],
        "normalisation (2 pre-norms, per-head out norm)": [
            (block.norm1, [x]), (block.norm2, [parts["x1"]]), (attn.out_norm, [parts["o"]]),
        ],
        "recurrence (additive attention, no PE)": [
            (lambda q, k, v: additive_attention(q, k, v, **kw), [parts["qa"], parts["k"], parts["v"]]),
        ],
        "MLP (GLU)": [(block.mlp, [parts["h2"]])],
        "elementwise (q act, gating, residuals)": [
            (act_q, [parts["q"]]),
            *([(lambda on, g: on * act_g(g), [parts["on"], parts["gate"]])] if act_g is not None else []),
            (lambda a, b: a + b, [x, parts["mixed"]]),
            (lambda a, b: a + b, [parts["x1"], parts["x1"]]),
        ],
    }
    rows = []

    def measure(items) -> Tuple[float, float]:
        fwd = sum(time_call(_no_grad(fn, [t.detach() for t in ins]), device, repeats, warmup, stat) for fn, ins in items)
        both = sum(time_call(_fwd_bwd(fn, [_leaf(t) for t in ins]), device, repeats, warmup, stat) for fn, ins in items)
        return fwd, both

    for name, items in pieces.items():
        rows.append((name, *measure(items)))
    if theta is not None:  # MD-LRPE: angle table + (kernel with angles − kernel without)
        with_pe = [(lambda q, k, v: additive_attention(q, k, v, lrpe_theta=attn.lrpe.angles(grid).to(device), **kw),
                    [parts["qa"], parts["k"], parts["v"]])]
        f_pe, b_pe = measure(with_pe)
        rec = next(r for r in rows if r[0].startswith("recurrence"))
        rows.append(("PE: MD-LRPE (angles + cos/sin in the kernel)", max(0.0, f_pe - rec[1]), max(0.0, b_pe - rec[2])))
    if model.tpe is not None:
        f_t, b_t = measure([(lambda t: model.tpe(t, grid), [x])])
        rows.append(("PE: MD-TPE (once per model, ÷ depth)", f_t / len(model.blocks), b_t / len(model.blocks)))
    whole = [(lambda t: block(t, grid), [x])]
    rows.append(("whole block (measured)", *measure(whole)))
    return rows


def render(rows: List[Tuple[str, float, float]], markdown: bool) -> str:
    pieces, whole = rows[:-1], rows[-1]
    tot_f, tot_b = sum(r[1] for r in pieces), sum(r[2] for r in pieces)
    lines = []
    if markdown:
        lines += ["| piece | forward (ms) | share | fwd+bwd (ms) | share |", "|---|---:|---:|---:|---:|"]
        fmt = "| {} | {:.2f} | {:.0f}% | {:.2f} | {:.0f}% |"
    else:
        lines.append(f"{'piece':<48} {'fwd ms':>9} {'share':>6} {'fwd+bwd ms':>11} {'share':>6}")
        fmt = "{:<48} {:>9.2f} {:>5.0f}% {:>11.2f} {:>5.0f}%"
    for name, f, b in sorted(pieces, key=lambda r: -r[2]):
        lines.append(fmt.format(name, f * 1e3, 100 * f / tot_f, b * 1e3, 100 * b / tot_b))
    lines.append(fmt.format("sum of pieces", tot_f * 1e3, 100.0, tot_b * 1e3, 100.0))
    lines.append(fmt.format(whole[0], whole[1] * 1e3, 100 * whole[1] / tot_f, whole[2] * 1e3, 100 * whole[2] / tot_b))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Time split of one LightNet block.")
    ap.add_argument("--model", default="lightnet_tiny")
    ap.add_argument("--img-size", type=int, nargs="+", default=[224])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=sorted(_DTYPES), help="default: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--backend", default="auto", help="kernel backend of the mixer (auto, torch, triton)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--stat", default="min", choices=["min", "median"])
    ap.add_argument("--clock", default=None, choices=sorted(_CLOCK),
                    help="default: 'thread' CPU time for single-threaded CPU runs, else 'wall'")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = args.clock or ("thread" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall")
    if clock == "thread" and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise SystemExit("--clock thread needs --device cpu and --threads 1")
    global _clock
    _clock = _CLOCK[clock]
    dtype = _DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    for size in args.img_size:
        rows = profile(args.model, size, args.batch, device, dtype, args.repeats, args.warmup, args.backend,
                       args.stat)
        print(f"\n{args.model} block, {size}px, batch {args.batch}, {device.type} {str(dtype).replace('torch.', '')}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.stat} of {args.repeats}, {clock} clock")
        print(render(rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
