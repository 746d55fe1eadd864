"""Isotropic LightNet image classifiers as timm models (``timm.create_model('lightnet_small')``).

Patch embedding → MD-TPE (2-D, bidirectional) → ``depth`` × :class:`~lightnet.layers.LightNetBlock` (2-D MD-LRPE inside
the token mixer) → final norm → global pool (no class token) → dropout → linear head. Both positional encodings are
relative, so any image size divisible by the patch works without resampling anything (``dynamic_img_size=True``).

Output conventions (see ``docs/models.md``):
    * ``forward_features(x)`` returns an **NHWC** map ``[B, H/p, W/p, C]`` (``model.output_fmt == 'NHWC'``, as timm's
      mambaout), so timm's standard cfg checks (``pool_size``, ``global_pool=''``) apply unchanged;
    * ``forward_intermediates`` / ``features_only=True`` return NCHW maps by default (``output_fmt='NHWC'``/``'NLC'``
      on request), one per block, reduction = patch size.
"""

import contextlib
import logging
import os
import pickle
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from safetensors import SafetensorError
from torch import nn
from torch.utils.checkpoint import checkpoint
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import PatchEmbed, resample_patch_embed, to_2tuple
from timm.models import (
    build_model_with_cfg,
    clean_state_dict,
    generate_default_cfgs,
    named_apply,
    register_model,
    register_notrace_function,
    register_notrace_module,
)

from ..layers import (
    GLU, MDTPE, LightNetAttention, LightNetBlock, MixerConfig, RMSNorm, make_norm, rename_legacy_keys, split_state, tensor_output,
)
from ..state_dict import diff_state_dicts
from .backbone import POOL_TYPES, SequenceParallelBackbone, take_indices, vit_init_weights

__all__ = ["LightNet", "checkpoint_filter_fn", "unwrap_checkpoint"]

_logger = logging.getLogger(__name__)

# FX (timm's feature extraction / its fx tests): the layers validate shapes and derive tables from the grid size in
# Python, so they are traced as leaf modules rather than symbolically.
for _leaf in (LightNetAttention, MDTPE, GLU, RMSNorm):
    register_notrace_module(_leaf)
# ... and the narrowing of a layer's ``Tensor | (Tensor, state)`` output stays one call in the graph, so that a traced
# model still scripts (torch.jit.script of the GraphModule)
register_notrace_function(split_state)
register_notrace_function(tensor_output)

_POOL_TYPES = POOL_TYPES
_INTERMEDIATE_FORMATS = ("NCHW", "NHWC", "NLC")


@register_notrace_function
def check_image_input(
    x: torch.Tensor,
    in_chans: int,
    img_size: Tuple[int, int],
    patch_size: Tuple[int, int],
    dynamic_img_size: bool,
    dynamic_img_pad: bool,
) -> None:
    """Raise a ``ValueError`` naming the problem when ``x`` is not a valid image batch for the model (eager only:
    nothing is checked in a TorchScript model)."""
    if not torch.jit.is_scripting():
        _check_image_input(x, in_chans, img_size, patch_size, dynamic_img_size, dynamic_img_pad)


def _check_image_input(
    x: torch.Tensor,
    in_chans: int,
    img_size: Tuple[int, int],
    patch_size: Tuple[int, int],
    dynamic_img_size: bool,
    dynamic_img_pad: bool,
) -> None:
    if x.dim() != 4:
        raise ValueError(f"LightNet: expected an image batch [B, C, H, W], got a rank-{x.dim()} tensor {tuple(x.shape)}")
    C, H, W = x.shape[1:]
    if C != in_chans:
        raise ValueError(f"LightNet: expected {in_chans} input channels, got {C} (input shape {tuple(x.shape)})")
    if not dynamic_img_size:
        # (the nominal size itself is checked for patch divisibility at construction / set_input_size)
        if (H, W) != tuple(img_size):
            raise ValueError(
                f"LightNet: expected image size {tuple(img_size)}, got {(H, W)}; create the model with "
                f"dynamic_img_size=True (any size divisible by the patch {tuple(patch_size)}) or img_size={(H, W)}"
            )
    elif not dynamic_img_pad and (H % patch_size[0] or W % patch_size[1]):
        raise ValueError(
            f"LightNet: image size {(H, W)} is not divisible by the patch size {tuple(patch_size)}; "
            "resize/crop the input or create the model with dynamic_img_pad=True"
        )


