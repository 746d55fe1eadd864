"""Sequence parallelism on the CPU: bytes communicated and activation memory per rank vs sequence length.

One LightNet mixer call (``lightnet.distributed.sequence_parallel_attention``, fp32, the PyTorch path) at the
``lightnet_small`` head shape (6 heads of 64), forward + backward, with the sequence split over R gloo processes:

* bytes communicated per rank: every collective the call and its backward issue, read from ``torch.profiler``
  (``gloo:all_reduce`` / ``gloo:all_gather`` events and their tensor shapes; the states are fp32), converted to the
  bytes one rank sends with ring algorithms (all-reduce ``2 (R−1)/R · payload``, all-gather ``(R−1) · payload``);
* activation memory per rank: the bytes autograd keeps for the backward (unique storages seen by a
  ``saved_tensors_hooks`` pack hook) plus this rank's q, k, v and their gradients' size.

R = 1 is the plain op on the whole sequence. Usage::

    python benchmarks/seqpar_memory.py --lengths 4096 16384 65536 --worlds 1 2 4 --out $OUT/seqpar_memory
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import environment, log, md_table, parser, write_result  # noqa: E402

HEADS, HEAD_DIM = 6, 64  # lightnet_small's mixer


def _saved_bytes(fn) -> int:
    """Bytes of the unique storages autograd saves while ``fn()`` runs."""
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def _comm_bytes(prof, world: int) -> Dict[str, float]:
    """Payload and ring bytes sent per rank of the gloo collectives in a profile (fp32 tensors)."""
    payload = sent = 0.0
    calls = 0
    for e in prof.events():
        if e.name not in ("gloo:all_reduce", "gloo:all_gather"):
            continue
        numel = 1
        for s in e.input_shapes[0]:
            numel *= s
        b = 4.0 * numel
        payload += b
        sent += b * (2 * (world - 1) / world if e.name == "gloo:all_reduce" else world - 1)
        calls += 1
    return {"calls": calls, "payload_bytes": payload, "sent_bytes": sent}


def _measure(rank: int, world: int, N: int, causal: bool, batch: int) -> Dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    from lightnet.distributed import sequence_parallel_attention, shard_bounds
    from lightnet.kernels import additive_attention
    from lightnet.layers.lrpe import MDLRPE

    g = torch.Generator().manual_seed(0)
    start, stop = shard_bounds(N, None) if world > 1 else (0, N)
    n = stop - start
    q, k, v = (torch.randn(batch, n, HEADS, HEAD_DIM, generator=g).requires_grad_(True) for _ in range(3))
    theta = MDLRPE(HEAD_DIM, num_axes=1).angles((N,))[start:stop]

    def call():
        if world == 1:
            return additive_attention(q, k, v, causal=causal, lrpe_theta=theta, q_activation="silu", backend="torch")
        return sequence_parallel_attention(q, k, v, causal=causal, lrpe_theta=theta, q_activation="silu",
                                           backend="torch")

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as fwd_prof:
        o, saved = _saved_bytes(call)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as bwd_prof:
        o.sum().backward()
    io = 2 * sum(t.numel() * t.element_size() for t in (q, k, v)) + o.numel() * o.element_size()
    fwd, bwd = _comm_bytes(fwd_prof, world), _comm_bytes(bwd_prof, world)
    return {"tokens_per_rank": n, "saved_bytes": saved, "activation_bytes": saved + io,
            "fwd_sent_bytes": fwd["sent_bytes"], "bwd_sent_bytes": bwd["sent_bytes"],
            "fwd_payload_bytes": fwd["payload_bytes"], "collectives": fwd["calls"] + bwd["calls"]}


def _worker(rank: int, world: int, init_file: str, jobs: List[tuple], result_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for i, (N, causal, batch) in enumerate(jobs):
            torch.save(_measure(rank, world, N, causal, batch), os.path.join(result_dir, f"{i}_{rank}.pt"))
            dist.barrier()
    finally:
        dist.destroy_process_group()


def run_world(world: int, jobs: List[tuple]) -> List[Dict[str, float]]:
    """Every job ``(N, causal, batch)`` on ``world`` processes; per job the largest per-rank numbers."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, os.path.join(tmp, "init"), jobs, tmp), nprocs=world, join=True)
        out = []
        for i in range(len(jobs)):
            per_rank = [torch.load(os.path.join(tmp, f"{i}_{r}.pt"), weights_only=True) for r in range(world)]
            out.append({key: max(r[key] for r in per_rank) for key in per_rank[0]})
        return out


def main(argv=None) -> int:
    p = parser(__doc__)
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 65536])
    p.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args(argv)
    if args.smoke:
        args.lengths, args.worlds = [64, 128], [1, 2]
    jobs = [(N, causal, args.batch) for causal in (False, True) for N in args.lengths]
    rows = []
    for world in args.worlds:
        for (N, causal, batch), res in zip(jobs, run_world(world, jobs)):
            row = {"mode": "causal" if causal else "non-causal", "N": N, "world": world, "batch": batch, **res}
            log(row)
            rows.append(row)
    mib = 2.0 ** 20
    lines = [[r["mode"], r["N"], r["world"], r["tokens_per_rank"], f"{r['activation_bytes'] / mib:.1f}",
              f"{r['saved_bytes'] / mib:.1f}", f"{r['fwd_sent_bytes'] / 1024:.1f}", f"{r['bwd_sent_bytes'] / 1024:.1f}",
              r["collectives"]] for r in rows]
    md = md_table(["mode", "N", "ranks", "tokens / rank", "activations / rank (MiB)", "saved for backward (MiB)",
                   "sent fwd / rank (KiB)", "sent bwd / rank (KiB)", "collectives"], lines, "lrrrrrrrr")
    note = (f"One mixer call, batch {args.batch}, {HEADS} heads of {HEAD_DIM} (lightnet_small), MD-LRPE, fp32, "
            "PyTorch path, forward + backward; activations = saved for backward + q, k, v, their gradients and o.")
    write_result(args.out, "seqpar_memory", environment(torch.device("cpu")), args, rows, note + "\n\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
