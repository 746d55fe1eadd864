"""Regenerate the evidence tables (markdown, mean ± std over seeds) and plots (PNG) from run logs.

    python -m experiments.make_tables runs/evidence/fmnist [--out experiments/results/fmnist]

Reads every ``summary.json`` (and the ``epochs.csv`` next to it) under the log directory, as written by
``run_classification.py``, groups runs by variant, and writes ``tables.md``, ``curves.png`` (test top-1 per epoch,
mean ± std band), ``variants.png`` (final top-1 of every variant with std error bars) and ``transfer.png`` (top-1 at
each evaluation size). Nothing is hard-coded: the tables are a pure function of the logs.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .models import DESCRIPTIONS, GROUPS

__all__ = ["aggregate", "load_runs", "mean_std", "format_mean_std", "render_tables", "make_plots", "main",
           "plot_mean_band", "finish_plot"]

GROUP_TITLES = {
    "main": "Main comparison (same width/depth/patch, same recipe)",
    "pe": "Ablation: positional encoding",
    "decay": "Ablation: additive vs multiplicative decay",
    "design": "Ablation: design switches of docs/design.md",
}


def load_runs(log_dir: Path) -> List[Dict[str, Any]]:
    """Every run under ``log_dir``: its summary plus ``epochs`` (the rows of ``epochs.csv``, numbers as floats)."""
    runs = []
    for path in sorted(Path(log_dir).rglob("summary.json")):
        summary = json.loads(path.read_text())
        rows = []
        csv_path = path.parent / "epochs.csv"
        if csv_path.exists():
            with open(csv_path, newline="") as f:
                rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
        summary["epochs_log"] = rows
        summary["path"] = str(path.parent)
        runs.append(summary)
    return runs


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    m = sum(values) / n
    if n == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def format_mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
    """``"82.00 ± 2.00"`` (values × ``scale``); a single value is printed alone, no values as ``—``."""
    if not values:
        return "—"
    m, s = mean_std([v * scale for v in values])
    return f"{m:.{digits}f}" if len(values) == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"


def aggregate(runs: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Group runs by variant: seeds, params, final top-1 values, transfer values per key, train times, curves."""
    out: Dict[str, Dict[str, Any]] = {}
    for r in runs:
        a = out.setdefault(r["variant"], {"seeds": [], "params": r.get("params"), "top1": [], "transfer": {},
                                          "train_time_s": [], "curves": []})
        a["seeds"].append(r.get("seed"))
        a["top1"].append(float(r["final_eval_top1"]))
        a["train_time_s"].append(float(r.get("train_time_s", math.nan)))
        for k, v in r.get("transfer", {}).items():
            a["transfer"].setdefault(k, []).append(float(v))
        if r["epochs_log"]:
            unit = 100.0 if r.get("eval_top1_unit") == "percent" else 1.0  # lightnet.train logs top-1 in %
            a["curves"].append([(row["epoch"], row["eval_top1"] / unit) for row in r["epochs_log"] if "eval_top1" in row])
    return out


def _transfer_order(key: str) -> tuple:
    m = re.match(r"top1@(\d+)(?:_(\w+))?$", key)
    if not m:
        return (2, 0, key)
    return (0 if m.group(2) is None else 1, {"resize": 0, "pad": 1}.get(m.group(2) or "", 2), int(m.group(1)))


def _groups(variants: Sequence[str]) -> Dict[str, List[str]]:
    groups = {g: [v for v in members if v in variants] for g, members in GROUPS.items()}
    grouped = {v for members in groups.values() for v in members}
    other = [v for v in variants if v not in grouped]
    if other:
        groups["other"] = other
    return {g: vs for g, vs in groups.items() if vs}


def _variant_order(agg: Dict[str, Any]) -> List[str]:
    """Variants in group order, each once."""
    return list(dict.fromkeys(v for vs in _groups(list(agg)).values() for v in vs))


def _context(runs: Sequence[Dict[str, Any]]) -> str:
    r = runs[0]
    size, args = r.get("size", {}), r.get("args", {})
    return (
        f"dataset `{r.get('dataset')}` ({r.get('train_examples')} train / {r.get('test_examples')} test images), "
        f"train size {size.get('img_size')}², patch {size.get('patch_size')}, width {size.get('embed_dim')}, "
        f"depth {size.get('depth')}, heads {size.get('num_heads')}, {r.get('epochs')} epochs, "
        f"batch {args.get('batch_size')}, lr {args.get('lr')}, device `{r.get('device')}`, torch {r.get('torch')}"
    )