def check_patch_divisible(img_size: Tuple[int, int], patch_size: Tuple[int, int], dynamic_img_pad: bool) -> None:
    """Raise a ``ValueError`` when the nominal ``img_size`` is not a multiple of ``patch_size`` (the patch convolution
    would silently drop the remainder rows/columns), unless ``dynamic_img_pad`` zero-pads images to a multiple."""
    if dynamic_img_pad:
        return
    if img_size[0] % patch_size[0] or img_size[1] % patch_size[1]:
        raise ValueError(
            f"LightNet: image size {tuple(img_size)} is not divisible by the patch size {tuple(patch_size)} (the "
            f"remainder pixels would be dropped); use a multiple of the patch, or create the model with "
            f"dynamic_img_pad=True to zero-pad every image to one"
        )


class LightNet(SequenceParallelBackbone, nn.Module):
    """Isotropic LightNet classifier / backbone.

    Shapes: image ``[B, in_chans, H, W]`` → tokens ``[B, H/p · W/p, C]`` → logits ``[B, num_classes]``.

    Args:
        img_size: nominal input size (checked exactly unless ``dynamic_img_size``).
        patch_size: patch size ``p`` (reduction of every feature map).
        in_chans: image channels.
        num_classes: classes of the linear head; 0 → no head (``forward`` returns pooled features).
        global_pool: ``'avg'`` (mean over tokens), ``'max'``, ``'avgmax'`` or ``''`` (no pooling: NHWC output).
        embed_dim: width ``C``.
        depth: number of LightNet blocks.
        num_heads: heads of the token mixer (head dim ``C / num_heads``; 64 in the registered models).
        mlp_ratio: GLU hidden width over ``C``.
        drop_rate: dropout before the head.
        proj_drop_rate: dropout inside the mixer output and the GLU.
        drop_path_rate: stochastic depth, increasing linearly to this rate over the blocks.
        dynamic_img_size: accept any image size divisible by the patch (nothing is resampled).
        dynamic_img_pad: zero-pad images (bottom/right) to a patch multiple (implies any size works). Without it an
            ``img_size`` (or an input, with ``dynamic_img_size``) not divisible by the patch raises ``ValueError``.
        norm: ``'rmsnorm'`` or ``'layernorm'`` (blocks and the final norm).
        use_tpe: MD-TPE after the patch embedding.
        tpe_num_decays: exponentials per side and channel of the MD-TPE kernels.
        tpe_kernel_norm: ``'none'`` (paper) or ``'mass'`` (MD-TPE kernels rescaled to a learned mass at every grid
            size; see :class:`~lightnet.layers.MDTPE`).
        tpe_match_mass: at a grid other than the nominal ``img_size // patch_size`` one (``dynamic_img_size``), scale
            each MD-TPE kernel to the per-channel mass it has at the nominal grid (``MDTPE.reference_grid``; no change
            at the nominal size). What position-table interpolation is to a ViT (``docs/evidence.md`` has the
            resolution-transfer comparison). ``set_input_size`` moves the reference with the nominal size. False = the
            paper's kernel at every size.
        lrpe_interpolate: at a grid other than the nominal one, scale the MD-LRPE coordinates of every block into the
            nominal grid's range (``MDLRPE.reference_grid``; position interpolation). False = integer coordinates at
            every size.
        use_lrpe: MD-LRPE inside every token mixer.
        lrpe_base: MD-LRPE frequency base.
        qkv_bias: bias on the q/k/v projection.
        q_act: query activation (see :class:`~lightnet.layers.LightNetAttention`).
        scale: attention output scale (``'none'``, ``'sqrt'`` or a float).
        gate_rank: rank of the output gate (``None`` → ``max(16, C // 8)``, 0 → no gate).
        gate_act: output gate activation.
        out_norm: per-head RMSNorm of the mixer output.
        mlp_act: GLU activation.
        attn_backend: kernel backend (``'auto'``, ``'torch'``, ``'triton'``).
        attn_recompute_output: when the token mixers recompute their output norm and gate in the backward instead of
            keeping them (``'compiled'``: under ``torch.compile`` only, ``'always'``: eager too, saving activation
            memory for some host time, ``'never'``; see :class:`~lightnet.layers.LightNetAttention`).
        weight_init: ``''`` (ViT-style truncated normal) or ``'skip'``.
        device, dtype: factory arguments (parameters are created on ``device`` and cast to ``dtype``; MD-LRPE
            frequency tables stay fp32).
    """

    output_fmt = "NHWC"

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: Union[int, Tuple[int, int]] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 8 / 3,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        dynamic_img_size: bool = False,
        dynamic_img_pad: bool = False,
        norm: str = "rmsnorm",
        use_tpe: bool = True,
        tpe_num_decays: int = 4,
        tpe_kernel_norm: str = "none",
        tpe_match_mass: bool = True,
        lrpe_interpolate: bool = True,
        use_lrpe: bool = True,
        lrpe_base: float = 10000.0,
        qkv_bias: bool = False,
        q_act: str = "silu",
        scale: Union[str, float] = "none",
        gate_rank: Optional[int] = None,
        gate_act: str = "sigmoid",
        out_norm: bool = True,
        mlp_act: str = "silu",
        attn_backend: str = "auto",
        attn_recompute_output: str = "compiled",
        weight_init: str = "",
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        if global_pool not in _POOL_TYPES:
            raise ValueError(f"LightNet: global_pool must be one of {_POOL_TYPES}, got {global_pool!r}")
        if num_classes < 0:
            raise ValueError(f"LightNet: num_classes must be >= 0, got {num_classes}")
        if embed_dim % num_heads:
            raise ValueError(f"LightNet: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if weight_init not in ("", "skip"):
            raise ValueError(f"LightNet: weight_init must be '' or 'skip', got {weight_init!r}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.sequence_parallel_group = None  # set_sequence_parallel_group
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 0
        self.dynamic_img_size = dynamic_img_size or dynamic_img_pad
        self.dynamic_img_pad = dynamic_img_pad
        self.grad_checkpointing = False

        factory = torch.device(device) if device is not None else contextlib.nullcontext()
        with factory:
            self.patch_embed = PatchEmbed(
                img_size=img_size,
                patch_size=patch_size,
                in_chans=in_chans,
                embed_dim=embed_dim,
                output_fmt="NHWC",
                strict_img_size=not self.dynamic_img_size,
                dynamic_img_pad=dynamic_img_pad,
            )
            check_patch_divisible(self.patch_embed.img_size, self.patch_embed.patch_size, dynamic_img_pad)
            self.tpe = (MDTPE(embed_dim, num_axes=2, causal=False, num_decays=tpe_num_decays,
                              kernel_norm=tpe_kernel_norm) if use_tpe else None)
            mixer = MixerConfig(
                qkv_bias=qkv_bias, use_lrpe=use_lrpe, lrpe_base=lrpe_base, q_act=q_act, scale=scale,
                gate_rank=gate_rank, gate_act=gate_act, out_norm=out_norm, attn_backend=attn_backend,
                attn_recompute_output=attn_recompute_output,
            )
            dpr = [r.item() for r in torch.linspace(0, drop_path_rate, depth, device="cpu")]
            # a ModuleList (blocks take the grid shape; TorchScript would compile a Sequential's chained forward)
            self.blocks = nn.ModuleList([
                LightNetBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, drop_path=dpr[i], norm=norm, mlp_act=mlp_act,
                              proj_drop=proj_drop_rate, mixer=mixer, num_axes=2)
                for i in range(depth)
            ])
            self.norm = make_norm(norm, embed_dim)
            self.head_drop = nn.Dropout(drop_rate)
            self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.tpe_match_mass, self.lrpe_interpolate = tpe_match_mass, lrpe_interpolate
        self._set_position_references()
        reduction = self.patch_embed.feat_ratio()
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=reduction) for i in range(depth)]

        if weight_init != "skip":
            named_apply(vit_init_weights, self)
        if dtype is not None:
            self.to(dtype=dtype)
            self.init_non_persistent_buffers()  # keep the MD-LRPE frequency tables in fp32

    # ------------------------------------------------------------------ timm API: housekeeping
    def init_non_persistent_buffers(self) -> None:
        """Recreate non-persistent buffers (MD-LRPE frequency tables), e.g. after meta-device construction."""
        for module in self.modules():
            if module is not self and hasattr(module, "init_non_persistent_buffers"):
                module.init_non_persistent_buffers()

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """MD-TPE kernel parameters (decay logits and weights) and learnable LRPE frequencies: no weight decay."""
        return {n for n, _ in self.named_parameters() if n.startswith("tpe.") or n.endswith("lrpe.freqs")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise LR decay: stem (patch embed + MD-TPE), one group per block, final norm."""
        return dict(stem=r"^patch_embed|^tpe", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass (per-block checkpoint; blocks take the grid shape)."""
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head (``num_classes=0`` → identity); ``global_pool=''`` keeps the NHWC map."""
        if num_classes < 0:
            raise ValueError(f"LightNet: num_classes must be >= 0, got {num_classes}")
        if global_pool is not None:
            if global_pool not in _POOL_TYPES:
                raise ValueError(f"LightNet: global_pool must be one of {_POOL_TYPES}, got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        ref = self.norm.weight if getattr(self.norm, "weight", None) is not None else self.patch_embed.proj.weight
        if num_classes > 0:
            self.head = nn.Linear(self.embed_dim, num_classes, device=ref.device, dtype=ref.dtype)
            vit_init_weights(self.head)
        else:
            self.head = nn.Identity()
        self.head.train(self.training)

    def set_input_size(
        self,
        img_size: Optional[Union[int, Tuple[int, int]]] = None,
        patch_size: Optional[Union[int, Tuple[int, int]]] = None,
    ) -> None:
        """Change the nominal image size and/or the patch size (patch-embedding weights are resampled).

        MD-TPE and MD-LRPE are relative encodings: nothing else is resampled; their references for other sizes
        (``tpe_match_mass``, ``lrpe_interpolate``) move to the new nominal grid.
        """
        new_img = self.patch_embed.img_size if img_size is None else to_2tuple(img_size)
        new_patch = self.patch_embed.patch_size if patch_size is None else to_2tuple(patch_size)
        check_patch_divisible(tuple(new_img), tuple(new_patch), self.dynamic_img_pad)
        self.patch_embed.set_input_size(img_size=img_size, patch_size=patch_size)
        reduction = self.patch_embed.feat_ratio()
        for info in self.feature_info:
            info["reduction"] = reduction
        self._set_position_references()

    def _set_position_references(self) -> None:
        """The nominal patch grid as MD-TPE's mass-matching reference (``tpe_match_mass``) and as every block's MD-LRPE
        interpolation reference (``lrpe_interpolate``); None where switched off."""
        grid = tuple(self.patch_embed.grid_size)
        if self.tpe is not None:
            self.tpe.set_reference_grid(grid if self.tpe_match_mass else None)
        for block in self.blocks:
            if block.attn.lrpe is not None:
                block.attn.lrpe.set_reference_grid(grid if self.lrpe_interpolate else None)

    # ------------------------------------------------------------------ forward
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image ``[B, C_in, H, W]`` → patch tokens ``[B, H/p, W/p, C]``."""
        check_image_input(
            x, self.in_chans, self.patch_embed.img_size, self.patch_embed.patch_size,
            self.dynamic_img_size, self.dynamic_img_pad,
        )
        return self.patch_embed(x)

    @torch.jit.unused
    def _checkpointed_block(self, block: nn.Module, x: torch.Tensor, grid: List[int]) -> torch.Tensor:
        """``block(x, grid)`` under non-reentrant activation checkpointing (eager only)."""
        return checkpoint(block, x, grid, use_reentrant=False)

    def _tpe(self, x: torch.Tensor, grid: List[int]) -> torch.Tensor:
        """MD-TPE over the patch grid (identity without it): ``[B, H·W, C]`` → ``[B, H·W, C]``."""
        if self.tpe is not None:
            x = tensor_output(self.tpe(x, grid))
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image ``[B, C_in, H, W]`` → normalised feature map ``[B, H/p, W/p, C]`` (NHWC, unpooled); with a
        sequence-parallel group (:meth:`set_sequence_parallel_group`) this rank's tokens ``[B, n_local, C]``."""
        x = self._embed(x)
        B, H, W, C = x.shape
        grid = [H, W]
        x = self._tpe(x.reshape(B, H * W, C), grid)
        split = False
        if not torch.jit.is_scripting():
            split = self._split()
            if split:
                x = self._shard(x)
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = self._checkpointed_block(block, x, grid)
            else:
                x = tensor_output(block(x, grid))
        x = self.norm(x)
        return x if split else x.reshape(B, H, W, C)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features from :meth:`forward_features` → logits ``[B, num_classes]`` (``pre_logits``: pooled ``[B, C]``)."""
        x = self.pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ intermediates / features
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Block outputs as feature maps.

        Args:
            x: image ``[B, C_in, H, W]``.
            indices: blocks to return: ``None`` all, int ``n`` the last ``n``, or a list (negative from the end).
            norm: apply the final norm to every intermediate.
            stop_early: stop after the last requested block (the final features are then those of that block).
            output_fmt: ``'NCHW'`` ``[B, C, h, w]``, ``'NHWC'`` ``[B, h, w, C]`` or ``'NLC'`` ``[B, h·w, C]``.
            intermediates_only: return only the list.

        Returns:
            ``(final, intermediates)`` where ``final`` equals :meth:`forward_features` (NHWC) when all blocks ran,
            or just ``intermediates``.
        """
        fmt = str(getattr(output_fmt, "value", output_fmt))
        if fmt not in _INTERMEDIATE_FORMATS:
            raise ValueError(f"LightNet: output_fmt must be one of {_INTERMEDIATE_FORMATS}, got {output_fmt!r}")
        self._refuse_split("LightNet", "forward_intermediates")
        take, max_index = take_indices(len(self.blocks), indices)
        x = self._embed(x)
        B, H, W, C = x.shape
        grid = [H, W]
        x = self._tpe(x.reshape(B, H * W, C), grid)
        blocks = self.blocks if torch.jit.is_scripting() or not stop_early else self.blocks[: max_index + 1]
        intermediates = []
        for i, block in enumerate(blocks):
            x = self._checkpointed_block(block, x, grid) if self.grad_checkpointing else block(x, grid)  # eager only
            if i in take:
                y = self.norm(x) if norm else x
                if fmt == "NCHW":
                    y = y.reshape(B, H, W, C).permute(0, 3, 1, 2).contiguous()
                elif fmt == "NHWC":
                    y = y.reshape(B, H, W, C)
                intermediates.append(y)
        if intermediates_only:
            return intermediates
        return self.norm(x).reshape(B, H, W, C), intermediates

    def prune_intermediate_layers(
        self,
        indices: Union[int, List[int]] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> List[int]:
        """Drop blocks after the last index in ``indices`` (and optionally the final norm and the head).

        Returns the absolute indices kept.
        """
        take, max_index = take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take


# ---------------------------------------------------------------------- checkpoints
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


def unwrap_checkpoint(checkpoint_dict: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """Training checkpoint → plain state dict: the first container of ``_WRAPPER_KEYS`` (EMA weights preferred, as
    timm's ``load_state_dict`` does for files), then timm's ``clean_state_dict`` (``module.`` / ``_orig_mod.`` wrapper
    prefixes) until no key changes, so that stacked wrappers (``module.module.``) are stripped too."""
    sd = checkpoint_dict
    for key in _WRAPPER_KEYS:
        if isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    while True:
        cleaned = clean_state_dict(sd)
        if list(cleaned) == list(sd):
            return cleaned
        sd = cleaned


_unwrap = unwrap_checkpoint  # earlier private name


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: LightNet) -> Dict[str, torch.Tensor]:
    """Prepare a checkpoint for :class:`LightNet` (timm's ``pretrained_filter_fn``).

    Unwraps ``state_dict_ema`` / ``model_ema`` / ``state_dict`` / ``model`` containers, strips ``module.`` and
    ``_orig_mod.`` prefixes, resamples the patch-embedding kernel to the model's patch size, and raises a
    ``ValueError`` naming the keys when the checkpoint belongs to another architecture or size. The head is left to
    timm (it is dropped when ``num_classes`` differs from the pretrained cfg).
    """
    if not isinstance(state_dict, dict):
        raise ValueError(f"LightNet checkpoint: expected a dict of tensors, got {type(state_dict).__name__}")
    sd = unwrap_checkpoint(state_dict)
    own = model.state_dict()
    pe_key = "patch_embed.proj.weight"
    if pe_key in sd and pe_key in own and sd[pe_key].shape[-2:] != own[pe_key].shape[-2:]:
        sd[pe_key] = resample_patch_embed(sd[pe_key], list(own[pe_key].shape[-2:]), verbose=True)

    missing, unexpected, mismatched = diff_state_dicts(
        own, sd,
        include=lambda k: not k.startswith("head."),  # head handled by timm
        shape_ok=lambda k: k == pe_key and sd[k].shape[0] == own[k].shape[0],  # in_chans adapted by timm
    )
    missing, unexpected = sorted(missing), sorted(unexpected)
    mismatched = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:5]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:5]})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[:5]})")
    if problems:
        raise ValueError(
            "checkpoint does not match this LightNet model (another architecture or size?): " + "; ".join(problems)
        )
    head_w = sd.get("head.weight")
    cfg_classes = getattr(model, "pretrained_cfg", {}).get("num_classes")
    if head_w is not None and cfg_classes is not None and model.num_classes != cfg_classes:
        _logger.warning(
            "LightNet: the classifier head of the pretrained file (head.weight, head.bias: %d classes) is not loaded "
            "and is re-initialised, because num_classes=%d differs from the pretrained cfg's num_classes=%d (timm's "
            "rule). To keep the file's head, create the model with num_classes=%d and "
            "pretrained_cfg_overlay=dict(file=..., num_classes=%d).",
            head_w.shape[0], model.num_classes, cfg_classes, head_w.shape[0], head_w.shape[0])
    if (
        head_w is not None and isinstance(model.head, nn.Linear) and head_w.shape != model.head.weight.shape
        and model.num_classes == cfg_classes
    ):
        raise ValueError(
            f"checkpoint head has {head_w.shape[0]} classes (input dim {head_w.shape[1]}), the model "
            f"{model.num_classes}: pass pretrained_cfg_overlay=dict(file=..., num_classes={head_w.shape[0]}) to keep "
            "it, or num_classes=N with a different N to start a fresh head"
        )
    return sd


