"""Test top-1 per epoch, mean ± std over seeds, for runs that have not all finished (the scan baselines' cut runs).

    python -m experiments.partial_epochs lightnet=<logs>/fmnist/lightnet \
        scan2=experiments/results/fashion_mnist_h200/scan2 --epochs 1 4 [--out table.md] [--plot curves.png]

Each ``NAME=DIR`` names a variant and the folder holding its ``seed*/epochs.csv`` (as ``run_classification.py``
writes them, with or without ``summary.json``). For every asked epoch the table shows the mean ± std over the seeds
that reached it and how many did; a run that stopped earlier leaves that cell empty. ``--plot`` draws every
variant's curve over all epochs any seed reached (mean ± std band over the seeds that reached each epoch). All runs compared this way must
share the recipe (the same epoch count in the learning-rate schedule), so an epoch means the same point of training.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .make_tables import finish_plot, format_mean_std, mean_std, plot_mean_band

__all__ = ["load_epoch_top1", "plot_curves", "render", "main"]


def load_epoch_top1(run_dir: Path) -> Dict[int, Dict[int, float]]:
    """``{seed: {epoch: eval_top1}}`` from ``run_dir/seed*/epochs.csv``; a ValueError when there is none."""
    out: Dict[int, Dict[int, float]] = {}
    for path in sorted(Path(run_dir).glob("seed*/epochs.csv")):
        seed = int(path.parent.name[len("seed"):])
        with open(path, newline="") as f:
            out[seed] = {int(r["epoch"]): float(r["eval_top1"]) for r in csv.DictReader(f)}
    if not out:
        raise ValueError(f"no seed*/epochs.csv under {run_dir}")
    return out


def render(variants: Sequence[Tuple[str, Path]], epochs: Sequence[int]) -> str:
    """Markdown: one row per variant, one column per epoch (``mean ± std (n seeds)``, top-1 in %)."""
    head = "| variant | " + " | ".join(f"epoch {e}" for e in epochs) + " |"
    lines = [head, "|---|" + "---:|" * len(epochs)]
    for name, run_dir in variants:
        per_seed = load_epoch_top1(run_dir)
        cells = []
        for e in epochs:
            values = [rows[e] for rows in per_seed.values() if e in rows]
            cells.append(f"{format_mean_std(values)} ({len(values)})" if values else "—")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(variants: Sequence[Tuple[str, Path]], path: Path) -> Path:
    """Test top-1 per epoch of every variant (mean ± std over the seeds that reached the epoch) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (name, run_dir) in enumerate(variants):
        per_seed = load_epoch_top1(run_dir)
        epochs = sorted({e for rows in per_seed.values() for e in rows})
        stats = [mean_std([100 * rows[e] for rows in per_seed.values() if e in rows]) for e in epochs]
        plot_mean_band(ax, epochs, stats, f"C{i}", name, markersize=3)
    return finish_plot(fig, ax, "epoch", "test top-1 (%)",
                       "Test top-1 per epoch (mean ± std over seeds; cut runs end early)", path, 8)


def _parse_variant(spec: str) -> Tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{spec!r}: expected NAME=DIR")
    return name, Path(path)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="+", type=_parse_variant, help="NAME=DIR with DIR/seed*/epochs.csv")
    p.add_argument("--epochs", nargs="+", type=int, default=[1, 4])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None, help="also draw the curves into this PNG")
    args = p.parse_args(argv)
    md = render(args.variants, args.epochs)
    print(md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(md + "\n")
    if args.plot:
        plot_curves(args.variants, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
