"""Config sections shared by every LightNet trainer (classification, diffusion, language model).

A trainer's own config dataclass embeds these as nested sections, so the YAML recipes of all
trainers read alike::

    run:   {epochs: 30, mixed_precision: bf16, checkpoint_every: 500, ...}
    optim: {opt: adamw, lr: 1.0e-3, weight_decay: 0.05, clip_grad: 1.0}
    sched: {sched: cosine, warmup_epochs: 2, min_lr: 1.0e-5}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional


@dataclass
class RunConfig:
    """How long to train, on what precision, where to write, how to checkpoint and log.

    ``max_steps`` stops after that many optimizer updates (counted from the start of the run, not
    from a resume) and is how short test runs and simulated interruptions are made.
    """

    seed: int = 0
    epochs: int = 10
    max_steps: Optional[int] = None
    grad_accum_steps: int = 1
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    # torch.compile the model (through accelerate's TorchDynamoPlugin, inductor backend) before training;
    # compile_mode: torch.compile's mode (null = "default"; the CUDA-graph modes need a fixed batch shape, which
    # the trainers' drop_last sampler gives). Checkpoints and exported weights are the uncompiled module's.
    compile: bool = False
    compile_mode: Optional[Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]] = None
    output_dir: str = "runs"
    run_dir: Optional[str] = None  # explicit run folder; default <output_dir>/<timestamp>-<name>
    checkpoint_every: int = 0  # optimizer updates between checkpoints; 0 = only at epoch ends
    checkpoint_every_epochs: int = 1  # 0 = never at epoch ends (still at the end of training)
    keep_last: int = 3
    log_every: int = 10  # updates between per-step CSV/TensorBoard rows
    eval_every_epochs: int = 1  # 0 = only the final evaluation
    eval_every_steps: int = 0  # also evaluate every N updates (0 = off); rows go to steps.csv
    save_on_signal: bool = True  # SIGTERM/SIGINT: finish the update, checkpoint, stop (resume with --resume)
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_skipped_steps: int = 100  # with on_nonfinite=skip: give up after this many skipped updates
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU)
    threads: Optional[int] = None  # torch.set_num_threads for CPU runs (1 is often fastest for tiny models)
    progress: bool = True  # tqdm bar on the main process
    tensorboard: bool = True
    plot: bool = True


@dataclass
class OptimConfig:
    """Arguments of ``timm.optim.create_optimizer_v2`` plus the learning-rate rule and gradient clipping.

    If ``lr`` is null it is ``lr_base * global_batch / lr_base_size`` (DeiT/timm linear scaling), with
    ``global_batch = batch_size * num_processes * grad_accum_steps``.
    """

    opt: str = "adamw"
    lr: Optional[float] = 1e-3
    lr_base: float = 5e-4
    lr_base_size: int = 512
    weight_decay: float = 0.05
    momentum: float = 0.9
    eps: Optional[float] = None
    betas: Optional[tuple[float, float]] = None
    layer_decay: Optional[float] = None
    clip_grad: Optional[float] = None  # max global grad-norm; null = no clipping
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra optimizer kwargs


@dataclass
class SchedConfig:
    """Arguments of ``timm.scheduler.create_scheduler_v2`` (stepped per optimizer update)."""

    sched: str = "cosine"
    warmup_epochs: float = 0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    cooldown_epochs: int = 0
    decay_rate: float = 0.1
    decay_milestones: list[int] = field(default_factory=lambda: [90, 180, 270])
    kwargs: dict[str, Any] = field(default_factory=dict)
