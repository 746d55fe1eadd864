"""The token-mixer options every model family shares, under one name each, and the renames of older spellings.

:class:`MixerConfig` holds the options of :class:`~lightnet.layers.LightNetAttention` that a user chooses (not the
structural ones: width, heads, causality, grid axes, prefix tokens, dropout, which the model supplies). The vision
models (timm keyword arguments), the diffusion transformer (diffusers ``config.json``) and the language models
(:class:`~lightnet.lm.LightNetLMConfig`) take these options as flat arguments with exactly these names, fill one
``MixerConfig`` from them and hand it to their blocks, which build their mixer with :meth:`MixerConfig.build`.

:data:`LEGACY_NAMES` is the one table of renamed keys (``tpe_decays``, ``attention_backend``, ``backend``) and
:func:`rename_legacy_keys` the one function every loader applies to a saved configuration, so that files written by
earlier versions keep loading.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Union

from .mixer import CHOICES, LightNetAttention, check_choice, resolve_scale

__all__ = ["LEGACY_NAMES", "MixerConfig", "check_mixer_options", "rename_legacy_keys"]

logger = logging.getLogger(__name__)

#: old key → current key, for every option that was renamed (vision ``tpe_decays``, DiT ``attention_backend``, LM and
#: HF-config ``backend``)
LEGACY_NAMES: Dict[str, str] = {
    "tpe_decays": "tpe_num_decays",
    "attention_backend": "attn_backend",
    "backend": "attn_backend",
}


def rename_legacy_keys(config: Mapping[str, Any], owner: str) -> Dict[str, Any]:
    """A copy of ``config`` with every key of :data:`LEGACY_NAMES` under its current name (in the same position).

    Each rename is logged at INFO level on ``lightnet.layers.config``, naming ``owner`` (the loader); no warning is
    raised. A mapping that holds an old key and its new name with different values is a ``ValueError``.
    """
    out: Dict[str, Any] = {}
    for key, value in config.items():
        new = LEGACY_NAMES.get(key)
        if new is None:
            out.setdefault(key, value)
            continue
        if new in config and config[new] != value:
            raise ValueError(f"{owner}: config has both {key!r} (an older name of {new!r}) = {value!r} and "
                             f"{new!r} = {config[new]!r}; keep only {new!r}")
        logger.info("%s: config key %r renamed to %r (written by an older LightNet version)", owner, key, new)
        out[new] = config.get(new, value)
    return out


#: MixerConfig field → the :class:`~lightnet.layers.LightNetAttention` option whose choices it takes
_CHOICE_FIELDS = {"q_act": "q_act", "gate_act": "gate_act", "attn_backend": "backend",
                  "attn_recompute_output": "recompute_output"}


def check_mixer_options(owner: str, options: Mapping[str, Any]) -> None:
    """Raise a ``ValueError`` naming ``owner`` and the field for an invalid mixer option among ``options`` (a
    :class:`MixerConfig` or a model config holding some of its fields under the same names)."""
    for name, layer_name in _CHOICE_FIELDS.items():
        if name in options:
            check_choice(owner, name, options[name], CHOICES[layer_name])
    if "scale" in options:
        resolve_scale(owner, options["scale"], 1)


@dataclass(frozen=True)
class MixerConfig:
    """Options of the LightNet token mixer, under the names all model families use.

    Attributes:
        qkv_bias: bias on the q/k/v projection.
        use_lrpe: apply MD-LRPE (cosine form) to queries and keys.
        lrpe_base: MD-LRPE frequency base.
        q_act: query activation (``'silu'``, ``'identity'``, ``'relu'``, ``'elu1'``).
        scale: output scale: ``'none'`` (1, the paper's normalised form), ``'sqrt'`` (``D^-1/2``) or a number.
        gate_rank: rank of the low-rank output gate (``None`` → ``max(16, C // 8)``, 0 → no gate).
        gate_act: gate activation (``'sigmoid'``, ``'silu'``, ``'none'`` = no gate).
        out_norm: per-head RMSNorm of the mixer output.
        attn_backend: kernel backend of :func:`lightnet.kernels.additive_attention` (``'auto'``, ``'torch'``,
            ``'triton'``).
        attn_recompute_output: when the mixer recomputes its output norm and gate in the backward instead of keeping
            them (``'compiled'``, ``'always'``, ``'never'``; see :class:`~lightnet.layers.LightNetAttention`).

    Invalid values raise ``ValueError`` naming the field when the config is made.
    """

    qkv_bias: bool = False
    use_lrpe: bool = True
    lrpe_base: float = 10000.0
    q_act: str = "silu"
    scale: Union[str, float] = "none"
    gate_rank: Optional[int] = None
    gate_act: str = "sigmoid"
    out_norm: bool = True
    attn_backend: str = "auto"
    attn_recompute_output: str = "compiled"

    def __post_init__(self) -> None:
        check_mixer_options("MixerConfig", {name: getattr(self, name) for name in self.field_names()})

    @classmethod
    def field_names(cls) -> tuple:
        """The option names (each model family exposes some of them, under these names)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def pick(cls, options: Mapping[str, Any]) -> "MixerConfig":
        """The config of the options found in ``options`` (e.g. a model's saved config); absent ones keep their
        defaults, other keys are ignored."""
        return cls(**{name: options[name] for name in cls.field_names() if name in options})

    def attention_kwargs(self) -> Dict[str, Any]:
        """These options as keyword arguments of :class:`~lightnet.layers.LightNetAttention`."""
        return dict(qkv_bias=self.qkv_bias, use_lrpe=self.use_lrpe, lrpe_base=self.lrpe_base, q_act=self.q_act,
                    scale=self.scale, gate_rank=self.gate_rank, gate_act=self.gate_act, out_norm=self.out_norm,
                    backend=self.attn_backend, recompute_output=self.attn_recompute_output)

    def build(self, dim: int, num_heads: int, *, causal: bool = False, num_axes: int = 1, num_prefix_tokens: int = 0,
              proj_drop: float = 0.0) -> LightNetAttention:
        """The token mixer ``[B, N, dim] → [B, N, dim]`` with these options and the model's structure."""
        return LightNetAttention(dim, num_heads, causal=causal, num_axes=num_axes, num_prefix_tokens=num_prefix_tokens,
                                 proj_drop=proj_drop, **self.attention_kwargs())
