"""Sequence parallelism on several GPUs (NCCL): time and peak memory per rank of one split mixer call, fwd + bwd.

Launch with torchrun, one process per GPU (NVLink multicast off)::

    NCCL_NVLS_ENABLE=0 torchrun --nproc_per_node 2 benchmarks/seqpar_gpu.py --out $OUT/seqpar
    NCCL_NVLS_ENABLE=0 torchrun --nproc_per_node 1 benchmarks/seqpar_gpu.py --out $OUT/seqpar_1   # the unsplit op

Rows: non-causal and causal, bf16, ``lightnet_small`` head shape (6 heads of 64) with MD-LRPE, batch ``--batch``,
global length N; ms per fwd + bwd (median of ``--iters``) and peak memory per rank. ``--smoke`` runs on the CPU
(gloo; under torchrun or as a single process).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import environment, log, md_table, parser, peak_gib, reset_peak, time_calls, write_result  # noqa: E402

HEADS, HEAD_DIM = 6, 64


def main(argv=None) -> int:
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    p = parser(__doc__)
    p.add_argument("--lengths", type=int, nargs="+", default=[16384, 65536, 262144, 1048576])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=10)
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.lengths, args.iters = "cpu", [64], 2
    device = torch.device(args.device)
    if not dist.is_initialized():
        if "RANK" in os.environ:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        else:  # a plain single process: a world of one
            import tempfile

            dist.init_process_group("gloo", init_method=f"file://{tempfile.mktemp()}", rank=0, world_size=1)
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    from lightnet.distributed import sequence_parallel_attention, shard_bounds
    from lightnet.layers.lrpe import MDLRPE

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = []
    for causal in (False, True):
        for N in args.lengths:
            start, stop = shard_bounds(N)
            g = torch.Generator(device="cpu").manual_seed(rank)
            q, k, v = (torch.randn(args.batch, stop - start, HEADS, HEAD_DIM, generator=g).to(device, dtype)
                       .requires_grad_(True) for _ in range(3))
            theta = MDLRPE(HEAD_DIM, num_axes=1).angles((N,))[start:stop].to(device)

            def step():
                o = sequence_parallel_attention(q, k, v, causal=causal, lrpe_theta=theta, q_activation="silu")
                o.float().sum().backward()

            row = {"mode": "causal" if causal else "non-causal", "N": N, "world": world, "batch": args.batch}
            try:
                reset_peak(device)
                first_s, median_s = time_calls(step, device, warmup=2, iters=args.iters)
                row.update(status="ok", ms=median_s * 1e3, first_ms=first_s * 1e3, peak_gib=peak_gib(device))
            except torch.OutOfMemoryError:
                row.update(status="OOM")
                q = k = v = None
                torch.cuda.empty_cache()
            dist.barrier()
            if rank == 0:
                log(row)
            rows.append(row)
    if rank == 0:
        lines = [[r["mode"], r["N"], r["world"], f"{r['ms']:.2f}" if r["status"] == "ok" else r["status"],
                  f"{r['peak_gib']:.2f}" if r["status"] == "ok" else "—"] for r in rows]
        md = md_table(["mode", "N", "ranks", "ms fwd + bwd", "peak GiB / rank"], lines)
        write_result(args.out, f"seqpar_gpu_{world}", environment(device), args, rows, md)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
