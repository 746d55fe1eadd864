"""Sequence parallelism (LASP) on GPUs: one image split over R ranks — training-step time and peak memory per rank
vs image size, and the split loss against the unsplit one.

For every rank count R of ``--ranks`` and image size of ``--img-sizes``, R processes (one GPU each, NCCL; keep
``NCCL_NVLS_ENABLE=0``, set here) train a LightNet classifier (LightNet-S width by default) split over their group
(``model.set_sequence_parallel_group``): forward + backward under bf16 autocast, batch ``--batch``, the kernels'
default backend. Reported per row: median step time, the largest peak memory over the ranks
(``torch.cuda.max_memory_allocated``), the loss and its relative difference to the R = 1 row of the same size
(bf16: expect ~1e-3, not fp32's 1e-5). A size that does not fit is an ``OOM`` row, not a failure.

With fewer GPUs than ranks (a one-GPU machine) the ranks share the GPUs through gloo (a dry run of the plumbing;
its times are not a claim), or pass ``--ranks 1``. ``--dry-run`` is the small one-GPU check.

    python benchmarks/seqpar_gpu.py --out $OUT/seqpar                  # 2+ GPUs: ranks 1 2 4 8 that fit
    python benchmarks/seqpar_gpu.py --dry-run --out $OUT/seqpar        # one GPU: 1 rank NCCL, 2 ranks gloo, 256 px
    python benchmarks/seqpar_gpu.py --smoke --device cpu --out $OUT    # CPU, gloo, seconds
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off (the lent machines' rule)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

if not __package__:  # run as a file: the repository root replaces this folder on the path (no shadowed packages)
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from benchmarks.common import (  # noqa: E402
    Row, cell, environment, log, md_table, parser, peak_gib, reset_peak, time_calls, write_result,
)


def _step(model, images, labels, device):
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss
    return step


def measure(rank: int, world: int, size: int, args, device: torch.device) -> Row:
    from lightnet.vision.lightnet_vit import LightNet
    torch.manual_seed(0)
    model = LightNet(img_size=size, patch_size=args.patch, num_classes=1000, embed_dim=args.dim, depth=args.depth,
                     num_heads=args.heads, attn_backend=args.attn_backend).to(device)
    if world > 1:
        model.set_sequence_parallel_group(dist.group.WORLD)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch, 3, size, size, generator=g).to(device)
    labels = torch.randint(0, 1000, (args.batch,), generator=g).to(device)
    step = _step(model, images, labels, device)
    reset_peak(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"), torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(images), labels).item()
    _, median = time_calls(step, device, args.warmup, args.iters)
    return dict(img_size=size, tokens=(size // args.patch) ** 2, ranks=world, loss=loss, step_ms=median * 1e3,
                peak_gib=peak_gib(device), status="ok")


def _worker(rank: int, world: int, backend: str, init_file: str, result_file: str, args) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if args.device == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    rows = []
    try:
        for size in args.img_sizes:
            try:
                row = measure(rank, world, size, args, device)
            except torch.OutOfMemoryError:
                row = dict(img_size=size, tokens=(size // args.patch) ** 2, ranks=world, status="OOM")
            if device.type == "cuda":
                torch.cuda.empty_cache()
            every = [None] * world
            dist.all_gather_object(every, row)
            if any(r["status"] != "ok" for r in every):
                row = next(r for r in every if r["status"] != "ok")
            else:
                row = dict(row, peak_gib=max(r["peak_gib"] for r in every), step_ms=max(r["step_ms"] for r in every))
            row["backend"] = backend
            if rank == 0:
                rows.append(row)
                log(row)
    finally:
        if rank == 0:
            Path(result_file).write_text(json.dumps(rows))
        dist.destroy_process_group()


def run_ranks(world: int, args) -> List[Row]:
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    backend = "nccl" if args.device == "cuda" and gpus >= world else "gloo"
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "rows.json")
        try:
            mp.spawn(_worker, args=(world, backend, os.path.join(tmp, "init"), result, args), nprocs=world,
                     join=True)
        except Exception as e:  # e.g. gloo without CUDA collectives on a shared GPU: a row that says so
            print(f"ranks={world} ({backend}) failed: {type(e).__name__}: {str(e)[-800:]}", file=sys.stderr)
            if not Path(result).exists():
                return [dict(img_size=s, tokens=(s // args.patch) ** 2, ranks=world, backend=backend,
                             status="failed") for s in args.img_sizes]
        return json.loads(Path(result).read_text())


def markdown(rows: List[Row]) -> str:
    lines = []
    for r in rows:
        one = next((o for o in rows if o["img_size"] == r["img_size"] and o["ranks"] == 1
                    and o.get("status") == "ok"), None)
        diff = (f"{abs(r['loss'] - one['loss']) / abs(one['loss']):.1e}"
                if one is not None and r.get("status") == "ok" else "—")
        lines.append([f"{r['img_size']} px", r["tokens"], r["ranks"], r["backend"], cell(r, "step_ms", ".1f"),
                      cell(r, "peak_gib", ".2f"), diff])
    return md_table(["image", "tokens", "ranks", "backend", "step ms", "peak GiB/rank", "loss rel. diff vs 1 rank"],
                    lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = parser(__doc__)
    p.add_argument("--ranks", nargs="+", type=int, default=None,
                   help="rank counts (default: 1 and every power of two up to the visible GPUs)")
    p.add_argument("--img-sizes", nargs="+", type=int, default=[1024, 2048, 4096])
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--attn-backend", default="auto")
    p.add_argument("--dry-run", action="store_true", help="one GPU: 1 rank (NCCL) and 2 ranks (gloo) at 256 px")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("seqpar_gpu: no CUDA device (use --device cpu for the plumbing)")
    if args.smoke or args.device == "cpu":
        args.device = "cpu" if args.smoke else args.device
        args.attn_backend = "torch"
    if args.smoke:
        args.ranks, args.img_sizes, args.patch, args.dim, args.depth, args.heads = [1, 2], [32], 8, 32, 1, 2
        args.warmup, args.iters = 1, 1
    elif args.dry_run:
        args.ranks, args.img_sizes, args.depth = args.ranks or [1, 2], [256], 2
    if args.ranks is None:
        gpus = torch.cuda.device_count() if args.device == "cuda" else 1
        args.ranks = [r for r in (1, 2, 4, 8) if r <= max(gpus, 1)]
    rows: List[Row] = []
    for world in sorted(set(args.ranks)):
        rows += run_ranks(world, args)
    rows.sort(key=lambda r: (r["img_size"], r["ranks"]))
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    write_result(args.out, "seqpar_gpu", environment(device), args, rows, markdown(rows))
    return 0 if all(r.get("status") in ("ok", "OOM") for r in rows) or args.dry_run else 1


if __name__ == "__main__":
    sys.exit(main())
