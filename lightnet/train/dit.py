"""``lightnet train-dit``: train a class-conditional diffusion transformer (DiT recipe) on accelerate.

``lightnet train-dit [-c RECIPE] [--resume [RUN_DIR|CHECKPOINT]] [--print-config] [key=value ...]``

* Model: :class:`~lightnet.generation.LightNetDiTModel` (``model.arch: lightnet``, a ``LightNet-DiT-*`` preset plus
  ``model.kwargs``) or, as the softmax-attention baseline, diffusers' ``DiTTransformer2DModel`` of a DiT size
  (``model.arch: dit``, preset ``DiT-S/2`` …).
* Data: the built-in ``digits`` / ``fashion_mnist`` datasets or an ``imagefolder`` tree
  (:mod:`lightnet.train.datasets`), resized to ``data.img_size`` and scaled to [−1, 1]. Pixel space by default;
  with ``vae.path`` (a local diffusers ``AutoencoderKL`` folder) images are encoded on the fly and the model is
  trained on ``latent · scaling_factor`` (DiT's latent recipe).
* Clips: ``data.dataset: moving_fashion_mnist`` trains the video model on Moving Fashion-MNIST
  (:mod:`lightnet.train.moving_fashion_mnist`, settings in ``data.moving``): clips ``[1, T, H, W]`` scaled to
  [−1, 1], conditioned on ``data.moving.label`` (``class``, the item's class, by default), a
  :class:`~lightnet.generation.LightNetDiTModel` with ``num_frames = data.moving.num_frames`` (and
  ``model.kwargs.temporal_patch_size``), frame-grid samples (one row of frames per clip) and a saved
  :class:`~lightnet.generation.LightNetVideoDiTPipeline`. Pixel space and ``model.arch: lightnet`` only.
* Objective: DDPM noise schedule from diffusers' ``DDPMScheduler`` (linear betas, 1000 steps by default),
  ε-prediction MSE; with ``model.learn_sigma`` also the variational bound for the variance (Improved DDPM).
  Label dropout for classifier-free guidance happens inside the model (``class_dropout_prob``).
* The shared :class:`~lightnet.train.engine.Trainer` supplies mixed precision, gradient clipping, safetensors
  checkpoints with ``--resume``, tqdm, CSV/TensorBoard logs. This module adds EMA weights (saved as
  ``ema.safetensors`` in every checkpoint), a PNG sample grid from the EMA model every ``sample.every`` steps
  (``RUN/samples/step_XXXXXXXX.png``), a fixed held-out denoising loss (``eval_loss``), and at the end a saved
  :class:`~lightnet.generation.LightNetDiTPipeline` folder ``RUN/pipeline`` (EMA transformer, DDPM scheduler,
  VAE if any) for ``lightnet sample`` / ``lightnet fid`` / ``LightNetDiTPipeline.from_pretrained``.
"""
from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .config import ConfigError
from .datasets import build_image_dataset
from .engine import Trainer, fsdp_requested
from .moving_fashion_mnist import MovingClipConfig, MovingFashionMNIST, is_video_dataset
from .schema import OptimConfig, RunConfig, SchedConfig

__all__ = ["DiTTrainConfig", "DiffusionTrainer", "EMA", "build_dit_model", "train_dit", "train_main"]

DEFAULT_RECIPE = "dit_digits"


@dataclass
class DiTModelConfig:
    """Which transformer to train."""

    arch: str = "lightnet"  # lightnet (LightNetDiTModel) | dit (diffusers DiTTransformer2DModel, the baseline)
    preset: Optional[str] = "LightNet-DiT-S/2"  # LightNet-DiT-{S,B,L,XL}/{2,4,8}; for arch=dit: DiT-S/2 ...
    learn_sigma: bool = False  # out_channels = 2 x in_channels, trained with the variational bound
    gradient_checkpointing: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)  # constructor overrides (hidden_size, num_layers, ...)
    # native: each model's own initialisation (LightNet-DiT: the DiT paper's with N(0, 1) class embeddings;
    # diffusers' DiTTransformer2DModel: PyTorch's defaults, i.e. N(0, 1) class embeddings and a random adaLN);
    # dit_paper: the DiT paper's for both (class embeddings N(0, 0.02), zero adaLN and output); lightnet:
    # LightNet-DiT's for both (the DiT paper's with N(0, 1) class embeddings)
    init: str = "native"


