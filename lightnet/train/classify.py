"""Image classification: ``lightnet train`` and ``lightnet eval``.

``lightnet train [-c RECIPE] [--resume [RUN_DIR|CHECKPOINT|auto]] [key=value ...]``
    trains ``timm.create_model(cfg.model, ...)`` (any timm model, LightNet models register on
    ``import lightnet``) on a built-in dataset (digits, Fashion-MNIST) or an ImageFolder tree, with timm's
    transforms/Mixup/CutMix/label smoothing and optimizer/scheduler factories, on accelerate. With no
    arguments it runs the default recipe ``digits`` (``lightnet/configs/digits.yaml``) and writes
    ``runs/<timestamp>-digits/``.

``lightnet eval --checkpoint PATH [--img-size N] [--dataset NAME] [--root DIR] [--split SPLIT]``
    reports top-1/top-5 (and loss) of a checkpoint (run folder, checkpoint folder, or ``.safetensors``
    file with ``--config``), optionally at another input resolution than the training one.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from .checkpoint import CheckpointError, find_latest, load_model_weights
from .config import ConfigError, apply_overrides, config_from_dict, load_yaml
from .data import EpochBatchSampler, SeededDataset, make_loader
from .datasets import DatasetError, DatasetInfo, build_image_dataset
from .moving_fashion_mnist import MovingClipConfig, build_moving_dataset, is_video_dataset
from .parallel import ParallelConfig, ParallelLayout, parallel_layout
from .schema import OptimConfig, RunConfig, SchedConfig

__all__ = ["AugConfig", "ClassifyConfig", "DataConfig", "build_classifier", "evaluate_classifier", "eval_main",
           "train", "train_main"]

DEFAULT_RECIPE = "digits"


@dataclass
class DataConfig:
    """Dataset, input size and loader settings."""

    dataset: str = "digits"  # digits | fashion_mnist | imagefolder | moving_fashion_mnist (clips, video models)
    root: Optional[str] = None  # imagefolder root (train/ and val/ inside); optional for fashion_mnist
    eval_split: str = "test"  # held-out split (imagefolder: looks for this, val, validation, test)
    img_size: int = 16  # model input side; images are resized/cropped to it
    in_chans: Optional[int] = None  # default: the dataset's channel count
    batch_size: int = 64  # per process
    eval_batch_size: int = 256
    num_workers: int = 0
    mean: Optional[list[float]] = None  # default: the dataset's statistics
    std: Optional[list[float]] = None
    moving: MovingClipConfig = field(default_factory=MovingClipConfig)  # clips of moving_fashion_mnist (label: ...)


@dataclass
class AugConfig:
    """timm ``create_transform`` arguments, Mixup/CutMix and label smoothing."""

    no_aug: bool = False
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333333])
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter: Optional[float] = 0.4
    auto_augment: Optional[str] = None  # e.g. rand-m9-mstd0.5-inc1
    interpolation: str = "bilinear"  # training interpolation
    eval_interpolation: str = "bilinear"
    crop_pct: float = 0.875  # evaluation center-crop fraction
    re_prob: float = 0.0  # random erasing
    re_mode: str = "pixel"
    re_count: int = 1
    mixup: float = 0.0  # mixup alpha (0 = off)
    cutmix: float = 0.0  # cutmix alpha (0 = off)
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    smoothing: float = 0.0  # label smoothing


@dataclass
class ClassifyConfig:
    """Full config of ``lightnet train`` (YAML recipe sections: data, aug, optim, sched, run)."""

    name: str = "digits"
    model: str = "lightnet_tiny"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    drop_path: Optional[float] = None  # passed as drop_path_rate if set
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    run: RunConfig = field(default_factory=RunConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)


# --------------------------------------------------------------------------- model / data
def build_classifier(cfg: ClassifyConfig, num_classes: int, in_chans: int) -> torch.nn.Module:
    """``timm.create_model`` for the config (after ``import lightnet`` registers the LightNet models).

    ``img_size`` (= ``data.img_size`` unless ``model_kwargs`` sets it) is only passed to models that
    accept it (ViT-like); an unknown model name raises ``ValueError`` with close matches.
    """
    import timm

    import lightnet.video  # noqa: F401  (registers the lightnet_video_* models with timm)
    import lightnet.vision  # noqa: F401  (registers the lightnet_* models with timm)

    if not timm.is_model(cfg.model):
        names = timm.list_models()
        close = difflib.get_close_matches(cfg.model, names, n=5, cutoff=0.5)
        lightnets = [n for n in names if n.startswith("lightnet")]
        raise ValueError(f"unknown model {cfg.model!r}" + (f"; did you mean {close}?" if close else "")
                         + (f" LightNet models: {lightnets}" if lightnets else ""))
    kwargs = dict(cfg.model_kwargs)
    if is_video_dataset(cfg.data.dataset):
        kwargs.setdefault("img_size", cfg.data.moving.canvas)
        kwargs.setdefault("num_frames", cfg.data.moving.num_frames)
    kwargs.setdefault("img_size", cfg.data.img_size)
    if cfg.drop_path is not None:
        kwargs["drop_path_rate"] = cfg.drop_path
    try:
        return timm.create_model(cfg.model, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as e:
        if "img_size" in str(e) and "img_size" not in cfg.model_kwargs:
            kwargs.pop("img_size")
            return timm.create_model(cfg.model, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                     **kwargs)
        raise ValueError(f"timm.create_model({cfg.model!r}, **{kwargs}) rejected its arguments: {e}") from e


def _norm_stats(cfg: ClassifyConfig, info: DatasetInfo, in_chans: int) -> tuple[tuple, tuple]:
    mean = tuple(cfg.data.mean) if cfg.data.mean else tuple(info.mean)
    std = tuple(cfg.data.std) if cfg.data.std else tuple(info.std)
    if len(mean) != in_chans:
        mean = (sum(mean) / len(mean),) * in_chans
        std = (sum(std) / len(std),) * in_chans
    return mean, std


def _transform(cfg: ClassifyConfig, info: DatasetInfo, in_chans: int, training: bool, img_size: int | None = None):
    from timm.data import create_transform

    a = cfg.aug
    mean, std = _norm_stats(cfg, info, in_chans)
    size = (in_chans, img_size or cfg.data.img_size, img_size or cfg.data.img_size)
    if training:
        return create_transform(size, is_training=True, no_aug=a.no_aug, scale=tuple(a.scale), ratio=tuple(a.ratio),
                                hflip=a.hflip, vflip=a.vflip, color_jitter=a.color_jitter or 0.0,
                                auto_augment=a.auto_augment, interpolation=a.interpolation, mean=mean, std=std,
                                re_prob=a.re_prob, re_mode=a.re_mode, re_count=a.re_count)
    return create_transform(size, is_training=False, interpolation=a.eval_interpolation, mean=mean, std=std,
                            crop_pct=a.crop_pct)


def _datasets(cfg: ClassifyConfig, eval_only: bool = False, eval_img_size: int | None = None):
    """Returns ``(train_ds or None, eval_ds, info, in_chans)``."""
    if is_video_dataset(cfg.data.dataset):
        seed = cfg.run.seed
        eval_ds, info = build_moving_dataset(cfg.data.moving, cfg.data.eval_split, seed, cfg.data.root)
        train_ds = None if eval_only else build_moving_dataset(cfg.data.moving, "train", seed, cfg.data.root)[0]
        return train_ds, eval_ds, info, 1
    _, info = build_image_dataset(cfg.data.dataset, cfg.data.eval_split, cfg.data.root, None, cfg.data.in_chans)
    in_chans = cfg.data.in_chans or info.in_chans
    train_ds = None
    if not eval_only:
        train_ds, _ = build_image_dataset(cfg.data.dataset, "train", cfg.data.root,
                                          _transform(cfg, info, in_chans, True), in_chans)
    eval_ds, _ = build_image_dataset(cfg.data.dataset, cfg.data.eval_split, cfg.data.root,
                                     _transform(cfg, info, in_chans, False, eval_img_size), in_chans)
    return train_ds, eval_ds, info, in_chans


def _loss_and_mixup(cfg: ClassifyConfig, num_classes: int):
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    a = cfg.aug
    mixup = None
    if a.mixup > 0 or a.cutmix > 0:
        if cfg.data.batch_size % 2:
            raise ConfigError(f"mixup/cutmix need an even data.batch_size, got {cfg.data.batch_size}")
        mixup = Mixup(mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, prob=a.mixup_prob, switch_prob=a.mixup_switch_prob,
                      mode=a.mixup_mode, label_smoothing=a.smoothing, num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    if a.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=a.smoothing)
    return None, torch.nn.CrossEntropyLoss()


# --------------------------------------------------------------------------- evaluation
def evaluate_classifier(model: torch.nn.Module, dataset, batch_size: int, accelerator, num_workers: int = 0,
                        layout: ParallelLayout | None = None) -> dict[str, float]:
    """Top-1/top-5 accuracy (in %) and mean cross-entropy of ``model`` on ``dataset``, over all processes.

    The dataset is dealt to the data-parallel ranks without padding, so every sample counts exactly once (the
    processes of a sequence group, ``layout``, see the same samples and count them once).
    Returns ``{"eval_loss", "eval_top1", "eval_top5", "eval_samples"}``.
    """
    model = accelerator.unwrap_model(model, keep_torch_compile=False)  # eager: other batch shapes, eval mode
    was_training = model.training
    model.eval()
    layout = layout or ParallelLayout(accelerator.process_index, accelerator.num_processes)
    sampler = EpochBatchSampler(len(dataset), batch_size, rank=layout.data_rank,
                                world_size=layout.data_world, shuffle=False, drop_last=False)
    loader = make_loader(SeededDataset(dataset), sampler, num_workers=num_workers)
    sums = torch.zeros(4, dtype=torch.float64, device=accelerator.device)  # loss, top1, top5, n
    with torch.no_grad(), accelerator.autocast():
        for x, y in loader:
            x, y = x.to(accelerator.device), y.to(accelerator.device)
            logits = model(x).float()
            k = min(5, logits.shape[-1])
            topk = logits.topk(k, dim=-1).indices
            hit = topk == y[:, None]
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                 hit[:, 0].sum().double(), hit.any(-1).sum().double(),
                                 torch.tensor(float(len(y)), dtype=torch.float64, device=sums.device)])
    if accelerator.num_processes > 1:
        sums = accelerator.reduce(sums, reduction="sum") / layout.sequence_world
    model.train(was_training)
    n = max(sums[3].item(), 1.0)
    return {"eval_loss": sums[0].item() / n, "eval_top1": 100.0 * sums[1].item() / n,
            "eval_top5": 100.0 * sums[2].item() / n, "eval_samples": sums[3].item()}


# --------------------------------------------------------------------------- training
def train(cfg: ClassifyConfig, resume_from: str | Path | None = None, run_dir: str | Path | None = None):
    """Train a classifier as configured; returns :class:`lightnet.train.engine.TrainResult`.

    ``resume_from`` is a checkpoint folder; ``run_dir`` overrides where the run is written.
    """
    from .engine import Trainer, start_run
    from .rng import seed_everything

    accelerator, run_path = start_run(cfg.run, cfg.name, run_dir)
    layout = parallel_layout(accelerator, cfg.parallel)

    train_ds, eval_ds, info, in_chans = _datasets(cfg)
    seed_everything(cfg.run.seed)
    model = build_classifier(cfg, info.num_classes, in_chans)
    if layout.group is not None:
        if not hasattr(model, "set_sequence_parallel_group"):
            raise ValueError(f"parallel.sequence={cfg.parallel.sequence}: model {cfg.model} cannot split its tokens "
                             "(no set_sequence_parallel_group; the lightnet_* models can)")
        model.set_sequence_parallel_group(layout.group)
    mixup, criterion = _loss_and_mixup(cfg, info.num_classes)
    criterion = criterion.to(accelerator.device)
    n_params = sum(p.numel() for p in model.parameters())

    def loss_fn(model: torch.nn.Module, batch: Any):
        x, y = batch
        if mixup is not None:
            x, y_soft = mixup(x, y)
            logits = model(x)
            return criterion(logits, y_soft), {}
        logits = model(x)
        acc = (logits.argmax(-1) == y).float().mean().item() * 100.0
        return criterion(logits, y), {"train_top1": acc}

    def eval_fn(model: torch.nn.Module) -> dict[str, float]:
        return evaluate_classifier(model, eval_ds, cfg.data.eval_batch_size, accelerator, cfg.data.num_workers,
                                   layout=layout)

    trainer = Trainer(cfg.run, accelerator, model, dataset=train_ds, batch_size=cfg.data.batch_size, loss_fn=loss_fn,
                      optim=cfg.optim, sched=cfg.sched, run_dir=run_path, config=cfg, evaluate_fn=eval_fn,
                      num_workers=cfg.data.num_workers, layout=layout)
    trainer.print(f"run folder: {run_path}")
    trainer.print(f"model {cfg.model}: {n_params / 1e6:.3f}M parameters; dataset {info.name}: {len(train_ds)} train / "
                  f"{len(eval_ds)} {cfg.data.eval_split} images, {info.num_classes} classes, {in_chans}ch at "
                  f"{cfg.data.img_size}px; {trainer.total_steps} steps ({cfg.run.epochs} epochs x "
                  f"{trainer.updates_per_epoch}), global batch {trainer.global_batch}, device {accelerator.device}, "
                  f"{accelerator.num_processes} process(es) (data {layout.data_world} x sequence {layout.sequence_world}), "
                  f"precision {accelerator.mixed_precision}")
    result = trainer.fit(resume_from=resume_from)
    m = result.metrics
    if m and not result.interrupted:
        trainer.print(f"final {cfg.data.eval_split} accuracy on {info.name} ({int(m['eval_samples'])} images): "
                      f"top-1 {m['eval_top1']:.2f}%  top-5 {m['eval_top5']:.2f}%  loss {m['eval_loss']:.4f}  "
                      f"(step {result.state.step}, {result.seconds:.0f}s)")
    if accelerator.is_main_process and m:
        (run_path / "final_metrics.json").write_text(json.dumps(
            {**m, "step": result.state.step, "seconds": result.seconds, "params": n_params,
             "stopped_early": result.stopped_early}, indent=1))
    return result


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightnet train``; returns the exit code."""
    from .entry import run_trainer_cli

    return run_trainer_cli(
        argv, prog="lightnet train", config_cls=ClassifyConfig, default_recipe=DEFAULT_RECIPE, train_fn=train,
        description="Train an image classifier (any timm model; lightnet_* registered) from a YAML recipe on accelerate.",
        examples=["lightnet train", "lightnet train -c fashion_mnist run.epochs=5",
                  "lightnet train -c imagenet_small data.root=/data/imagenet",
                  "lightnet train --resume runs/20250101-120000-digits",
                  "accelerate launch --multi_gpu --num_processes 2 -m lightnet.cli train -c imagenet_tiny data.root=..."])


