"""Sequence parallelism (LASP), counted on the CPU: bytes each rank communicates and activation bytes it keeps for
the backward, vs the sequence length, for 1, 2, 4 ranks (CPU processes joined by a gloo group).

For every model, size and rank count, one training forward + backward in fp32 with the model split over the group
(``model.set_sequence_parallel_group``):

* ``comm``: the payload of every collective this rank calls (forward and backward), counted by a
  ``TorchDispatchMode`` that sees the ``c10d`` ops: the tensor an all-reduce reduces, the tensor an all-gather
  contributes. (A ring all-reduce moves about ``2 (R − 1) / R`` times its payload over the wire.)
* ``saved``: every tensor autograd keeps for the backward (``torch.autograd.graph.saved_tensors_hooks``), each
  storage once, parameters left out — the activation memory at the start of the backward, the peak of a step
  without checkpointing. ``saved blocks`` is the part saved inside the LightNet blocks (what the split divides);
  the rest is the stem (patch embedding / token embedding and MD-TPE, which run on the whole sequence on every rank)
  and the head.
* ``loss rel. err.``: the loss against the same model on one rank (the split is exact; fp32 sums in another order).

The bytes do not depend on the device, so this counts on the CPU (``attn_backend='torch'``). Models: ``vision`` (the
timm classifier, ``--img-sizes`` at ``--patch``, tokens = (size / patch)²) and ``lm`` (the causal LM, ``--lm-lens``
tokens).

    python benchmarks/seqpar_memory.py --out $OUT/seqpar_memory            # CPU, ~2 minutes on 2 cores
    python benchmarks/seqpar_memory.py --smoke --out $OUT/seqpar_memory    # CPU, seconds
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode

if not __package__:  # run as a file: the repository root replaces this folder on the path (no shadowed packages)
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from benchmarks.common import Row, environment, log, md_table, parser, write_result  # noqa: E402

MODELS = ("vision", "lm")
MIB = 2 ** 20


class CommCounter(TorchDispatchMode):
    """Counts the payload bytes of the ``c10d`` collectives called while active (all-reduce: the reduced tensors;
    all-gather: this rank's input; other ops: the tensors of their first argument)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.calls: Dict[str, int] = {}

    @staticmethod
    def _tensors(arg) -> List[torch.Tensor]:
        if isinstance(arg, torch.Tensor):
            return [arg]
        if isinstance(arg, (list, tuple)):
            return [t for a in arg for t in CommCounter._tensors(a)]
        return []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "c10d":
            name = func.__name__.split(".")[0]
            payload = args[1] if name in ("allgather_", "_allgather_base_", "allgather_into_tensor_coalesced_") else args[0]
            self.bytes += sum(t.numel() * t.element_size() for t in self._tensors(payload))
            self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


class SavedCounter:
    """Bytes of the distinct storages autograd saves for the backward while active (parameters excluded), split into
    those saved inside ``blocks`` (forward hooks mark them) and the rest."""

    def __init__(self, model: torch.nn.Module, blocks: Sequence[torch.nn.Module]) -> None:
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen: Dict[int, bool] = {}
        self.sizes: Dict[int, int] = {}
        self.in_block = 0
        self.handles = []
        for b in blocks:
            self.handles.append(b.register_forward_pre_hook(lambda *_: self._enter()))
            self.handles.append(b.register_forward_hook(lambda *_: self._leave()))
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _enter(self) -> None:
        self.in_block += 1

    def _leave(self) -> None:
        self.in_block -= 1

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        key = s.data_ptr()
        if key not in self.params and key not in self.sizes and s.nbytes():
            self.sizes[key] = s.nbytes()
            self.seen[key] = self.in_block > 0
        return t

    def __enter__(self) -> "SavedCounter":
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.__exit__(*exc)
        for h in self.handles:
            h.remove()

    def total(self, blocks_only: bool = False) -> int:
        return sum(n for k, n in self.sizes.items() if self.seen[k] or not blocks_only)


def build(model: str, size: int, args) -> tuple:
    """``(module, loss_fn, blocks, tokens)`` for one size: the same weights and inputs on every rank (seeded)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if model == "vision":
        from lightnet.vision.lightnet_vit import LightNet
        net = LightNet(img_size=size, patch_size=args.patch, num_classes=10, embed_dim=args.dim, depth=args.depth,
                       num_heads=args.heads, attn_backend="torch")
        images = torch.randn(args.batch, 3, size, size, generator=g)
        labels = torch.randint(0, 10, (args.batch,), generator=g)
        return net, lambda m: torch.nn.functional.cross_entropy(m(images), labels), list(net.blocks), \
            (size // args.patch) ** 2
    from lightnet.lm import LightNetForCausalLM, LightNetLMConfig
    net = LightNetForCausalLM(LightNetLMConfig(vocab_size=args.vocab, dim=args.dim, depth=args.depth,
                                               num_heads=args.heads, attn_backend="torch"))
    ids = torch.randint(0, args.vocab, (args.batch, size), generator=g)
    return net, lambda m: m(ids, labels=ids).loss, list(net.model.blocks), size


def measure(model: str, size: int, args, group) -> Row:
    """One forward + backward with the model split over ``group`` (None: unsplit); this rank's counts."""
    net, loss_fn, blocks, tokens = build(model, size, args)
    if group is not None:
        net.set_sequence_parallel_group(group)
    comm = CommCounter()
    with SavedCounter(net, blocks) as saved, comm:
        loss = loss_fn(net)
        fwd_bytes = comm.bytes
        loss.backward()
    return dict(model=model, size=size, tokens=tokens, loss=loss.item(), saved_bytes=saved.total(),
                saved_block_bytes=saved.total(blocks_only=True), comm_fwd_bytes=fwd_bytes,
                comm_bwd_bytes=comm.bytes - fwd_bytes, collectives=sum(comm.calls.values()))


def _worker(rank: int, world: int, init_file: str, result_file: str, args) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rows = []
        for model in args.models:
            for size in (args.img_sizes if model == "vision" else args.lm_lens):
                row = measure(model, size, args, dist.group.WORLD if world > 1 else None)
                every = [None] * world
                dist.all_gather_object(every, row)
                if rank == 0:  # the largest rank's counts (slices differ by at most one token)
                    out = dict(row, ranks=world)
                    for key in ("saved_bytes", "saved_block_bytes", "comm_fwd_bytes", "comm_bwd_bytes"):
                        out[key] = max(r[key] for r in every)
                    rows.append(out)
                    log(out)
        if rank == 0:
            Path(result_file).write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()


def run_ranks(world: int, args) -> List[Row]:
    """Every model and size split over ``world`` spawned ranks (one rank: here, unsplit, no process group)."""
    if world == 1:
        torch.set_num_threads(1)
        sizes = {"vision": args.img_sizes, "lm": args.lm_lens}
        return [dict(measure(m, s, args, None), ranks=1) for m in args.models for s in sizes[m]]
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "rows.json")
        mp.spawn(_worker, args=(world, os.path.join(tmp, "init"), result, args), nprocs=world, join=True)
        return json.loads(Path(result).read_text())


