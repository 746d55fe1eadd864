"""Kernel launches and host syncs of one additive_attention call, forward and backward, at the vision shapes.

One non-causal and one causal call as LightNet's mixer makes it (q, k, v slices of one fused ``[B, N, 3, H, D]``
projection, MD-LRPE angles ``[N, D]``, the query's SiLU, bf16), forward and then ``o.backward(do)``; counted:

* Triton launches, by kernel (``lightnet.kernels.triton_utils.count_launches``: every launch goes through the
  package's ``Launcher``);
* torch ops by a ``TorchDispatchMode``: ``launch`` = an op that runs a kernel (everything but views and ``empty``
  allocations), ``alloc`` = ``empty*``, ``sync`` = an op that reads a value on the host (``_local_scalar_dense``
  — ``.item()`` / ``bool(tensor)`` —, ``nonzero``, ``is_nonzero``, ``equal``).

On the CPU (default) the kernels run under ``TRITON_INTERPRET=1`` with the launch parameters the heuristics pick on
a GPU of ``--sms`` SMs (132: H100 SXM) for the real batch and heads (``NonCausalLaunch(block_n, splits)``,
``CausalLaunch(chunk, segment)``), on a problem of ``--run-batch`` × ``--run-heads`` (the launch sequence depends on
those parameters, not on the batch or heads once they are fixed). ``--device cuda`` counts the real call at the full
shape with the GPU's own heuristics.

    python benchmarks/launches.py --out $OUT/launches                 # CPU, LightNet-S shapes 128x196 .. 2x16384
    python benchmarks/launches.py --smoke --out /tmp/launches         # CPU, seconds
"""
from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple

if not __package__:  # run as a file: the repository root replaces this folder on the path (no shadowed packages)
    sys.path[0] = str(Path(__file__).resolve().parents[1])
if "--device" not in sys.argv or "cpu" in sys.argv[sys.argv.index("--device") + 1:][:1]:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from benchmarks.common import Row, environment, log, md_table, parser, write_result  # noqa: E402

_SYNC_OPS = {"_local_scalar_dense", "nonzero", "is_nonzero", "equal"}


