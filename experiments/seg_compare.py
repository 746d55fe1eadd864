"""LightNet vs ViT as the encoder of the same smp DPT decoder on Fashion-MNIST mosaics, over seeds (CPU scale).

Every run is ``lightnet train-seg -c seg_fashion_mosaic`` (:func:`lightnet.train.segment.train_seg`) with the same
overrides; only ``encoder=`` differs (``lightnet_tiny`` / ``vit_small_patch16_224``, both cut to the recipe's
``encoder_kwargs``: width 64, 4 blocks, 2 heads, patch 8). Writes to ``--out``:

* ``results.csv`` / ``results.md`` — one row per run (mIoU incl. background, item-class mIoU, pixel accuracy,
  the all-background baseline, parameters, seconds) and the mean ± std per encoder;
* ``overlays.png`` — the seed-``seeds[0]`` models on the same evaluation canvases: input / truth / LightNet / ViT;
* ``runs/<encoder>_s<seed>/`` — each run's folder (logs, curves, checkpoints).

    python -m experiments.seg_compare --out runs/seg_compare --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

ENCODERS = {"lightnet": "lightnet_tiny", "vit": "vit_small_patch16_224"}
# the study's budget: 128-px canvases, 40 updates per epoch x 4 epochs, 64 evaluation canvases
DEFAULT_SET = ["data.train_size=640", "data.eval_size=64", "run.epochs=4", "run.progress=false",
               "run.tensorboard=false", "run.threads=1"]


def run_one(encoder: str, seed: int, out: Path, overrides: List[str]) -> dict:
    """Train one encoder for one seed; returns its ``final_metrics.json``."""
    from lightnet.train.config import build_config
    from lightnet.train.segment import SegTrainConfig, train_seg

    run_dir = out / "runs" / f"{encoder}_s{seed}"
    cfg = build_config(SegTrainConfig, "seg_fashion_mosaic",
                       [*DEFAULT_SET, *overrides, f"encoder={ENCODERS[encoder]}", f"run.seed={seed}",
                        f"run.run_dir={run_dir}"])
    train_seg(cfg)
    metrics = json.loads((run_dir / "final_metrics.json").read_text())
    return {**metrics, "timm_name": metrics["encoder"], "encoder": encoder, "seed": seed}


def _mean_std(values: List[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def write_tables(rows: List[dict], out: Path) -> str:
    """``results.csv`` (per run) and ``results.md`` (per run + mean ± std per encoder); returns the markdown."""
    cols = ["encoder", "seed", "eval_miou", "eval_miou_fg", "eval_pixel_acc", "baseline_miou", "encoder_params",
            "params", "step", "seconds"]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = ["| encoder | seeds | mIoU, 11 classes incl. background (%) | mIoU, 10 item classes (%) | "
             "pixel accuracy (%) | all-background mIoU (%) | encoder params | train s / run |",
             "|---|---|---|---|---|---|---|---|"]
    for enc in ENCODERS:
        r = [x for x in rows if x["encoder"] == enc]
        if not r:
            continue
        lines.append(f"| {enc} (`{ENCODERS[enc]}` cut to the recipe's size) | {len(r)} | "
                     f"{_mean_std([x['eval_miou'] for x in r])} | {_mean_std([x['eval_miou_fg'] for x in r])} | "
                     f"{_mean_std([x['eval_pixel_acc'] for x in r])} | {_mean_std([x['baseline_miou'] for x in r])} | "
                     f"{r[0]['encoder_params'] / 1e6:.3f}M | {statistics.mean(x['seconds'] for x in r):.0f} |")
    lines += ["", "| encoder | seed | mIoU | mIoU items | pixel acc. |", "|---|---|---|---|---|"]
    lines += [f"| {x['encoder']} | {x['seed']} | {x['eval_miou']:.2f} | {x['eval_miou_fg']:.2f} | "
              f"{x['eval_pixel_acc']:.2f} |" for x in rows]
    md = "\n".join(lines) + "\n"
    (out / "results.md").write_text(md)
    return md


@torch.no_grad()
def side_by_side(out: Path, seed: int, samples: int = 4) -> Path:
    """``overlays.png``: input / truth / LightNet / ViT on the first evaluation canvases of seed ``seed``."""
    from lightnet.train.checkpoint import load_model_weights
    from lightnet.train.config import build_config, load_yaml
    from lightnet.train.segment import SegTrainConfig, _datasets, build_segmentation_model
    from lightnet.train.seg_eval import overlay_grid

    preds, x, y = [], None, None
    for enc in ENCODERS:
        run_dir = out / "runs" / f"{enc}_s{seed}"
        cfg = build_config(SegTrainConfig, None, [], base=load_yaml(run_dir / "config.yaml"))
        model = build_segmentation_model(cfg, 11, in_chans=1)
        load_model_weights(model, run_dir / "model.safetensors")
        model.eval()
        _, eval_ds = _datasets(cfg)
        items = [eval_ds[i] for i in range(samples)]
        x = torch.stack([it[0] for it in items])
        y = torch.stack([it[1] for it in items])
        preds.append(model(x).argmax(1))
    # one row per canvas: input, truth, LightNet, ViT (overlay_grid draws three columns: two calls, stitched)
    from PIL import Image

    a = overlay_grid(x, y, preds[0], out / "_lightnet.png", titles=("input", "truth", "LightNet"))
    b = overlay_grid(x, y, preds[1], out / "_vit.png", titles=("input", "truth", "ViT"))
    ia, ib = Image.open(a).convert("RGB"), Image.open(b).convert("RGB")
    third = ib.width // 3
    both = Image.new("RGB", (ia.width + third, ia.height), "white")
    both.paste(ia, (0, 0))
    both.paste(ib.crop((ib.width - third, 0, ib.width, ib.height)), (ia.width, 0))
    path = out / "overlays.png"
    both.save(path)
    a.unlink()
    b.unlink()
    return path


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--encoders", nargs="+", choices=list(ENCODERS), default=list(ENCODERS))
    p.add_argument("--set", nargs="*", default=[], help="extra train-seg overrides for every run (key=value)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, t0 = [], time.time()
    for seed in args.seeds:
        for enc in args.encoders:
            rows.append(run_one(enc, seed, args.out, args.set))
            print(f"[seg_compare] {enc} seed {seed}: mIoU {rows[-1]['eval_miou']:.2f}% "
                  f"(items {rows[-1]['eval_miou_fg']:.2f}%), {time.time() - t0:.0f}s so far", flush=True)
            write_tables(rows, args.out)
    print(write_tables(rows, args.out))
    if set(args.encoders) == set(ENCODERS):
        print(f"overlays: {side_by_side(args.out, args.seeds[0])}")
    (args.out / "study.json").write_text(json.dumps({"seeds": args.seeds, "set": DEFAULT_SET + args.set,
                                                     "seconds": time.time() - t0, "torch": torch.__version__},
                                                    indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
