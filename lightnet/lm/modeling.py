"""LightNet language models: backbone, causal LM, masked LM and sequence classification.

Pipeline (all models): token embedding → 1-D TPE (causal for the LM, bidirectional for MLM) → ``depth`` LightNet blocks
(additive recurrence with 1-D LRPE; causal or the single bidirectional scan) → final norm → task head.

Padding convention: ``attention_mask`` ``[B, N]`` with 1 = real token, 0 = padding (Hugging Face style). Padded
embeddings are zeroed before the TPE and padded keys are excluded from every mixer, so padding never changes the
outputs at real positions. Causal models accept left padding (generation) and right padding (training).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from ..hub import resolve_pretrained_dir
from ..distributed import all_reduce_sum, is_sequence_parallel, shard_bounds
from ..layers import MDTPE, LightNetBlock, make_norm, set_sequence_parallel_group
from ..state_dict import diff_state_dicts
from .cache import LightNetCache
from .config import CONFIG_NAME, LightNetLMConfig

__all__ = [
    "LightNetModel",
    "LightNetPreTrainedModel",
    "LightNetForCausalLM",
    "LightNetForMaskedLM",
    "LightNetForSequenceClassification",
    "CausalLMOutput",
    "MaskedLMOutput",
    "SequenceClassifierOutput",
    "WEIGHTS_NAME",
]

logger = logging.getLogger(__name__)
WEIGHTS_NAME = "model.safetensors"
IGNORE_INDEX = -100
M = TypeVar("M", bound="LightNetPreTrainedModel")


@dataclass
class CausalLMOutput:
    """``logits [B, N, V]``; ``loss`` (mean next-token cross-entropy, nats) when labels are given; ``cache``."""

    logits: torch.Tensor
    loss: Optional[torch.Tensor] = None
    cache: Optional[LightNetCache] = None
    hidden_states: Optional[torch.Tensor] = None


@dataclass
class MaskedLMOutput:
    """``logits [B, N, V]``; ``loss`` (mean cross-entropy over positions whose label is not -100)."""

    logits: torch.Tensor
    loss: Optional[torch.Tensor] = None
    hidden_states: Optional[torch.Tensor] = None


@dataclass
class SequenceClassifierOutput:
    """``logits [B, num_labels]``; ``loss`` (cross-entropy, or MSE when ``num_labels == 1``)."""

    logits: torch.Tensor
    loss: Optional[torch.Tensor] = None


def _check_ids_and_mask(
    input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], vocab_size: int
) -> Optional[torch.Tensor]:
    """Validate ``input_ids [B, N]`` / ``attention_mask [B, N]``; return the padding mask (True = pad) or None."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor [B, N], got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape [B, N], got {tuple(input_ids.shape)}")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
    if input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
        raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)}); give at least one token per row")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"input_ids contains token id {bad}, outside the vocabulary [0, {vocab_size})")
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor [B, N], got {type(attention_mask).__name__}")
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match input_ids shape {tuple(input_ids.shape)}"
        )
    if attention_mask.dtype != torch.bool:
        if ((attention_mask != 0) & (attention_mask != 1)).any():
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
    pad = attention_mask == 0
    return pad if bool(pad.any()) else None