class OpCounter(TorchDispatchMode):
    """Count aten ops by kind (``launch`` / ``alloc`` / ``sync``; views are free), skipping what runs inside a Triton
    launch (the interpreter's own host work)."""

    def __init__(self) -> None:
        super().__init__()
        self.kinds: Counter = Counter()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from lightnet.kernels.triton_utils import in_launch

        if not in_launch():
            name = func.overloadpacket.__name__
            if name in _SYNC_OPS:
                kind = "sync"
            elif name.startswith(("empty", "new_empty")):
                kind = "alloc"
            elif func.is_view or name in ("detach", "lift_fresh"):
                kind = "view"
            else:
                kind = "launch"
            self.kinds[kind] += 1
            if kind in ("launch", "sync"):
                self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def launch_params(causal: bool, B: int, N: int, H: int, D: int, sms: Optional[int]):
    """The launch parameters the heuristics pick for ``[B, N, H, D]`` bf16 with MD-LRPE on a GPU of ``sms`` SMs."""
    from lightnet.kernels.causal import CausalLaunch, segment_chunks
    from lightnet.kernels.noncausal import NonCausalLaunch
    from lightnet.kernels.noncausal.kernels import choose_splits

    if sms is None:
        return None
    cpu = torch.device("cpu")
    if causal:
        chunk = 32
        return CausalLaunch(chunk=chunk, segment=segment_chunks(-(-N // chunk), B * H, cpu, sms=sms))
    block_n = 32 if 2 * D * D >= 2 * 128 * 128 else 64  # the GPU rule of noncausal _launch_config (E = D)
    return NonCausalLaunch(block_n=block_n, splits=choose_splits(N, B * H, cpu, block_n, sms=sms)[0])


def count_call(causal: bool, B: int, N: int, H: int, D: int, run_b: int, run_h: int, sms: Optional[int],
               device: torch.device) -> List[Row]:
    """Forward and backward counts of one call (two rows)."""
    from lightnet.kernels.api import triton_attention
    from lightnet.kernels.triton_utils import count_launches

    launch = launch_params(causal, B, N, H, D, sms)
    g = torch.Generator().manual_seed(0)
    qkv = (torch.randn(run_b, N, 3, run_h, D, generator=g) * 0.5).to(device, torch.bfloat16).requires_grad_()
    theta = (torch.arange(N, dtype=torch.float32)[:, None] * torch.rand(D, generator=g)[None]).to(device)
    do = torch.randn(run_b, N, run_h, D, generator=g).to(device, torch.bfloat16)
    q, k, v = qkv.unbind(2)
    rows = []
    for direction in ("forward", "backward"):
        ops = OpCounter()
        with count_launches() as kernels, ops:
            if direction == "forward":
                o, _ = triton_attention(q, k, v, causal=causal, lrpe_theta=theta, q_activation="silu", launch=launch)
            else:
                o.backward(do)
        triton_n = sum(kernels.values())
        rows.append(dict(
            call="causal" if causal else "non-causal", shape=f"{B}x{N}", B=B, N=N, H=H, D=D, direction=direction,
            launch=None if launch is None else {k_: v_ for k_, v_ in vars(launch).items() if v_ is not None},
            triton_launches=triton_n, triton_kernels=dict(kernels), torch_launches=ops.kinds["launch"],
            torch_ops=dict(ops.ops), allocs=ops.kinds["alloc"], host_syncs=ops.kinds["sync"],
            total_launches=triton_n + ops.kinds["launch"], run_shape=[run_b, N, run_h, D], status="ok",
        ))
        log(rows[-1])
    return rows


def render(rows: List[Row]) -> str:
    lines = [(r["call"], r["shape"], r["direction"], r["triton_launches"], r["torch_launches"], r["total_launches"],
              r["host_syncs"], r["allocs"], ", ".join(f"{k} {v}" for k, v in sorted(r["triton_kernels"].items())),
              ", ".join(f"{k} {v}" for k, v in sorted(r["torch_ops"].items())))
             for r in rows]
    return md_table(["call", "B x N", "direction", "Triton launches", "torch launches", "total launches",
                     "host syncs", "allocations", "Triton kernels", "torch ops"], lines, align="lllrrrrrll")


def parse_shape(s: str) -> Tuple[int, int]:
    b, n = s.lower().split("x")
    return int(b), int(n)


def main(argv: Optional[List[str]] = None) -> int:
    p = parser(__doc__)
    p.set_defaults(device="cpu")
    p.add_argument("--shapes", nargs="+", default=["128x196", "32x1024", "8x4096", "2x16384"],
                   help="B x N per call (LightNet-S at 224 / 512 / 1024 / 2048 px)")
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--sms", type=int, default=132, help="SMs of the GPU whose launch heuristics are counted (CPU)")
    p.add_argument("--run-batch", type=int, default=1)
    p.add_argument("--run-heads", type=int, default=1)
    p.add_argument("--calls", nargs="+", default=["non-causal", "causal"], choices=["non-causal", "causal"])
    args = p.parse_args(argv)
    if args.smoke:
        args.shapes, args.heads, args.head_dim = ["128x40", "2x300"], 6, 16
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    if not on_gpu and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("launches.py: on the CPU the kernels need TRITON_INTERPRET=1 set before triton is imported")
    rows: List[Row] = []
    for call in args.calls:
        for shape in args.shapes:
            B, N = parse_shape(shape)
            run_b, run_h = (B, args.heads) if on_gpu else (args.run_batch, args.run_heads)
            rows += count_call(call == "causal", B, N, args.heads, args.head_dim, run_b, run_h,
                               None if on_gpu else args.sms, device)
    write_result(args.out, "launches", environment(device), args, rows, render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