# --------------------------------------------------------------------------- eval CLI
def _find_eval_source(path: Path, config: str | None) -> tuple[Path, dict]:
    """Resolve ``--checkpoint`` to ``(weights_file, config_mapping)``."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_file():
        weights = path
        cfg_file = Path(config) if config else next(
            (q for q in (path.parent / "config.yaml", path.parent.parent / "config.yaml") if q.is_file()), None)
    else:
        if (path / "model.safetensors").is_file() and ((path / "meta.json").is_file() or config or
                                                        (path / "config.yaml").is_file()):
            weights = path / "model.safetensors"
        else:
            ck = find_latest(path)
            if ck is None:
                raise CheckpointError(f"no model.safetensors or complete checkpoint under {path}")
            weights = ck / "model.safetensors"
        cfg_file = Path(config) if config else weights.parent / "config.yaml"
    if cfg_file is None or not cfg_file.is_file():
        raise CheckpointError(f"no config.yaml found for {path}; pass --config RECIPE.yaml describing the model")
    return weights, load_yaml(cfg_file)


def eval_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightnet eval``: top-1/top-5 of a checkpoint on a dataset."""
    from .engine import make_accelerator

    p = argparse.ArgumentParser(prog="lightnet eval",
                                description="Evaluate a classification checkpoint (top-1/top-5) on a dataset.")
    p.add_argument("--checkpoint", "-k", required=True,
                   help="run folder, checkpoint folder (step_*), or a .safetensors file")
    p.add_argument("--config", default=None, help="config YAML (default: the one saved with the checkpoint)")
    p.add_argument("--img-size", type=int, default=None, help="evaluate at this resolution (default: training one)")
    p.add_argument("--dataset", default=None, help="dataset name (default: the training dataset)")
    p.add_argument("--root", default=None, help="dataset root (imagefolder / fashion_mnist)")
    p.add_argument("--split", default=None, help="split to evaluate (default: data.eval_split)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the saved config")
    args = p.parse_intermixed_args(argv)
    try:
        weights, base = _find_eval_source(Path(args.checkpoint), args.config)
        cfg = config_from_dict(ClassifyConfig, base)
        apply_overrides(cfg, args.overrides)
        train_size = cfg.data.img_size
        if args.dataset:
            cfg.data.dataset = args.dataset
        if args.root:
            cfg.data.root = args.root
        if args.split:
            cfg.data.eval_split = args.split
        if args.batch_size:
            cfg.data.eval_batch_size = args.batch_size
        eval_size = args.img_size or train_size
        accelerator = make_accelerator(RunConfig(mixed_precision=cfg.run.mixed_precision))
        _, eval_ds, info, in_chans = _datasets(cfg, eval_only=True, eval_img_size=eval_size)
        model = build_classifier(cfg, info.num_classes, in_chans)
        load_model_weights(model, weights)
        if eval_size != train_size:
            if hasattr(model, "set_input_size"):
                model.set_input_size(img_size=eval_size)
            elif not cfg.model_kwargs.get("dynamic_img_size", False):
                accelerator.print(f"note: {cfg.model} has no set_input_size; running it at {eval_size}px as is")
        model = model.to(accelerator.device)
        t0 = time.time()
        try:
            m = evaluate_classifier(model, eval_ds, cfg.data.eval_batch_size, accelerator, cfg.data.num_workers)
        except (RuntimeError, AssertionError) as e:
            raise ValueError(f"model {cfg.model} trained at {train_size}px failed at {eval_size}px: {e}") from e
        m.update({"img_size": eval_size, "train_img_size": train_size, "dataset": info.name,
                  "split": cfg.data.eval_split, "checkpoint": str(weights), "seconds": time.time() - t0})
        accelerator.print(f"{cfg.model} @ {eval_size}px on {info.name}/{cfg.data.eval_split} "
                          f"({int(m['eval_samples'])} images): top-1 {m['eval_top1']:.2f}%  "
                          f"top-5 {m['eval_top5']:.2f}%  loss {m['eval_loss']:.4f}")
        if args.json and accelerator.is_main_process:
            Path(args.json).write_text(json.dumps(m, indent=1))
    except (ConfigError, DatasetError, CheckpointError, ValueError) as e:
        print(f"lightnet eval: error: {e}", file=sys.stderr)
        return 2
    return 0
