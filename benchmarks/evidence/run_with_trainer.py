"""The same side-by-side comparison through ``lightnet train`` (the shared classification trainer on accelerate).

    python -m benchmarks.evidence.run_with_trainer --recipe fashion_mnist --models main --seeds 0 1 2 \
        --out runs/evidence/fmnist_trainer --set run.epochs=30 run.mixed_precision=bf16 \
        model_kwargs.embed_dim=192 model_kwargs.depth=12 model_kwargs.num_heads=3 model_kwargs.mlp_ratio=2.6667
    python -m benchmarks.evidence.make_tables runs/evidence/fmnist_trainer

Every variant of :mod:`benchmarks.evidence.models` is registered with timm as ``evidence_<variant>``; each run is
``lightnet.train.classify.train`` with the recipe (``configs/<recipe>.yaml``), the ``--set key=value`` overrides
given here (same for every model), ``model=evidence_<variant>`` and ``run.seed=<seed>``, written to
``<out>/<variant>/seed<seed>/`` (the trainer's ``epochs.csv``, ``steps.csv``, checkpoints, ``config.yaml``).
Afterwards the final weights are reloaded and evaluated at the resolution-transfer sizes (no fine-tuning; same
``resize``/``pad`` placements as ``run_classification.py``), and a ``summary.json`` in the format ``make_tables``
reads is written. The trainer's input pipeline is timm's (random resized crops at ``data.img_size``), so these
runs train at ``data.img_size`` by resizing, not on a zero-padded canvas.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import List, Optional

import torch

from lightnet.train.checkpoint import load_model_weights
from lightnet.train.classify import ClassifyConfig, build_classifier, train
from lightnet.train.config import build_config
from lightnet.train.datasets import build_image_dataset

from .data import load_image_tensors
from .models import GROUPS, VARIANTS, register_timm_variants
from .run_classification import evaluate, expand_models, transfer_keys


def run_one(variant: str, seed: int, args: argparse.Namespace) -> dict:
    """Train ``variant`` with ``seed`` through ``lightnet train``; evaluate transfer; write ``summary.json``."""
    run_dir = args.out / variant / f"seed{seed}"
    overrides = [*args.overrides, f"model=evidence_{variant}", f"run.seed={seed}", f"run.run_dir={run_dir}",
                 f"name={variant}"]
    cfg = build_config(ClassifyConfig, args.recipe, overrides)
    result = train(cfg)
    train_ds, info = build_image_dataset(cfg.data.dataset, "train", cfg.data.root)
    in_chans = cfg.data.in_chans or info.in_chans
    model = build_classifier(cfg, info.num_classes, in_chans)
    load_model_weights(model, result.checkpoint)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_eval else "cpu")
    model.to(device)
    mean = (cfg.data.mean or info.mean)[0]
    std = (cfg.data.std or info.std)[0]
    data = dataclasses.replace(load_image_tensors(cfg.data.dataset, train_limit=1, test_limit=args.test_limit),
                               mean=float(mean), std=float(std))
    size = cfg.data.img_size
    transfer = {key: evaluate(model, data, s, size, mode, device)[0]
                for key, s, mode in transfer_keys(size, args.eval_sizes, args.transfer_modes)}
    kwargs = dict(cfg.model_kwargs)
    model_size = dict(img_size=size, patch_size=kwargs.get("patch_size"), embed_dim=kwargs.get("embed_dim"),
                      depth=kwargs.get("depth"), num_heads=kwargs.get("num_heads"))
    summary = {
        "variant": variant,
        "family": VARIANTS[variant][0],
        "engine": "lightnet.train",
        "seed": seed,
        "dataset": info.name,
        "size": model_size,
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": cfg.run.epochs,
        "steps": result.state.step,
        "train_examples": len(train_ds),
        "test_examples": len(data.y_test),
        "train_time_s": round(result.seconds, 2),
        "final_eval_top1": result.metrics["eval_top1"] / 100.0,
        "eval_top1_unit": "percent",  # the trainer's epochs.csv logs top-1 in %
        "transfer": transfer,
        "device": str(device),
        "torch": torch.__version__,
        "args": {"recipe": args.recipe, "overrides": args.overrides, "batch_size": cfg.data.batch_size,
                 "lr": cfg.optim.lr},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Evidence comparison through the lightnet train trainer.")
    p.add_argument("--recipe", default="fashion_mnist", help="recipe name or YAML path (configs/)")
    p.add_argument("--models", nargs="+", default=["main"], help="variants or groups: " + ", ".join([*GROUPS, "all"]))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/evidence/trainer"))
    p.add_argument("--eval-sizes", type=int, nargs="+", default=[40, 48])
    p.add_argument("--transfer-modes", nargs="+", default=["resize", "pad"], choices=["resize", "pad"])
    p.add_argument("--test-limit", type=int, default=None, help="subset of the test split for the transfer evaluation")
    p.add_argument("--cpu-eval", action="store_true", help="run the transfer evaluation on the CPU")
    p.add_argument("--force", action="store_true")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="recipe overrides (lightnet train syntax), applied to every run")
    args = p.parse_args(argv)
    register_timm_variants()
    for variant in expand_models(args.models):
        for seed in args.seeds:
            if (args.out / variant / f"seed{seed}" / "summary.json").exists() and not args.force:
                continue
            s = run_one(variant, seed, args)
            print(f"{variant} seed {seed}: top1 {s['final_eval_top1']:.4f} "
                  + " ".join(f"{k} {v:.4f}" for k, v in s["transfer"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
