"""Class-conditional clip sampling for a video :class:`~lightnet.generation.LightNetDiTModel` (``num_frames`` set).

The output follows diffusers' video pipelines (``TextToVideoSDPipeline``, ``CogVideoXPipeline``, ...): a ``frames``
field holding, per ``output_type``, ``'np'`` an array ``[B, T, H, W, C]`` in [0, 1], ``'pt'`` a tensor
``[B, T, C, H, W]`` in [0, 1], ``'pil'`` a list (per clip) of lists of PIL frames, or ``'latent'`` the raw final
latents ``[B, C, T, h, w]``. Conditioning, guidance and schedulers are those of
:class:`~lightnet.generation.LightNetDiTPipeline`, whose sampling loop runs unchanged on 5-D latents; a VAE, if any,
decodes frame by frame.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Union

import torch
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor

from .pipeline import LightNetDiTPipeline

__all__ = ["LightNetVideoDiTPipeline", "LightNetVideoPipelineOutput"]

_OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class LightNetVideoPipelineOutput(BaseOutput):
    """``frames``: the sampled clips (format set by ``output_type``, see the module docstring)."""

    frames: Any


class LightNetVideoDiTPipeline(LightNetDiTPipeline):
    """Sample class-conditional clips from a video diffusion transformer (same components as
    :class:`~lightnet.generation.LightNetDiTPipeline`)."""

    def __init__(self, transformer: torch.nn.Module, scheduler: Any, vae: Optional[Any] = None,
                 class_names: Optional[List[str]] = None) -> None:
        super().__init__(transformer=transformer, scheduler=scheduler, vae=vae, class_names=class_names)
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor)

    def _num_frames(self, num_frames: Optional[int]) -> int:
        cfg = self.transformer.config
        if getattr(cfg, "num_frames", None) is None:
            raise ValueError(f"{type(self.transformer).__name__} is an image model (config.num_frames is None); use "
                             "LightNetDiTPipeline for images, or a LightNetDiTModel created with num_frames=T")
        T = cfg.num_frames if num_frames is None else num_frames
        k = cfg.temporal_patch_size
        if isinstance(T, bool) or not isinstance(T, int) or T < 1 or T % k:
            raise ValueError(f"num_frames must be a positive multiple of the temporal patch size {k}, got {T!r}")
        return T

    def _warn_if_clipping(self) -> None:
        """A ``UserWarning`` when the scheduler clips its clean-sample estimate (``clip_sample=True``, diffusers'
        default for DDPM / DDIM): at high noise that erases a clip's mean brightness and the samples end as noise."""
        if getattr(self.scheduler.config, "clip_sample", False):
            warnings.warn(
                f"{type(self.scheduler).__name__} has clip_sample=True: clipping the predicted clean clip pixel by "
                "pixel erases its mean brightness at high noise and video samples end as noise; use "
                "pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, clip_sample=False)",
                UserWarning, stacklevel=3)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: Union[int, Sequence[int], torch.Tensor, None] = None,
        guidance_scale: float = 4.0,
        num_inference_steps: int = 50,
        num_frames: Optional[int] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        generator: Union[torch.Generator, List[torch.Generator], None] = None,
        latents: Optional[torch.Tensor] = None,
        batch_size: Optional[int] = None,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> Union[LightNetVideoPipelineOutput, tuple]:
        """Generate one clip per label.

        Args:
            class_labels, guidance_scale, num_inference_steps, generator, batch_size: as
                :meth:`LightNetDiTPipeline.__call__`.
            num_frames: clip length (default: the transformer's ``num_frames``); a multiple of its temporal patch.
            height, width: frame size in pixels (default: training size).
            latents: initial noise ``[B, C, T, h, w]``.
            output_type: ``'np'`` (default, as diffusers' video pipelines), ``'pt'``, ``'pil'`` or ``'latent'``.
            return_dict: return :class:`LightNetVideoPipelineOutput` or a 1-tuple.
        """
        if output_type not in _OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {_OUTPUT_TYPES}, got {output_type!r}")
        self._check_components()
        T = self._num_frames(num_frames)
        self._warn_if_clipping()
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        labels = self._labels(class_labels, batch_size)
        B = labels.numel() if labels is not None else int(batch_size)
        h, w = self._latent_size(height, width)
        device = self._execution_device
        shape = (B, self.transformer.config.in_channels, T, h, w)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.transformer.dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device=device, dtype=self.transformer.dtype) * self.scheduler.init_noise_sigma
        latents = self._denoise(latents, labels, guidance_scale, num_inference_steps, generator)

        if output_type == "latent":
            frames: Any = latents
        else:
            video = latents
            if self.vae is not None:  # decode frame by frame: [B, C, T, h, w] → [B·T, C, h, w] → [B, C', T, H, W]
                z = latents.permute(0, 2, 1, 3, 4).flatten(0, 1) / self.vae.config.scaling_factor
                shift = getattr(self.vae.config, "shift_factor", None)
                if shift:
                    z = z + shift
                decoded = self.vae.decode(z.to(self.vae.dtype)).sample
                video = decoded.unflatten(0, (B, T)).permute(0, 2, 1, 3, 4)
            frames = self.video_processor.postprocess_video(video.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return LightNetVideoPipelineOutput(frames=frames)
