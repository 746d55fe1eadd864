"""Experiment: why does LightNet lose accuracy at larger sizes, and what corrects it at evaluation time?

Probes on trained LightNets, evaluated with the paper's encodings as the baseline (``tpe_match_mass=False``,
``lrpe_interpolate=False``), every one through the layers' public ``set_reference_grid``:

* **MD-TPE mass matching** (``mass``, ``MDTPE.set_reference_grid``, a vision default): with decays near 1 the MD-TPE
  kernel sums over the whole line, so its output grows with the grid (recorded as ``tpe_ratio@size``, the kernels'
  mass as ``tpe_mass@size``); matching rescales every axis kernel at the evaluation grid to the total |mass| it has
  at the training grid, per channel;
* **mass matching + MD-LRPE interpolation** (``mass_lrpe_interp``, ``MDLRPE.set_reference_grid`` too: the two vision
  defaults): the MD-LRPE coordinates are scaled into the training grid's range, as RoPE position interpolation does;
* ``as_is`` (the paper's encodings at every size) and ``pad`` (the object on a larger empty canvas).

The script trains LightNet with ``run_classification.py --save-weights`` (finished runs are reused), then evaluates
each seed at the larger sizes with each probe.

    python -m experiments.transfer_probes --out runs/evidence/pos_interp --seeds 0 1 2
    (any other option, e.g. ``--epochs 2 --dataset digits``, is passed to run_classification after the recipe)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import torch

from lightnet.layers import MDLRPE

from . import run_classification
from .data import load_image_tensors
from .models import ModelSize, build_classifier

# the CPU-scale recipe of docs/evidence.md (LightNet only), trained at 32², evaluated at 40² / 48²
RECIPE = ["--dataset", "fashion_mnist", "--train-limit", "4000", "--test-limit", "2000", "--epochs", "6",
          "--batch-size", "64", "--lr", "2e-3", "--warmup-epochs", "0.5", "--drop-path", "0", "--embed-dim", "64",
          "--depth", "4", "--heads", "2", "--patch", "4", "--train-size", "32", "--eval-sizes", "40", "48"]


@contextlib.contextmanager
def reference_grid(model: torch.nn.Module, train_grid: int, lrpe: bool = False) -> Iterator[None]:
    """Within the block, ``model``'s MD-TPE (and with ``lrpe`` every MD-LRPE) takes the ``train_grid`` square as its
    reference grid: mass matching (and position interpolation); the previous references are restored on exit."""
    modules = [model.tpe] + ([m for m in model.modules() if isinstance(m, MDLRPE)] if lrpe else [])
    saved = [m.reference_grid for m in modules]
    for m in modules:
        m.set_reference_grid((train_grid,) * m.num_axes)
    try:
        yield
    finally:
        for m, ref in zip(modules, saved):
            m.set_reference_grid(ref)


@contextlib.contextmanager
def tpe_growth(model: torch.nn.Module) -> Iterator[List[float]]:
    """Collects ``‖MD-TPE(x) − x‖ / ‖x‖`` of every batch that passes ``model.tpe`` inside the block."""
    ratios: List[float] = []

    def hook(module, inputs, output) -> None:
        ratios.append(float((output - inputs[0]).norm() / inputs[0].norm()))

    handle = model.tpe.register_forward_hook(hook)
    try:
        yield ratios
    finally:
        handle.remove()


PROBES = ("as_is", "mass", "mass_lrpe_interp", "pad")


def evaluate_seed(weights: Path, data, size: ModelSize, eval_sizes: Sequence[int],
                  probes: Sequence[str] = PROBES) -> Dict[str, float]:
    """Top-1 (%) of one saved LightNet at every size: resized as is (``as_is``, with MD-TPE's relative output size and
    its kernels' mass, the growth the mass-matching probe undoes), with MD-TPE mass matching (``mass``), with mass
    matching and MD-LRPE position interpolation (``mass_lrpe_interp``), and padded (``pad``); ``probes`` picks which."""
    from safetensors.torch import load_file

    unknown = set(probes) - set(PROBES)
    if unknown:
        raise ValueError(f"unknown probes {sorted(unknown)}; choose from {PROBES}")
    # the paper's encodings are the baseline here (no mass matching, integer MD-LRPE coordinates at every size)
    model = build_classifier("lightnet", size, tpe_match_mass=False, lrpe_interpolate=False)
    model.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
    cpu = torch.device("cpu")
    train_grid = size.img_size // size.patch_size

    def top1(s: int, mode: str = "resize") -> float:
        return 100 * run_classification.evaluate(model, data, s, size.img_size, mode, cpu)[0]

    out = {}
    for s in (size.img_size, *eval_sizes):
        if "as_is" in probes or s == size.img_size:
            with tpe_growth(model) as ratios:  # ‖MD-TPE(x) − x‖ / ‖x‖ of the as-is evaluation
                out[f"@{s}_resize"] = top1(s)
            out[f"tpe_ratio@{s}"] = statistics.mean(ratios)
            with torch.no_grad():
                out[f"tpe_mass@{s}"] = statistics.mean(  # the axis kernels' L1 mass per channel at this grid
                    float(axis.kernel(s // size.patch_size).abs().sum(0).mean()) for axis in model.tpe.axes)
        if s == size.img_size:
            continue
        if "mass" in probes:
            with reference_grid(model, train_grid):
                out[f"@{s}_resize_tpe_mass"] = top1(s)
        if "mass_lrpe_interp" in probes:
            with reference_grid(model, train_grid, lrpe=True):
                out[f"@{s}_resize_tpe_mass_lrpe_interp"] = top1(s)
        if "pad" in probes:
            out[f"@{s}_pad"] = top1(s, "pad")
    return out


def table(per_seed: Dict[int, Dict[str, float]]) -> str:
    keys = list(next(iter(per_seed.values())))
    lines = ["| " + " | ".join(["seed", *keys]) + " |", "|---|" + "---:|" * len(keys)]
    for seed, res in per_seed.items():
        lines.append(f"| {seed} | " + " | ".join(f"{res[k]:.3g}" if k.startswith("tpe_") else f"{res[k]:.2f}"
                                                for k in keys) + " |")
    if len(per_seed) > 1:
        cells = [f"{statistics.mean(r[k] for r in per_seed.values()):.2f} ± "
                 f"{statistics.stdev(r[k] for r in per_seed.values()):.2f}" for k in keys]
        lines.append("| mean ± std | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/evidence/pos_interp"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--probes", nargs="+", default=list(PROBES), choices=PROBES)
    ap.add_argument("--stem", default="transfer_probes", help="output file names (<out>/<stem>.json / .md)")
    args, overrides = ap.parse_known_args(argv)  # other options go to run_classification, after (over) the recipe
    run_argv = [*RECIPE, *overrides, "--models", "lightnet", "--save-weights", "--threads", str(args.threads),
                "--out", str(args.out), "--seeds", *map(str, args.seeds)]
    run_classification.main(run_argv)
    parsed = run_classification.build_parser().parse_args(run_argv)
    data = load_image_tensors(parsed.dataset, parsed.train_limit, parsed.test_limit, root=parsed.data_root)
    size = ModelSize(img_size=parsed.train_size, patch_size=parsed.patch, in_chans=1, num_classes=data.num_classes,
                     embed_dim=parsed.embed_dim, depth=parsed.depth, num_heads=parsed.heads, drop_path_rate=0.0)
    per_seed = {seed: evaluate_seed(args.out / "lightnet" / f"seed{seed}" / "model_bf16.safetensors", data, size,
                                    parsed.eval_sizes, args.probes) for seed in args.seeds}
    md = table(per_seed)
    print(md)
    (args.out / f"{args.stem}.json").write_text(json.dumps(per_seed, indent=1))
    (args.out / f"{args.stem}.md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
