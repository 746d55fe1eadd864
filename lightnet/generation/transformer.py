"""LightNet diffusion transformer: DiT with LightNet's additive-recurrence token mixer.

``LightNetDiTModel`` is a diffusers ``ModelMixin`` + ``ConfigMixin``: ``save_pretrained`` writes ``config.json`` and
``diffusion_pytorch_model.safetensors``; ``from_pretrained`` reads them back (local folder). Its forward matches what
diffusers' ``DiTPipeline`` calls (``transformer(latents, timestep=t, class_labels=y).sample``) and the class
embedding has ``num_classes + 1`` rows, the last being the null class used for classifier-free guidance (so with
``num_classes=1000`` the stock ``DiTPipeline``, which hard-codes null class 1000, runs it unchanged).

Structure (DiT, Peebles & Xie 2023, with the token mixer replaced): patchify → MD-TPE (relative 2-D Toeplitz
position mixing) → ``num_layers`` adaLN-Zero blocks (non-causal LightNet attention with 2-D MD-LRPE, GLU or MLP) →
final adaLN layer → unpatchify. No absolute position table, so any ``H × W`` divisible by the patch works.

Video: with ``num_frames`` set, the model takes clips ``[B, C, T, H, W]`` (torchvision / diffusers video layout): a
tubelet patchify (``temporal_patch_size × p × p``, :class:`~lightnet.layers.TubeletEmbed`), 3-D MD-TPE and 3-D
MD-LRPE over ``(T', H', W')`` in the same blocks with the same timestep / class conditioning (one scan over the whole
clip), and a 3-D unpatchify. Any ``T, H, W`` divisible by the tubelet works; ``num_frames`` is the pipelines' default
length. Without it (the default) the model is the image model, unchanged.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..layers import MDTPE, MixerConfig, TubeletEmbed, check_clip_divisible, rename_legacy_keys
from .blocks import AdaLNFinalLayer, LightNetDiTBlock
from .embeddings import PatchEmbed2d, TimestepClassEmbedding

__all__ = ["DIT_PRESETS", "LightNetDiTModel", "list_presets"]

# DiT's size grid (Peebles & Xie, Table 1): depth, width, heads.
_SIZES = {
    "S": dict(num_layers=12, hidden_size=384, num_attention_heads=6),
    "B": dict(num_layers=12, hidden_size=768, num_attention_heads=12),
    "L": dict(num_layers=24, hidden_size=1024, num_attention_heads=16),
    "XL": dict(num_layers=28, hidden_size=1152, num_attention_heads=16),
}
DIT_PRESETS: dict[str, dict[str, int]] = {
    f"LightNet-DiT-{size}/{patch}": dict(cfg, patch_size=patch) for size, cfg in _SIZES.items() for patch in (2, 4, 8)
}


def list_presets() -> list[str]:
    """Names accepted by :meth:`LightNetDiTModel.from_preset` (``LightNet-DiT-S/2`` … ``LightNet-DiT-XL/8``)."""
    return list(DIT_PRESETS)


class LightNetDiTModel(ModelMixin, ConfigMixin):
    """Class-conditional diffusion transformer with LightNet blocks.

    Args:
        sample_size: training resolution of the (latent) image side; informational (pipelines use it as the default
            size), any size divisible by ``patch_size`` works.
        patch_size: patch side ``p``.
        in_channels: channels of the input (4 for SD-VAE latents, 1 or 3 in pixel space).
        out_channels: output channels; ``None`` = ``in_channels``; ``2 × in_channels`` = learned sigma (the second
            half is the variance interpolation ``v`` of Improved DDPM, dropped by the pipelines).
        hidden_size: width ``D``.
        num_layers: number of blocks.
        num_attention_heads: LightNet attention heads (``D`` divisible by it).
        mlp_type: ``'glu'`` (SiLU GLU) or ``'mlp'`` (tanh-GELU MLP as in DiT).
        mlp_ratio: hidden width of the channel mixer over ``D`` (``8/3`` GLU ≈ a ``4×`` MLP in parameters).
        num_classes: number of real classes; index ``num_classes`` is the null class.
        class_dropout_prob: probability of replacing a label by the null class in training (CFG training).
        use_tpe: apply MD-TPE after the patch embedding.
        tpe_num_decays: exponentials per side in the MD-TPE kernels.
        use_lrpe: 2-D MD-LRPE inside the token mixer.
        lrpe_base: MD-LRPE frequency base.
        gate_rank: rank of the mixer's output gate (``None`` = layer default, ``0`` = no gate).
        q_act: query activation of the mixer.
        norm_eps: epsilon of the affine-free LayerNorms.
        class_embed_init_std: standard deviation of the class embedding's normal initialisation. ``1.0`` (default,
            ``nn.Embedding``'s, which diffusers' ``DiTTransformer2DModel`` keeps) conditions on the class from the
            first steps; ``0.02`` is the DiT paper's, whose class signal grows slowly through the zero-initialised
            adaLN (``docs/generation.md`` compares the two).
        attn_backend: kernel backend of :func:`lightnet.kernels.additive_attention` (``'auto'``, ``'torch'``,
            ``'triton'``). A ``config.json`` written before the rename, with ``attention_backend``, loads unchanged
            (:func:`~lightnet.layers.rename_legacy_keys`).
        num_frames: ``None`` (default) = image model (``[B, C, H, W]``); an int = video model taking clips
            ``[B, C, T, H, W]`` with 3-D positional encodings; the value is the training clip length (the pipelines'
            default), any multiple of ``temporal_patch_size`` works.
        temporal_patch_size: frames per tubelet ``t`` of a video model (1 = per-frame patches).

    The mixer options (``use_lrpe``, ``lrpe_base``, ``gate_rank``, ``q_act``, ``attn_backend``) have the names and
    defaults of :class:`~lightnet.layers.MixerConfig`, which every block receives.

    Shapes: ``forward(hidden_states [B, C_in, H, W], timestep [B] or scalar, class_labels [B])`` →
    ``Transformer2DModelOutput(sample=[B, C_out, H, W])``; a video model maps ``[B, C_in, T, H, W]`` to
    ``[B, C_out, T, H, W]``.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["LightNetDiTBlock"]
    _skip_layerwise_casting_patterns = ["patch_embed", "tpe", "norm"]

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        out_channels: Optional[int] = None,
        hidden_size: int = 1152,
        num_layers: int = 28,
        num_attention_heads: int = 16,
        mlp_type: str = "glu",
        mlp_ratio: float = 8 / 3,
        num_classes: int = 1000,
        class_dropout_prob: float = 0.1,
        use_tpe: bool = True,
        tpe_num_decays: int = 4,
        use_lrpe: bool = True,
        lrpe_base: float = 10000.0,
        gate_rank: Optional[int] = None,
        q_act: str = "silu",
        norm_eps: float = 1e-6,
        attn_backend: str = "auto",
        class_embed_init_std: float = 1.0,
        num_frames: Optional[int] = None,
        temporal_patch_size: int = 1,
    ) -> None:
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"LightNetDiTModel: patch_size must be >= 1, got {patch_size}")
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"LightNetDiTModel: hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}"
            )
        if not class_embed_init_std > 0:
            raise ValueError(f"LightNetDiTModel: class_embed_init_std must be > 0, got {class_embed_init_std}")
        if temporal_patch_size < 1:
            raise ValueError(f"LightNetDiTModel: temporal_patch_size must be >= 1, got {temporal_patch_size}")
        if num_frames is not None and (num_frames < 1 or num_frames % temporal_patch_size):
            raise ValueError(f"LightNetDiTModel: num_frames {num_frames} must be a positive multiple of "
                             f"temporal_patch_size {temporal_patch_size}")
        if num_frames is None and temporal_patch_size != 1:
            raise ValueError("LightNetDiTModel: temporal_patch_size needs a video model (set num_frames)")
        if sample_size % patch_size != 0:
            raise ValueError(f"LightNetDiTModel: sample_size {sample_size} is not divisible by patch_size {patch_size}")
        if out_channels is None:  # pipelines read config.out_channels as an int
            out_channels = in_channels
            self.register_to_config(out_channels=out_channels)
        if out_channels not in (in_channels, 2 * in_channels):
            raise ValueError(
                f"LightNetDiTModel: out_channels must be in_channels ({in_channels}) or 2 x in_channels "
                f"(learned sigma), got {out_channels}"
            )
        self.out_channels = out_channels
        self.gradient_checkpointing = False

        self.is_video = num_frames is not None
        num_axes = 3 if self.is_video else 2
        if self.is_video:
            self.patch_embed = TubeletEmbed(in_channels, hidden_size, (temporal_patch_size, patch_size, patch_size))
        else:
            self.patch_embed = PatchEmbed2d(in_channels, hidden_size, patch_size)
        self.tpe = MDTPE(hidden_size, num_axes=num_axes, num_decays=tpe_num_decays) if use_tpe else None
        self.embedding = TimestepClassEmbedding(hidden_size, num_classes, class_dropout_prob)
        mixer = MixerConfig(use_lrpe=use_lrpe, lrpe_base=lrpe_base, gate_rank=gate_rank, q_act=q_act,
                            attn_backend=attn_backend)
        self.transformer_blocks = nn.ModuleList(
            LightNetDiTBlock(hidden_size, num_attention_heads, mlp_type, mlp_ratio, norm_eps, mixer=mixer,
                             num_axes=num_axes)
            for _ in range(num_layers)
        )
        self.final_layer = AdaLNFinalLayer(hidden_size, patch_size, self.out_channels, norm_eps,
                                           temporal_patch_size=temporal_patch_size)
        self.initialize_weights()

    @classmethod
    def extract_init_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """diffusers' config → constructor-arguments step (used by ``from_config`` and ``from_pretrained``), after
        renaming keys written by older versions (``attention_backend`` → ``attn_backend``; logged, not warned)."""
        return super().extract_init_dict(rename_legacy_keys(config_dict, f"{cls.__name__} config"),
                                         **rename_legacy_keys(kwargs, f"{cls.__name__} config"))

    @classmethod
    def from_pretrained(cls, *args: Any, strict: bool = True, **kwargs: Any) -> Any:
        """diffusers' ``from_pretrained``, except that weights which do not fit (another architecture or size) are an
        error instead of a warning and a silently re-initialised model. ``strict=False`` restores diffusers' behaviour
        (missing weights initialised, unexpected ones ignored)."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        bad = {k: info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)}
        if strict and bad:
            shown = "; ".join(f"{k.replace('_', ' ')} ({len(v)}): {list(v)[:5]}" for k, v in bad.items())
            raise ValueError(f"{cls.__name__}.from_pretrained({args[0] if args else ''}): the checkpoint does not fit "
                             f"this model (another architecture or size?): {shown}; pass strict=False to load anyway")
        return (model, info) if want_info else model

    @classmethod
    def from_preset(cls, name: str, learn_sigma: bool = False, **kwargs: Any) -> "LightNetDiTModel":
        """Build a DiT-sized model, e.g. ``from_preset("LightNet-DiT-S/2", in_channels=1, num_classes=10)``.

        ``learn_sigma=True`` sets ``out_channels = 2 × in_channels``; other ``kwargs`` override config fields.
        """
        if name not in DIT_PRESETS:
            raise ValueError(f"unknown LightNet-DiT preset {name!r}; choose one of {list_presets()}")
        config = dict(DIT_PRESETS[name], **kwargs)
        if learn_sigma:
            config["out_channels"] = 2 * config.get("in_channels", 4)
        return cls(**config)

    def initialize_weights(self) -> None:
        """DiT initialisation: Xavier linears, timestep MLP N(0, 0.02), class embedding N(0, ``class_embed_init_std``),
        zeroed adaLN and output projections (every block starts as the identity, the model predicts zero)."""

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.embedding.class_embedder.embedding_table.weight, std=self.config.class_embed_init_std)
        nn.init.normal_(self.embedding.timestep_embedder.linear_1.weight, std=0.02)
        nn.init.normal_(self.embedding.timestep_embedder.linear_2.weight, std=0.02)
        for block in self.transformer_blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    @property
    def null_class(self) -> int:
        """Label index of the unconditional (null) class."""
        return self.config.num_classes

    def _check_inputs(self, x: torch.Tensor) -> None:
        cfg = self.config
        if self.is_video:
            if x.dim() != 5:
                raise ValueError(f"LightNetDiTModel: this is a video model (num_frames={cfg.num_frames}); "
                                 f"hidden_states must be [B, C, T, H, W], got shape {tuple(x.shape)}")
        elif x.dim() != 4:
            hint = " (a clip? create the model with num_frames=T for video)" if x.dim() == 5 else ""
            raise ValueError(f"LightNetDiTModel: hidden_states must be [B, C, H, W], got shape {tuple(x.shape)}{hint}")
        if x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"LightNetDiTModel: hidden_states has {x.shape[1]} channels but the model expects in_channels="
                f"{cfg.in_channels} (latent channels of the VAE, or image channels in pixel space)"
            )
        if self.is_video:
            check_clip_divisible("LightNetDiTModel", tuple(x.shape[2:]),
                                 (cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size))
            return
        H, W = x.shape[-2:]
        if H % cfg.patch_size or W % cfg.patch_size:
            raise ValueError(
                f"LightNetDiTModel: spatial size {H}x{W} is not divisible by patch_size {cfg.patch_size}"
            )

    def _prepare_conditions(
        self, batch: int, timestep: Union[torch.Tensor, float, int, None], class_labels: Optional[torch.Tensor], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if timestep is None:
            raise ValueError("LightNetDiTModel: timestep is required")
        t = torch.as_tensor(timestep, device=device)
        if t.is_floating_point() and not torch.compiler.is_compiling() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"LightNetDiTModel: timestep holds NaN or inf: {t.flatten()[:8].tolist()}")
        if t.dim() == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"LightNetDiTModel: timestep must be a scalar or [B={batch}], got shape {tuple(t.shape)}")
        if class_labels is None:
            y = torch.full((batch,), self.null_class, device=device, dtype=torch.long)
        else:
            y = torch.as_tensor(class_labels, device=device)
            if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
                raise TypeError(f"LightNetDiTModel: class_labels must be integer class ids, got {y.dtype}")
            y = y.long()
            if y.dim() == 0:
                y = y.expand(batch)
            if y.shape != (batch,):
                raise ValueError(f"LightNetDiTModel: class_labels must be [B={batch}], got shape {tuple(y.shape)}")
            if not torch.compiler.is_compiling():
                lo, hi = int(y.min()), int(y.max())
                if lo < 0 or hi > self.null_class:
                    raise ValueError(
                        f"LightNetDiTModel: class label out of range [{lo}, {hi}]; valid labels are 0..{self.null_class - 1} "
                        f"and {self.null_class} (the null class for classifier-free guidance)"
                    )
        return t, y

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """``[B, h·w, p·p·C]`` → ``[B, C, h·p, w·p]``; video: ``[B, t·h·w, k·p·p·C]`` → ``[B, C, t·k, h·p, w·p]``
        (``k`` = ``temporal_patch_size``)."""
        p, C = self.config.patch_size, self.out_channels
        if self.is_video:
            k = self.config.temporal_patch_size
            t, h, w = grid
            x = x.reshape(x.shape[0], t, h, w, k, p, p, C)
            x = torch.einsum("nthwkpqc->nctkhpwq", x)
            return x.reshape(x.shape[0], C, t * k, h * p, w * p)
        h, w = grid
        x = x.reshape(x.shape[0], h, w, p, p, C)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], C, h * p, w * p)

    def _patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Input → tokens ``[B, N, D]`` (row-major over the grid) and the grid ``(h, w)`` or ``(t, h, w)``."""
        if not self.is_video:
            return self.patch_embed(x)
        x = self.patch_embed(x)  # [B, t, h, w, D]
        return x.flatten(1, 3), tuple(x.shape[1:4])

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: Union[torch.Tensor, float, int, None] = None,
        class_labels: Optional[torch.Tensor] = None,
        return_dict: bool = True,
    ) -> Union[Transformer2DModelOutput, tuple[torch.Tensor]]:
        """Predict noise (and, with learned sigma, the variance interpolation) for noisy ``hidden_states``.

        Args:
            hidden_states: ``[B, C_in, H, W]`` noisy latents or images (``H``, ``W`` divisible by the patch); a video
                model takes ``[B, C_in, T, H, W]`` (divisible by the tubelet).
            timestep: ``[B]`` or a scalar diffusion step.
            class_labels: ``[B]`` long in ``0..num_classes`` (``num_classes`` = null class); ``None`` = all null.
            return_dict: return ``Transformer2DModelOutput`` (True) or a 1-tuple.
        """
        self._check_inputs(hidden_states)
        B = hidden_states.shape[0]
        t, y = self._prepare_conditions(B, timestep, class_labels, hidden_states.device)
        x, grid = self._patchify(hidden_states)  # [B, N, D]
        if self.tpe is not None:
            x = self.tpe(x, grid)
        c = self.embedding(t, y, dtype=x.dtype)  # [B, D]
        for block in self.transformer_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, c, grid)
            else:
                x = block(x, c, grid)
        out = self.unpatchify(self.final_layer(x, c), grid)
        if not return_dict:
            return (out,)
        return Transformer2DModelOutput(sample=out)
