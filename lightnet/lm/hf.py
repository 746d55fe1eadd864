"""Optional Hugging Face ``transformers`` integration of the LightNet language models.

``import lightnet.lm.hf`` registers the model type ``"lightnet-yoso"`` with ``AutoConfig``, ``AutoModelForCausalLM``
and ``AutoModelForMaskedLM`` (see :func:`register`), so after the import::

    model = AutoModelForCausalLM.from_pretrained(folder)          # a folder written by save_pretrained below
    model.generate(input_ids, max_new_tokens=32, do_sample=False)   # HF generate on the recurrent state

The HF classes *wrap* the plain models (:class:`~lightnet.lm.modeling.LightNetForCausalLM`,
:class:`~lightnet.lm.modeling.LightNetForMaskedLM`) as the submodule ``lightnet``; no model code is duplicated.

Generation: the decoding state is LightNet's constant-size :class:`~lightnet.lm.cache.LightNetCache` (no KV cache;
returned as :class:`LightNetHFCache`, the same tensors plus the methods ``generate`` calls on a cache). It travels
through ``generate`` as ``past_key_values``: the first forward consumes the whole (left-padded) prompt and returns
the cache, later forwards receive one token each plus the cache
(:meth:`LightNetHFForCausalLM.prepare_inputs_for_generation` keeps the tokens the cache has not consumed; ``forward``
cuts the growing 2-D ``attention_mask`` to the new tokens). ``_supports_default_dynamic_cache`` returns False so
``generate`` does not build a ``DynamicCache`` for us; ``_reorder_cache`` / ``reorder_cache`` let beam search reorder
rows. ``generate(input_ids, past_key_values=cache)`` continues from a cache that holds a prefix of ``input_ids``
(transformers 5; not on 4.x). Assisted (speculative) decoding is not supported: a recurrent state cannot be rolled
back. Tested with transformers 4.45.2, 4.57.6 and 5.23.0.

Only this module imports ``transformers``; ``lightnet`` and ``lightnet.lm`` work without it.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Dict, FrozenSet, Optional, Tuple, Union

try:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, GenerationConfig, PreTrainedModel
    from transformers.generation import GenerationMixin
    from transformers.modeling_outputs import CausalLMOutputWithPast, MaskedLMOutput

    try:
        from transformers import PreTrainedConfig as _HFConfigBase
    except ImportError:  # transformers < 5
        from transformers import PretrainedConfig as _HFConfigBase
except ImportError as _e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "lightnet.lm.hf needs Hugging Face transformers (>= 4.45): install it with "
        '`pip install "lightnet-yoso[hf]"` (or `pip install "transformers>=4.45"`). '
        "The plain lightnet.lm API (LightNetForCausalLM, generate, save_pretrained/from_pretrained) works without it."
    ) from _e

import torch
from torch import nn

from ..layers import rename_legacy_keys
from .cache import LightNetCache
from .config import LightNetLMConfig
from .modeling import LightNetForCausalLM, LightNetForMaskedLM, LightNetPreTrainedModel, _token_loss

__all__ = [
    "HF_MODEL_TYPE",
    "LightNetHFCache",
    "LightNetHFConfig",
    "LightNetHFPreTrainedModel",
    "LightNetHFForCausalLM",
    "LightNetHFForMaskedLM",
    "register",
]

#: ``model_type`` of the HF classes (``"lightnet"`` is registered by fla; the plain API writes ``"lightnet_yoso"``).
HF_MODEL_TYPE = "lightnet-yoso"

_LM_CONFIG_FIELDS: Tuple[str, ...] = tuple(f.name for f in dataclasses.fields(LightNetLMConfig))
#: fields of ours that ``PretrainedConfig`` itself also knows; they go through its ``__init__``
_SHARED_WITH_HF = ("tie_word_embeddings", "pad_token_id", "bos_token_id", "eos_token_id", "num_labels")


@functools.lru_cache(maxsize=1)
def _hf_config_keys() -> FrozenSet[str]:
    """Keys that ``transformers`` itself may put into a config (base attributes, generation defaults, legacy keys).

    Anything else that is not a LightNet field is a typo or a foreign config and is reported by
    :meth:`LightNetLMConfig.from_dict` (with a close-match hint).
    """
    base = _HFConfigBase()
    keys = set(base.to_dict()) | set(vars(base))
    keys |= set(GenerationConfig().to_dict())
    keys |= {
        "model_type", "architectures", "transformers_version", "name_or_path", "_name_or_path", "_commit_hash",
        "dtype", "torch_dtype", "attn_implementation", "experts_implementation", "output_attentions",
        "output_hidden_states", "return_dict", "use_cache", "id2label", "label2id", "problem_type", "auto_map",
        "is_decoder", "is_encoder_decoder", "add_cross_attention", "tie_encoder_decoder", "torchscript",
        "chunk_size_feed_forward", "pruned_heads", "tokenizer_class", "prefix", "sep_token_id",
        "decoder_start_token_id", "task_specific_params", "finetuning_task", "cross_attention_hidden_size",
    }
    return frozenset(keys)


class LightNetHFConfig(_HFConfigBase):
    """``transformers`` config holding exactly the fields of :class:`LightNetLMConfig` (same names, same defaults).

    Every value is validated by :class:`LightNetLMConfig` (unknown keys raise ``ValueError`` with a close-match hint,
    inconsistent values raise too); keys of older versions (``backend``) are renamed first, by
    :func:`~lightnet.layers.rename_legacy_keys`, so an old ``config.json`` loads. Convert with
    :meth:`to_lightnet_config` / :meth:`from_lightnet_config`.
    """

    model_type = HF_MODEL_TYPE

    def __init__(self, **kwargs: Any) -> None:
        kwargs = rename_legacy_keys(kwargs, "LightNetHFConfig")
        ours = {k: kwargs.pop(k) for k in list(kwargs) if k in _LM_CONFIG_FIELDS}
        if "num_labels" not in ours and kwargs.get("id2label"):
            ours["num_labels"] = len(kwargs["id2label"])  # config.json stores id2label, not num_labels
        foreign = {k: kwargs[k] for k in kwargs if k not in _hf_config_keys()}
        lm = LightNetLMConfig.from_dict({**ours, **foreign})  # raises on unknown keys / bad values
        values = dataclasses.asdict(lm)
        for name in _LM_CONFIG_FIELDS:
            if name not in _SHARED_WITH_HF:
                setattr(self, name, values[name])
        kwargs.pop("model_type", None)
        super().__init__(**{name: values[name] for name in _SHARED_WITH_HF}, **kwargs)

    def __eq__(self, other: object) -> bool:
        """All values equal, wherever they were loaded from (transformers 5's generated dataclass ``__eq__`` would
        only compare the base fields)."""
        if not isinstance(other, LightNetHFConfig):
            return NotImplemented
        skip = ("_name_or_path", "transformers_version")
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: v for k, v in mine.items() if k not in skip} == {k: v for k, v in theirs.items() if k not in skip}

    __hash__ = None  # mutable, like every PretrainedConfig

    def to_lightnet_config(self) -> LightNetLMConfig:
        """The plain :class:`LightNetLMConfig` with the same field values (validated)."""
        return LightNetLMConfig.from_dict({name: getattr(self, name) for name in _LM_CONFIG_FIELDS})

    @classmethod
    def from_lightnet_config(cls, config: LightNetLMConfig, **kwargs: Any) -> "LightNetHFConfig":
        """Build from a plain config; ``kwargs`` add ``transformers`` options (e.g. ``use_cache``)."""
        if not isinstance(config, LightNetLMConfig):
            raise TypeError(f"from_lightnet_config needs a LightNetLMConfig, got {type(config).__name__}")
        return cls(**dataclasses.asdict(config), **kwargs)


class LightNetHFCache(LightNetCache):
    """:class:`LightNetCache` plus the methods ``transformers``' ``generate`` calls on a cache object.

    Same tensors (``layer_states``, ``tpe_state``, ``seen_tokens``); constant size in the context length.
    """

    is_compileable = False  # generate must not try to compile around it

    @classmethod
    def wrap(cls, cache: LightNetCache) -> "LightNetHFCache":
        """The same state (tensors shared, not copied) as a :class:`LightNetHFCache`."""
        return cache if isinstance(cache, cls) else cls(cache.layer_states, cache.tpe_state, cache.seen_tokens)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions consumed so far (left padding included)."""
        return self.seen_tokens

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: keep / reorder batch rows in place."""
        ts = self.tensors()
        picked = self.select(beam_idx.to(ts[0].device) if ts else beam_idx)
        self.layer_states, self.tpe_state = picked.layer_states, picked.tpe_state


def _as_hf_config(config: Union[LightNetHFConfig, LightNetLMConfig]) -> LightNetHFConfig:
    if isinstance(config, LightNetLMConfig):
        return LightNetHFConfig.from_lightnet_config(config)
    if not isinstance(config, LightNetHFConfig):
        raise TypeError(f"expected a LightNetHFConfig or LightNetLMConfig, got {type(config).__name__}")
    return config


def _is_initialized(t: torch.Tensor) -> bool:
    return bool(getattr(t, "_is_hf_initialized", False))


def _constructor_initialised(model: nn.Module) -> bool:
    """Whether ``model``'s own constructor really initialised its tensors: not on the meta device (transformers 5
    builds models there inside ``from_pretrained``) and not inside transformers 4's ``no_init_weights`` context."""
    from transformers import modeling_utils

    on_meta = any(t.device.type == "meta" for t in model.parameters())
    return not on_meta and bool(getattr(modeling_utils, "_init_weights", True))