# ---------------------------------------------------------------------- registry
def pretrained_cfg(url: str = "", **kwargs: Any) -> Dict[str, Any]:
    """timm pretrained config of a LightNet model (the image models' defaults; ``kwargs`` override any key)."""
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (14, 14),
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "fixed_input_size": True,  # exact size unless created with dynamic_img_size=True
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2405.21022",
        "paper_name": "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "lightnet_tiny.untrained": pretrained_cfg(),
    "lightnet_small.untrained": pretrained_cfg(),
    "lightnet_base.untrained": pretrained_cfg(),
    "lightnet_small_patch8.untrained": pretrained_cfg(pool_size=(28, 28)),
    "test_lightnet.untrained": pretrained_cfg(input_size=(3, 160, 160), pool_size=(10, 10), crop_pct=0.875),
})


def _create_lightnet(variant: str, pretrained: bool = False, **kwargs: Any) -> LightNet:
    kwargs = rename_legacy_keys(kwargs, f"timm.create_model({variant!r})")  # e.g. model_args of older hub configs
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    file = overlay.get("file")
    if pretrained and file and not os.path.isfile(file):
        raise FileNotFoundError(f"{variant}: pretrained weights file not found: {file}")
    out_indices = kwargs.pop("out_indices", 3)
    if kwargs.get("dynamic_img_size") or kwargs.get("dynamic_img_pad"):
        # the cfg tells users (and smp's TimmViTEncoder.is_fixed_input_size) whether other sizes are accepted
        kwargs["pretrained_cfg_overlay"] = {**overlay, "fixed_input_size": False}
    try:
        return build_model_with_cfg(
            LightNet,
            variant,
            pretrained,
            pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
            **kwargs,
        )
    except _UNREADABLE_FILE_ERRORS as e:
        if not (pretrained and file):
            raise
        # timm reports an unreadable file with the loader's own message (e.g. safetensors' "incomplete metadata"),
        # which does not name the file
        raise ValueError(
            f"{variant}: cannot load the pretrained weights file {file} (truncated, or not a safetensors / "
            f"torch.save checkpoint?): {type(e).__name__}: {e}"
        ) from e


