"""The training loop shared by every LightNet trainer, on ``accelerate``.

A trainer (classification, diffusion, LM) supplies a model, a dataset, a loss function and optionally
an evaluation function; :class:`Trainer` does the rest: accelerate setup (CPU, one GPU, or
``accelerate launch`` multi-GPU with no code changes; ``bf16``/``fp16`` mixed precision; gradient
accumulation), timm optimizer and scheduler, gradient clipping, non-finite-loss handling, tqdm/CSV/
TensorBoard logging, atomic checkpoints, and ``--resume`` that continues **bitwise** on CPU (data order,
augmentation, dropout/mixup randomness, optimizer and scheduler all continue from the checkpoint, also
mid-epoch).

Minimal use (see :mod:`lightnet.train.classify` for a full trainer)::

    accelerator, run_dir = start_run(cfg.run, cfg.name)   # accelerator + run folder agreed by all processes
    seed_everything(cfg.run.seed)                       # before building the model: same init everywhere
    model = build_my_model(...)
    trainer = Trainer(cfg.run, accelerator, model, dataset=train_ds, batch_size=64,
                      loss_fn=lambda model, batch: (loss, {"acc": acc}),
                      optim=cfg.optim, sched=cfg.sched, run_dir=run_dir, config=cfg,
                      evaluate_fn=lambda model: {"eval_top1": ...})
    result = trainer.fit(resume_from=find_latest(run_dir))   # or None

Conventions: a *step* is one optimizer update (``grad_accum_steps`` micro-batches); step numbers are
1-based in messages and name the checkpoints (``step_00000120`` = after 120 updates). Batches are
moved to the device with ``accelerate.utils.send_to_device`` before ``loss_fn`` sees them; the model
passed to ``loss_fn`` is the prepared (possibly DDP-wrapped, autocast) model.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch.utils.data import Dataset

from .checkpoint import (
    CheckpointManager,
    CheckpointError,
    atomic_torch_save,
    find_latest,
    load_model_weights,
    safe_torch_load,
    save_safetensors,
    MODEL_FILE,
    STATE_FILE,
)
from .config import save_config
from .distributed_state import (
    full_model_state_dict,
    full_optimizer_state_dict,
    is_sharded,
    load_full_optimizer_state_dict,
    load_model_file,
    replicated_value,
    save_model_file,
)
from .data import EpochBatchSampler, SeededDataset, make_loader
from .progress import progress_bar
from .rng import capture_rng_state, derive_seed, restore_rng_state, seed_everything
from .parallel import ParallelLayout
from .run_log import RunLogger
from .schema import OptimConfig, RunConfig, SchedConfig

__all__ = [
    "NonFiniteLossError",
    "TrainResult",
    "TrainState",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "create_run_dir",
    "fsdp_requested",
    "make_accelerator",
    "resolve_resume",
    "start_run",
]

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, Any], "tuple[torch.Tensor, Mapping[str, float]]"]
EvalFn = Callable[[torch.nn.Module], "Mapping[str, float]"]


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN/inf; ``step`` is the 1-based optimizer step."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


def make_accelerator(run: RunConfig, cpu: bool = False):
    """``accelerate.Accelerator`` for ``run.mixed_precision`` and ``run.grad_accum_steps``.

    Works unchanged on CPU, one GPU and under ``accelerate launch --multi_gpu`` (or ``torchrun``; on a
    CPU-only host several processes talk through gloo). Under ``accelerate launch`` the launcher's
    ``--mixed_precision`` wins if the config says ``no``.
    """
    from accelerate import Accelerator

    if run.grad_accum_steps < 1:
        raise ValueError(f"run.grad_accum_steps must be >= 1, got {run.grad_accum_steps}")
    mp = run.mixed_precision if run.mixed_precision != "no" else None
    _reset_single_process_state()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        cpu = True  # torchrun/accelerate launch on a CPU-only host: accelerate needs cpu=True to use gloo
    acc = Accelerator(mixed_precision=mp, gradient_accumulation_steps=run.grad_accum_steps, cpu=cpu,
                      dynamo_plugin=_dynamo_plugin(run))
    _warn_if_fsdp_ignored(acc)
    if run.threads is not None:
        if run.threads < 1:
            raise ValueError(f"run.threads must be >= 1, got {run.threads}")
        torch.set_num_threads(run.threads)
    if run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return acc


def _dynamo_plugin(run: RunConfig):
    """accelerate's ``TorchDynamoPlugin`` for ``run.compile`` (inductor, ``run.compile_mode``), or None when off."""
    if run.compile_mode is not None and not run.compile:
        raise ValueError(f"run.compile_mode={run.compile_mode!r} is set but run.compile is false; set run.compile=true")
    if not run.compile:
        return None
    from accelerate.utils import TorchDynamoPlugin

    return TorchDynamoPlugin(backend="inductor", mode=run.compile_mode or "default")


