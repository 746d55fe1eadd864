"""Side-by-side image classification: models × seeds with one recipe and budget; CSV logs and a summary per run.

Example (the full comparison, one GPU)::

    python -m benchmarks.evidence.run_classification --dataset fashion_mnist --models main pe decay design \
        --seeds 0 1 2 --epochs 30 --embed-dim 192 --depth 12 --heads 3 --patch 4 --out runs/evidence/fmnist
    python -m benchmarks.evidence.make_tables runs/evidence/fmnist

Every run writes ``<out>/<variant>/seed<k>/epochs.csv`` (one row per epoch: ``epoch, step, lr, train_loss,
train_top1, eval_loss, eval_top1, epoch_time_s`` — the column names of ``lightnet.train``'s ``RunLogger``) and
``summary.json`` (final top-1 at the training size and at every resolution-transfer size/mode, parameters,
wall-clock, the full configuration). Runs whose ``summary.json`` exists are skipped, so an interrupted sweep
continues where it stopped.

Training loop: a small self-contained loop (AdamW, linear warm-up + cosine, label smoothing, gradient clipping,
bf16 autocast on CUDA) rather than ``lightnet.train.Trainer``: the sweep needs models built outside the timm
registry (the swapped-mixer baselines) and whole-dataset tensors on the device (no per-item PIL transforms), and a
run here is a few seconds to minutes. Same seed → same initialisation, data order and augmentation for every
model (the generators are seeded per run).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .data import ImageTensors, augment_batch, load_image_tensors, place
from .models import GROUPS, VARIANTS, ModelSize, build_classifier, count_parameters, describe

EPOCH_COLUMNS = ["epoch", "step", "lr", "train_loss", "train_top1", "eval_loss", "eval_top1", "epoch_time_s"]


def expand_models(names: Iterable[str]) -> List[str]:
    """Variant names and group shorthands (``main``, ``pe``, ``decay``, ``design``, ``all``) → unique variants."""
    out: List[str] = []
    for name in names:
        if name == "all":
            expanded = list(VARIANTS)
        elif name in GROUPS:
            expanded = list(GROUPS[name])
        elif name in VARIANTS:
            expanded = [name]
        else:
            raise SystemExit(f"unknown model {name!r}; choose from {sorted(VARIANTS)} or groups {sorted(GROUPS)} / all")
        out += [m for m in expanded if m not in out]
    return out


def backend_overrides(variant: str, attn_backend: str, scan_backend: str) -> Dict[str, Any]:
    """Kernel choices for ``build_classifier``: LightNet's attention backend, or the scan baselines' recurrence."""
    family = VARIANTS[variant][0]
    if family == "lightnet":
        return {"attn_backend": attn_backend}
    if family == "scan":
        return {"mixer": {"backend": scan_backend}}
    return {}


def transfer_keys(train_size: int, eval_sizes: Iterable[int], modes: Iterable[str]) -> List[Tuple[str, int, str]]:
    """``(key, size, mode)`` for every evaluation; the training size is evaluated once (``top1@32``)."""
    keys = [(f"top1@{train_size}", train_size, "resize")]
    for s in eval_sizes:
        if s == train_size:
            continue
        keys += [(f"top1@{s}_{m}", s, m) for m in modes]
    return keys


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageTensors, size: int, train_size: int, mode: str, device: torch.device,
             batch_size: int = 500, amp: bool = False) -> Tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy on the test split at input ``size`` (``mode`` 'resize' or 'pad')."""
    model.eval()
    correct, loss_sum, n = 0, 0.0, 0
    for i in range(0, len(data.y_test), batch_size):
        x = place(data.x_test[i : i + batch_size], size, train_size, mode, data.mean, data.std).to(device)
        y = data.y_test[i : i + batch_size].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
        n += len(y)
    return correct / n, loss_sum / n