class LightNetHFPreTrainedModel(PreTrainedModel):
    """Shared ``transformers`` plumbing: config class, weight init of missing keys, embedding accessors.

    The wrapped LightNet model initialises itself in its constructor (:meth:`LightNetPreTrainedModel.init_weights`),
    so those tensors are marked initialised and ``post_init`` leaves them alone; :meth:`_init_weights` only restores
    the non-persistent LRPE frequency tables and initialises keys missing from a checkpoint with LightNet's scheme.
    """

    config_class = LightNetHFConfig
    base_model_prefix = "lightnet"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["LightNetBlock"]
    _is_stateful = True
    #: name of the embedding the output head is tied to, relative to the wrapper (set by subclasses)
    _tied_weights_keys: Optional[Dict[str, str]] = None

    def _wrap(self, inner: LightNetPreTrainedModel) -> None:
        """Attach ``inner`` as ``self.lightnet``, mark its (real) tensors initialised, tag residual projections."""
        self.lightnet = inner
        if _constructor_initialised(inner):
            for t in list(inner.parameters()) + list(inner.buffers()):
                t._is_hf_initialized = True
        scale = 1.0 / math.sqrt(2 * max(1, inner.config.depth))
        for name, m in inner.named_modules():  # GPT-2 residual scaling, as in LightNetPreTrainedModel.init_weights
            if isinstance(m, nn.Linear) and name.endswith(("attn.proj", "mlp.fc2")):
                m._lightnet_init_scale = scale

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise the tensors of ``module`` that are not marked initialised (missing from a checkpoint)."""
        std = float(self.config.init_std)
        if hasattr(module, "init_non_persistent_buffers"):
            module.init_non_persistent_buffers()  # LRPE frequency tables (recomputed, never saved)
        if hasattr(module, "fwd_logit"):  # TPE axis: same construction as the module's own __init__
            fresh = type(module)(module.w0.shape[0], module.fwd_logit.shape[1], module.causal, std)
            for name, p in module.named_parameters(recurse=False):
                if not _is_initialized(p):
                    p.copy_(getattr(fresh, name).to(p.device, p.dtype))
            return
        for name, p in module.named_parameters(recurse=False):
            if _is_initialized(p):
                continue
            if isinstance(module, (nn.Linear, nn.Embedding)) and name == "weight":
                nn.init.normal_(p, std=std * getattr(module, "_lightnet_init_scale", 1.0))
            elif p.dim() == 1 and name == "weight":  # norms
                nn.init.ones_(p)
            elif name == "bias" or p.dim() == 1:
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, std=std)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.lightnet.model.embed

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the token embedding (e.g. ``resize_token_embeddings``); keeps the wrapped config's vocab size."""
        self.lightnet.model.embed = value
        self.lightnet.config.vocab_size = value.num_embeddings

    def to_lightnet(self) -> LightNetPreTrainedModel:
        """The wrapped plain LightNet model (shares the parameters)."""
        return self.lightnet

    @classmethod
    def from_lightnet(cls, model: LightNetPreTrainedModel) -> "LightNetHFPreTrainedModel":
        """Wrap an existing plain model (its parameters are shared, not copied)."""
        return cls(model.config, model=model)

    def _build(self, config: LightNetHFConfig, model_class: type, model: Optional[LightNetPreTrainedModel]) -> None:
        """Wrap ``model`` (must be a ``model_class``) or a new ``model_class`` built from ``config``."""
        if model is None:
            model = model_class(config.to_lightnet_config())
        elif not isinstance(model, model_class):
            raise TypeError(f"{type(self).__name__} wraps a {model_class.__name__}, got {type(model).__name__}")
        self._wrap(model)
        self.post_init()