class LightNetModel(nn.Module):
    """Backbone: ``input_ids [B, N]`` → hidden states ``[B, N, C]`` (after the final norm)."""

    def __init__(self, config: LightNetLMConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.embed_drop = nn.Dropout(c.dropout)
        self.tpe = MDTPE(c.dim, num_axes=1, causal=c.causal, num_decays=c.tpe_num_decays) if c.use_tpe else None
        dpr = [x.item() for x in torch.linspace(0, c.drop_path, c.depth, device="cpu")] if c.depth else []
        self.blocks = nn.ModuleList(
            LightNetBlock(c.dim, c.num_heads, mlp_ratio=c.mlp_ratio, drop_path=dpr[i], norm=c.norm, mlp_act=c.mlp_act,
                          proj_drop=c.dropout, mixer=c.mixer, causal=c.causal, num_axes=1)
            for i in range(c.depth)
        )
        self.norm = make_norm(c.norm, c.dim)
        self.sequence_parallel_group = None  # LightNetForCausalLM.set_sequence_parallel_group

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        cache: Optional[LightNetCache] = None,
        use_cache: bool = False,
    ) -> Tuple[torch.Tensor, Optional[LightNetCache]]:
        """Run the backbone.

        Args:
            input_ids: ``[B, N]`` token ids.
            attention_mask: ``[B, N]`` 1 = token, 0 = padding.
            cache: state from earlier positions (causal models only); continued in place of a fresh start.
            use_cache: return the updated :class:`LightNetCache`.
        Returns:
            ``(hidden [B, N, C], cache or None)``.
        """
        pad = _check_ids_and_mask(input_ids, attention_mask, self.config.vocab_size)
        return self.run(input_ids, pad, cache, use_cache)

    def run(
        self,
        input_ids: torch.Tensor,
        pad: Optional[torch.Tensor] = None,
        cache: Optional[LightNetCache] = None,
        use_cache: bool = False,
    ) -> Tuple[torch.Tensor, Optional[LightNetCache]]:
        """:meth:`forward` without input validation (no host sync; the decode loop's path). ``pad``: True = padding.
        With a sequence-parallel group the hidden states are this rank's slice ``[B, n_local, C]``."""
        streaming = use_cache or cache is not None
        if streaming and not self.config.causal:
            raise ValueError("cache/use_cache need a causal model (config.causal=True); bidirectional models see the whole input at once")
        B, N = input_ids.shape
        if cache is not None and cache.layer_states and cache.batch_size != B:
            raise ValueError(f"cache holds {cache.batch_size} rows but input_ids has {B}")
        offset = cache.seen_tokens if cache is not None else 0
        split = is_sequence_parallel(self.sequence_parallel_group)
        if split and streaming:
            raise ValueError("cache/use_cache (decoding) do not run with a sequence-parallel group; "
                             "call set_sequence_parallel_group(None) first")
        x = self.embed(input_ids)
        if pad is not None:
            x = x.masked_fill(pad[..., None], 0.0)  # padding must not leak through the TPE
        x = self.embed_drop(x)
        new_tpe = None
        if self.tpe is not None:
            if streaming:
                x, new_tpe = self.tpe(x, (N,), state=None if cache is None else cache.tpe_state, return_state=True)
            else:
                x = self.tpe(x, (N,))
        if split:  # the embedding and TPE ran on the whole sequence; the blocks see this rank's slice
            start, stop = shard_bounds(N, self.sequence_parallel_group)
            x = x[:, start:stop]
            pad = None if pad is None else pad[:, start:stop]
            if pad is not None and not bool(pad.any()):
                pad = None
            grid: Optional[Tuple[int]] = (N,)
        else:
            grid = None
        states: List[Any] = []
        for i, block in enumerate(self.blocks):
            if streaming:
                prev = cache.layer_states[i] if cache is not None and cache.layer_states else None
                x, st = block(x, None, key_padding_mask=pad, state=prev, return_state=True, position_offset=offset)
                states.append(st)
            else:
                x = block(x, grid, key_padding_mask=pad)
        x = self.norm(x)
        new_cache = LightNetCache(states, new_tpe, offset + N) if streaming else None
        return x, new_cache