def _param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """No weight decay on biases, norms, 1-D parameters and whatever the model lists in ``no_weight_decay``."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip or any(name.startswith(s) for s in skip) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total: int, warmup: int, lr: float, min_lr: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``lr`` to ``min_lr`` at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def train_run(variant: str, seed: int, data: ImageTensors, args: argparse.Namespace, run_dir: Path,
              device: torch.device) -> Dict[str, Any]:
    """Train one ``variant`` with ``seed``; writes ``epochs.csv`` and ``summary.json`` into ``run_dir``."""
    size = ModelSize(img_size=args.train_size, patch_size=args.patch, in_chans=1, num_classes=data.num_classes,
                     embed_dim=args.embed_dim, depth=args.depth, num_heads=args.heads, drop_path_rate=args.drop_path)
    torch.manual_seed(seed)
    model = build_classifier(variant, size, **backend_overrides(variant, args.attn_backend, args.scan_backend)).to(device)
    params = count_parameters(model)
    opt = torch.optim.AdamW(_param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(10_000 + seed)
    n_train = len(data.y_train)
    steps_per_epoch = n_train // args.batch_size
    if steps_per_epoch < 1:
        raise SystemExit(f"batch size {args.batch_size} is larger than the training set ({n_train})")
    total = steps_per_epoch * args.epochs
    warmup = int(round(args.warmup_epochs * steps_per_epoch))
    amp = device.type == "cuda" and args.amp
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "epochs.csv"
    step, t_start, last = 0, time.perf_counter(), {}
    with open(log_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EPOCH_COLUMNS)
        writer.writeheader()
        for epoch in range(1, args.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            order = torch.randperm(n_train, generator=gen)
            loss_sum, correct, seen = 0.0, 0, 0
            for b in range(steps_per_epoch):
                idx = order[b * args.batch_size : (b + 1) * args.batch_size]
                x = augment_batch(data.x_train[idx], args.train_size, args.shift, args.flip, gen)
                x = ((x - data.mean) / data.std).to(device)
                y = data.y_train[idx].to(device)
                lr = lr_at(step, total, warmup, args.lr, args.min_lr)
                for group in opt.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=args.label_smoothing)
                if not torch.isfinite(loss):
                    raise RuntimeError(f"{variant} seed {seed}: non-finite loss at step {step + 1}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if args.clip_grad:
                    nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
                opt.step()
                step += 1
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(-1) == y).sum())
                seen += len(y)
            eval_top1, eval_loss = evaluate(model, data, args.train_size, args.train_size, "resize", device, amp=amp)
            last = {
                "epoch": epoch, "step": step, "lr": f"{lr:.6g}", "train_loss": f"{loss_sum / seen:.5f}",
                "train_top1": f"{correct / seen:.5f}", "eval_loss": f"{eval_loss:.5f}", "eval_top1": f"{eval_top1:.5f}",
                "epoch_time_s": f"{time.perf_counter() - t0:.2f}",
            }
            writer.writerow(last)
            f.flush()
            if args.verbose:
                print(f"  {variant} seed {seed} epoch {epoch}: loss {last['train_loss']} top1 {last['eval_top1']}",
                      file=sys.stderr)
    train_time = time.perf_counter() - t_start
    transfer = {}
    for key, s, mode in transfer_keys(args.train_size, args.eval_sizes, args.transfer_modes):
        transfer[key] = evaluate(model, data, s, args.train_size, mode, device, amp=amp)[0]
    summary = {
        **describe(variant, size),
        "seed": seed,
        "dataset": data.name,
        "train_examples": n_train,
        "test_examples": len(data.y_test),
        "params": params,
        "epochs": args.epochs,
        "steps": step,
        "train_time_s": round(train_time, 2),
        "final_eval_top1": float(last["eval_top1"]),
        "transfer": transfer,
        "device": str(device),
        "torch": torch.__version__,
        "args": {k: v for k, v in vars(args).items() if k not in ("models", "seeds")},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "digits"])
    p.add_argument("--models", nargs="+", default=["main"], help="variants or groups: " + ", ".join([*GROUPS, "all"]))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST idx files (default: Debian's)")
    p.add_argument("--out", type=Path, default=Path("runs/evidence"))
    p.add_argument("--train-limit", type=int, default=None, help="fixed random subset of the training split")
    p.add_argument("--test-limit", type=int, default=None, help="fixed random subset of the test split")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--shift", type=int, default=2, help="random translation (px) of the training placement")
    p.add_argument("--flip", action="store_true", help="random horizontal flips")
    p.add_argument("--train-size", type=int, default=32, help="training canvas (28 or 32)")
    p.add_argument("--eval-sizes", type=int, nargs="+", default=[40, 48], help="resolution-transfer sizes")
    p.add_argument("--transfer-modes", nargs="+", default=["resize", "pad"], choices=["resize", "pad"])
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--embed-dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--attn-backend", default="auto", choices=["auto", "torch", "triton"],
                   help="LightNet attention kernels (auto: Triton on CUDA)")
    p.add_argument("--scan-backend", default="auto", choices=["auto", "torch", "fla"],
                   help="recurrence of the scan baselines (auto: fla chunk_gla on CUDA when installed)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable bf16 autocast on CUDA")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--force", action="store_true", help="rerun runs that already have a summary.json")
    p.add_argument("--verbose", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for s in [args.train_size, *args.eval_sizes]:
        if s % args.patch:
            raise SystemExit(f"image size {s} is not divisible by the patch size {args.patch}")
    models = expand_models(args.models)
    device = torch.device(args.device)
    data = load_image_tensors(args.dataset, args.train_limit, args.test_limit, root=args.data_root)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(m, s) for m in models for s in args.seeds]
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = lambda x, **_: x  # noqa: E731
    bar = tqdm(jobs, desc="runs", unit="run")
    for variant, seed in bar:
        run_dir = args.out / variant / f"seed{seed}"
        if (run_dir / "summary.json").exists() and not args.force:
            continue
        summary = train_run(variant, seed, data, args, run_dir, device)
        msg = (f"{variant:>13} seed {seed}: top1 {summary['final_eval_top1']:.4f}  "
               + "  ".join(f"{k} {v:.4f}" for k, v in summary["transfer"].items() if k != f"top1@{args.train_size}")
               + f"  ({summary['params'] / 1e6:.2f}M params, {summary['train_time_s']:.0f}s)")
        bar.write(msg) if hasattr(bar, "write") else print(msg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