class LightNetHFForCausalLM(LightNetHFPreTrainedModel, GenerationMixin):
    """``transformers`` causal LM around :class:`LightNetForCausalLM`: ``forward`` → ``CausalLMOutputWithPast``.

    ``past_key_values`` is a :class:`LightNetCache` (constant size; created by the first call with
    ``use_cache=True``). Works with ``model.generate`` (greedy, sampling, beam search) and ``AutoModelForCausalLM``.
    """

    _tied_weights_keys = {"lightnet.lm_head.weight": "lightnet.model.embed.weight"}

    def __init__(self, config: Union[LightNetHFConfig, LightNetLMConfig], model: Optional[LightNetForCausalLM] = None) -> None:
        config = _as_hf_config(config)
        super().__init__(config)
        self._build(config, LightNetForCausalLM, model)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        """The recurrent state is created by :meth:`forward`, not a ``DynamicCache`` built by ``generate``."""
        return False

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        past_key_values: Optional[LightNetCache] = None,
        attention_mask: Optional[torch.Tensor] = None,
        use_cache: Optional[bool] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        cache: Optional[LightNetCache] = None,
        **kwargs: Any,
    ) -> Dict[str, Any]:
        """Inputs of one ``generate`` step: the tokens the recurrent state has not consumed yet, the state, the mask.

        The cache counts the positions it consumed (``seen_tokens``, left padding included), so the new tokens are
        ``input_ids[:, seen_tokens:]``: the whole prompt at the first step, then the last token. ``attention_mask``
        stays the full history (``forward`` keeps its last columns). Position arguments are dropped (LightNet's
        encodings are relative and follow the cache).
        """
        if inputs_embeds is not None:
            raise NotImplementedError("LightNetHFForCausalLM.generate: inputs_embeds is not supported; pass input_ids")
        past_key_values = _cache_argument(past_key_values, cache)
        if past_key_values is not None:
            input_ids = input_ids[:, past_key_values.seen_tokens:]
        inputs: Dict[str, Any] = {
            "input_ids": input_ids.contiguous(), "attention_mask": attention_mask,
            _CACHE_FIELD: past_key_values, "use_cache": use_cache,
        }
        for key, value in kwargs.items():
            if key not in _GENERATION_ONLY_KWARGS:
                inputs.setdefault(key, value)
        return inputs

    def get_output_embeddings(self) -> nn.Linear:
        return self.lightnet.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lightnet.lm_head = value

    def _reorder_cache(self, past_key_values: LightNetCache, beam_idx: torch.Tensor) -> LightNetHFCache:
        """Beam search: keep / reorder batch rows of the recurrent state."""
        cache = LightNetHFCache.wrap(past_key_values)
        cache.reorder_cache(beam_idx)
        return cache

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.LongTensor] = None,
        past_key_values: Optional[LightNetCache] = None,
        use_cache: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        logits_to_keep: Union[int, torch.Tensor] = 0,
        num_items_in_batch: Optional[Union[int, torch.Tensor]] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        cache: Optional[LightNetCache] = None,
        **kwargs: Any,
    ) -> Union[CausalLMOutputWithPast, Tuple[Any, ...]]:
        """Run the causal LM.

        Args:
            input_ids: ``[B, N]`` token ids (the new tokens only when ``past_key_values`` is given).
            attention_mask: ``[B, N]`` or ``[B, P + N]`` (HF ``generate`` passes the whole history; only the last
                ``N`` columns matter, the past is in the cache) — 1 = token, 0 = padding (left padding for decoding).
            labels: ``[B, N]``; shifted inside as in HF causal LMs (position ``t`` predicts ``labels[t + 1]``);
                ``-100`` is ignored (the ``attention_mask`` is not applied to the labels, as in ``transformers``).
            past_key_values: a :class:`LightNetCache` from an earlier call (`cache` is the same argument under the
                name later transformers 5.x releases use; pass one of the two).
            use_cache: return the updated cache in ``past_key_values`` (default ``config.use_cache`` if set, else False).
            return_dict: ``CausalLMOutputWithPast`` (default) or a tuple ``(loss?, logits, past_key_values?)``.
            output_hidden_states: add ``hidden_states = (final normed hidden [B, N, C],)`` (only the last layer).
            logits_to_keep: compute logits of the last ``k`` positions only (0 = all), or of the given indices.
            num_items_in_batch: divide the summed loss by it (gradient accumulation in ``Trainer``).
        Returns:
            ``CausalLMOutputWithPast`` with ``logits [B, N', V]``, ``loss`` (mean nats/token), ``past_key_values``.
        """
        if inputs_embeds is not None:
            raise NotImplementedError("LightNetHFForCausalLM: inputs_embeds is not supported; pass input_ids")
        past_key_values = _cache_argument(past_key_values, cache)
        _check_extra_kwargs(type(self).__name__, kwargs)
        if input_ids is None:
            raise ValueError("LightNetHFForCausalLM: input_ids is required")
        if past_key_values is not None and not isinstance(past_key_values, LightNetCache):
            raise TypeError(
                f"LightNetHFForCausalLM: past_key_values must be a LightNetCache (the recurrent state returned by an "
                f"earlier call with use_cache=True), got {type(past_key_values).__name__}"
            )
        if use_cache is None:
            use_cache = bool(getattr(self.config, "use_cache", False)) and not self.training
        return_dict = bool(getattr(self.config, "return_dict", True)) if return_dict is None else return_dict
        attention_mask = _mask_for_new_tokens(input_ids, attention_mask, past_key_values)
        hidden, cache = self.lightnet.model(input_ids, attention_mask, cache=past_key_values, use_cache=use_cache)
        cache = None if cache is None else LightNetHFCache.wrap(cache)
        kept = hidden[:, -logits_to_keep:] if isinstance(logits_to_keep, int) else hidden[:, logits_to_keep]
        logits = self.lightnet.lm_head(kept)
        loss = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels shape {tuple(labels.shape)} does not match input_ids {tuple(input_ids.shape)}")
            if kept.shape[1] != hidden.shape[1]:
                full_logits = self.lightnet.lm_head(hidden)
            else:
                full_logits = logits
            loss = _shifted_loss(full_logits, labels, num_items_in_batch)
        hidden_states = (hidden,) if output_hidden_states else None
        if not return_dict:
            out = (logits,) + ((cache,) if use_cache else ()) + ((hidden_states,) if hidden_states else ())
            return ((loss,) + out) if loss is not None else out
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, hidden_states=hidden_states, **{_CACHE_FIELD: cache if use_cache else None}
        )