@dataclass
class DiTDataConfig:
    """Training images (pixel space at ``img_size``; the VAE input size in latent mode) or clips (``moving``)."""

    dataset: str = "digits"  # digits | fashion_mnist | imagefolder | moving_fashion_mnist (clips, video model)
    root: Optional[str] = None
    img_size: int = 32  # with clips: must equal moving.canvas
    in_chans: Optional[int] = None  # default: the dataset's (1 for digits/Fashion-MNIST/clips, 3 for imagefolder)
    hflip: bool = False  # random horizontal flips (DiT uses them on ImageNet)
    batch_size: int = 64
    num_workers: int = 0
    eval_split: str = "test"
    eval_samples: int = 256  # held-out images (clips) for the fixed denoising loss (0 = off)
    # clips of moving_fashion_mnist; label = the conditioning class (class: the item's class, or direction)
    moving: MovingClipConfig = field(default_factory=lambda: MovingClipConfig(label="class"))


@dataclass
class NoiseConfig:
    """The DDPM forward process (arguments of diffusers' ``DDPMScheduler``)."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02


@dataclass
class VAEConfig:
    """Latent diffusion: a local ``AutoencoderKL`` folder (``save_pretrained`` layout); null = pixel space."""

    path: Optional[str] = None
    subfolder: Optional[str] = None
    required: bool = False  # latent recipes set this: a missing vae.path is then an error, not pixel space
    scaling_factor: Optional[float] = None  # default: the VAE config's (0.18215 for the SD VAE)


@dataclass
class EMAConfig:
    """Exponential moving average of the weights (the weights that get sampled and saved)."""

    decay: float = 0.9999
    warmup: bool = True  # effective decay min(decay, (1 + n) / (10 + n)) after n updates


@dataclass
class SampleConfig:
    """Sample grids written during training (from the EMA model)."""

    every: int = 500  # optimizer steps between grids; 0 = only the final grid
    per_class: int = 8  # images per class (a row); with clips: clips per class (a row of frames each)
    max_classes: int = 10  # first classes sampled
    steps: int = 50
    guidance_scale: float = 4.0
    scheduler: str = "ddim"  # ddim | ddpm | dpm | euler
    seed: int = 0


@dataclass
class DiTTrainConfig:
    """Full config of ``lightnet train-dit`` (recipe sections: model, data, noise, vae, ema, sample, optim, sched, run)."""

    name: str = "dit_digits"
    model: DiTModelConfig = field(default_factory=DiTModelConfig)
    data: DiTDataConfig = field(default_factory=DiTDataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, weight_decay=0.0))
    sched: SchedConfig = field(default_factory=lambda: SchedConfig(sched="cosine", min_lr=1e-5))
    run: RunConfig = field(default_factory=RunConfig)


# --------------------------------------------------------------------------- model
def build_dit_model(cfg: DiTModelConfig, in_channels: int, num_classes: int, sample_size: int,
                    num_frames: Optional[int] = None) -> torch.nn.Module:
    """The transformer for ``cfg`` with the data-dependent fields (channels, classes, size) filled in;
    ``num_frames`` (clips) builds the video :class:`~lightnet.generation.LightNetDiTModel` (``model.arch: lightnet``
    only)."""
    from lightnet.generation import DIT_PRESETS, LightNetDiTModel
    from lightnet.layers import rename_legacy_keys

    out_channels = 2 * in_channels if cfg.learn_sigma else in_channels
    if cfg.init not in _INIT_CLASS_STD:
        raise ConfigError(f"model.init must be one of {list(_INIT_CLASS_STD)}, got {cfg.init!r}")
    if num_frames is not None and cfg.arch != "lightnet":
        raise ConfigError(f"clips (data.dataset=moving_fashion_mnist) train the video LightNetDiTModel only; "
                          f"model.arch={cfg.arch!r} is an image model (use model.arch=lightnet)")
    if cfg.arch == "lightnet":
        kwargs = dict(DIT_PRESETS[_check_preset(cfg.preset, DIT_PRESETS)]) if cfg.preset else {}
        kwargs.update(in_channels=in_channels, out_channels=out_channels, num_classes=num_classes,
                      sample_size=sample_size)
        if _INIT_CLASS_STD[cfg.init] is not None:
            kwargs["class_embed_init_std"] = _INIT_CLASS_STD[cfg.init]
        kwargs.update(rename_legacy_keys(cfg.kwargs, "model.kwargs"))  # a resumed run's config.yaml may be older
        if num_frames is not None:
            _check_clip_model(kwargs, num_frames, sample_size)
            kwargs["num_frames"] = num_frames
        elif kwargs.get("num_frames") is not None or kwargs.get("temporal_patch_size", 1) != 1:
            raise ConfigError("model.kwargs.num_frames / temporal_patch_size make a video model; train one on clips "
                              "(data.dataset=moving_fashion_mnist, clip length data.moving.num_frames)")
        try:
            return LightNetDiTModel(**kwargs)
        except (TypeError, ValueError) as e:  # an unknown or invalid constructor argument in model.kwargs
            raise ConfigError(f"model.kwargs rejected by LightNetDiTModel: {e}") from e
    if cfg.arch == "dit":
        from diffusers.models import DiTTransformer2DModel

        sizes = {name.replace("LightNet-", ""): v for name, v in DIT_PRESETS.items()}
        kwargs = {}
        if cfg.preset:
            p = sizes[_check_preset(cfg.preset, sizes)]
            kwargs = dict(num_layers=p["num_layers"], num_attention_heads=p["num_attention_heads"],
                          attention_head_dim=p["hidden_size"] // p["num_attention_heads"], patch_size=p["patch_size"])
        kwargs.update(in_channels=in_channels, out_channels=out_channels, num_embeds_ada_norm=num_classes,
                      sample_size=sample_size)
        kwargs.update(cfg.kwargs)
        try:
            model = DiTTransformer2DModel(**kwargs)
        except TypeError as e:
            raise ConfigError(f"model.kwargs rejected by DiTTransformer2DModel: {e}") from e
        if cfg.init != "native":
            from lightnet.generation import dit_paper_init

            dit_paper_init(model, class_embed_init_std=_INIT_CLASS_STD[cfg.init])
        return model
    raise ConfigError(f"model.arch must be 'lightnet' or 'dit', got {cfg.arch!r}")


def _check_clip_model(kwargs: dict, num_frames: int, sample_size: int) -> None:
    """Clip length and frame size against the tubelet (``temporal_patch_size × patch_size²``), in config names."""
    given = kwargs.get("num_frames")
    if given is not None and given != num_frames:
        raise ConfigError(f"model.kwargs.num_frames={given} differs from the clip length data.moving.num_frames="
                          f"{num_frames} (leave model.kwargs.num_frames unset: it is taken from the data)")
    k, p = kwargs.get("temporal_patch_size", 1), kwargs.get("patch_size", 2)
    if not isinstance(k, int) or k < 1 or num_frames % k:
        raise ConfigError(f"data.moving.num_frames={num_frames} is not divisible by model.kwargs.temporal_patch_size="
                          f"{k} (tubelets of {k} frames)")
    if sample_size % p:
        raise ConfigError(f"data.moving.canvas={sample_size} is not divisible by the patch size {p}")


# model.init -> std of the class embeddings (None: the model's own initialisation)
_INIT_CLASS_STD = {"native": None, "dit_paper": 0.02, "lightnet": 1.0}


def _check_preset(name: str, known: dict) -> str:
    if name not in known:
        raise ConfigError(f"unknown model.preset {name!r}; choose one of {list(known)}")
    return name


# --------------------------------------------------------------------------- EMA
class EMA:
    """EMA of a model's floating-point parameters and buffers into a separate copy (kept in fp32, eval mode)."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"ema.decay must be in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        """Decay used for update number ``updates`` (1-based)."""
        return min(self.decay, (1.0 + updates) / (10.0 + updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, updates: int) -> None:
        d = self.decay_at(updates)
        ema_state = self.model.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if target.dtype.is_floating_point:
                target.lerp_(value.detach().to(target.dtype), 1.0 - d)
            else:
                target.copy_(value)


# --------------------------------------------------------------------------- data
def _transform(img_size: int, in_chans: int, hflip: bool):
    from torchvision import transforms as T

    ops = [T.Resize(img_size, interpolation=T.InterpolationMode.BICUBIC, antialias=True), T.CenterCrop(img_size)]
    if hflip:
        ops.append(T.RandomHorizontalFlip())
    ops += [T.ToTensor(), T.Normalize([0.5] * in_chans, [0.5] * in_chans)]  # [0, 1] -> [-1, 1]
    return T.Compose(ops)


class UnitRangeClips(torch.utils.data.Dataset):
    """Moving Fashion-MNIST clips for diffusion: ``(float clip [1, T, H, W] in [−1, 1], label)``, the label being
    ``cfg.label`` of the clip (:meth:`MovingFashionMNIST.clip_and_labels`), as the image path scales images."""

    def __init__(self, clips: MovingFashionMNIST) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        frames, labels = self.clips.clip_and_labels(index)  # uint8 [T, 1, H, W]
        x = torch.from_numpy(frames).float().div_(127.5).sub_(1.0)
        return x.permute(1, 0, 2, 3).contiguous(), labels[self.clips.cfg.label]


def _clip_datasets(cfg: DiTTrainConfig):
    d = cfg.data
    m = d.moving
    if d.img_size != m.canvas:
        raise ConfigError(f"data.img_size={d.img_size} differs from data.moving.canvas={m.canvas}: clips are not "
                          f"resized, set both to the frame size")
    if d.in_chans not in (None, 1):
        raise ConfigError(f"data.in_chans={d.in_chans}: Moving Fashion-MNIST clips have 1 channel")
    if d.hflip:
        raise ConfigError("data.hflip applies to images; clips are not flipped (set data.hflip=false)")
    if cfg.vae.path or cfg.vae.required:
        raise ConfigError("train-dit trains clips in pixel space only; a VAE (vae.path / vae.required) with "
                          "data.dataset=moving_fashion_mnist is not supported")
    train = MovingFashionMNIST(m, "train", seed=cfg.run.seed, root=d.root)
    eval_ds = UnitRangeClips(MovingFashionMNIST(m, d.eval_split, seed=cfg.run.seed, root=d.root)) \
        if d.eval_samples > 0 else None
    return UnitRangeClips(train), eval_ds, train.info(), 1


def _datasets(cfg: DiTTrainConfig):
    d = cfg.data
    if is_video_dataset(d.dataset):
        return _clip_datasets(cfg)
    _, info = build_image_dataset(d.dataset, "train", d.root, None, d.in_chans)
    in_chans = d.in_chans or info.in_chans
    train_ds, _ = build_image_dataset(d.dataset, "train", d.root, _transform(d.img_size, in_chans, d.hflip), in_chans)
    eval_ds = None
    if d.eval_samples > 0:
        eval_ds, _ = build_image_dataset(d.dataset, d.eval_split, d.root, _transform(d.img_size, in_chans, False),
                                         in_chans)
    return train_ds, eval_ds, info, in_chans


def _load_vae(cfg: VAEConfig):
    if not cfg.path:
        if cfg.required:
            raise ConfigError("this recipe trains in the latent space of a VAE: set vae.path=/path/to/AutoencoderKL "
                              "(a local diffusers folder, e.g. stabilityai/sd-vae-ft-ema saved with save_pretrained)")
        return None
    from diffusers import AutoencoderKL

    path = Path(cfg.path)
    if not path.exists():
        raise ConfigError(f"vae.path {path} does not exist (a local AutoencoderKL folder, e.g. a saved "
                          f"stabilityai/sd-vae-ft-ema; no downloads are made)")
    try:
        vae = AutoencoderKL.from_pretrained(str(path), subfolder=cfg.subfolder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load an AutoencoderKL from vae.path={path}: {e}") from e
    return vae.eval().requires_grad_(False)


# --------------------------------------------------------------------------- trainer
FSDP_UNSUPPORTED = ("train-dit does not support FSDP (its EMA needs the full weights every step); launch with DDP "
                    "(--multi_gpu), DiT-B/2 fits one GPU")


class DiffusionTrainer(Trainer):
    """:class:`Trainer` plus an EMA update and an optional sample grid after every optimizer step.

    (Both run in the :meth:`Trainer.on_step_end` hook; the EMA copy is checkpointed through ``extra_modules``
    as ``ema``.)
    """

    def __init__(self, *args: Any, ema: EMA, sample_fn=None, sample_every: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, extra_modules={"ema": ema.model}, **kwargs)
        if self.sharded:
            raise ConfigError(FSDP_UNSUPPORTED)
        self.ema = ema
        self.ema.model.to(self.acc.device)
        self.sample_fn, self.sample_every = sample_fn, sample_every

    def on_step_end(self) -> None:
        self.ema.update(self.unwrapped(), self.state.step)
        if self.sample_fn is not None and self.sample_every and self.state.step % self.sample_every == 0:
            if self.acc.is_main_process:
                self.print(f"step {self.state.step}: sample grid {self.sample_fn(self.state.step)}")
            self.acc.wait_for_everyone()


def _make_pipeline(transformer, noise: NoiseConfig, vae, class_names: list[str]):
    """:class:`LightNetDiTPipeline`, or :class:`LightNetVideoDiTPipeline` for a video transformer.

    A video pipeline's scheduler does not clip the predicted clean sample (``clip_sample=False``): at high noise
    the per-pixel ``x0`` estimate of a trained model is far outside [−1, 1], and clipping it pixel by pixel erases
    the clip's mean brightness (which a model resolves early from the many pixels of a clip); DDIM carries the
    grey mean forward and the samples end as noise (``docs/generation.md``, Video). Images keep diffusers' default.
    """
    from diffusers import DDPMScheduler

    from lightnet.generation import LightNetDiTPipeline, LightNetVideoDiTPipeline

    video = getattr(transformer.config, "num_frames", None) is not None
    scheduler = DDPMScheduler(num_train_timesteps=noise.num_train_timesteps, beta_schedule=noise.beta_schedule,
                              beta_start=noise.beta_start, beta_end=noise.beta_end, clip_sample=not video)
    cls = LightNetVideoDiTPipeline if video else LightNetDiTPipeline
    return cls(transformer, scheduler, vae=vae, class_names=class_names)


def train_dit(cfg: DiTTrainConfig, resume_from: str | Path | None = None, run_dir: str | Path | None = None):
    """Train as configured; returns the engine's ``TrainResult`` (``RUN/pipeline`` holds the saved pipeline)."""
    from diffusers import DDPMScheduler

    from lightnet.generation.losses import DiffusionLoss

    from .engine import start_run
    from .rng import seed_everything
    from .sample import sample_clips, sample_images, save_clip_grid, save_grid, set_scheduler

    if fsdp_requested():  # before a run folder is made; DiffusionTrainer checks the prepared model as well
        raise ConfigError(FSDP_UNSUPPORTED)
    accelerator, run_path = start_run(cfg.run, cfg.name, run_dir)

    train_ds, eval_ds, info, in_chans = _datasets(cfg)
    num_frames = cfg.data.moving.num_frames if is_video_dataset(cfg.data.dataset) else None
    vae = _load_vae(cfg.vae)
    if vae is not None:
        if vae.config.in_channels != in_chans:
            raise ConfigError(f"the VAE takes {vae.config.in_channels}-channel images, the dataset gives {in_chans}")
        vae = vae.to(accelerator.device)
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if cfg.data.img_size % factor:
            raise ConfigError(f"data.img_size {cfg.data.img_size} is not divisible by the VAE factor {factor}")
        channels, size = vae.config.latent_channels, cfg.data.img_size // factor
        scaling = cfg.vae.scaling_factor or vae.config.scaling_factor
    else:
        channels, size, scaling = in_chans, cfg.data.img_size, 1.0

    seed_everything(cfg.run.seed)
    model = build_dit_model(cfg.model, channels, info.num_classes, size, num_frames)
    if cfg.model.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    ema = EMA(model, cfg.ema.decay, cfg.ema.warmup)
    noise_scheduler = DDPMScheduler(num_train_timesteps=cfg.noise.num_train_timesteps,
                                    beta_schedule=cfg.noise.beta_schedule, beta_start=cfg.noise.beta_start,
                                    beta_end=cfg.noise.beta_end)
    objective = DiffusionLoss(noise_scheduler, learn_sigma=cfg.model.learn_sigma)
    n_params = sum(p.numel() for p in model.parameters())

    def encode(x: torch.Tensor) -> torch.Tensor:
        if vae is None:
            return x
        with torch.no_grad():
            return vae.encode(x.to(vae.dtype)).latent_dist.sample().float() * scaling

    def loss_fn(model: torch.nn.Module, batch: Any):
        x, y = batch
        x0 = encode(x)
        noise = torch.randn_like(x0)
        t = objective.sample_timesteps(x0.shape[0], x0.device)
        x_t = noise_scheduler.add_noise(x0, noise, t)
        out = model(x_t, timestep=t, class_labels=y).sample
        return objective(out, x0, x_t, noise, t)

    eval_batch = _fixed_eval_batch(eval_ds, cfg.data.eval_samples, objective, cfg.run.seed) if eval_ds else None

    def eval_fn(model: torch.nn.Module) -> dict[str, float]:
        eager = accelerator.unwrap_model(model, keep_torch_compile=False)
        return {"eval_loss": _eval_loss(eager, eval_batch, encode, noise_scheduler, objective, accelerator.device)
                } if eval_batch else {}

    num_rows = min(info.num_classes, cfg.sample.max_classes)
    grid_labels = [c for c in range(num_rows) for _ in range(cfg.sample.per_class)]

    def sample_fn(step: int | str) -> Path:
        pipe = _make_pipeline(ema.model, cfg.noise, vae, info.class_names)
        set_scheduler(pipe, cfg.sample.scheduler)
        name = f"step_{step:08d}.png" if isinstance(step, int) else f"{step}.png"
        kw = dict(seed=cfg.sample.seed, guidance_scale=cfg.sample.guidance_scale, num_inference_steps=cfg.sample.steps)
        if num_frames is not None:  # one row of frames per clip
            clips = sample_clips(pipe, grid_labels, batch_size=len(grid_labels), **kw)
            return save_clip_grid(clips, run_path / "samples" / name)
        images = sample_images(pipe, grid_labels, batch_size=len(grid_labels), progress=False, **kw)
        return save_grid(images, run_path / "samples" / name, nrow=cfg.sample.per_class)

    trainer = DiffusionTrainer(cfg.run, accelerator, model, dataset=train_ds, batch_size=cfg.data.batch_size,
                               loss_fn=loss_fn, optim=cfg.optim, sched=cfg.sched, run_dir=run_path, config=cfg,
                               evaluate_fn=eval_fn if eval_batch else None, num_workers=cfg.data.num_workers,
                               ema=ema, sample_fn=sample_fn, sample_every=cfg.sample.every)
    frames = f"{num_frames}x" if num_frames is not None else ""
    space = (f"latent {channels}x{size}x{size} (VAE x{scaling:g})" if vae is not None
             else f"pixel {channels}x{frames}{size}x{size}")
    items = "clips" if num_frames is not None else "images"
    trainer.print(f"run folder: {run_path}")
    trainer.print(f"model {cfg.model.arch} {cfg.model.preset or ''}: {n_params / 1e6:.3f}M parameters; dataset "
                  f"{info.name}: {len(train_ds)} {items}, {info.num_classes} classes, {space}; {trainer.total_steps} "
                  f"steps ({cfg.run.epochs} epochs x {trainer.updates_per_epoch}), global batch {trainer.global_batch}, "
                  f"device {accelerator.device}, precision {accelerator.mixed_precision}")
    initial = eval_fn(model.to(accelerator.device)) if (eval_batch and resume_from is None) else {}
    if initial:
        trainer.print(f"initial eval_loss {initial['eval_loss']:.4f}")
    result = trainer.fit(resume_from=resume_from)
    if accelerator.is_main_process:
        final_grid = sample_fn("final")
        pipe = _make_pipeline(ema.model, cfg.noise, vae, info.class_names)
        pipe.save_pretrained(run_path / "pipeline")
        summary = {**result.metrics, "step": result.state.step, "seconds": result.seconds, "params": n_params,
                   "stopped_early": result.stopped_early, "pipeline": str(run_path / "pipeline"),
                   "final_grid": str(final_grid)}
        if initial:
            summary["initial_eval_loss"] = initial["eval_loss"]
        (run_path / "final_metrics.json").write_text(json.dumps(summary, indent=1))
        trainer.print(f"saved pipeline {run_path / 'pipeline'}; sample grid {final_grid}")
    accelerator.wait_for_everyone()
    return result


def _fixed_eval_batch(dataset, n: int, objective, seed: int) -> dict[str, torch.Tensor]:
    """The first ``n`` held-out images (or clips) with fixed timesteps and noise (a deterministic denoising loss)."""
    n = min(n, len(dataset))
    items = [dataset[i] for i in range(n)]
    x = torch.stack([it[0] for it in items])
    y = torch.tensor([int(it[1]) for it in items])
    g = torch.Generator().manual_seed(seed + 12345)
    t = torch.randint(0, objective.num_timesteps, (n,), generator=g)
    return {"x": x, "y": y, "t": t, "seed": torch.tensor(seed)}


@torch.no_grad()
def _eval_loss(model, batch, encode, noise_scheduler, objective, device, chunk: int = 128) -> float:
    """Mean ε-MSE (plus ``L_vb`` with learned sigma) of ``model`` on the fixed batch, in eval mode."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(int(batch["seed"]) + 54321)
    total, count = 0.0, 0
    for i in range(0, len(batch["x"]), chunk):
        x = batch["x"][i:i + chunk].to(device)
        y, t = batch["y"][i:i + chunk].to(device), batch["t"][i:i + chunk].to(device)
        x0 = encode(x)
        noise = torch.randn(x0.shape, generator=g).to(device)
        x_t = noise_scheduler.add_noise(x0, noise, t)
        out = model(x_t, timestep=t, class_labels=y).sample
        loss, _ = objective(out, x0, x_t, noise, t)
        total += float(loss) * len(x)
        count += len(x)
    model.train(was_training)
    return total / max(count, 1)


# --------------------------------------------------------------------------- CLI
def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightnet train-dit``; returns the exit code (see :mod:`lightnet.train.entry`)."""
    from .entry import run_trainer_cli

    return run_trainer_cli(
        argv, prog="lightnet train-dit", config_cls=DiTTrainConfig, default_recipe=DEFAULT_RECIPE, train_fn=train_dit,
        description="Train a class-conditional diffusion transformer (LightNet-DiT or diffusers DiT) on accelerate.",
        examples=["lightnet train-dit", "lightnet train-dit -c dit_fashion_mnist run.epochs=2",
                  "lightnet train-dit -c dit_fashion_mnist model.arch=dit model.preset=DiT-S/2",
                  "lightnet train-dit -c dit_imagenet256 data.root=/data/imagenet vae.path=/models/sd-vae-ft-ema",
                  "lightnet train-dit -c dit_moving_fashion_mnist",
                  "lightnet train-dit --resume runs/20250101-120000-dit_digits"])


if __name__ == "__main__":
    sys.exit(train_main())