# what loading a damaged or foreign file raises inside timm (ValueErrors of checkpoint_filter_fn pass through)
_UNREADABLE_FILE_ERRORS = (SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError, OSError, KeyError)


@register_model
def lightnet_tiny(pretrained: bool = False, **kwargs: Any) -> LightNet:
    """LightNet-Tiny: width 192, depth 12, 3 heads of 64, patch 16 at 224²."""
    model_args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return _create_lightnet("lightnet_tiny", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def lightnet_small(pretrained: bool = False, **kwargs: Any) -> LightNet:
    """LightNet-Small: width 384, depth 12, 6 heads of 64, patch 16 at 224²."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create_lightnet("lightnet_small", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def lightnet_base(pretrained: bool = False, **kwargs: Any) -> LightNet:
    """LightNet-Base: width 768, depth 12, 12 heads of 64, patch 16 at 224²."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return _create_lightnet("lightnet_base", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def lightnet_small_patch8(pretrained: bool = False, **kwargs: Any) -> LightNet:
    """LightNet-Small with patch 8 (784 tokens at 224²) for high-resolution / dense use."""
    model_args = dict(patch_size=8, embed_dim=384, depth=12, num_heads=6)
    return _create_lightnet("lightnet_small_patch8", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def test_lightnet(pretrained: bool = False, **kwargs: Any) -> LightNet:
    """Tiny LightNet for fast tests: width 64, depth 4, 2 heads of 32, patch 16 at 160²."""
    model_args = dict(img_size=160, patch_size=16, embed_dim=64, depth=4, num_heads=2, mlp_ratio=2.0)
    return _create_lightnet("test_lightnet", pretrained=pretrained, **dict(model_args, **kwargs))
