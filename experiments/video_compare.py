"""Video classification side by side: LightNet vs the joint space-time ViT vs the 6-scan multiplicative model.

Each (label, variant, seed) is one run of the packaged recipe ``moving_fashion_mnist`` through the shared trainer
(``lightnet.train.classify.train``: same data, optimiser, schedule and steps for every model), with the model swapped
for ``evidence_video_<variant>`` (:mod:`experiments.video_models`, same width / depth / heads / tubelet, MLPs matched
in parameters). Labels: ``class`` (readable from one frame) and ``direction`` (needs the order of frames; chance 25 %).

Writes ``<out>/<label>/<variant>/seed<k>/`` (the trainer's run folder: logs, curves, checkpoints), ``<out>/runs.csv``
(one row per run) and ``<out>/table.md`` (top-1 mean ± std over seeds). Finished runs are skipped on a rerun.

    python -m experiments.video_compare --out runs/video_compare --seeds 0 1 2 [-- key=value ...]
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from experiments.video_models import VIDEO_DESCRIPTIONS, VIDEO_VARIANTS, register_timm_video_variants

__all__ = ["COLUMNS", "main", "run_one", "write_table"]

COLUMNS = ["label", "variant", "seed", "params", "eval_top1", "eval_loss", "steps", "seconds"]


def run_one(out: Path, label: str, variant: str, seed: int, overrides: Sequence[str]) -> Dict[str, object]:
    """Train one model (or read its finished run); returns its CSV row."""
    from lightnet.train.classify import ClassifyConfig, train
    from lightnet.train.config import build_config

    run_dir = out / label / variant / f"seed{seed}"
    final = run_dir / "final_metrics.json"
    if not final.is_file():
        register_timm_video_variants()
        cfg = build_config(ClassifyConfig, "moving_fashion_mnist", [
            f"model=evidence_video_{variant}", f"data.moving.label={label}", f"run.seed={seed}",
            f"run.run_dir={run_dir}", f"name=video_{label}_{variant}", "run.progress=false", "run.tensorboard=false",
            *overrides])
        train(cfg)
    m = json.loads(final.read_text())
    return {"label": label, "variant": variant, "seed": seed, "params": m["params"],
            "eval_top1": round(m["eval_top1"], 2), "eval_loss": round(m["eval_loss"], 4), "steps": m["step"],
            "seconds": round(m["seconds"], 1)}


def write_table(rows: List[Dict[str, object]], path: Path) -> str:
    """Markdown table: one row per variant, one top-1 column per label (mean ± std over seeds, number of seeds)."""
    labels = list(dict.fromkeys(str(r["label"]) for r in rows))
    variants = [v for v in VIDEO_VARIANTS if any(r["variant"] == v for r in rows)]
    lines = ["| model | params | " + " | ".join(f"top-1 `{lab}` (%)" for lab in labels) + " |",
             "|---|---:|" + "---:|" * len(labels)]
    for v in variants:
        cells = []
        for lab in labels:
            acc = [float(r["eval_top1"]) for r in rows if r["variant"] == v and r["label"] == lab]
            if not acc:
                cells.append("—")
            elif len(acc) == 1:
                cells.append(f"{acc[0]:.1f} (1 seed)")
            else:
                cells.append(f"{statistics.mean(acc):.1f} ± {statistics.stdev(acc):.1f} ({len(acc)} seeds)")
        params = next(int(r["params"]) for r in rows if r["variant"] == v)
        lines.append(f"| {v}: {VIDEO_DESCRIPTIONS[v]} | {params / 1e6:.3f}M | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.video_compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--models", nargs="+", default=list(VIDEO_VARIANTS), choices=list(VIDEO_VARIANTS))
    p.add_argument("--labels", nargs="+", default=["class", "direction"], choices=["class", "direction"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("overrides", nargs="*", help="key=value overrides of the recipe, the same for every run (after --)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    total = len(args.labels) * len(args.models) * len(args.seeds)
    t0 = time.time()
    for label in args.labels:
        for variant in args.models:
            for seed in args.seeds:
                row = run_one(args.out, label, variant, seed, args.overrides)
                rows.append(row)
                print(f"[{len(rows)}/{total}] {label:9s} {variant:8s} seed {seed}: top-1 {row['eval_top1']:.2f}% "
                      f"({row['seconds']}s; {time.time() - t0:.0f}s elapsed)", flush=True)
                with open(args.out / "runs.csv", "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=COLUMNS)
                    writer.writeheader()
                    writer.writerows(rows)
    print(write_table(rows, args.out / "table.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