class LightNetPreTrainedModel(nn.Module):
    """Shared init, ``save_pretrained`` / ``from_pretrained`` (safetensors + ``config.json``, local folders)."""

    #: state-dict keys that alias another parameter when embeddings are tied (not stored twice)
    _tied_keys: Tuple[str, ...] = ()

    def __init__(self, config: LightNetLMConfig) -> None:
        super().__init__()
        if not isinstance(config, LightNetLMConfig):
            raise TypeError(f"{type(self).__name__} needs a LightNetLMConfig, got {type(config).__name__}")
        self.config = config

    def init_weights(self) -> None:
        """Normal(0, init_std) for linear/embedding weights, zero biases; residual output projections get
        ``init_std / sqrt(2 depth)`` (GPT-2)."""
        std = self.config.init_std
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                s = std / math.sqrt(2 * max(1, self.config.depth)) if name.endswith(("attn.proj", "mlp.fc2")) else std
                nn.init.normal_(m.weight, std=s)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=std)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        seen, total = set(), 0
        for name, p in self.named_parameters():
            if id(p) in seen or (exclude_embeddings and "embed" in name):
                continue
            seen.add(id(p))
            total += p.numel()
        return total

    def _tied(self) -> Tuple[str, ...]:
        return self._tied_keys if self.config.tie_word_embeddings else ()

    def save_pretrained(self, save_directory: Union[str, Path]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``save_directory`` (created if needed)."""
        path = Path(save_directory)
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"save_pretrained: {path} exists and is not a folder")
        path.mkdir(parents=True, exist_ok=True)
        self.config.save(path / CONFIG_NAME, architectures=[type(self).__name__])
        tied = set(self._tied())
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if k not in tied}
        save_file(state, str(path / WEIGHTS_NAME), metadata={"format": "pt", "architecture": type(self).__name__})
        return path

    @classmethod
    def from_pretrained(
        cls: Type[M],
        pretrained_path: Union[str, Path],
        *,
        strict: Optional[bool] = None,
        map_location: Union[str, torch.device] = "cpu",
        revision: Optional[str] = None,
        cache_dir: Optional[Union[str, Path]] = None,
        local_files_only: bool = False,
        **config_overrides: Any,
    ) -> M:
        """Load a folder written by :meth:`save_pretrained`, or the same files from a Hugging Face Hub repo.

        Args:
            pretrained_path: local folder with ``config.json`` and ``model.safetensors``, or a hub repo id
                (``"org/name"``, resolved through the hub cache; ``revision``, ``cache_dir``, ``local_files_only``
                apply to it).
            strict: require an exact key match. Default: strict when the folder was saved by the same class
                (e.g. a masked-LM checkpoint loads into :class:`LightNetForSequenceClassification` non-strictly,
                keeping the backbone and logging the head keys that were skipped or newly initialised).
            map_location: device for the weights.
            **config_overrides: config fields to change before building (e.g. ``num_labels=3``,
                ``attn_backend='torch'``).
        """
        try:
            path = resolve_pretrained_dir(pretrained_path, (CONFIG_NAME, WEIGHTS_NAME), revision=revision,
                                          cache_dir=cache_dir, local_files_only=local_files_only)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"from_pretrained: {e}") from e
        config = LightNetLMConfig.load(path)  # clear errors: missing file, bad JSON, unknown keys
        archs = json.loads((path / CONFIG_NAME).read_text()).get("architectures") or []
        saved_arch = archs[0] if archs else None
        if config_overrides:
            config = LightNetLMConfig.from_dict({**dataclasses.asdict(config), **config_overrides})
        model = cls(config)
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"from_pretrained: no {WEIGHTS_NAME} in {path}")
        try:
            state = load_file(str(weights), device=str(map_location))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"from_pretrained: cannot read {weights} (truncated or not a safetensors file?): {e}") from e
        if strict is None:
            strict = saved_arch in (None, cls.__name__)
        own = model.state_dict()
        tied = set(model._tied())
        missing, unexpected, shape_bad = diff_state_dicts(own, state)
        missing = [k for k in missing if k not in tied]  # tied weights are not saved
        shape_bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shape_bad]
        if shape_bad:
            raise ValueError(f"from_pretrained: shape mismatch loading {path} into {cls.__name__}: {shape_bad[:5]}")
        if strict and (missing or unexpected):
            raise ValueError(
                f"from_pretrained: {path} (saved by {saved_arch}) does not fit {cls.__name__}: "
                f"missing {missing[:8]}, unexpected {unexpected[:8]} (pass strict=False to load the matching part)"
            )
        if missing or unexpected:
            logger.warning("from_pretrained(%s): newly initialised %s; ignored %s", path, missing, unexpected)
        model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        if model.config.tie_word_embeddings:
            model.tie_weights()
        return model.to(map_location)

    def tie_weights(self) -> None:  # overridden by models with an output embedding
        pass


def _token_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_items: Optional[Union[int, torch.Tensor]] = None
) -> torch.Tensor:
    """Mean cross-entropy over labels != -100 (fp32): ``logits [B, N, V]``, ``labels [B, N]``.

    With ``num_items`` the summed loss is divided by it instead (the convention of HF's trainer under gradient
    accumulation). A batch without any labelled position gives a zero loss (with zero gradients) instead of NaN; a
    label outside the vocabulary is a ``ValueError`` naming it.
    """
    if not torch.compiler.is_compiling():
        flat = labels.reshape(-1)
        valid = flat != IGNORE_INDEX
        if not bool(valid.any()):
            return logits.float().sum() * 0.0
        bad = flat[valid & ((flat < 0) | (flat >= logits.shape[-1]))]
        if bad.numel():
            raise ValueError(f"labels contain id {int(bad[0])}, outside the vocabulary [0, {logits.shape[-1]}) "
                             f"(use {IGNORE_INDEX} to ignore a position)")
    flat_logits, flat_labels = logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1)
    if num_items is None:
        return F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX)
    total = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (num_items.to(total.device) if torch.is_tensor(num_items) else num_items)


def _split_token_loss(logits: torch.Tensor, target: torch.Tensor, group: Any) -> torch.Tensor:
    """The whole sequence's mean next-token loss from this rank's ``logits [B, n_local, V]`` (its slice of the
    positions) and the full shifted ``target [B, N − 1]``; the same value on every rank of ``group`` (the summed
    losses are all-reduced, the count is taken from the full target)."""
    N = target.shape[1] + 1
    start, stop = shard_bounds(N, group)
    full = torch.cat([target, target.new_full((target.shape[0], 1), IGNORE_INDEX)], dim=1)  # position N−1: no target
    count = int((target != IGNORE_INDEX).sum())
    local = _token_loss(logits, full[:, start:stop], num_items=max(count, 1))
    return all_reduce_sum(local, group)


class LightNetForCausalLM(LightNetPreTrainedModel):
    """Causal LightNet LM with constant-memory recurrent decoding.

    ``forward(input_ids [B, N], attention_mask, labels, cache, use_cache)`` → :class:`CausalLMOutput`;
    ``labels`` are the input ids themselves (shifted inside, padding ignored).
    :meth:`prefill` / :meth:`decode_step` / :meth:`generate` implement decoding.
    """

    _tied_keys = ("lm_head.weight",)

    def __init__(self, config: LightNetLMConfig) -> None:
        super().__init__(config)
        if not config.causal:
            raise ValueError("LightNetForCausalLM needs config.causal=True (use LightNetForMaskedLM for causal=False)")
        self.model = LightNetModel(config)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.init_weights()
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed.weight

    def set_sequence_parallel_group(self, group: Optional[Any]) -> None:
        """Split every sequence over the ranks of ``group`` (a ``torch.distributed`` process group; None: no split,
        the default). Every rank of the group is given the same ``input_ids`` / ``attention_mask`` / ``labels`` (the
        ids are small next to the activations); the embedding and the 1-D TPE run on the whole sequence, then each
        rank keeps its contiguous slice (:func:`lightnet.distributed.shard_bounds`) for the blocks, whose mixers
        pass the causal state between the ranks. ``logits`` / hidden states are then this rank's slice
        ``[B, n_local, ·]``, the loss is the whole sequence's (the same on every rank), and averaging the parameter
        gradients over the group (``DistributedDataParallel`` does) gives the unsplit model's gradients. Decoding
        (``cache`` / :meth:`generate`) does not run split. ``docs/distributed.md``."""
        self.model.sequence_parallel_group = group
        set_sequence_parallel_group(self, group)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        cache: Optional[LightNetCache] = None,
        use_cache: bool = False,
        return_hidden_states: bool = False,
    ) -> CausalLMOutput:
        hidden, new_cache = self.model(input_ids, attention_mask, cache=cache, use_cache=use_cache)
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels shape {tuple(labels.shape)} does not match input_ids {tuple(input_ids.shape)}")
            target = labels[:, 1:]
            if attention_mask is not None:
                target = target.masked_fill(attention_mask[:, 1:] == 0, IGNORE_INDEX)
            group = self.model.sequence_parallel_group
            if is_sequence_parallel(group):
                loss = _split_token_loss(logits, target, group)
            else:
                loss = _token_loss(logits[:, :-1], target)
        return CausalLMOutput(logits, loss, new_cache, hidden if return_hidden_states else None)

    @torch.no_grad()
    def prefill(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        cache: Optional[LightNetCache] = None,
        chunk_size: Optional[int] = 4096,
    ) -> Tuple[torch.Tensor, LightNetCache]:
        """Consume a prompt with the chunked parallel path, ``chunk_size`` tokens at a time (bounded memory).

        Returns ``(logits of the last position [B, V] fp32, cache)``. With left padding the last position of every
        row is a real token.
        """
        _check_ids_and_mask(input_ids, attention_mask, self.config.vocab_size)
        N = input_ids.shape[1]
        step = N if not chunk_size else int(chunk_size)
        hidden = None
        for start in range(0, N, step):
            end = min(N, start + step)
            mask = None if attention_mask is None else attention_mask[:, start:end]
            hidden, cache = self.model(input_ids[:, start:end], mask, cache=cache, use_cache=True)
        return self.lm_head(hidden[:, -1]).float(), cache

    @torch.no_grad()
    def decode_step(self, token_ids: torch.Tensor, cache: LightNetCache) -> Tuple[torch.Tensor, LightNetCache]:
        """One recurrent step: ``token_ids [B]`` → ``(logits [B, V] fp32, new cache)``; O(1) in the context length."""
        if token_ids.dim() != 1:
            raise ValueError(f"decode_step: token_ids must have shape [B], got {tuple(token_ids.shape)}")
        hidden, cache = self.model.run(token_ids[:, None], None, cache=cache, use_cache=True)
        return self.lm_head(hidden[:, -1]).float(), cache

    def generate(self, input_ids: Any, attention_mask: Optional[torch.Tensor] = None, **kwargs: Any) -> torch.Tensor:
        """Generate continuations; see :func:`lightnet.lm.generation.generate` for the arguments."""
        from .generation import generate

        return generate(self, input_ids, attention_mask, **kwargs)


class LightNetMLMHead(nn.Module):
    """BERT-style head: ``dense → GELU → norm → decoder (+ bias)``: ``[B, N, C]`` → ``[B, N, V]``."""

    def __init__(self, config: LightNetLMConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.dim, config.dim)
        self.norm = make_norm(config.norm, config.dim)
        self.decoder = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(F.gelu(self.dense(x)))) + self.bias


class LightNetForMaskedLM(LightNetPreTrainedModel):
    """Bidirectional LightNet (single order-free scan, bidirectional TPE) with an MLM head.

    ``forward(input_ids [B, N], attention_mask, labels)`` → :class:`MaskedLMOutput`; ``labels`` hold the original
    ids at masked positions and -100 elsewhere (see :class:`lightnet.lm.masking.MLMCollator`).
    """

    _tied_keys = ("head.decoder.weight",)

    def __init__(self, config: LightNetLMConfig) -> None:
        super().__init__(config)
        if config.causal:
            raise ValueError("LightNetForMaskedLM needs a bidirectional config: set causal=False")
        self.model = LightNetModel(config)
        self.head = LightNetMLMHead(config)
        self.init_weights()
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.head.decoder.weight = self.model.embed.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        return_hidden_states: bool = False,
    ) -> MaskedLMOutput:
        hidden, _ = self.model(input_ids, attention_mask)
        logits = self.head(hidden)
        loss = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels shape {tuple(labels.shape)} does not match input_ids {tuple(input_ids.shape)}")
            loss = _token_loss(logits, labels)
        return MaskedLMOutput(logits, loss, hidden if return_hidden_states else None)


class LightNetForSequenceClassification(LightNetPreTrainedModel):
    """Backbone (causal or bidirectional, by config) → pooling over real tokens → linear classifier.

    ``forward(input_ids [B, N], attention_mask, labels [B])`` → :class:`SequenceClassifierOutput` with
    ``logits [B, num_labels]``; cross-entropy for ``num_labels > 1``, MSE (labels float ``[B]``) for 1.
    Pooling: ``'mean'`` over non-padding tokens, or the ``'last'`` non-padding token (natural for causal backbones).
    """

    def __init__(self, config: LightNetLMConfig) -> None:
        super().__init__(config)
        self.model = LightNetModel(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.dim, config.num_labels)
        self.init_weights()

    def pool(self, hidden: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``[B, N, C]`` → ``[B, C]``."""
        B, N, _ = hidden.shape
        keep = torch.ones(B, N, device=hidden.device) if attention_mask is None else (attention_mask != 0).float()
        if self.config.classifier_pooling == "mean":
            return (hidden * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1.0)
        # last real token (works for left and right padding)
        idx = (keep * torch.arange(1, N + 1, device=hidden.device)).argmax(dim=1)
        return hidden[torch.arange(B, device=hidden.device), idx]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
    ) -> SequenceClassifierOutput:
        hidden, _ = self.model(input_ids, attention_mask)
        logits = self.classifier(self.dropout(self.pool(hidden, attention_mask)))
        loss = None
        if labels is not None:
            if labels.dim() != 1 or labels.shape[0] != input_ids.shape[0]:
                raise ValueError(f"labels must have shape [B] = [{input_ids.shape[0]}], got {tuple(labels.shape)}")
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                if labels.dtype.is_floating_point:
                    raise TypeError("labels must be integer class ids for num_labels > 1")
                if int(labels.min()) < 0 or int(labels.max()) >= self.config.num_labels:
                    raise ValueError(f"labels must be in [0, {self.config.num_labels}), got range [{int(labels.min())}, {int(labels.max())}]")
                loss = F.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(logits, loss)


MODEL_CLASSES: Dict[str, Type[LightNetPreTrainedModel]] = {
    c.__name__: c for c in (LightNetForCausalLM, LightNetForMaskedLM, LightNetForSequenceClassification)
}