def _warn_if_fsdp_ignored(acc) -> None:
    """Say so when ``accelerate launch --use_fsdp`` was asked for but accelerate did not set up FSDP.

    On a CPU-only host the engine passes ``cpu=True`` (gloo), and accelerate then runs plain data parallel
    (``MULTI_CPU``) without a word; the run works, but nothing is sharded.
    """
    from accelerate.utils import DistributedType

    if fsdp_requested() and acc.distributed_type != DistributedType.FSDP and acc.is_main_process:
        print(f"warning: --use_fsdp was given but accelerate set up {acc.distributed_type.value} (FSDP needs GPUs); "
              f"the model is not sharded", file=sys.stderr)


def fsdp_requested() -> bool:
    """Whether ``accelerate launch --use_fsdp`` (or an accelerate config with FSDP) started this process."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").strip().lower() in ("1", "true", "yes")


def _reset_single_process_state() -> None:
    """Let a single process build Accelerators with different settings one after another.

    accelerate keeps one process-wide ``AcceleratorState`` and refuses a second ``Accelerator`` with
    another ``mixed_precision`` (e.g. a bf16 run after an fp32 run in one test session or notebook).
    Outside distributed runs nothing else holds that state, so it is cleared before each new trainer.
    (``_reset_state`` is accelerate's own reset, used by its test-suite.)
    """
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state and PartialState._shared_state.get("num_processes", 1) == 1:
        AcceleratorState._reset_state()


def create_run_dir(run: RunConfig, name: str, is_main: bool = True, create: bool = True) -> Path:
    """``run.run_dir`` if set, else ``<run.output_dir>/<YYYYmmdd-HHMMSS>-<name>`` (created on the main process
    when ``create``)."""
    if run.run_dir:
        path = Path(run.run_dir)
    else:
        path = Path(run.output_dir) / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{name}"
    if is_main and create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def start_run(run: RunConfig, name: str, run_dir: str | Path | None = None):
    """``(accelerator, run_path)``: the accelerator for ``run`` and the run folder's path, agreed by all processes.

    ``run_dir`` (e.g. the folder of a resumed run) overrides ``run.run_dir``; otherwise a new
    ``<run.output_dir>/<timestamp>-<name>`` is named by the main process and broadcast to the others. The folder
    itself is created by :class:`Trainer` once the model, data, optimizer and scheduler are built, so a bad config
    leaves no empty run folder behind.
    """
    from accelerate.utils import broadcast_object_list

    accelerator = make_accelerator(run)
    if run_dir is not None:
        run.run_dir = str(run_dir)
    path = [str(create_run_dir(run, name, is_main=accelerator.is_main_process, create=False))]
    if accelerator.num_processes > 1:
        broadcast_object_list(path)
    return accelerator, Path(path[0])


def resolve_resume(resume: str, output_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Turn a ``--resume`` argument into ``(run_dir, checkpoint_dir)``.

    ``resume`` may be a run folder, a ``checkpoints`` folder, one ``step_*`` checkpoint folder, or
    ``auto``/``latest`` (the newest run folder ``<output_dir>/*-<name>`` that has a checkpoint).
    """
    if resume in ("auto", "latest"):
        runs = sorted(Path(output_dir).glob(f"*-{name}"), reverse=True)
        for r in runs:
            ck = find_latest(r)
            if ck is not None:
                return r, ck
        raise CheckpointError(f"--resume {resume}: no run folder '{output_dir}/*-{name}' with a checkpoint found")
    p = Path(resume)
    if not p.exists():
        raise CheckpointError(f"--resume: path not found: {p}")
    if (p / "meta.json").is_file():  # a single checkpoint folder
        return p.parent.parent, p
    ck = find_latest(p)
    if ck is None:
        raise CheckpointError(f"--resume: no complete checkpoint under {p}")
    run_dir = p.parent if p.name == "checkpoints" else p
    return run_dir, ck


def build_optimizer(model: torch.nn.Module, optim: OptimConfig, global_batch: int) -> torch.optim.Optimizer:
    """``timm.optim.create_optimizer_v2`` from an :class:`OptimConfig` (honours the model's ``no_weight_decay``).

    ``optim.lr = null`` means ``lr_base * global_batch / lr_base_size``.
    """
    from timm.optim import create_optimizer_v2

    lr = optim.lr if optim.lr is not None else optim.lr_base * global_batch / optim.lr_base_size
    kwargs: dict[str, Any] = dict(optim.kwargs)
    if optim.eps is not None:
        kwargs["eps"] = optim.eps
    if optim.betas is not None:
        kwargs["betas"] = tuple(optim.betas)
    try:
        return create_optimizer_v2(model, opt=optim.opt, lr=lr, weight_decay=optim.weight_decay,
                                   momentum=optim.momentum, layer_decay=optim.layer_decay, **kwargs)
    except (AssertionError, ValueError) as e:
        raise ValueError(f"cannot create optimizer optim.opt={optim.opt!r}: {e}") from e


WARMUP_CAP = 0.1  # a warm-up as long as the run is scaled to this fraction of the run


def effective_warmup_epochs(sched: SchedConfig, epochs: int) -> float:
    """``sched.warmup_epochs``, or ``WARMUP_CAP * epochs`` (with a logged WARNING) when the warm-up would last the
    whole run (``warmup_epochs >= epochs``), where the learning rate would only rise and never decay (e.g. a recipe
    with ``warmup_epochs: 1`` run with ``run.epochs=1``). Set ``sched.warmup_epochs`` below ``run.epochs`` to choose
    the warm-up yourself."""
    warmup = float(sched.warmup_epochs)
    if warmup < 0:
        raise ValueError(f"sched.warmup_epochs must be >= 0, got {sched.warmup_epochs}")
    if epochs > 0 and warmup >= epochs:
        scaled = WARMUP_CAP * epochs
        logger.warning("sched.warmup_epochs=%g is not shorter than run.epochs=%d: the learning rate would only warm up "
                       "and never decay; the warm-up is scaled to %g epochs (%d%% of the run). Set "
                       "sched.warmup_epochs below run.epochs to choose it yourself.",
                       sched.warmup_epochs, epochs, scaled, round(100 * WARMUP_CAP))
        return scaled
    return warmup


def build_scheduler(optimizer: torch.optim.Optimizer, sched: SchedConfig, epochs: int, updates_per_epoch: int):
    """``timm.scheduler.create_scheduler_v2`` stepped per optimizer update (``step_on_epochs=False``).

    A warm-up not shorter than the run is scaled to a tenth of it (see :func:`effective_warmup_epochs`).
    """
    from timm.scheduler import create_scheduler_v2

    scheduler, _ = create_scheduler_v2(
        optimizer, sched=sched.sched, num_epochs=epochs, warmup_epochs=effective_warmup_epochs(sched, epochs),
        warmup_lr=sched.warmup_lr, min_lr=sched.min_lr, cooldown_epochs=sched.cooldown_epochs,
        decay_rate=sched.decay_rate, decay_milestones=list(sched.decay_milestones),
        step_on_epochs=False, updates_per_epoch=max(1, updates_per_epoch), **sched.kwargs)
    if scheduler is None:
        raise ValueError(f"unknown scheduler sched.sched={sched.sched!r}")
    return scheduler


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # current epoch, 0-based
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed (this process)
    skipped_steps: int = 0  # updates skipped for non-finite loss (on_nonfinite=skip)
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    run_dir: Path
    state: TrainState
    metrics: dict[str, float] = field(default_factory=dict)  # final evaluation
    checkpoint: Path | None = None
    stopped_early: bool = False  # stopped before the end (run.max_steps or a signal)
    seconds: float = 0.0
    interrupted: str | None = None  # "SIGTERM"/"SIGINT" if stopped by a signal (a checkpoint was saved)


class Trainer:
    """Runs epochs of optimizer steps with checkpointing, logging and resume.

    Args:
        run: the ``run:`` section (epochs, precision, checkpoints, logging, non-finite policy).
        accelerator: from :func:`make_accelerator`.
        model: an ``nn.Module`` (not yet prepared).
        dataset: map-style training dataset; items are collated by ``collate_fn`` (default collation).
        batch_size: per-process micro-batch size.
        loss_fn: ``(prepared_model, batch_on_device) -> (scalar loss, {name: float})``.
        optim, sched: optimizer/scheduler sections (timm factories).
        run_dir: run folder (checkpoints under ``run_dir/checkpoints``).
        config: the trainer's whole config (saved as ``config.yaml`` in the run and every checkpoint).
        evaluate_fn: ``(prepared_model) -> {"eval_...": float}``; called on every process at epoch ends
            (every ``run.eval_every_epochs``) and at the end; must not use the global random generators.
        extra_modules: more modules to save/restore with the model (e.g. ``{"ema": ema_model}``); each is
            stored as ``<name>.safetensors`` in the checkpoint.
        num_workers: data-loader workers.
        collate_fn: batch collation.
        layout: data × sequence parallelism (:func:`lightnet.train.parallel.parallel_layout`); default: every
            process is a data-parallel rank.
        batch_items: ``batch -> number of samples`` for throughput (default: length of the first tensor).
    """

    def __init__(self, run: RunConfig, accelerator, model: torch.nn.Module, dataset: Dataset, batch_size: int,
                 loss_fn: LossFn, optim: OptimConfig, sched: SchedConfig, run_dir: str | Path, config: Any = None,
                 evaluate_fn: EvalFn | None = None, extra_modules: Mapping[str, torch.nn.Module] | None = None,
                 num_workers: int = 0, collate_fn: Callable | None = None,
                 batch_items: Callable[[Any], int] | None = None, layout: ParallelLayout | None = None) -> None:
        self.run, self.acc = run, accelerator
        # data × sequence parallelism: the processes of one sequence group get the same batches (parallel.py)
        self.layout = layout or ParallelLayout(accelerator.process_index, accelerator.num_processes)
        self.run_dir = Path(run_dir)
        self.config = config
        self.loss_fn, self.evaluate_fn = loss_fn, evaluate_fn
        self.extra_modules = dict(extra_modules or {})
        self.batch_items = batch_items or _default_batch_items
        self.state = TrainState()
        self.sampler = EpochBatchSampler(len(dataset), batch_size, seed=run.seed, rank=self.layout.data_rank,
                                         world_size=self.layout.data_world, shuffle=True, drop_last=True)
        if self.sampler.batches_per_epoch < run.grad_accum_steps:
            raise ValueError(f"one epoch has {self.sampler.batches_per_epoch} batches, fewer than "
                             f"run.grad_accum_steps={run.grad_accum_steps}")
        self.loader = make_loader(SeededDataset(dataset, seed=run.seed), self.sampler, num_workers=num_workers,
                                  collate_fn=collate_fn, pin_memory=accelerator.device.type == "cuda")
        self.updates_per_epoch = self.sampler.batches_per_epoch // run.grad_accum_steps
        self.global_batch = batch_size * self.layout.data_world * run.grad_accum_steps
        optimizer = build_optimizer(model, optim, self.global_batch)
        self.scheduler = build_scheduler(optimizer, sched, run.epochs, self.updates_per_epoch)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.clip_grad = optim.clip_grad
        # Everything above validates the config (batch size, optimizer, scheduler); only now is the run folder made.
        if accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        self.ckpt = CheckpointManager(self.run_dir / "checkpoints", keep_last=run.keep_last)
        self.logger = RunLogger(self.run_dir, enabled=accelerator.is_main_process, tensorboard=run.tensorboard)
        # Training randomness (dropout, drop-path, mixup) differs per data-parallel rank but is reproducible; the
        # processes of one sequence group share a stream (the same mixup of the same batch).
        seed_everything(derive_seed(run.seed, self.layout.data_rank, 0x7A11))

    # ------------------------------------------------------------------ helpers
    @property
    def total_steps(self) -> int:
        """Optimizer updates of the full schedule (``epochs * updates_per_epoch``)."""
        return self.run.epochs * self.updates_per_epoch

    def print(self, *args: Any) -> None:
        """Print on the main process (through tqdm so the bar is not broken)."""
        if self.acc.is_main_process:
            from tqdm.auto import tqdm

            tqdm.write(" ".join(str(a) for a in args))

    def unwrapped(self) -> torch.nn.Module:
        """The prepared model without accelerate's wrappers (DDP, autocast, torch.compile); under FSDP still
        sharded."""
        return self.acc.unwrap_model(self.model, keep_torch_compile=False)

    @property
    def sharded(self) -> bool:
        """Whether the prepared model is FSDP-sharded (then state access is collective, see below)."""
        return is_sharded(self.model)

    def _state_module(self) -> torch.nn.Module:
        """The module whose state is saved: ``unwrapped()``, or under FSDP the prepared model itself (torch's
        distributed-checkpoint helpers need the FSDP root; the names they return carry no wrapper prefixes)."""
        return self.model if self.sharded else self.unwrapped()

    def full_model_state(self) -> dict[str, torch.Tensor]:
        """The model's full weights: ``unwrapped().state_dict()`` without FSDP (any process may call it).

        Under FSDP a collective (every process must call it): the main process gets the full weights on
        CPU, the others an empty dict.
        """
        return full_model_state_dict(self._state_module())

    def full_optimizer_state(self) -> dict[str, Any]:
        """The optimizer state: ``optimizer.state_dict()`` without FSDP; under FSDP a collective giving the
        full state keyed by parameter name on the main process (``{}`` elsewhere)."""
        return full_optimizer_state_dict(self._state_module(), self.optimizer)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the current state atomically (all processes must call this).

        Under FSDP the model and optimizer state are gathered collectively first; only the main process
        writes them.
        """
        step = self.state.step
        main = self.acc.is_main_process
        tmp = self.ckpt.begin(step, is_main=main)
        self.acc.wait_for_everyone()
        atomic_torch_save(capture_rng_state(), tmp / f"rng_rank{self.acc.process_index}.pt")
        save_model_file(self._state_module(), tmp / MODEL_FILE, is_main=main)
        optimizer_state = self.full_optimizer_state() if self.sharded else None
        if main:
            for name, module in self.extra_modules.items():
                save_safetensors(module.state_dict(), tmp / f"{name}.safetensors")
            training_state = {
                "state": self.state.as_dict(),
                "optimizer": optimizer_state if optimizer_state is not None else self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "num_processes": self.acc.num_processes,
            }
            if self.acc.scaler is not None:
                training_state["scaler"] = self.acc.scaler.state_dict()
            atomic_torch_save(training_state, tmp / STATE_FILE)
            if self.config is not None:
                save_config(self.config, tmp / "config.yaml")
        self.acc.wait_for_everyone()
        final = self.ckpt.commit(step, {"epoch": self.state.epoch, "batch_in_epoch": self.state.batch_in_epoch},
                                 is_main=main)
        self.acc.wait_for_everyone()
        self._last_saved = step
        return final

    def load_checkpoint(self, ckpt: str | Path) -> None:
        """Restore model, extra modules, optimizer, scheduler, counters and RNG from a checkpoint folder.

        Every process reads the files; under FSDP each keeps its shard (a collective: all must call this).
        """
        ckpt = Path(ckpt)
        load_model_file(self._state_module(), ckpt / MODEL_FILE)
        for name, module in self.extra_modules.items():
            load_model_weights(module, ckpt / f"{name}.safetensors")
        ts = safe_torch_load(ckpt / STATE_FILE)
        if not isinstance(ts, dict) or "state" not in ts or "optimizer" not in ts:
            raise CheckpointError(f"{ckpt / STATE_FILE} is not a LightNet training state")
        load_full_optimizer_state_dict(self._state_module(), self.optimizer, ts["optimizer"])
        self.scheduler.load_state_dict(ts.get("scheduler", {}))
        if "scaler" in ts and self.acc.scaler is not None:
            self.acc.scaler.load_state_dict(ts["scaler"])
        self.state = TrainState(**ts["state"])
        if ts.get("num_processes", 1) != self.acc.num_processes:
            self.print(f"warning: checkpoint was written by {ts.get('num_processes')} processes, resuming on "
                       f"{self.acc.num_processes}; data order restarts at the next epoch boundary")
            if self.state.batch_in_epoch:
                self.state.epoch += 1
                self.state.batch_in_epoch = 0
                self.state.epoch_loss_sum, self.state.epoch_loss_count = 0.0, 0
        rng_file = ckpt / f"rng_rank{self.acc.process_index}.pt"
        if rng_file.is_file():
            restore_rng_state(safe_torch_load(rng_file))
        else:
            self.print(f"warning: {rng_file.name} missing; random state re-seeded (resume is not bitwise)")
            seed_everything(derive_seed(self.run.seed, self.layout.data_rank, self.state.step))
        self._last_saved = self.state.step
        self.logger.truncate_after(self.state.step)

    # ------------------------------------------------------------------ the loop
    def _nonfinite(self, value: torch.Tensor) -> bool:
        """True on every rank if ``value`` holds a NaN/inf on any rank (a DTensor is checked as its full value)."""
        value = replicated_value(value)
        bad = (~torch.isfinite(value.detach().float())).any().to(torch.float32).reshape(1)
        if self.acc.num_processes > 1:
            bad = self.acc.reduce(bad.to(self.acc.device), reduction="sum")
        return bool(bad.item() > 0)

    def _handle_nonfinite(self, what: str, value: torch.Tensor) -> None:
        """Raise (on_nonfinite=stop) or count a skip; names the 1-based step."""
        step = self.state.step + 1
        where = (f"step {step} (epoch {self.state.epoch + 1}, batch {self.state.batch_in_epoch} of the epoch)")
        if self.run.on_nonfinite == "stop":
            last = find_latest(self.ckpt.root)
            raise NonFiniteLossError(
                f"non-finite {what} ({replicated_value(value).detach().float().flatten()[0].item()}) at {where}; training stopped so "
                f"that no update uses NaN/inf. Last checkpoint: {last or 'none'}. Lower optim.lr, set "
                f"optim.clip_grad, or set run.on_nonfinite=skip to skip such steps.", step)
        self.state.skipped_steps += 1
        self.print(f"warning: non-finite {what} at {where}; update skipped "
                   f"({self.state.skipped_steps} skipped so far)")
        if self.state.skipped_steps > self.run.max_skipped_steps:
            raise NonFiniteLossError(f"more than run.max_skipped_steps={self.run.max_skipped_steps} updates had a "
                                     f"non-finite {what} (last at {where}); giving up", step)

    def _train_step(self, it) -> tuple[float, dict[str, float], int]:
        """One optimizer update over ``grad_accum_steps`` micro-batches; returns (mean loss, metrics, samples)."""
        from accelerate.utils import send_to_device

        self.scheduler.step_update(self.state.step)
        skip = False
        losses: list[float] = []
        metric_sums: dict[str, float] = {}
        samples = 0
        fp16 = self.acc.mixed_precision == "fp16"
        for _ in range(self.run.grad_accum_steps):
            batch = send_to_device(next(it), self.acc.device)
            self.state.batch_in_epoch += 1
            samples += self.batch_items(batch)
            with self.acc.accumulate(self.model):
                loss, metrics = self.loss_fn(self.model, batch)
                if loss.dim() != 0:
                    raise ValueError(f"loss_fn must return a scalar loss, got shape {tuple(loss.shape)}")
                if not skip and self._nonfinite(loss):
                    self._handle_nonfinite("loss", loss)
                    skip = True
                if not skip:
                    self.acc.backward(loss)
                    losses.append(float(loss.detach().float().item()))
                    for k, v in metrics.items():
                        metric_sums[k] = metric_sums.get(k, 0.0) + float(v)
                if self.acc.sync_gradients:
                    if not skip and self.clip_grad:
                        norm = self.acc.clip_grad_norm_(self.model.parameters(), self.clip_grad)
                        if not fp16 and norm is not None and self._nonfinite(torch.as_tensor(norm)):
                            self._handle_nonfinite("gradient norm", torch.as_tensor(norm))
                            skip = True
                    if not skip:
                        self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        n = max(1, len(losses))
        mean_loss = sum(losses) / n if losses else float("nan")
        return mean_loss, {k: v / n for k, v in metric_sums.items()}, samples

    def evaluate(self) -> dict[str, float]:
        """Run ``evaluate_fn`` in eval mode (returns {} without one)."""
        if self.evaluate_fn is None:
            return {}
        self.model.eval()
        with torch.no_grad():
            metrics = dict(self.evaluate_fn(self.model))
        self.model.train()
        return metrics

    def on_step_end(self) -> None:
        """Hook called after every optimizer update (``self.state.step`` already counts it); override in
        subclasses, e.g. to update an EMA model. Must not use the global random generators."""

    def _stop_requested(self) -> bool:
        flag = torch.tensor([1.0 if self._signal else 0.0], device=self.acc.device)
        if self.acc.num_processes > 1:
            flag = self.acc.reduce(flag, reduction="sum")
        return bool(flag.item() > 0)

    @contextlib.contextmanager
    def _catch_signals(self):
        """On SIGTERM/SIGINT: finish the current update, checkpoint, stop (see ``run.save_on_signal``)."""
        self._signal = None
        if not self.run.save_on_signal or threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._signal is not None:  # second signal: give up immediately
                raise KeyboardInterrupt
            self._signal = signal.Signals(signum).name

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def fit(self, resume_from: str | Path | None = None) -> TrainResult:
        """Train to ``run.epochs`` (or ``run.max_steps``), evaluating, logging and checkpointing.

        On SIGTERM/SIGINT (with ``run.save_on_signal``) the current update is finished, a checkpoint is
        written and the result has ``interrupted`` set to the signal name.

        Raises:
            NonFiniteLossError: a NaN/inf loss with ``run.on_nonfinite=stop`` (names the step).
        """
        with self._catch_signals():
            return self._fit(resume_from)

    def _fit(self, resume_from: str | Path | None) -> TrainResult:
        t0 = time.time()
        self._last_saved = -1
        if self.acc.is_main_process and self.config is not None:
            save_config(self.config, self.run_dir / "config.yaml")
        if resume_from is not None:
            self.load_checkpoint(resume_from)
            self.print(f"resumed from {resume_from} at step {self.state.step} (epoch {self.state.epoch + 1}, "
                       f"batch {self.state.batch_in_epoch})")
        run, st = self.run, self.state
        total = self.total_steps if run.max_steps is None else min(self.total_steps, run.max_steps)
        bar = progress_bar(total, "train", initial=min(st.step, total),
                           disable=not (self.acc.is_main_process and run.progress))
        stop_reason: str | None = None
        metrics: dict[str, float] = {}
        metrics_step = -1
        self.model.train()
        window_t, window_samples = time.time(), 0
        while st.epoch < run.epochs and stop_reason is None:
            epoch_t0 = time.time()
            self.sampler.set_epoch(st.epoch, start_batch=st.batch_in_epoch)
            it = iter(self.loader)
            for update in range(st.batch_in_epoch // run.grad_accum_steps, self.updates_per_epoch):
                if run.max_steps is not None and st.step >= run.max_steps:
                    stop_reason = "max_steps"
                    break
                loss, step_metrics, samples = self._train_step(it)
                self.on_step_end()
                if not math.isnan(loss):
                    st.epoch_loss_sum += loss
                    st.epoch_loss_count += 1
                window_samples += samples
                lr = self.optimizer.param_groups[0]["lr"]
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", epoch=st.epoch + 1)
                if run.log_every and st.step % run.log_every == 0:
                    dt = max(time.time() - window_t, 1e-9)
                    self.logger.log_step(st.step, {"epoch": st.epoch + 1, "loss": loss, "lr": lr,
                                                   "samples_per_s": window_samples * self.layout.data_world / dt,
                                                   **step_metrics})
                    window_t, window_samples = time.time(), 0
                if run.eval_every_steps and st.step % run.eval_every_steps == 0:
                    metrics, metrics_step = self.evaluate(), st.step
                    self.logger.log_step(st.step, {"epoch": st.epoch + 1, **metrics})
                    self.print(f"step {st.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                if run.checkpoint_every and st.step % run.checkpoint_every == 0:
                    self.save_checkpoint()
                last_update = update + 1 == self.updates_per_epoch
                if self._stop_requested():
                    stop_reason = self._signal or "signal"
                    if not last_update:
                        break
                if run.max_steps is not None and st.step >= run.max_steps and not last_update:
                    stop_reason = "max_steps"  # mid-epoch stop; at an epoch end, finish the epoch first
                    break
            else:
                # End of epoch (remainder batches, fewer than grad_accum_steps, are dropped).
                row = {"train_loss": st.epoch_loss_sum / max(1, st.epoch_loss_count),
                       "lr": self.optimizer.param_groups[0]["lr"], "epoch_s": time.time() - epoch_t0}
                last_epoch = st.epoch + 1 == run.epochs
                if run.eval_every_epochs and ((st.epoch + 1) % run.eval_every_epochs == 0 or last_epoch):
                    metrics, metrics_step = self.evaluate(), st.step
                    row.update(metrics)
                    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                    self.print(f"epoch {st.epoch + 1}/{run.epochs}: train_loss {row['train_loss']:.4f}"
                               + (f", {shown}" if shown else ""))
                self.logger.log_epoch(st.epoch + 1, st.step, row)
                st.epoch += 1
                st.batch_in_epoch = 0
                st.epoch_loss_sum, st.epoch_loss_count = 0.0, 0
                if (run.checkpoint_every_epochs and st.epoch % run.checkpoint_every_epochs == 0
                        and self._last_saved != st.step):
                    self.save_checkpoint()
        bar.close()
        interrupted = stop_reason if stop_reason not in (None, "max_steps") else None
        if interrupted:
            ckpt = self.save_checkpoint() if self._last_saved != st.step else find_latest(self.ckpt.root)
            self.print(f"stopped by {interrupted} at step {st.step}; checkpoint {ckpt}; "
                       f"continue with --resume {self.run_dir}")
            self.logger.close(plot=False)
            return TrainResult(self.run_dir, st, metrics, ckpt, True, time.time() - t0, interrupted)
        if metrics_step != st.step:
            metrics = self.evaluate()
            if metrics:
                self.print("final evaluation: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        ckpt = self.save_checkpoint() if self._last_saved != st.step else find_latest(self.ckpt.root)
        save_model_file(self._state_module(), self.run_dir / MODEL_FILE, is_main=self.acc.is_main_process)
        png = self.logger.close(plot=run.plot)
        self.acc.wait_for_everyone()
        if png:
            self.print(f"training curves: {png}")
        return TrainResult(self.run_dir, st, metrics, ckpt, stop_reason == "max_steps", time.time() - t0)


def _default_batch_items(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return _default_batch_items(batch[0])
    if isinstance(batch, Mapping) and batch:
        return _default_batch_items(next(iter(batch.values())))
    return 0
