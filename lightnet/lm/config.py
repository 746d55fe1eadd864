"""Configuration of LightNet language models (causal LM, masked LM, sequence classification).

One flat dataclass, saved as ``config.json`` next to the weights. Unknown keys are an error (a typo must not be
silently ignored), except the bookkeeping keys written by :meth:`LightNetLMConfig.to_dict` (``model_type``,
``architectures``). Keys renamed since a file was written (``backend`` → ``attn_backend``) are mapped by
:func:`lightnet.layers.rename_legacy_keys` in :meth:`LightNetLMConfig.from_dict`, which every loader goes through.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..layers import MixerConfig, check_mixer_options, rename_legacy_keys

__all__ = ["LightNetLMConfig", "MODEL_TYPE", "CONFIG_NAME"]

#: ``model_type`` written to ``config.json`` (``'lightnet'`` is taken by fla in ``transformers``' registry).
MODEL_TYPE = "lightnet_yoso"
CONFIG_NAME = "config.json"
_BOOKKEEPING = ("model_type", "architectures")


def _unknown_keys_error(unknown: List[str], known: Any) -> ValueError:
    """``ValueError`` naming each unknown key with its closest known key (``'num_haeds' (did you mean 'num_heads'?)``)."""
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, sorted(known), n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ValueError(f"LightNetLMConfig: unknown config key(s) {', '.join(hints)}; known keys: {sorted(known)}")


def _reject_unknown_keywords(cls: type) -> type:
    """Wrap the dataclass ``__init__`` so that an unknown keyword raises :func:`_unknown_keys_error`'s ``ValueError``
    (with a "did you mean" hint) instead of Python's plain ``TypeError``."""
    init = cls.__init__
    known = frozenset(f.name for f in dataclasses.fields(cls))

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        unknown = [k for k in kwargs if k not in known]
        if unknown:
            raise _unknown_keys_error(unknown, known)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


