"""Experiment: why does LightNet lose accuracy at larger sizes, and do eval-time corrections help?

Probes on trained LightNets, evaluated with the paper's encodings as the baseline (``tpe_match_mass=False``,
``lrpe_interpolate=False``):

* **position interpolation** (:func:`scaled_positions`, a temporary override of two library functions; the library
  has no such switch, because it did not help, ``docs/results.md`` §2): ViT evaluated at a larger size interpolates
  its position table, i.e. it sees positions in the training grid's range. LightNet's encodings take integer token
  offsets (MD-LRPE angles ``coord · ω``, MD-TPE kernels ``λ^r``), both defined for real positions, so the analogue
  scales them by ``train_size / eval_size`` (as RoPE position interpolation does);
* **MD-TPE mass matching** (:func:`tpe_mass_matched`, the library's ``MDTPE.reference_grid``, on by default in the
  vision models since run K4 showed it at the issue's size): with decays near 1 the MD-TPE kernel sums over the
  whole line, so its output grows with the grid (the script records it as ``tpe_ratio@size`` and the kernels' mass
  as ``tpe_mass@size``); matching rescales every axis kernel at the evaluation grid to the total |mass| it has at
  the training grid, per channel;
* **key temperature** (:func:`key_temperature`, with mass matching): LightNet normalises each key channel by a
  softmax over the tokens, which flattens as the grid grows; the probe sharpens it by ``log N / log N_train``;
* **MD-LRPE interpolation alone** (with mass matching): only the MD-LRPE coordinates scaled into the training range;
  run K4's weights kept 90.6 % at 48² with it, so it became the vision default too (``lrpe_interpolate``).

The script trains LightNet with ``run_classification.py --save-weights`` (finished runs are reused), then evaluates
each seed at the larger sizes as is, with each probe, and padded.

    python -m benchmarks.evidence.transfer_probes --out runs/evidence/pos_interp --seeds 0 1 2
    (any other option, e.g. ``--epochs 2 --dataset digits``, is passed to run_classification after the recipe)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import torch

from lightnet.layers import lrpe as lrpe_module
from lightnet.layers import mixer as mixer_module
from lightnet.layers import tpe as tpe_module

from . import run_classification
from .data import load_image_tensors
from .models import ModelSize, build_classifier

# the CPU-scale recipe of docs/results.md §2 (LightNet only), trained at 32², evaluated at 40² / 48²
RECIPE = ["--dataset", "fashion_mnist", "--train-limit", "4000", "--test-limit", "2000", "--epochs", "6",
          "--batch-size", "64", "--lr", "2e-3", "--warmup-epochs", "0.5", "--drop-path", "0", "--embed-dim", "64",
          "--depth", "4", "--heads", "2", "--patch", "4", "--train-size", "32", "--eval-sizes", "40", "48"]


@contextlib.contextmanager
def scaled_positions(scale: float, tpe: bool = True) -> Iterator[None]:
    """Within the block, MD-LRPE coordinates and (with ``tpe``) MD-TPE offsets are multiplied by ``scale`` (1 =
    unchanged); the LRPE angle cache is cleared on entry and exit so no scaled table outlives the block."""
    coords, side = lrpe_module.grid_coordinates, tpe_module._AxisToeplitz._side

    def scaled_coords(grid_shape, device=None, offset=0):
        return coords(grid_shape, device, offset) * scale

    def scaled_side(logit: torch.Tensor, weight: torch.Tensor, n: int) -> torch.Tensor:
        r = torch.arange(1, n, device=logit.device, dtype=torch.float32)[:, None, None] * scale
        log_lam = torch.nn.functional.logsigmoid(logit.float())[None]
        return (torch.exp(r * log_lam) * weight.float()[None]).sum(-1)

    lrpe_module.clear_lrpe_cache()
    lrpe_module.grid_coordinates = scaled_coords
    if tpe:
        tpe_module._AxisToeplitz._side = staticmethod(scaled_side)
    try:
        yield
    finally:
        lrpe_module.grid_coordinates, tpe_module._AxisToeplitz._side = coords, staticmethod(side)
        lrpe_module.clear_lrpe_cache()


@contextlib.contextmanager
def tpe_mass_matched(model: torch.nn.Module, train_grid: int) -> Iterator[None]:
    """Within the block, ``model``'s MD-TPE matches every axis kernel's per-channel |mass| to the one it has at
    ``train_grid`` tokens (``MDTPE.reference_grid``); the previous reference is restored on exit."""
    saved = model.tpe.reference_grid
    model.tpe.set_reference_grid((train_grid,) * model.tpe.num_axes)
    try:
        yield
    finally:
        model.tpe.set_reference_grid(saved)


@contextlib.contextmanager
def key_temperature(train_tokens: int) -> Iterator[None]:
    """Within the block, LightNet's keys are multiplied by ``log(N) / log(train_tokens)`` before the token softmax
    (the log-length attention scaling of length-extrapolation work): more tokens, a sharper softmax, as if the key
    distribution kept the training length's entropy. An override of the mixer's kernel call."""
    call = mixer_module.additive_attention

    def scaled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs):
        return call(q, k * (math.log(k.shape[1]) / math.log(train_tokens)), v, **kwargs)

    mixer_module.additive_attention = scaled
    try:
        yield
    finally:
        mixer_module.additive_attention = call


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


PROBES = ("as_is", "interp", "mass", "mass_keytemp", "mass_lrpe_interp", "pad")


def evaluate_seed(weights: Path, data, size: ModelSize, eval_sizes: Sequence[int],
                  probes: Sequence[str] = PROBES) -> Dict[str, float]:
    """Top-1 (%) of one saved LightNet at every size: resized as is (``as_is``, with MD-TPE's relative output size and
    its kernels' mass, the growth the mass-matching probe undoes), with interpolated positions (``interp``), with
    MD-TPE mass matching (``mass``), with mass matching and log-N key temperature (``mass_keytemp``) or MD-LRPE
    position interpolation alone (``mass_lrpe_interp``), and padded (``pad``); ``probes`` picks which."""
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
        if "interp" in probes:
            with scaled_positions(size.img_size / s):
                out[f"@{s}_resize_interp"] = top1(s)
        if "mass" in probes:
            with tpe_mass_matched(model, train_grid):
                out[f"@{s}_resize_tpe_mass"] = top1(s)
        if "mass_lrpe_interp" in probes:
            with tpe_mass_matched(model, train_grid), scaled_positions(size.img_size / s, tpe=False):
                out[f"@{s}_resize_tpe_mass_lrpe_interp"] = top1(s)
        if "mass_keytemp" in probes:
            with tpe_mass_matched(model, train_grid), key_temperature(train_grid ** 2):
                out[f"@{s}_resize_tpe_mass_keytemp"] = top1(s)
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
