"""``lightnet train-seg``: semantic segmentation with a timm encoder (LightNet or a ViT) and smp's DPT decoder.

``lightnet train-seg [-c RECIPE] [--resume [RUN_DIR|CHECKPOINT]] [--print-config] [key=value ...]``

* Model: :func:`lightnet.vision.segmentation.create_segmentation_model` — ``encoder`` is any timm name
  (``lightnet_small``, ``vit_small_patch16_224``, ...) with ``encoder_kwargs`` (the recipe's CPU size: width 64,
  4 blocks, patch 8, valid for both families), smp's DPT decoder (``decoder_kwargs``). Needs the ``segmentation``
  extra (``segmentation-models-pytorch``).
* Data: :class:`~lightnet.train.mosaic.FashionMosaic` canvases (``data.canvas_size``; train items from the
  Fashion-MNIST training split, evaluation items from the test split), 11 classes (0 = background).
* Loss: per-pixel cross-entropy. Evaluation: one confusion matrix over the evaluation canvases → ``eval_miou``
  (mean IoU over the 11 classes **including background**), ``eval_miou_fg`` (the 10 item classes), ``eval_pixel_acc``
  (:mod:`lightnet.train.seg_eval`), plus the all-background baseline's mIoU in ``final_metrics.json``.
* The shared :class:`~lightnet.train.engine.Trainer` supplies checkpoints / ``--resume``, tqdm, ``steps.csv`` /
  ``epochs.csv`` / TensorBoard and ``curves.png``. This module adds an overlay grid (input / truth / prediction) at
  every evaluation (``RUN/overlays/step_XXXXXXXX.png``) and at the end (``RUN/overlays.png``), and
  ``RUN/per_class_iou.csv``.
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from .config import ConfigError
from .data import EpochBatchSampler, SeededDataset, make_loader
from .mosaic import FashionMosaic
from .schema import OptimConfig, RunConfig, SchedConfig
from .seg_eval import confusion_matrix, iou_from_confusion, overlay_grid, segmentation_scores

__all__ = ["SegDataConfig", "SegTrainConfig", "build_segmentation_model", "evaluate_segmentation", "train_seg",
           "train_main"]

DEFAULT_RECIPE = "seg_fashion_mosaic"


@dataclass
class SegDataConfig:
    """Fashion-MNIST mosaics (see :class:`~lightnet.train.mosaic.FashionMosaic`)."""

    items: str = "auto"  # auto | fashion_mnist | digits
    root: Optional[str] = None  # folder of the Fashion-MNIST idx files (default: the Debian package's)
    canvas_size: int = 128
    eval_canvas_size: Optional[int] = None  # default: canvas_size
    train_size: int = 2000  # canvases per epoch
    eval_size: int = 200
    min_items: int = 2
    max_items: int = 6
    item_scale: list[float] = field(default_factory=lambda: [0.15, 0.4])
    threshold: float = 0.1
    batch_size: int = 16
    eval_batch_size: int = 32
    num_workers: int = 0


@dataclass
class GridConfig:
    """The overlay picture."""

    samples: int = 6  # evaluation canvases shown (rows)


@dataclass
class SegTrainConfig:
    """Full config of ``lightnet train-seg`` (recipe keys: encoder*, decoder*, data, grid, optim, sched, run)."""

    name: str = "seg_fashion_mosaic"
    encoder: str = "lightnet_tiny"  # any timm model with forward_intermediates (lightnet_*, vit_*)
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)  # timm.create_model overrides
    encoder_file: Optional[str] = None  # local encoder weights (e.g. a `lightnet train` run's model.safetensors)
    encoder_depth: int = 4  # block outputs the decoder reads
    decoder: str = "dpt"
    decoder_kwargs: dict[str, Any] = field(default_factory=dict)  # smp.DPT overrides (decoder_fusion_channels, ...)
    data: SegDataConfig = field(default_factory=SegDataConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.05, clip_grad=1.0))
    sched: SchedConfig = field(default_factory=lambda: SchedConfig(sched="cosine", warmup_epochs=1, min_lr=1e-5))
    run: RunConfig = field(default_factory=RunConfig)


# --------------------------------------------------------------------------- model / data
def build_segmentation_model(cfg: SegTrainConfig, num_classes: int, in_chans: int = 1) -> torch.nn.Module:
    """The configured smp model; a ``ConfigError`` names a canvas size the model cannot take."""
    from lightnet.vision.segmentation import create_segmentation_model, input_multiple

    try:
        model = create_segmentation_model(cfg.encoder, num_classes, in_chans=in_chans, decoder=cfg.decoder,
                                          encoder_kwargs=cfg.encoder_kwargs, decoder_kwargs=cfg.decoder_kwargs,
                                          encoder_depth=cfg.encoder_depth, encoder_file=cfg.encoder_file)
    except (TypeError, RuntimeError) as e:  # an unknown model name or a constructor argument it does not take
        raise ConfigError(f"cannot build encoder {cfg.encoder!r} with encoder_kwargs={cfg.encoder_kwargs} / "
                          f"decoder_kwargs={cfg.decoder_kwargs}: {e}") from e
    multiple = input_multiple(model)
    for key, size in (("data.canvas_size", cfg.data.canvas_size), ("data.eval_canvas_size", cfg.data.eval_canvas_size)):
        if size is not None and size % multiple:
            raise ConfigError(f"{key}={size} is not divisible by {multiple} (the encoder patch and the DPT decoder's "
                              f"coarsest stride); use a multiple of {multiple}")
    return model


def _datasets(cfg: SegTrainConfig) -> tuple[FashionMosaic, FashionMosaic]:
    d = cfg.data
    common = dict(min_items=d.min_items, max_items=d.max_items, item_scale=tuple(d.item_scale),
                  threshold=d.threshold, items=d.items, root=d.root)
    train_ds = FashionMosaic("train", d.train_size, d.canvas_size, seed=cfg.run.seed, **common)
    eval_ds = FashionMosaic("test", d.eval_size, d.eval_canvas_size or d.canvas_size, seed=10_000 + cfg.run.seed,
                            **common)
    return train_ds, eval_ds


def evaluate_segmentation(model: torch.nn.Module, dataset, batch_size: int, accelerator, num_classes: int,
                          num_workers: int = 0) -> tuple[dict[str, float], torch.Tensor]:
    """``(scores, confusion [C, C])`` of ``model`` on ``dataset`` over all processes (each canvas counted once).

    Scores: ``eval_loss`` (mean per-pixel cross-entropy), ``eval_miou``, ``eval_miou_fg``, ``eval_pixel_acc``.
    """
    model = accelerator.unwrap_model(model, keep_torch_compile=False)
    was_training = model.training
    model.eval()
    sampler = EpochBatchSampler(len(dataset), batch_size, rank=accelerator.process_index,
                                world_size=accelerator.num_processes, shuffle=False, drop_last=False)
    loader = make_loader(SeededDataset(dataset), sampler, num_workers=num_workers)
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=accelerator.device)
    loss = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # sum, pixels
    with torch.no_grad(), accelerator.autocast():
        for x, y in loader:
            x, y = x.to(accelerator.device), y.to(accelerator.device)
            logits = model(x).float()
            loss += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                 torch.tensor(float(y.numel()), dtype=torch.float64, device=loss.device)])
            conf += confusion_matrix(logits.argmax(1), y, num_classes)
    if accelerator.num_processes > 1:
        conf = accelerator.reduce(conf, reduction="sum")
        loss = accelerator.reduce(loss, reduction="sum")
    model.train(was_training)
    scores = {"eval_loss": loss[0].item() / max(loss[1].item(), 1.0), **segmentation_scores(conf.cpu())}
    return scores, conf.cpu()


@torch.no_grad()
def _write_overlays(model: torch.nn.Module, dataset, n: int, path: Path, device) -> Path:
    was_training = model.training
    model.eval()
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    x = torch.stack([it[0] for it in items]).to(device)
    y = torch.stack([it[1] for it in items])
    pred = model(x).float().argmax(1).cpu()
    model.train(was_training)
    return overlay_grid(x.cpu(), y, pred, path)


# --------------------------------------------------------------------------- training
def train_seg(cfg: SegTrainConfig, resume_from: str | Path | None = None, run_dir: str | Path | None = None):
    """Train as configured; returns the engine's ``TrainResult`` (``final_metrics.json`` in the run folder)."""
    from .engine import Trainer, start_run
    from .rng import seed_everything

    accelerator, run_path = start_run(cfg.run, cfg.name, run_dir)
    train_ds, eval_ds = _datasets(cfg)
    C = FashionMosaic.num_classes
    seed_everything(cfg.run.seed)
    model = build_segmentation_model(cfg, C, in_chans=1)
    n_params = sum(p.numel() for p in model.parameters())
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    last_conf: dict[str, torch.Tensor] = {}

    def loss_fn(model: torch.nn.Module, batch: Any):
        x, y = batch
        logits = model(x)
        acc = (logits.detach().argmax(1) == y).float().mean().item() * 100.0
        return F.cross_entropy(logits.float(), y), {"train_pixel_acc": acc}

    def eval_fn(model: torch.nn.Module) -> dict[str, float]:
        scores, last_conf["conf"] = evaluate_segmentation(model, eval_ds, cfg.data.eval_batch_size, accelerator, C,
                                                          cfg.data.num_workers)
        if accelerator.is_main_process and cfg.grid.samples > 0:
            eager = accelerator.unwrap_model(model, keep_torch_compile=False)
            _write_overlays(eager, eval_ds, cfg.grid.samples,
                            run_path / "overlays" / f"step_{trainer.state.step:08d}.png", accelerator.device)
        return scores

    trainer = Trainer(cfg.run, accelerator, model, dataset=train_ds, batch_size=cfg.data.batch_size, loss_fn=loss_fn,
                      optim=cfg.optim, sched=cfg.sched, run_dir=run_path, config=cfg, evaluate_fn=eval_fn,
                      num_workers=cfg.data.num_workers)
    trainer.print(f"run folder: {run_path}")
    trainer.print(f"encoder {cfg.encoder} {cfg.encoder_kwargs or ''} + {cfg.decoder}: {n_params / 1e6:.3f}M parameters "
                  f"({n_enc / 1e6:.3f}M encoder); mosaics of {train_ds.source} items: {len(train_ds)} train / "
                  f"{len(eval_ds)} eval canvases at {cfg.data.canvas_size}px, {C} classes (0 = background); "
                  f"{trainer.total_steps} steps ({cfg.run.epochs} epochs x {trainer.updates_per_epoch}), global batch "
                  f"{trainer.global_batch}, device {accelerator.device}, precision {accelerator.mixed_precision}")
    result = trainer.fit(resume_from=resume_from)
    m = result.metrics
    if accelerator.is_main_process and m and not result.interrupted:
        conf = last_conf["conf"]
        iou = iou_from_confusion(conf)
        # the trivial baseline: every pixel predicted background
        background = torch.zeros_like(conf)
        background[:, 0] = conf.sum(1)
        baseline = segmentation_scores(background, prefix="baseline_")
        with open(run_path / "per_class_iou.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "name", "iou", "pixels"])
            for c in range(C):
                w.writerow([c, train_ds.class_names[c], f"{100 * float(iou[c]):.3f}", int(conf[c].sum())])
        grid = _write_overlays(trainer.unwrapped(), eval_ds, cfg.grid.samples, run_path / "overlays.png",
                               accelerator.device) if cfg.grid.samples > 0 else None
        summary = {**m, **{k: v for k, v in baseline.items() if "miou" in k}, "step": result.state.step,
                   "seconds": result.seconds, "params": n_params, "encoder_params": n_enc, "encoder": cfg.encoder,
                   "items": train_ds.source, "stopped_early": result.stopped_early,
                   "per_class_iou": {train_ds.class_names[c]: 100 * float(iou[c]) for c in range(C)},
                   "overlays": str(grid) if grid else None}
        (run_path / "final_metrics.json").write_text(json.dumps(summary, indent=1))
        trainer.print(f"final mIoU {m['eval_miou']:.2f}% (11 classes incl. background; all-background baseline "
                      f"{baseline['baseline_miou']:.2f}%), item classes {m['eval_miou_fg']:.2f}%, pixel accuracy "
                      f"{m['eval_pixel_acc']:.2f}%; overlays {grid}")
    accelerator.wait_for_everyone()
    return result


# --------------------------------------------------------------------------- CLI
def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightnet train-seg``; returns the exit code (see :mod:`lightnet.train.entry`)."""
    from .entry import run_trainer_cli

    return run_trainer_cli(
        argv, prog="lightnet train-seg", config_cls=SegTrainConfig, default_recipe=DEFAULT_RECIPE, train_fn=train_seg,
        description="Train a semantic-segmentation model (timm encoder + smp DPT decoder) on Fashion-MNIST mosaics.",
        examples=["lightnet train-seg -c seg_fashion_mosaic",
                  "lightnet train-seg -c seg_fashion_mosaic encoder=vit_small_patch16_224",
                  "lightnet train-seg -c seg_fashion_mosaic encoder=lightnet_small encoder_kwargs={} "
                  "data.canvas_size=512 run.mixed_precision=bf16"])


if __name__ == "__main__":
    sys.exit(train_main())