@_reject_unknown_keywords
@dataclass
class LightNetLMConfig:
    """Hyper-parameters of a LightNet language model.

    Attributes:
        vocab_size: number of token ids (260 for the built-in byte tokenizer).
        dim: model width ``C``.
        depth: number of LightNet blocks.
        num_heads: mixer heads (``dim`` must be divisible by it).
        mlp_ratio: GLU hidden width over ``dim``.
        causal: causal recurrence + causal 1-D TPE (causal LM) or the bidirectional scan + bidirectional TPE (MLM).
        use_tpe: 1-D Toeplitz positional encoding after the embedding.
        tpe_num_decays: exponentials per channel in the TPE kernel.
        use_lrpe: 1-D LRPE (cosine form) on queries and keys in every mixer.
        lrpe_base: LRPE frequency base.
        q_act: query activation of the mixer.
        scale: mixer output scale (``'none'``, ``'sqrt'`` or a number).
        gate_rank: rank of the mixer's low-rank output gate (``None``: ``max(16, dim // 8)``; 0: no gate).
        gate_act: gate activation.
        norm: ``'rmsnorm'`` or ``'layernorm'``.
        mlp_act: GLU activation.
        dropout: dropout after the embedding and inside blocks.
        drop_path: stochastic depth rate (linearly increasing over depth).
        init_std: std of the normal initialisation of linear and embedding weights.
        tie_word_embeddings: share the LM head weight with the token embedding.
        pad_token_id / bos_token_id / eos_token_id / mask_token_id: special ids (byte tokenizer defaults).
        num_labels: classes of :class:`LightNetForSequenceClassification` (1 = regression).
        classifier_pooling: ``'mean'`` over non-padding tokens or ``'last'`` non-padding token.
        mlm_probability: fraction of tokens selected for masking by the MLM collator.
        attn_backend: kernel backend (``'auto'``, ``'torch'``, ``'triton'``); ``backend`` in files written before
            the rename.

    The mixer options (``use_lrpe``, ``lrpe_base``, ``q_act``, ``scale``, ``gate_rank``, ``gate_act``,
    ``attn_backend``) have the names and defaults of :class:`~lightnet.layers.MixerConfig`; :attr:`mixer` is that
    config, which every block receives.
    """

    vocab_size: int = 260
    dim: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 8 / 3
    causal: bool = True
    use_tpe: bool = True
    tpe_num_decays: int = 4
    use_lrpe: bool = True
    lrpe_base: float = 10000.0
    q_act: str = "silu"
    scale: Union[str, float] = "none"
    gate_rank: Optional[int] = None
    gate_act: str = "sigmoid"
    norm: str = "rmsnorm"
    mlp_act: str = "silu"
    dropout: float = 0.0
    drop_path: float = 0.0
    init_std: float = 0.02
    tie_word_embeddings: bool = True
    pad_token_id: int = 256
    bos_token_id: int = 257
    eos_token_id: int = 258
    mask_token_id: int = 259
    num_labels: int = 2
    classifier_pooling: str = "mean"
    mlm_probability: float = 0.15
    attn_backend: str = "auto"
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` (``TypeError`` for a wrong type) naming the first inconsistent field."""
        for name in ("vocab_size", "dim", "depth", "num_heads", "tpe_num_decays", "num_labels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"LightNetLMConfig: {name} must be an integer, got {v!r} ({type(v).__name__})")
        check_mixer_options("LightNetLMConfig", {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if self.vocab_size < 1:
            raise ValueError(f"LightNetLMConfig: vocab_size must be >= 1, got {self.vocab_size}")
        if self.dim < 1 or self.depth < 0 or self.num_heads < 1:
            raise ValueError(f"LightNetLMConfig: dim, depth, num_heads must be positive, got {self.dim}, {self.depth}, {self.num_heads}")
        if self.dim % self.num_heads != 0:
            raise ValueError(f"LightNetLMConfig: dim {self.dim} is not divisible by num_heads {self.num_heads}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "mask_token_id"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < self.vocab_size:
                raise ValueError(f"LightNetLMConfig: {name}={v} is outside the vocabulary [0, {self.vocab_size})")
        if self.classifier_pooling not in ("mean", "last"):
            raise ValueError(f"LightNetLMConfig: classifier_pooling must be 'mean' or 'last', got {self.classifier_pooling!r}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"LightNetLMConfig: mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.num_labels < 1:
            raise ValueError(f"LightNetLMConfig: num_labels must be >= 1, got {self.num_labels}")

    @property
    def mixer(self) -> MixerConfig:
        """The token-mixer options of every block (the fields of :class:`~lightnet.layers.MixerConfig`)."""
        return MixerConfig.pick({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def field_names(cls) -> List[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "LightNetLMConfig":
        """Build from a mapping; keys of older versions are renamed (:func:`~lightnet.layers.rename_legacy_keys`),
        unknown keys raise ``ValueError`` with close-match suggestions."""
        if not isinstance(data, dict):
            raise TypeError(f"LightNetLMConfig.from_dict: expected a dict, got {type(data).__name__}")
        data = rename_legacy_keys(data, "LightNetLMConfig")
        known = set(cls.field_names())
        model_type = data.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(f"LightNetLMConfig: config is for model_type {model_type!r}, expected {MODEL_TYPE!r}")
        unknown = [k for k in data if k not in known and k not in _BOOKKEEPING]
        if unknown:
            raise _unknown_keys_error(unknown, known)
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self, architectures: Optional[List[str]] = None) -> Dict[str, Any]:
        d: Dict[str, Any] = {"model_type": MODEL_TYPE}
        if architectures:
            d["architectures"] = list(architectures)
        d.update(dataclasses.asdict(self))
        return d

    def save(self, path: Union[str, Path], architectures: Optional[List[str]] = None) -> Path:
        """Write JSON to ``path`` (a file, or a folder that receives ``config.json``)."""
        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(architectures), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "LightNetLMConfig":
        """Read ``config.json`` (``path`` is the file or its folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"LightNetLMConfig: no config file at {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"LightNetLMConfig: {path} is not valid JSON: {e}") from e
        return cls.from_dict(data)
