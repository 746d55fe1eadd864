"""Side-by-side image classification: models × seeds with one recipe and budget; CSV logs and a summary per run.

Example (the full comparison, one GPU)::

    python -m experiments.run_classification --dataset fashion_mnist --models main pe decay design \
        --seeds 0 1 2 --epochs 30 --embed-dim 192 --depth 12 --heads 3 --patch 4 --out runs/evidence/fmnist
    python -m experiments.make_tables runs/evidence/fmnist

Every run writes ``<out>/<variant>/seed<k>/epochs.csv`` (one row per epoch: ``epoch, step, lr, train_loss,
train_top1, eval_loss, eval_top1, epoch_time_s`` — the column names of ``lightnet.train``'s ``RunLogger``) and
``summary.json`` (final top-1 at the training size and at every resolution-transfer size/mode, parameters,
wall-clock, the full configuration). Runs whose ``summary.json`` exists are skipped, so an interrupted sweep
continues where it stopped. Every finished epoch also leaves ``checkpoint.pt`` (weights, optimizer, step, random
generator states; loaded with ``weights_only=True``), so a run stopped mid-way — killed, or paused by
``--time-limit`` / ``--stop-after-epochs`` — continues from its last finished epoch, bitwise on the CPU; the
checkpoint is deleted once ``summary.json`` is written.

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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from lightnet.train.checkpoint import atomic_torch_save, safe_torch_load, save_safetensors
from lightnet.train.rng import capture_rng_state, restore_rng_state

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


def backend_overrides(variant: str, attn_backend: str, scan_backend: str, scan_chunk: Optional[int] = None,
                      scan_recompute: bool = True) -> Dict[str, Any]:
    """Kernel choices for ``build_classifier``: LightNet's attention backend, or the scan baselines' recurrence
    (backend, chunk length of the PyTorch recurrence, recomputation in the backward). None of them
    changes the model."""
    family = VARIANTS[variant][0]
    if family == "lightnet":
        return {"attn_backend": attn_backend}
    if family == "scan":
        mixer: Dict[str, Any] = {"backend": scan_backend, "recompute": scan_recompute}
        if scan_chunk is not None:
            mixer["chunk_size"] = scan_chunk
        return {"mixer": mixer}
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
    """Top-1 accuracy and mean cross-entropy on the test split at input ``size`` (``mode`` 'resize' or 'pad').

    Runs eagerly even where ``--compile blocks`` compiled the model's blocks in place: every evaluated size and the
    eval mode would each build another graph."""
    with torch.compiler.set_stance("force_eager"):
        return _evaluate(model, data, size, train_size, mode, device, batch_size, amp)


def _evaluate(model: nn.Module, data: ImageTensors, size: int, train_size: int, mode: str, device: torch.device,
              batch_size: int, amp: bool) -> Tuple[float, float]:
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


def _save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, epoch: int,
                     step: int, train_time: float, last: Dict[str, Any]) -> None:
    """State after ``epoch`` finished epochs (``lightnet.train``'s atomic save: never half-written)."""
    atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                       "rng": capture_rng_state(), "epoch": epoch, "step": step, "train_time": train_time,
                       "last": last}, path)


def _load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator) -> Dict[str, Any]:
    """Restore what :func:`_save_checkpoint` wrote (``weights_only`` load); returns ``{epoch, step, train_time,
    last}``."""
    state = safe_torch_load(path)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    restore_rng_state(state["rng"])
    return {k: state[k] for k in ("epoch", "step", "train_time", "last")}