def markdown(rows: List[Row]) -> str:
    parts = []
    for model in dict.fromkeys(r["model"] for r in rows):
        lines = []
        for r in (r for r in rows if r["model"] == model):
            one = next(o for o in rows if o["model"] == model and o["size"] == r["size"] and o["ranks"] == 1)
            size = f"{r['size']} px" if model == "vision" else f"{r['size']} tokens"
            lines.append([
                size, r["tokens"], r["ranks"], f"{r['saved_block_bytes'] / MIB:.2f}",
                f"{r['saved_block_bytes'] / max(one['saved_block_bytes'], 1):.2f}", f"{r['saved_bytes'] / MIB:.2f}",
                f"{r['comm_fwd_bytes'] / 1024:.1f}", f"{r['comm_bwd_bytes'] / 1024:.1f}", r["collectives"],
                f"{abs(r['loss'] - one['loss']) / abs(one['loss']):.1e}",
            ])
        parts.append(f"### {model}\n\n" + md_table(
            ["input", "tokens", "ranks", "saved blocks MiB/rank", "vs 1 rank", "saved total MiB/rank",
             "comm fwd KiB/rank", "comm bwd KiB/rank", "collectives", "loss rel. err."], lines))
    return "\n\n".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = parser(__doc__)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--ranks", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--img-sizes", nargs="+", type=int, default=[256, 512, 1024])
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--lm-lens", nargs="+", type=int, default=[1024, 4096, 16384])
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--vocab", type=int, default=260)  # the byte tokenizer: 256 bytes + 4 specials
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args(argv)
    if args.smoke:
        args.ranks, args.img_sizes, args.patch, args.lm_lens = [1, 2], [32, 48], 8, [24, 48]
        args.dim, args.depth, args.heads = 32, 1, 2
    if 1 not in args.ranks:
        args.ranks = [1] + list(args.ranks)  # the reference of the ratio and the loss check
    rows: List[Row] = []
    for world in sorted(set(args.ranks)):
        rows += run_ranks(world, args)
    rows.sort(key=lambda r: (MODELS.index(r["model"]), r["size"], r["ranks"]))
    write_result(args.out, "seqpar_memory", environment(torch.device("cpu")), args, rows, markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