def render_tables(runs: Sequence[Dict[str, Any]]) -> str:
    """Markdown tables (one per variant group, then resolution transfer) from the runs."""
    if not runs:
        raise ValueError("no runs found (no summary.json under the log directory)")
    agg = aggregate(runs)
    lines = [f"Setting: {_context(runs)}.", "", "Top-1 accuracy on the test split in %, mean ± sample std over seeds.", ""]
    for group, variants in _groups(list(agg)).items():
        lines += [f"#### {GROUP_TITLES.get(group, 'Other variants')}", "",
                  "| variant | what | params | top-1 (%) | seeds | train time (s) |", "|---|---|---:|---:|---:|---:|"]
        for v in variants:
            a = agg[v]
            t_mean, _ = mean_std(a["train_time_s"])
            lines.append(
                f"| `{v}` | {DESCRIPTIONS.get(v, '')} | {a['params'] / 1e6:.3f}M | {format_mean_std(a['top1'])} | "
                f"{len(a['top1'])} | {t_mean:.0f} |"
            )
        lines.append("")
    keys = sorted({k for a in agg.values() for k in a["transfer"]}, key=_transfer_order)
    if keys:
        lines += ["#### Resolution transfer (trained at the first size, evaluated without fine-tuning)", "",
                  "`resize`: the training canvas resized to the new size; `pad`: the same object on a larger canvas.", "",
                  "| variant | " + " | ".join(k.replace("top1@", "@") for k in keys) + " |",
                  "|---|" + "---:|" * len(keys)]
        for v in _variant_order(agg):
            lines.append(f"| `{v}` | " + " | ".join(format_mean_std(agg[v]["transfer"].get(k, [])) for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_mean_band(ax: Any, x: Sequence[float], stats: Sequence[tuple], color: str, label: str, **line: Any) -> None:
    """A mean line with a ± std band: ``stats`` is one ``(mean, std)`` per point of ``x``."""
    m, sd = [a for a, _ in stats], [b for _, b in stats]
    ax.plot(x, m, marker="o", color=color, label=label, **line)
    ax.fill_between(x, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)], color=color, alpha=0.2)


def finish_plot(fig: Any, ax: Any, xlabel: str, ylabel: str, title: str, path: Path, legend_size: Any = None) -> Path:
    """Labels, grid and legend, then save ``path`` (120 dpi, its folder created) and close the figure."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def make_plots(runs: Sequence[Dict[str, Any]], out_dir: Path) -> List[Path]:
    """Write ``curves.png``, ``variants.png`` and ``transfer.png`` into ``out_dir``; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    main = [v for v in GROUPS["main"] if v in agg] or list(agg)[:6]

    fig, ax = plt.subplots(figsize=(6, 4))
    for v in main:
        curves = [c for c in agg[v]["curves"] if c]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        epochs = [curves[0][i][0] for i in range(n)]
        stats = [mean_std([c[i][1] * 100 for c in curves]) for i in range(n)]
        plot_mean_band(ax, epochs, stats, f"C{main.index(v)}", v)
    written.append(finish_plot(fig, ax, "epoch", "test top-1 (%)", "Learning curves (mean ± std over seeds)",
                               out_dir / "curves.png"))

    order = _variant_order(agg)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(order) + 1.2))
    stats = [mean_std([x * 100 for x in agg[v]["top1"]]) for v in order]
    ax.barh(range(len(order)), [s[0] for s in stats], xerr=[s[1] for s in stats], color="tab:blue", alpha=0.7)
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels(order)
    ax.invert_yaxis()
    lo = min(s[0] - s[1] for s in stats)
    ax.set_xlim(max(0.0, lo - 5), min(100.0, max(s[0] + s[1] for s in stats) + 2))
    ax.set_xlabel("test top-1 (%)")
    ax.set_title("All variants (mean ± std over seeds)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    written.append(out_dir / "variants.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    keys = sorted({k for v in main for k in agg[v]["transfer"]}, key=_transfer_order)
    if keys:
        fig, ax = plt.subplots(figsize=(6, 4))
        for mode, style in (("resize", "-"), ("pad", "--")):
            for i, v in enumerate(main):
                pts = []
                for k in keys:
                    m = re.match(r"top1@(\d+)(?:_(\w+))?$", k)
                    if m and (m.group(2) in (None, mode)) and agg[v]["transfer"].get(k):
                        pts.append((int(m.group(1)), mean_std([x * 100 for x in agg[v]["transfer"][k]])[0]))
                if len(pts) > 1:
                    pts.sort()
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", color=f"C{i}",
                            label=f"{v} ({mode})")
        written.append(finish_plot(fig, ax, "evaluation image size (px)", "test top-1 (%)",
                                   "Resolution transfer without fine-tuning", out_dir / "transfer.png", 8))
    return written


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Tables and plots from evidence run logs.")
    p.add_argument("log_dir", type=Path)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the log directory)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    runs = load_runs(args.log_dir)
    if not runs:
        raise SystemExit(f"no summary.json found under {args.log_dir}")
    out = args.out or args.log_dir
    out.mkdir(parents=True, exist_ok=True)
    text = render_tables(runs)
    (out / "tables.md").write_text(text + "\n")
    print(text)
    if not args.no_plots:
        for path in make_plots(runs, out):
            print(f"wrote {path}")
    print(f"wrote {out / 'tables.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
