"""Class-conditional sampling pipeline for LightNet (and diffusers DiT) transformers.

Unlike diffusers' ``DiTPipeline`` (1000 ImageNet classes, null class 1000 hard-coded, VAE required, square
training-size only) this pipeline:

* works with any number of classes, using the transformer's own null class for classifier-free guidance
  (``config.num_classes`` for :class:`~lightnet.generation.LightNetDiTModel`, ``config.num_embeds_ada_norm`` for
  diffusers' ``DiTTransformer2DModel``);
* runs in pixel space when ``vae`` is ``None`` (``in_channels`` 1 or 3) or in the latent space of an ``AutoencoderKL``;
* accepts ``height``/``width`` other than the training size (LightNet's positional encodings are relative);
* works with any diffusers scheduler (swap with ``XScheduler.from_config(pipe.scheduler.config)``).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.image_processor import VaeImageProcessor
from diffusers.models import AutoencoderKL
from diffusers.schedulers import KarrasDiffusionSchedulers  # noqa: F401  (documents the accepted schedulers)
from diffusers.utils.torch_utils import randn_tensor

__all__ = ["LightNetDiTPipeline", "null_class_of"]

_OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def null_class_of(transformer: torch.nn.Module) -> int:
    """Index of the unconditional class: ``num_classes`` (LightNet) or ``num_embeds_ada_norm`` (diffusers DiT)."""
    cfg = transformer.config
    for key in ("num_classes", "num_embeds_ada_norm"):
        value = getattr(cfg, key, None)
        if isinstance(value, int):
            return value
    raise ValueError(
        f"{type(transformer).__name__} has neither config.num_classes nor config.num_embeds_ada_norm; "
        "cannot find its null class for classifier-free guidance"
    )


class LightNetDiTPipeline(DiffusionPipeline):
    """Sample class-conditional images from a diffusion transformer.

    Args:
        transformer: :class:`~lightnet.generation.LightNetDiTModel` (or any model with DiT's forward signature and a
            null class at index ``num_classes``).
        scheduler: any diffusers scheduler (DDPM, DDIM, DPMSolverMultistep, ...).
        vae: ``AutoencoderKL`` for latent models; ``None`` for pixel-space models.
        class_names: optional names of the classes (saved in ``model_index.json``).
    """

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]

    def __init__(
        self,
        transformer: torch.nn.Module,
        scheduler: KarrasDiffusionSchedulers,
        vae: Optional[AutoencoderKL] = None,
        class_names: Optional[List[str]] = None,
    ) -> None:
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, vae=vae)
        self.register_to_config(class_names=list(class_names) if class_names is not None else None)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    # ------------------------------------------------------------------ saving / loading
    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """diffusers' ``save_pretrained`` plus a two-line custom-pipeline file, so that the folder also loads through
        ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` (see :func:`_write_loader_module`)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        _write_loader_module(Path(save_directory), type(self).__name__)

    @classmethod
    def load_config(cls, *args, **kwargs):
        """diffusers' ``load_config``, with the ``[module, class]`` pair that :meth:`save_pretrained` writes as
        ``_class_name`` read back as this class's name, so ``LightNetDiTPipeline.from_pretrained`` loads the class
        it was called on (no custom-code step, no ``trust_remote_code``)."""
        out = super().load_config(*args, **kwargs)
        config = out[0] if isinstance(out, tuple) else out
        name = config.get("_class_name")
        if isinstance(name, (list, tuple)) and len(name) == 2 and name[0] == LOADER_MODULE:
            config["_class_name"] = name[1]
        return out

    @property
    def num_classes(self) -> int:
        """Number of real classes (labels ``0 … num_classes − 1``)."""
        return null_class_of(self.transformer)

    def get_label_ids(self, names: Union[str, Sequence[str]]) -> List[int]:
        """Map class names (``class_names`` given at construction) to label ids."""
        known = self.config.class_names
        if not known:
            raise ValueError("this pipeline was built without class_names; pass integer class labels")
        names = [names] if isinstance(names, str) else list(names)
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"unknown class names {missing}; known: {list(known)}")
        return [list(known).index(n) for n in names]

    def _check_components(self) -> None:
        in_channels = self.transformer.config.in_channels
        if self.vae is None and in_channels not in (1, 3):
            raise ValueError(
                f"the transformer works on {in_channels}-channel latents but the pipeline has no VAE; "
                "pass vae=AutoencoderKL(...) for a latent model (pixel-space models have 1 or 3 channels)"
            )
        if self.vae is not None and self.vae.config.latent_channels != in_channels:
            raise ValueError(
                f"VAE latent channels ({self.vae.config.latent_channels}) do not match the transformer's "
                f"in_channels ({in_channels})"
            )

    def _latent_size(self, height: Optional[int], width: Optional[int]) -> tuple[int, int]:
        default = self.transformer.config.sample_size * self.vae_scale_factor
        height, width = height or default, width or default
        multiple = self.vae_scale_factor * self.transformer.config.patch_size
        if height % multiple or width % multiple:
            raise ValueError(
                f"height x width {height}x{width} must be divisible by {multiple} "
                f"(VAE factor {self.vae_scale_factor} x patch size {self.transformer.config.patch_size})"
            )
        return height // self.vae_scale_factor, width // self.vae_scale_factor

    def _labels(self, class_labels: Union[int, Sequence[int], torch.Tensor, None], batch_size: Optional[int]) -> Optional[torch.Tensor]:
        if class_labels is None:
            if batch_size is None:
                raise ValueError("give class_labels, or batch_size for unconditional (null-class) samples")
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
            return None
        labels = torch.as_tensor(class_labels)
        if labels.numel() == 0:
            raise ValueError("class_labels is empty")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"class_labels must be integer class ids, got {labels.dtype} values {labels.reshape(-1)[:8].tolist()}")
        labels = labels.long().reshape(-1)
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.numel():
            raise ValueError(f"class labels {bad.tolist()} out of range: this model has classes 0..{self.num_classes - 1}")
        return labels

    def _denoise(self, latents: torch.Tensor, labels: Optional[torch.Tensor], guidance_scale: float,
                 num_inference_steps: int, generator: Union[torch.Generator, List[torch.Generator], None]
                 ) -> torch.Tensor:
        """The sampling loop: noise ``latents`` (``[B, C, h, w]`` or ``[B, C, T, h, w]``, already scaled by the
        scheduler's ``init_noise_sigma``) → final latents, with classifier-free guidance when ``labels`` are given and
        ``guidance_scale > 1``."""
        device = latents.device
        B, channels = latents.shape[0], self.transformer.config.in_channels
        null = torch.full((B,), self.num_classes, device=device, dtype=torch.long)
        y = null if labels is None else labels.to(device)
        use_cfg = guidance_scale > 1 and labels is not None
        y_in = torch.cat([y, null]) if use_cfg else y
        # schedulers that sample noise in step() (DDPM, DDIM with eta > 0, SDE solvers) take the generator
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps):
            model_in = torch.cat([latents, latents]) if use_cfg else latents
            model_in = self.scheduler.scale_model_input(model_in, t)
            t_in = torch.as_tensor(t, device=device).reshape(-1).expand(model_in.shape[0])
            out = self.transformer(model_in, timestep=t_in, class_labels=y_in).sample
            eps = out[:, :channels]
            if use_cfg:
                cond, uncond = eps.chunk(2)
                eps = uncond + guidance_scale * (cond - uncond)
            # with learned sigma (out_channels = 2 x in_channels) the variance half is dropped: schedulers use
            # their own fixed variance, as in diffusers' DiTPipeline
            latents = self.scheduler.step(eps, t, latents, **step_kwargs).prev_sample

        return latents

    @torch.no_grad()
    def __call__(
        self,
        class_labels: Union[int, Sequence[int], torch.Tensor, None] = None,
        guidance_scale: float = 4.0,
        num_inference_steps: int = 50,
        height: Optional[int] = None,
        width: Optional[int] = None,
        generator: Union[torch.Generator, List[torch.Generator], None] = None,
        latents: Optional[torch.Tensor] = None,
        batch_size: Optional[int] = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> Union[ImagePipelineOutput, tuple]:
        """Generate one image per label.

        Args:
            class_labels: labels in ``0 … num_classes − 1``; ``None`` with ``batch_size`` = unconditional samples.
            guidance_scale: classifier-free guidance weight ``s`` (``ε = ε_∅ + s (ε_y − ε_∅)``); ``≤ 1`` disables it.
            num_inference_steps: scheduler steps.
            height, width: output size in pixels (default: training size); divisible by VAE factor × patch.
            generator: torch generator(s) for reproducible noise.
            latents: initial noise ``[B, C, h, w]`` (default: drawn with ``generator``).
            batch_size: number of samples when ``class_labels`` is None.
            output_type: ``'pil'``, ``'np'`` (``[B, H, W, C]`` in [0, 1]), ``'pt'`` (``[B, C, H, W]`` in [0, 1]) or
                ``'latent'`` (raw final latents).
            return_dict: return ``ImagePipelineOutput`` or a 1-tuple.
        """
        if output_type not in _OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {_OUTPUT_TYPES}, got {output_type!r}")
        self._check_components()
        if getattr(self.transformer.config, "num_frames", None) is not None:
            raise ValueError("the transformer is a video model (config.num_frames is set); sample clips with "
                             "LightNetVideoDiTPipeline")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        labels = self._labels(class_labels, batch_size)
        B = labels.numel() if labels is not None else int(batch_size)
        h, w = self._latent_size(height, width)
        device = self._execution_device
        channels = self.transformer.config.in_channels
        shape = (B, channels, h, w)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.transformer.dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device=device, dtype=self.transformer.dtype) * self.scheduler.init_noise_sigma

        latents = self._denoise(latents, labels, guidance_scale, num_inference_steps, generator)

        if output_type == "latent":
            images = latents
        else:
            if self.vae is not None:
                z = latents / self.vae.config.scaling_factor
                shift = getattr(self.vae.config, "shift_factor", None)
                if shift:
                    z = z + shift
                images = self.vae.decode(z.to(self.vae.dtype)).sample
            else:
                images = latents
            images = self.image_processor.postprocess(images.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


#: the custom-pipeline file :meth:`LightNetDiTPipeline.save_pretrained` writes next to ``model_index.json``
LOADER_MODULE = "lightnet_dit_pipeline"
_LOADER_TEMPLATE = '''"""This folder holds a LightNet {name} (pip package lightnet-yoso).

Load it with:
    from lightnet.generation import {name}
    pipe = {name}.from_pretrained(folder)

DiffusionPipeline.from_pretrained(folder) loads it too when given trust_remote_code=True: diffusers then runs this
file, which only imports the pipeline class from the installed lightnet package (no other code, nothing downloaded).
"""
from lightnet.generation import {name}  # noqa: F401
'''


def saved_pipeline_class_name(folder: Path) -> str:
    """The pipeline class name recorded in ``folder/model_index.json`` (``_class_name``, either a plain name or the
    ``[module, class]`` pair :meth:`LightNetDiTPipeline.save_pretrained` writes)."""
    name = json.loads((Path(folder) / "model_index.json").read_text()).get("_class_name")
    if isinstance(name, (list, tuple)) and len(name) == 2:
        return str(name[1])
    return str(name)


def _write_loader_module(folder: Path, class_name: str) -> None:
    """Write ``lightnet_dit_pipeline.py`` and point ``model_index.json``'s ``_class_name`` at it
    (``["lightnet_dit_pipeline", class_name]``, diffusers' convention for a pipeline defined outside diffusers), so
    that ``DiffusionPipeline.from_pretrained(folder)`` raises diffusers' custom-code error naming that file (whose
    docstring says to use ``<class_name>.from_pretrained``) instead of ``AttributeError: module diffusers has no
    attribute LightNetDiTPipeline``, and loads with ``trust_remote_code=True``."""
    index = folder / "model_index.json"
    config = json.loads(index.read_text())
    config["_class_name"] = [LOADER_MODULE, class_name]
    index.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / f"{LOADER_MODULE}.py").write_text(_LOADER_TEMPLATE.format(name=class_name))
