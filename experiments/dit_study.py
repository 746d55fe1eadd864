"""Mean ± std of a generation study: LightNet-DiT vs diffusers' DiT and their variants, over seeds.

``experiments/dit_cpu16_study.sh`` trains every (model, variant, seed) with ``dit_compare.py
--skip-fid`` (one ``runs_<arch>.json`` each, holding the run's held-out loss, pipeline folder and config overrides)
and scores all pipelines with ``lightnet fid --json`` against one cached classifier. This module joins the two by
pipeline folder, groups runs by model and overrides, and writes a markdown table and a bar plot:

    python -m experiments.dit_study runs/dit_cpu16 --out experiments/results/dit_cpu16
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import aggregate_seeds

__all__ = ["collect", "render", "plot", "main"]

NAMES = {"lightnet": "LightNet-DiT", "dit": "diffusers DiT"}


def _key(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def collect(root: Path) -> Dict[Tuple[str, Tuple[str, ...]], Dict[str, List[float]]]:
    """``{(arch, overrides): {"eval_loss": [...], "fid_proxy": [...], "label_acc": [...], "params": [...],
    "step": [...]}}`` from every ``runs_*.json`` and ``fid*.json`` under ``root``.

    A run counts once whether or not it has been scored; an FID row whose pipeline no run names is an error (the
    two files disagree about where the pipelines are).
    """
    fid_rows: Dict[str, Dict[str, Any]] = {}
    for f in sorted(root.rglob("fid*.json")):
        for row in json.loads(f.read_text()).get("pipelines", []):
            fid_rows[_key(row["pipeline"])] = row
    table: Dict[Tuple[str, Tuple[str, ...]], Dict[str, List[float]]] = {}
    seen = set()
    for f in sorted(root.rglob("runs_*.json")):
        doc = json.loads(f.read_text())
        if "runs" not in doc:
            raise ValueError(f"{f}: not a dit_fashion_mnist_compare --skip-fid JSON (no 'runs' section)")
        for arch, run in doc["runs"].items():
            overrides = tuple(doc.get("overrides", {}).get(arch, []))
            m = table.setdefault((arch, overrides), {})
            for key in ("eval_loss", "params", "step"):
                if key in run:
                    m.setdefault(key, []).append(float(run[key]))
            row = fid_rows.get(_key(run["pipeline"]))
            if row is not None:
                seen.add(_key(run["pipeline"]))
                for key in ("fid_proxy", "label_acc"):
                    m.setdefault(key, []).append(float(row[key]))
    orphans = sorted(set(fid_rows) - seen)
    if orphans:
        raise ValueError(f"FID rows without a training run under {root}: {orphans[:3]}")
    return table


def label(arch: str, overrides: Tuple[str, ...]) -> str:
    """``LightNet-DiT`` or ``LightNet-DiT (gate_rank=0)``: the model and its overrides without the config prefix."""
    short = [o.replace("model.kwargs.", "").replace("model.", "") for o in overrides]
    return NAMES.get(arch, arch) + (f" ({', '.join(short)})" if short else "")


def render(table: Dict[Tuple[str, Tuple[str, ...]], Dict[str, List[float]]]) -> str:
    """Markdown: one row per (model, overrides) — LightNet-DiT first, plain models before their variants — with
    :func:`aggregate_seeds.render`'s columns (mean ± std per metric, number of runs)."""
    ordered = sorted(table.items(), key=lambda kv: (kv[0][0] != "lightnet", kv[0][1] != (), kv[0]))
    return aggregate_seeds.render("dit", {label(*key): m for key, m in ordered})


def plot(table: Dict[Tuple[str, Tuple[str, ...]], Dict[str, List[float]]], path: Path) -> None:
    """Two bar charts (FID proxy, samples classified as their label), mean with the seed spread as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [(label(*k), m) for k, m in table.items() if m.get("fid_proxy")]
    if not rows:
        return
    names = [r[0] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.6), sharey=True)
    for ax, (key, title, scale) in zip(axes, [("fid_proxy", "FID proxy (lower is better)", 1.0),
                                              ("label_acc", "samples classified as their label (%)", 100.0)]):
        vals = [np.asarray(m[key]) * scale for _, m in rows]
        mean = [v.mean() for v in vals]
        err = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in vals]
        colors = ["tab:blue" if n.startswith("LightNet") else "tab:orange" for n in names]
        ax.barh(range(len(rows)), mean, xerr=err, color=colors)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), names, fontsize=8)
    axes[0].invert_yaxis()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="study folder (runs_*.json and fid*.json anywhere below it)")
    p.add_argument("--out", type=Path, default=None, help="write table.md and bars.png here")
    args = p.parse_args(argv)
    table = collect(args.root)
    md = render(table)
    print(md)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(md + "\n")
        plot(table, args.out / "bars.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
