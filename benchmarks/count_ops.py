"""Count the aten ops one training step of a model dispatches (host-side op count, issue 7).

    python benchmarks/count_ops.py                                   # lightnet_small vs vit_small, CPU, 64 px, batch 2
    python benchmarks/count_ops.py --backend triton --img-size 32    # Triton kernels under TRITON_INTERPRET=1
    python benchmarks/count_ops.py --models lightnet_small --json out.json --top 30

Method. A :class:`torch.utils._python_dispatch.TorchDispatchMode` records every aten op (overload packet name, e.g.
``mul``) that reaches the dispatcher below autograd, once around ``model(x)`` and once around
``loss.backward()`` (``loss = out.float().sum()``). This is the per-step op count a GPU run pays in Python and kernel
launch overhead (views such as ``view``/``permute``/``t`` launch no kernel but still cost a dispatch). Weights are
created on the CPU in fp32; nothing is timed.

With ``--backend triton`` the models are built with ``attn_backend='triton'`` and the Triton kernels run in the
interpreter (``TRITON_INTERPRET=1`` is set before triton is imported). A kernel launch is not an aten op: the
interpreter's own tensor traffic while it runs a kernel is *not* counted (counting pauses inside
``triton.runtime.interpreter``'s launcher); the aten ops of the Python wrapper around the kernels (``.contiguous()``
copies, ``.to`` casts, output allocation) are counted, and every kernel launch is counted separately as
``triton_launches``. This is what a GPU step dispatches.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
from typing import Dict, Iterator, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

DEFAULT_MODELS = ("lightnet_small", "vit_small_patch16_224")


class OpCounter(TorchDispatchMode):
    """Counts aten ops by overload-packet name (``aten.mul.Tensor`` → ``mul``) while active and not paused."""

    def __init__(self, where: bool = False) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()
        self.sites: collections.Counter = collections.Counter()
        self.where = where
        self.paused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        if not self.paused:
            name = func.overloadpacket.__name__
            self.counts[name] += 1
            if self.where:
                self.sites[(_call_site(), name)] += 1
        return func(*args, **(kwargs or {}))


def _call_site() -> str:
    """``file:line`` of the innermost Python frame in lightnet/ or timm/ (``<engine>`` for autograd's C++ backward)."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        for root in ("/lightnet/", "/timm/"):
            if root in path and "count_ops" not in path:
                return f"{root.strip('/')}/{path.split(root, 1)[1]}:{frame.f_lineno}"
        frame = frame.f_back
    return "<engine>"


_ACTIVE: List[OpCounter] = []
_LAUNCHES = collections.Counter()


@contextlib.contextmanager
def counting(where: bool = False) -> Iterator[OpCounter]:
    """Count aten ops inside the block (the counter is also reachable by the Triton launch patch)."""
    counter = OpCounter(where)
    _ACTIVE.append(counter)
    try:
        with counter:
            yield counter
    finally:
        _ACTIVE.pop()


def _patch_triton_interpreter() -> None:
    """Pause op counting while the Triton interpreter runs a kernel, and count the launches instead."""
    from triton.runtime import interpreter

    original = interpreter.GridExecutor.__call__

    def launch(self, *args, **kwargs):  # noqa: ANN001
        for c in _ACTIVE:
            c.paused += 1
        _LAUNCHES["n"] += 1
        try:
            return original(self, *args, **kwargs)
        finally:
            for c in _ACTIVE:
                c.paused -= 1

    interpreter.GridExecutor.__call__ = launch


def build_model(name: str, img_size: int, backend: str) -> torch.nn.Module:
    """A timm model at ``img_size`` (LightNet models get ``attn_backend=backend``), eval-free (train mode)."""
    import timm

    import lightnet  # noqa: F401  registers the lightnet_* timm models

    kwargs: Dict[str, object] = dict(img_size=img_size, num_classes=10)
    if name.startswith("lightnet") or name.startswith("test_lightnet"):
        kwargs["attn_backend"] = backend
    return timm.create_model(name, **kwargs)


def count_step(model: torch.nn.Module, img_size: int, batch: int, where: bool = False) -> Dict[str, Dict]:
    """Op counts of one forward and one backward on a random batch ``[batch, 3, img_size, img_size]``.

    Returns ``{'forward': {op: n}, 'backward': {op: n}, 'launches': {'forward': n, 'backward': n}}``, plus
    ``'sites': {phase: {'file:line op': n}}`` with ``where`` (the source line that dispatched each op).
    """
    torch.manual_seed(0)
    x = torch.randn(batch, 3, img_size, img_size)
    model(x).float().sum().backward()  # warm-up: lazy init and caches are not counted
    model.zero_grad(set_to_none=True)
    _LAUNCHES.clear()
    with counting(where) as fwd:
        out = model(x)
    launches_fwd = _LAUNCHES["n"]
    loss = out.float().sum()
    _LAUNCHES.clear()
    with counting(where) as bwd:
        loss.backward()
    sites = {}
    if where:
        sites = {"sites": {ph: {f"{site} {op}": n for (site, op), n in c.sites.most_common()} for ph, c in
                           (("forward", fwd), ("backward", bwd))}}
    return {
        **sites,
        "forward": dict(fwd.counts),
        "backward": dict(bwd.counts),
        "launches": {"forward": launches_fwd, "backward": _LAUNCHES["n"]},
    }


def _table(results: Dict[str, Dict], top: int) -> str:
    names = list(results)
    lines = []
    for phase in ("forward", "backward"):
        totals = {n: sum(results[n][phase].values()) for n in names}
        head = "  ".join(f"{n}={totals[n]}" for n in names)
        lines.append(f"{phase}: total aten ops  {head}")
        if len(names) > 1 and totals[names[1]]:
            lines.append(f"  ratio {names[0]} / {names[1]}: {totals[names[0]] / totals[names[1]]:.2f}")
        launches = {n: results[n]["launches"][phase] for n in names}
        if any(launches.values()):
            lines.append("  triton kernel launches  " + "  ".join(f"{n}={launches[n]}" for n in names))
        ops = collections.Counter()
        for n in names:
            ops.update(results[n][phase])
        ranked = sorted(ops, key=lambda op: -results[names[0]][phase].get(op, 0) - 1e-6 * ops[op])[:top]
        width = max([len(op) for op in ranked] + [4])
        lines.append("  " + "op".ljust(width) + "".join(f"{n[:22]:>24}" for n in names))
        for op in ranked:
            lines.append("  " + op.ljust(width) + "".join(f"{results[n][phase].get(op, 0):>24}" for n in names))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="timm model names (first is the subject)")
    p.add_argument("--backend", choices=("torch", "triton"), default="torch",
                   help="LightNet attention backend: torch reference, or Triton under TRITON_INTERPRET=1")
    p.add_argument("--img-size", type=int, default=None, help="image size (default 64; 32 with --backend triton)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--top", type=int, default=25, help="ops listed per phase")
    p.add_argument("--where", action="store_true", help="also list the source lines that dispatch the most ops")
    p.add_argument("--json", default=None, help="write the raw counts here ('-' for stdout)")
    args = p.parse_args(argv)
    img_size = args.img_size or (32 if args.backend == "triton" else 64)
    if args.backend == "triton":
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            raise SystemExit("count_ops: triton was imported before TRITON_INTERPRET=1 could be set")
        os.environ["TRITON_INTERPRET"] = "1"
        _patch_triton_interpreter()
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    results = {}
    for name in args.models:
        model = build_model(name, img_size, args.backend)
        results[name] = count_step(model, img_size, args.batch, args.where)
    meta = dict(torch=torch.__version__, backend=args.backend, img_size=img_size, batch=args.batch, device="cpu")
    print(f"aten ops per step ({', '.join(f'{k}={v}' for k, v in meta.items())})")
    print(_table(results, args.top))
    if args.where:
        for name in args.models:
            for phase, sites in results[name]["sites"].items():
                print(f"{name} {phase}: top source lines")
                for site, n in list(sites.items())[: args.top]:
                    print(f"  {n:>6}  {site}")
    if args.json:
        payload = json.dumps(dict(meta=meta, results=results), indent=1, sort_keys=True)
        if args.json == "-":
            print(payload)
        else:
            with open(args.json, "w") as f:
                f.write(payload + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