class LightNetHFForMaskedLM(LightNetHFPreTrainedModel):
    """``transformers`` masked LM around :class:`LightNetForMaskedLM` (bidirectional; ``config.causal=False``)."""

    _tied_weights_keys = {"lightnet.head.decoder.weight": "lightnet.model.embed.weight"}

    def __init__(self, config: Union[LightNetHFConfig, LightNetLMConfig], model: Optional[LightNetForMaskedLM] = None) -> None:
        config = _as_hf_config(config)
        super().__init__(config)
        self._build(config, LightNetForMaskedLM, model)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lightnet.head.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lightnet.head.decoder = value

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.LongTensor] = None,
        return_dict: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        **kwargs: Any,
    ) -> Union[MaskedLMOutput, Tuple[Any, ...]]:
        """``input_ids [B, N]``, ``attention_mask [B, N]``, ``labels [B, N]`` (original ids at masked positions,
        -100 elsewhere) → ``MaskedLMOutput`` with ``logits [B, N, V]`` and the mean cross-entropy ``loss``."""
        _check_extra_kwargs(type(self).__name__, kwargs)
        if input_ids is None:
            raise ValueError("LightNetHFForMaskedLM: input_ids is required")
        return_dict = bool(getattr(self.config, "return_dict", True)) if return_dict is None else return_dict
        out = self.lightnet(input_ids, attention_mask, labels=labels, return_hidden_states=bool(output_hidden_states))
        hidden_states = (out.hidden_states,) if output_hidden_states else None
        if not return_dict:
            res = (out.logits,) + ((hidden_states,) if hidden_states else ())
            return ((out.loss,) + res) if out.loss is not None else res
        return MaskedLMOutput(loss=out.loss, logits=out.logits, hidden_states=hidden_states)


