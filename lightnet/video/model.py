"""LightNet video classifier: one additive-recurrence scan over the whole ``(T, H, W)`` token grid.

Tubelet embedding (``Conv3d`` with kernel = stride = ``t × p × p``) → 3-D MD-TPE (bidirectional along time, height and
width) → ``depth`` × :class:`~lightnet.layers.LightNetBlock` (3-D MD-LRPE inside the token mixer) → final norm →
global pool over all tokens → dropout → linear head. The blocks, mixer options (:class:`~lightnet.layers.MixerConfig`)
and positional encodings are those of the image models (:class:`lightnet.vision.LightNet`) with three grid axes; both
encodings are relative, so any clip whose ``T, H, W`` are multiples of the tubelet works.

Layout: clips are ``[B, C, T, H, W]`` (torchvision / PyTorchVideo). ``forward_features`` returns ``[B, T', H', W', D]``
(``output_fmt == 'NTHWC'``), ``forward_intermediates`` ``[B, D, T', H', W']`` by default.

Sequence parallelism (:meth:`LightNetVideo.set_sequence_parallel_group`, from
:class:`~lightnet.vision.backbone.SequenceParallelBackbone`): the tubelet embedding and the 3-D MD-TPE run on the full
grid on every rank, each rank keeps its slice of the ``T·H·W`` row-major tokens for the blocks, and the pooling reduces
over the group (``docs/distributed.md``).
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..hub import resolve_pretrained_dir
from ..layers import MDTPE, LightNetBlock, MixerConfig, TubeletEmbed, check_clip_divisible, make_norm
from ..layers import rename_legacy_keys
from ..state_dict import diff_state_dicts
from ..vision.backbone import POOL_TYPES, SequenceParallelBackbone, take_indices, vit_init_weights

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "LightNetVideo"]

_logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_INTERMEDIATE_FORMATS = ("NCTHW", "NTHWC", "NLC")


def _pair_size(value: Union[int, Sequence[int]], owner: str, what: str) -> Tuple[int, int]:
    """``int`` or ``(h, w)`` → ``(h, w)`` of positive ints, else a ValueError."""
    hw = (int(value), int(value)) if isinstance(value, (int, float)) else tuple(int(v) for v in value)
    if len(hw) != 2 or any(v < 1 for v in hw):
        raise ValueError(f"{owner}: {what} must be a positive int or (h, w), got {value!r}")
    return hw  # type: ignore[return-value]


class LightNetVideo(SequenceParallelBackbone, nn.Module):
    """Isotropic LightNet video classifier / backbone.

    Shapes: clip ``[B, in_chans, T, H, W]`` → tokens ``[B, T/t · H/p · W/p, D]`` → logits ``[B, num_classes]``.

    Args:
        img_size: nominal frame size (only the reference of the positional encodings; any multiple of the patch
            works).
        num_frames: nominal clip length (likewise; any multiple of ``tubelet_size`` works).
        patch_size: spatial side ``p`` of a tubelet.
        tubelet_size: temporal length ``t`` of a tubelet.
        in_chans: clip channels.
        num_classes: classes of the linear head; 0 → no head (``forward`` returns pooled features).
        global_pool: ``'avg'``, ``'max'``, ``'avgmax'`` or ``''`` (no pooling: ``[B, T', H', W', D]`` output).
        embed_dim, depth, num_heads, mlp_ratio: width ``D``, blocks, mixer heads, GLU hidden width over ``D``.
        drop_rate, proj_drop_rate, drop_path_rate: dropout before the head, inside the blocks, stochastic depth
            (linear over the blocks).
        norm: ``'rmsnorm'`` or ``'layernorm'``.
        use_tpe, tpe_num_decays, tpe_kernel_norm: 3-D MD-TPE after the embedding (see :class:`~lightnet.layers.MDTPE`).
        tpe_match_mass, lrpe_interpolate: at a token grid other than the nominal one, match the MD-TPE kernel mass /
            scale the MD-LRPE coordinates to the nominal grid (as :class:`lightnet.vision.LightNet` does).
        weight_init: ``''`` (ViT-style truncated normal) or ``'skip'``.
        device, dtype: factory arguments.
        **mixer_options: the token mixer's options under :class:`~lightnet.layers.MixerConfig`'s names
            (``use_lrpe``, ``lrpe_base``, ``qkv_bias``, ``q_act``, ``scale``, ``gate_rank``, ``gate_act``, ``out_norm``,
            ``attn_backend``, ``attn_recompute_output``).
    """

    output_fmt = "NTHWC"

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        num_frames: int = 16,
        patch_size: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        num_classes: int = 400,
        global_pool: str = "avg",
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 8 / 3,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm: str = "rmsnorm",
        use_tpe: bool = True,
        tpe_num_decays: int = 4,
        tpe_kernel_norm: str = "none",
        tpe_match_mass: bool = True,
        lrpe_interpolate: bool = True,
        weight_init: str = "",
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
        **mixer_options: Any,
    ) -> None:
        super().__init__()
        owner = "LightNetVideo"
        img_hw = _pair_size(img_size, owner, "img_size")
        if global_pool not in POOL_TYPES:
            raise ValueError(f"{owner}: global_pool must be one of {POOL_TYPES}, got {global_pool!r}")
        if num_classes < 0:
            raise ValueError(f"{owner}: num_classes must be >= 0, got {num_classes}")
        if embed_dim % num_heads:
            raise ValueError(f"{owner}: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if weight_init not in ("", "skip"):
            raise ValueError(f"{owner}: weight_init must be '' or 'skip', got {weight_init!r}")
        unknown = sorted(set(mixer_options) - set(MixerConfig.field_names()))
        if unknown:
            raise TypeError(f"{owner}: unexpected keyword arguments {unknown} (mixer options are "
                            f"{list(MixerConfig.field_names())})")
        self.tubelet = (int(tubelet_size), int(patch_size), int(patch_size))
        check_clip_divisible(owner, (int(num_frames), *img_hw), self.tubelet)
        self.model_args: Dict[str, Any] = dict(
            img_size=list(img_hw), num_frames=num_frames, patch_size=patch_size, tubelet_size=tubelet_size,
            in_chans=in_chans, num_classes=num_classes, global_pool=global_pool, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, drop_rate=drop_rate, proj_drop_rate=proj_drop_rate,
            drop_path_rate=drop_path_rate, norm=norm, use_tpe=use_tpe, tpe_num_decays=tpe_num_decays,
            tpe_kernel_norm=tpe_kernel_norm, tpe_match_mass=tpe_match_mass, lrpe_interpolate=lrpe_interpolate,
            **mixer_options,
        )
        self.num_classes, self.in_chans, self.global_pool = num_classes, in_chans, global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 0
        self.grad_checkpointing = False
        self.sequence_parallel_group = None  # set_sequence_parallel_group
        self.grid_size = (num_frames // tubelet_size, img_hw[0] // patch_size, img_hw[1] // patch_size)

        factory = torch.device(device) if device is not None else contextlib.nullcontext()
        with factory:
            self.patch_embed = TubeletEmbed(in_chans, embed_dim, self.tubelet)
            self.tpe = (MDTPE(embed_dim, num_axes=3, causal=False, num_decays=tpe_num_decays,
                              kernel_norm=tpe_kernel_norm) if use_tpe else None)
            mixer = MixerConfig(**mixer_options)
            dpr = [r.item() for r in torch.linspace(0, drop_path_rate, depth, device="cpu")]
            self.blocks = nn.Sequential(*[
                LightNetBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, drop_path=dpr[i], norm=norm,
                              proj_drop=proj_drop_rate, mixer=mixer, num_axes=3)
                for i in range(depth)
            ])
            self.norm = make_norm(norm, embed_dim)
            self.head_drop = nn.Dropout(drop_rate)
            self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if self.tpe is not None:
            self.tpe.set_reference_grid(self.grid_size if tpe_match_mass else None)
        for block in self.blocks:
            if block.attn.lrpe is not None:
                block.attn.lrpe.set_reference_grid(self.grid_size if lrpe_interpolate else None)
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=patch_size,
                                  temporal_reduction=tubelet_size) for i in range(depth)]
        if weight_init != "skip":
            self.apply(vit_init_weights)
        if dtype is not None:
            self.to(dtype=dtype)
            for module in self.modules():
                if module is not self and hasattr(module, "init_non_persistent_buffers"):
                    module.init_non_persistent_buffers()  # MD-LRPE frequency tables stay fp32

    # ------------------------------------------------------------------ housekeeping (timm API)
    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """MD-TPE kernel parameters and learnable LRPE frequencies: no weight decay."""
        return {n for n, _ in self.named_parameters() if n.startswith("tpe.") or n.endswith("lrpe.freqs")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise LR decay: stem (tubelet embed + MD-TPE), one per block, final norm."""
        return dict(stem=r"^patch_embed|^tpe", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head (``num_classes=0`` → identity)."""
        if num_classes < 0:
            raise ValueError(f"LightNetVideo: num_classes must be >= 0, got {num_classes}")
        if global_pool is not None:
            if global_pool not in POOL_TYPES:
                raise ValueError(f"LightNetVideo: global_pool must be one of {POOL_TYPES}, got {global_pool!r}")
            self.global_pool = self.model_args["global_pool"] = global_pool
        self.num_classes = self.model_args["num_classes"] = num_classes
        ref = self.patch_embed.proj.weight
        if num_classes > 0:
            self.head = nn.Linear(self.embed_dim, num_classes, device=ref.device, dtype=ref.dtype)
            vit_init_weights(self.head)
        else:
            self.head = nn.Identity()
        self.head.train(self.training)

    # ------------------------------------------------------------------ forward
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``[B, C_in, T, H, W]`` → tokens ``[B, T', H', W', D]`` (``ValueError`` for a bad clip)."""
        if x.dim() != 5:
            raise ValueError(f"LightNetVideo: expected a clip batch [B, C, T, H, W], got a rank-{x.dim()} tensor "
                             f"{tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"LightNetVideo: expected {self.in_chans} input channels, got {x.shape[1]} (input shape "
                             f"{tuple(x.shape)}; layout [B, C, T, H, W])")
        check_clip_divisible("LightNetVideo", tuple(x.shape[2:]), self.tubelet)
        return self.patch_embed(x)

    def _run_block(self, block: nn.Module, x: torch.Tensor, grid: Tuple[int, int, int]) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(block, x, grid, use_reentrant=False)
        return block(x, grid)

    def _tokens(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int, int, int, int]]:
        """Clip → position-mixed tokens ``[B, N, D]`` and ``(B, T', H', W', D)``."""
        x = self._embed(x)
        B, T, H, W, C = x.shape
        x = x.reshape(B, T * H * W, C)
        if self.tpe is not None:
            x = self.tpe(x, (T, H, W))
        return x, (B, T, H, W, C)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``[B, C_in, T, H, W]`` → normalised features ``[B, T/t, H/p, W/p, D]`` (unpooled); with a
        sequence-parallel group (:meth:`set_sequence_parallel_group`) this rank's tokens ``[B, n_local, D]``."""
        x, (B, T, H, W, C) = self._tokens(x)
        split = False
        if not torch.jit.is_scripting():
            split = self._split()
            if split:
                x = self._shard(x)
        for block in self.blocks:
            x = self._run_block(block, x, (T, H, W))
        x = self.norm(x)
        return x if split else x.reshape(B, T, H, W, C)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features from :meth:`forward_features` → logits ``[B, num_classes]`` (``pre_logits``: pooled ``[B, D]``)."""
        x = self.head_drop(self.pool(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCTHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Block outputs as feature volumes.

        Args:
            x: clip ``[B, C_in, T, H, W]``.
            indices: blocks to return: ``None`` all, int ``n`` the last ``n``, or a list (negative from the end).
            norm: apply the final norm to every intermediate.
            stop_early: stop after the last requested block.
            output_fmt: ``'NCTHW'`` ``[B, D, T', H', W']``, ``'NTHWC'`` or ``'NLC'`` ``[B, T'·H'·W', D]``.
            intermediates_only: return only the list.

        Returns:
            ``(final, intermediates)`` with ``final`` as :meth:`forward_features` when all blocks ran, or the list.
        """
        if output_fmt not in _INTERMEDIATE_FORMATS:
            raise ValueError(f"LightNetVideo: output_fmt must be one of {_INTERMEDIATE_FORMATS}, got {output_fmt!r}")
        self._refuse_split("LightNetVideo", "forward_intermediates")
        take, max_index = take_indices(len(self.blocks), indices)
        x, (B, T, H, W, C) = self._tokens(x)
        blocks = self.blocks[: max_index + 1] if stop_early else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            x = self._run_block(block, x, (T, H, W))
            if i in take:
                y = self.norm(x) if norm else x
                if output_fmt == "NCTHW":
                    y = y.reshape(B, T, H, W, C).permute(0, 4, 1, 2, 3).contiguous()
                elif output_fmt == "NTHWC":
                    y = y.reshape(B, T, H, W, C)
                intermediates.append(y)
        if intermediates_only:
            return intermediates
        return self.norm(x).reshape(B, T, H, W, C), intermediates

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, save_directory: Union[str, Path]) -> Path:
        """Write ``config.json`` (architecture + constructor arguments) and ``model.safetensors``."""
        path = Path(save_directory)
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"save_pretrained: {path} exists and is not a folder")
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(
            {"architecture": type(self).__name__, "model_args": self.model_args}, indent=1))
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME), metadata={"format": "pt", "architecture": type(self).__name__})
        return path

    @classmethod
    def from_pretrained(
        cls,
        pretrained_path: Union[str, Path],
        *,
        map_location: Union[str, torch.device] = "cpu",
        revision: Optional[str] = None,
        cache_dir: Optional[Union[str, Path]] = None,
        local_files_only: bool = False,
        **overrides: Any,
    ) -> "LightNetVideo":
        """Load a folder written by :meth:`save_pretrained` (or the same files from a hub repo id).

        ``overrides`` change constructor arguments (e.g. ``attn_backend='torch'``, ``drop_path_rate=0.1``); changing
        ``num_classes`` keeps the backbone and starts a fresh head. Keys that do not fit raise ``ValueError``.
        """
        try:
            path = resolve_pretrained_dir(pretrained_path, (CONFIG_NAME, WEIGHTS_NAME), revision=revision,
                                          cache_dir=cache_dir, local_files_only=local_files_only)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"LightNetVideo.from_pretrained: {e}") from e
        try:
            saved = json.loads((path / CONFIG_NAME).read_text())
            args = dict(saved["model_args"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"LightNetVideo.from_pretrained: {path / CONFIG_NAME} is not a LightNetVideo config "
                             f"({type(e).__name__}: {e})") from e
        if saved.get("architecture") != cls.__name__:
            raise ValueError(f"LightNetVideo.from_pretrained: {path} holds a {saved.get('architecture')!r}, "
                             f"not a {cls.__name__}")
        args = rename_legacy_keys({**args, **overrides}, "LightNetVideo.from_pretrained")
        model = cls(**args)
        try:
            state = load_file(str(path / WEIGHTS_NAME), device=str(map_location))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"LightNetVideo.from_pretrained: cannot read {path / WEIGHTS_NAME} (truncated or not a "
                             f"safetensors file?): {e}") from e
        fresh_head = "num_classes" in overrides and overrides["num_classes"] != saved["model_args"].get("num_classes")
        if fresh_head:
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
        model.load_state_dict(_checked_state(model, state, str(path), skip_head=fresh_head), strict=False)
        return model.to(map_location)

    @classmethod
    def from_image_checkpoint(
        cls,
        checkpoint_or_model: Union[str, Path, nn.Module, Mapping[str, torch.Tensor]],
        inflate: str = "average",
        load_head: bool = False,
        **model_args: Any,
    ) -> "LightNetVideo":
        """A video model initialised from a LightNet *image* model (see :func:`lightnet.video.inflate_image_state_dict`).

        Args:
            checkpoint_or_model: a :class:`lightnet.vision.LightNet`, its state dict (training wrappers accepted), or
                a file (``.safetensors`` or a ``torch.save`` file, read with ``weights_only=True``).
            inflate: ``'average'`` (the 2-D patch kernel repeated over the tubelet's ``t`` frames and divided by ``t``)
                or ``'center'`` (the kernel on the centre frame, zeros elsewhere).
            load_head: also copy the classifier head (same number of classes required).
            **model_args: constructor arguments of the video model (width, depth and heads must match the image
                model's).
        """
        from .inflate import inflate_image_state_dict, read_state_dict

        image_sd = read_state_dict(checkpoint_or_model)
        model = cls(**model_args)
        state = inflate_image_state_dict(image_sd, model, inflate=inflate, load_head=load_head)
        model.load_state_dict(state, strict=False)
        return model


def _checked_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                   skip_head: bool = False, fresh: Sequence[str] = ()) -> Dict[str, torch.Tensor]:
    """``state`` if it fits ``model`` exactly (up to the head when ``skip_head`` and the keys in ``fresh``, which keep
    their initialisation), else a ValueError naming the keys."""
    own = model.state_dict()
    missing, unexpected, mismatched = diff_state_dicts(
        own, state, include=lambda k: not (skip_head and k.startswith("head.")) and k not in fresh)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:5]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:5]})")
    if mismatched:
        shown = [f"{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched[:5]]
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {shown})")
    if problems:
        raise ValueError(f"{source} does not fit this {type(model).__name__} (another size?): " + "; ".join(problems))
    return dict(state)
