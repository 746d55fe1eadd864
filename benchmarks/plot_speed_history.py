"""LightNet / peer training-throughput ratio per image size across several ``bench_models.py`` runs, as one plot.

Each run is ``LABEL=path/to/bench_models.json``; the first two models of each file's ``args.models`` are LightNet and
its peer, and one compile mode is read (``--mode``, default: the first in the file). Prints a markdown table of the
ratios and saves a PNG with one line per run and the issue's targets as markers.

    python benchmarks/plot_speed_history.py \\
        "run I3=benchmarks/results/run_i_h200/i3/extracted/i3/models/bench_models.json" \\
        "run J3=benchmarks/results/run_j_h200/j3/j3/models/bench_models.json" \\
        "run J7=benchmarks/results/run_j_h200/j7/j7/models/bench_models.json" --out docs/results/run_j/speed_history.png
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional, Sequence, Tuple

# issue 7's targets: LightNet-S / ViT-S training throughput at these sizes
TARGETS = {224: 0.9, 512: 1.5, 1024: 3.0}


def load_ratios(path: str, mode: Optional[str] = None) -> Dict[int, float]:
    """``{size: LightNet img/s ÷ peer img/s}`` of one ``bench_models.json`` (rows with status ok only)."""
    with open(path) as f:
        data = json.load(f)
    ours, peer = data["args"]["models"][:2]
    rows = [r for r in data["train"] if r.get("status") == "ok"]
    modes = list(dict.fromkeys(r.get("mode", "eager") for r in rows))
    if not modes:
        raise ValueError(f"{path}: no successful training rows")
    mode = mode or modes[0]
    speed: Dict[Tuple[str, int], float] = {(r["model"], r["size"]): r["img_per_s"] for r in rows
                                           if r.get("mode", "eager") == mode}
    return {size: speed[(ours, size)] / speed[(peer, size)] for (model, size) in speed
            if model == ours and (peer, size) in speed}


def parse_run(spec: str) -> Tuple[str, str]:
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise ValueError(f"run {spec!r}: expected LABEL=path/to/bench_models.json")
    return label, path


def table(runs: List[Tuple[str, Dict[int, float]]]) -> str:
    sizes = sorted({s for _, r in runs for s in r})
    lines = ["| run | " + " | ".join(f"{s} px" for s in sizes) + " |", "|---|" + "---:|" * len(sizes)]
    for label, ratios in runs:
        lines.append(f"| {label} | " + " | ".join(f"{ratios[s]:.2f}×" if s in ratios else "—" for s in sizes) + " |")
    lines.append("| target | " + " | ".join(f"≥ {TARGETS[s]:g}×" if s in TARGETS else "—" for s in sizes) + " |")
    return "\n".join(lines)


def plot(runs: List[Tuple[str, Dict[int, float]]], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, ratios in runs:
        sizes = sorted(ratios)
        ax.plot(sizes, [ratios[s] for s in sizes], marker="o", label=label)
    ax.scatter(list(TARGETS), list(TARGETS.values()), marker="_", s=400, color="red", label="issue 7 target")
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({s for _, r in runs for s in r}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("image size (px), dynamic size, batch × tokens ≈ 25-33 k")
    ax.set_ylabel("LightNet-S / ViT-S training img/s")
    ax.set_title("Compiled training throughput ratio (H200, bf16)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="LABEL=path/to/bench_models.json, oldest first")
    ap.add_argument("--mode", default=None, help="compile mode to read (default: the first in each file)")
    ap.add_argument("--out", default=None, help="PNG path")
    args = ap.parse_args(argv)
    runs = [(label, load_ratios(path, args.mode)) for label, path in map(parse_run, args.runs)]
    print(table(runs))
    if args.out:
        plot(runs, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