#: bookkeeping of ``generate`` that is not a ``forward`` argument
#: the name of the recurrent state in the installed transformers' outputs and generation inputs: ``cache`` in later
#: 5.x releases (where ``past_key_values`` still works but logs a deprecation), ``past_key_values`` before
_CACHE_FIELD = "cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"
_GENERATION_ONLY_KWARGS = ("next_sequence_length", "is_first_iteration", "cache_position", "position_ids")
#: arguments ``transformers`` may pass that LightNet does not need: positions are implicit (relative encodings)
_POSITION_KWARGS = ("position_ids", "cache_position")
#: arguments accepted only when they ask for nothing (None / False)
_OFF_KWARGS = ("output_attentions", "token_type_ids", "head_mask")


def _cache_argument(
    past_key_values: Optional[LightNetCache], cache: Optional[LightNetCache]
) -> Optional[LightNetCache]:
    """The recurrent state under either name: ``past_key_values`` (transformers 4.x and early 5.x) or ``cache``
    (later 5.x, where ``generate`` passes ``cache=``). Both at once is an error."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("LightNetHFForCausalLM: pass the recurrent state as past_key_values or as cache, not both")
    return past_key_values if past_key_values is not None else cache


def _check_extra_kwargs(owner: str, kwargs: Dict[str, Any]) -> None:
    """Refuse keyword arguments that would silently change nothing (e.g. ``output_attentions=True``)."""
    bad = [k for k, v in kwargs.items() if k not in _POSITION_KWARGS and not (k in _OFF_KWARGS and v in (None, False))]
    if bad:
        raise TypeError(f"{owner}.forward: unsupported argument(s) {bad} (LightNet has no attention weights, "
                        "token types or head masks; positions are implicit)")


def _mask_for_new_tokens(
    input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], cache: Optional[LightNetCache]
) -> Optional[torch.Tensor]:
    """Cut an HF-style history mask ``[B, P + N]`` to the new tokens ``[B, N]`` when a cache holds the past."""
    if attention_mask is None or attention_mask.dim() != 2 or input_ids.dim() != 2:
        return attention_mask
    n = input_ids.shape[1]
    if attention_mask.shape[1] > n:
        if cache is None:
            raise ValueError(
                f"attention_mask has {attention_mask.shape[1]} columns but input_ids {n}; a longer mask is only "
                "accepted together with past_key_values (it then covers the cached tokens too)"
            )
        attention_mask = attention_mask[:, -n:]
    return attention_mask


def _shifted_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: Optional[Union[int, torch.Tensor]] = None
) -> torch.Tensor:
    """Next-token cross-entropy as in HF causal LMs: ``logits[:, t]`` vs ``labels[:, t + 1]``, -100 ignored.

    ``logits [B, N, V]``, ``labels [B, N]`` → scalar fp32 (mean over counted positions, or sum / ``num_items_in_batch``).
    """
    return _token_loss(logits[:, :-1], labels[:, 1:].to(logits.device), num_items_in_batch)


def register() -> None:
    """Register ``"lightnet-yoso"`` with ``AutoConfig``, ``AutoModelForCausalLM`` and ``AutoModelForMaskedLM``.

    Idempotent; already done when ``lightnet.lm.hf`` is imported.
    """
    AutoConfig.register(HF_MODEL_TYPE, LightNetHFConfig, exist_ok=True)
    AutoModelForCausalLM.register(LightNetHFConfig, LightNetHFForCausalLM, exist_ok=True)
    AutoModelForMaskedLM.register(LightNetHFConfig, LightNetHFForMaskedLM, exist_ok=True)


register()