def _truncate_log(log_path: Path, epochs: int) -> None:
    """Keep the header and the rows of the first ``epochs`` epochs (rows written after the last checkpoint go)."""
    with open(log_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epochs]
    with open(log_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EPOCH_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _out_of_time(args: argparse.Namespace, epochs_this_call: int, next_epoch_s: float) -> bool:
    """Whether to pause before the next epoch: ``--stop-after-epochs`` reached, or the next epoch (estimated to last
    ``next_epoch_s``) would end after ``--time-limit`` seconds from the start of the process."""
    if args.stop_after_epochs is not None and epochs_this_call >= args.stop_after_epochs:
        return True
    deadline = getattr(args, "deadline", None)
    return deadline is not None and time.monotonic() + next_epoch_s > deadline


def next_epoch_estimate(epoch_s: float, first_step_s: Optional[float], later_step_s: Optional[float]) -> float:
    """Seconds the next epoch should take, from the last one: when the last one was the first of this process, its
    first step (compilation, fla's autotuning: 254 s of a 273 s epoch once) counts as one steady step (as
    measured by the epoch's later steps; ``None`` where the epoch had no later step: the last epoch's time)."""
    if first_step_s is None or later_step_s is None:
        return epoch_s
    return epoch_s - first_step_s + later_step_s


def _build_model(variant: str, data: ImageTensors, args: argparse.Namespace,
                 device: torch.device) -> Tuple[nn.Module, ModelSize]:
    """``(model on device, its size)`` of ``variant`` with the command line's geometry and kernel backends."""
    size = ModelSize(img_size=args.train_size, patch_size=args.patch, in_chans=1, num_classes=data.num_classes,
                     embed_dim=args.embed_dim, depth=args.depth, num_heads=args.heads, drop_path_rate=args.drop_path)
    model = build_classifier(variant, size, **backend_overrides(variant, args.attn_backend, args.scan_backend,
                                                                args.scan_chunk, args.scan_recompute))
    return model.to(device), size


def warm_caches(variant: str, data: ImageTensors, args: argparse.Namespace, device: torch.device) -> None:
    """One training step and one evaluation batch at every evaluated size, nothing saved: fills the kernels'
    autotuning and compilation caches (fla's chunk_gla autotunes for minutes per process: warm once, then launch
    the parallel runs, which read Triton's on-disk autotune cache)."""
    model, _ = _build_model(variant, data, args, device)
    amp = device.type == "cuda" and args.amp
    idx = torch.arange(min(args.batch_size, len(data.y_train)))
    x = ((augment_batch(data.x_train[idx], args.train_size, 0, False, torch.Generator()) - data.mean) / data.std)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(model(x.to(device)).float(), data.y_train[idx].to(device))
    loss.backward()
    sub = replace(data, x_test=data.x_test[:500], y_test=data.y_test[:500])
    for _, s, mode in transfer_keys(args.train_size, args.eval_sizes, args.transfer_modes):
        evaluate(model, sub, s, args.train_size, mode, device, amp=amp)


# the parts of a block that ``--compile blocks`` compiles; the drop-path modules stay eager: their rates differ from
# block to block, and as guarded constants they would give every block its own graph
COMPILED_BLOCK_PARTS = ("norm1", "attn", "norm2", "mlp")


def compile_for_training(model: nn.Module, scope: Optional[str]) -> nn.Module:
    """The module the training step calls: ``model`` itself (``scope`` None), ``torch.compile(model)`` (``'model'``:
    one graph, slow to build for the scan baselines: the 4-scan model had not finished its first step after
    130 s), or ``model`` with the norms, token mixer and MLP of each of its ``blocks`` compiled in place
    (``'blocks'``: regional compilation; identical parts of different blocks share one compiled graph, so the
    2-scan classifier's first step took 15 instead of 101 s on two CPU cores). Evaluation runs eager either way
    (:func:`evaluate`); the state dict keeps its keys."""
    if scope is None:
        return model
    if scope == "model":
        return torch.compile(model)
    if scope != "blocks":
        raise ValueError(f"compile scope must be 'model' or 'blocks', got {scope!r}")
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or len(blocks) == 0:
        raise ValueError(f"--compile blocks: {type(model).__name__} has no 'blocks' (nn.Sequential / nn.ModuleList) "
                         "to compile")
    for block in blocks:
        parts = [getattr(block, name, None) for name in COMPILED_BLOCK_PARTS]
        if not all(isinstance(part, nn.Module) for part in parts):
            raise ValueError(f"--compile blocks: each block needs the submodules {COMPILED_BLOCK_PARTS}")
        for part in parts:
            part.compile()
    return model


def _synced_elapsed(t0: float, device: torch.device) -> float:
    """Seconds since ``t0`` once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def train_run(variant: str, seed: int, data: ImageTensors, args: argparse.Namespace, run_dir: Path,
              device: torch.device) -> Optional[Dict[str, Any]]:
    """Train one ``variant`` with ``seed``; writes ``epochs.csv``, ``checkpoint.pt`` after every epoch and, at the
    end, ``summary.json`` into ``run_dir``. Continues from ``checkpoint.pt`` when one is there; returns None when
    paused by ``--time-limit`` / ``--stop-after-epochs`` before the last epoch (the checkpoint stays)."""
    torch.manual_seed(seed)
    model, size = _build_model(variant, data, args, device)
    step_model = compile_for_training(model, args.compile)
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
    log_path, ckpt_path = run_dir / "epochs.csv", run_dir / "checkpoint.pt"
    step, done, train_time, last, next_epoch_s = 0, 0, 0.0, {}, 0.0
    if ckpt_path.exists() and not args.force:
        resumed = _load_checkpoint(ckpt_path, model, opt, gen)
        done, step, train_time, last = resumed["epoch"], resumed["step"], resumed["train_time"], resumed["last"]
        _truncate_log(log_path, done)
        print(f"{variant} seed {seed}: continuing after epoch {done} (step {step})", file=sys.stderr)
    else:
        ckpt_path.unlink(missing_ok=True)
        with open(log_path, "w", newline="") as f:
            csv.DictWriter(f, fieldnames=EPOCH_COLUMNS).writeheader()
    with open(log_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EPOCH_COLUMNS)
        for epoch in range(done + 1, args.epochs + 1):
            if _out_of_time(args, epoch - 1 - done, next_epoch_s):
                print(f"{variant} seed {seed}: paused after epoch {epoch - 1} of {args.epochs} ({ckpt_path})",
                      file=sys.stderr)
                return None
            model.train()
            t0 = time.perf_counter()
            order = torch.randperm(n_train, generator=gen)
            # running sums stay on the device: no host sync per step (read once at the end of the epoch)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen, first_s, later_step_s = 0, None, None
            for b in range(steps_per_epoch):
                idx = order[b * args.batch_size : (b + 1) * args.batch_size]
                x = augment_batch(data.x_train[idx], args.train_size, args.shift, args.flip, gen)
                x = ((x - data.mean) / data.std).to(device)
                y = data.y_train[idx].to(device)
                lr = lr_at(step, total, warmup, args.lr, args.min_lr)
                for group in opt.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = step_model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=args.label_smoothing)
                if not torch.isfinite(loss):
                    raise RuntimeError(f"{variant} seed {seed}: non-finite loss at step {step + 1}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if args.clip_grad:
                    nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
                opt.step()
                step += 1
                loss_sum += loss.detach().double() * len(y)
                correct += (logits.argmax(-1) == y).sum()
                seen += len(y)
                if epoch == done + 1 and b == 0:  # what a cut run leaves in its log: compile / autotune cost ...
                    first_s = _synced_elapsed(t0, device)
                    print(f"{variant} seed {seed}: first step done after {first_s:.1f} s", file=sys.stderr, flush=True)
                elif epoch == done + 1 and b == steps_per_epoch - 1:  # ... then the steady step time
                    later = _synced_elapsed(t0, device) - first_s
                    later_step_s = later / b
                    print(f"{variant} seed {seed}: {b} later steps in {later:.1f} s ({1e3 * later / b:.1f} ms/step)",
                          file=sys.stderr, flush=True)
            loss_sum, correct = float(loss_sum), int(correct)
            eval_top1, eval_loss = evaluate(model, data, args.train_size, args.train_size, "resize", device, amp=amp)
            last_epoch_s = time.perf_counter() - t0
            next_epoch_s = next_epoch_estimate(last_epoch_s, first_s, later_step_s)
            train_time += last_epoch_s
            last = {
                "epoch": epoch, "step": step, "lr": f"{lr:.6g}", "train_loss": f"{loss_sum / seen:.5f}",
                "train_top1": f"{correct / seen:.5f}", "eval_loss": f"{eval_loss:.5f}", "eval_top1": f"{eval_top1:.5f}",
                "epoch_time_s": f"{time.perf_counter() - t0:.2f}",
            }
            writer.writerow(last)
            f.flush()
            _save_checkpoint(ckpt_path, model, opt, gen, epoch, step, train_time, last)
            if args.verbose:
                print(f"  {variant} seed {seed} epoch {epoch}: loss {last['train_loss']} top1 {last['eval_top1']}",
                      file=sys.stderr)
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
    if args.save_weights:  # bf16 copy of the final weights (5.4 M parameters → 11 MB: small enough to copy back)
        save_safetensors({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()},
                         run_dir / "model_bf16.safetensors")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    ckpt_path.unlink(missing_ok=True)
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
    p.add_argument("--scan-chunk", type=int, default=None,
                   help="chunk length of the scan baselines' PyTorch recurrence (default: the mixer's 32; 8 "
                        "fastest at 64 tokens)")
    p.add_argument("--scan-no-recompute", dest="scan_recompute", action="store_false",
                   help="save the PyTorch recurrence's intermediates instead of recomputing them in the backward")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable bf16 autocast on CUDA")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--force", action="store_true",
                   help="rerun runs that already have a summary.json (and ignore their checkpoint.pt)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds from the start: pause (checkpoint kept) before an epoch that would end later")
    p.add_argument("--stop-after-epochs", type=int, default=None, help="pause each run after this many epochs")
    p.add_argument("--compile", nargs="?", const="blocks", default=None, choices=["blocks", "model"],
                   help="torch.compile the training step: each block (regional, shared graph; the default when the "
                        "flag has no value) or the whole model; evaluation stays eager")
    p.add_argument("--save-weights", action="store_true",
                   help="also write the final weights as model_bf16.safetensors (bf16) for offline analysis")
    p.add_argument("--warm-only", action="store_true",
                   help="only run one step and the evaluations of each model (fills autotune/compile caches)")
    p.add_argument("--verbose", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.deadline = None if args.time_limit is None else time.monotonic() + args.time_limit
    if args.threads:
        torch.set_num_threads(args.threads)
    for s in [args.train_size, *args.eval_sizes]:
        if s % args.patch:
            raise SystemExit(f"image size {s} is not divisible by the patch size {args.patch}")
    models = expand_models(args.models)
    device = torch.device(args.device)
    data = load_image_tensors(args.dataset, args.train_limit, args.test_limit, root=args.data_root)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.warm_only:
        for variant in models:
            t0 = time.perf_counter()
            warm_caches(variant, data, args, device)
            print(f"warmed {variant} in {time.perf_counter() - t0:.1f}s", flush=True)
        return 0
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
        if args.deadline is not None and time.monotonic() > args.deadline:
            bar.write(f"time limit reached: {variant} seed {seed} not started")
            continue
        summary = train_run(variant, seed, data, args, run_dir, device)
        if summary is None:
            continue
        msg = (f"{variant:>13} seed {seed}: top1 {summary['final_eval_top1']:.4f}  "
               + "  ".join(f"{k} {v:.4f}" for k, v in summary["transfer"].items() if k != f"top1@{args.train_size}")
               + f"  ({summary['params'] / 1e6:.2f}M params, {summary['train_time_s']:.0f}s)")
        bar.write(msg) if hasattr(bar, "write") else print(msg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
