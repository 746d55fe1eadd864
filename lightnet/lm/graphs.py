"""CUDA-graph decoding for :class:`~lightnet.lm.modeling.LightNetForCausalLM`: one captured step, replayed.

A causal LightNet LM carries a recurrent state of the same size at every context length, so one decode step has the
same shapes — and, with static buffers, the same memory addresses — at every step. :class:`GraphedDecoder` captures
that step once as a CUDA graph and replays it, which removes the Python and kernel-launch cost that bounds eager
decoding at small batch.

Static buffers (batch ``B`` fixed at construction): the current token ``[B]`` long; the position, a 0-dim long tensor
(the LRPE offset is read on the device); every block's state ``(S [B, H, 2D, D], z [B, H, D])`` fp32; the TPE state
``[B, C, J]`` fp32; the logits ``[B, V]`` fp32; the finished flags ``[B]`` bool; and, when sampling, the noise
``[B, V]`` fp32. The step function (:meth:`GraphedDecoder.step_function`, the exact function captured) reads them and
writes the next values in place: no host sync (no ``.item()``, no branch on a tensor value), the same allocations at
every step.

Sampling runs on the device: greedy argmax, or :func:`~lightnet.lm.generation.filter_logits` (temperature / top-k /
top-p) followed by the Gumbel-max trick — ``argmax(filtered − log E)`` with ``E ~ Exponential(1)``, which picks
token ``i`` with probability ``softmax(filtered)_i``, the distribution ``torch.multinomial`` samples in eager
:func:`~lightnet.lm.generation.generate` (same distribution, not the same draws for one seed). ``E`` is drawn into
its static buffer from the caller's generator before each replay (one launch outside the graph).
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Tuple, Union

import torch

from .cache import LightNetCache
from .generation import _stop_ids, filter_logits

__all__ = ["GraphedDecoder"]

_WARMUP_STEPS = 3  # eager steps on a side stream before the capture: Triton compilation, cuBLAS workspaces


class GraphedDecoder:
    """Decode ``batch_size`` sequences of a causal LightNet LM with one CUDA graph per decoder.

    Args:
        model: a :class:`~lightnet.lm.modeling.LightNetForCausalLM` (put in eval mode while decoding).
        batch_size: rows ``B`` of every cache it decodes.
        do_sample / temperature / top_k / top_p: as :func:`~lightnet.lm.generation.generate` (fixed per decoder:
            they are part of the captured step).
        eos_token_id: stop token(s); a finished row emits ``pad_token_id``.
        pad_token_id: defaults to ``model.config.pad_token_id``.
        capture: ``True`` (default) captures the step as a CUDA graph on the first :meth:`start` and replays it;
            needs the model on a CUDA device (a ``RuntimeError`` says so otherwise). ``False`` runs the same
            static-buffer step eagerly (any device, no speed-up; what the CPU tests check).

    Use: ``logits, cache = model.prefill(ids)``, then ``tokens = decoder.decode(logits, cache, 256)`` (``[B, T]``),
    or :meth:`start` followed by :meth:`step` calls that each return the static token buffer ``[B]`` (overwritten by
    the next step: clone what you keep). One decoder is reused across prompts of the same batch size (the graph is
    captured once); :func:`~lightnet.lm.generation.generate` with ``cuda_graph=True`` builds one per call.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        batch_size: int,
        *,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        eos_token_id: Union[None, int, Iterable[int]] = None,
        pad_token_id: Optional[int] = None,
        capture: bool = True,
    ) -> None:
        if not getattr(getattr(model, "config", None), "causal", False) or not hasattr(model, "lm_head"):
            raise TypeError(f"GraphedDecoder needs a causal LightNetForCausalLM, got {type(model).__name__}")
        if batch_size < 1:
            raise ValueError(f"GraphedDecoder: batch_size must be >= 1, got {batch_size}")
        self.device = next(model.parameters()).device
        if capture and self.device.type != "cuda":
            raise RuntimeError(
                f"GraphedDecoder: CUDA graphs need the model on a CUDA device, got {self.device}; pass capture=False "
                "to run the same static-buffer step eagerly (no speed-up), or call generate() without cuda_graph"
            )
        if do_sample:
            if not temperature > 0 or temperature == float("inf"):
                raise ValueError(f"GraphedDecoder: temperature must be a finite number > 0 when sampling, got {temperature}")
            if top_k is not None and top_k < 1:
                raise ValueError(f"GraphedDecoder: top_k must be >= 1, got {top_k}")
            if top_p is not None and not 0.0 < top_p <= 1.0:
                raise ValueError(f"GraphedDecoder: top_p must be in (0, 1], got {top_p}")
        self.model = model
        self.batch_size = int(batch_size)
        self.do_sample, self.temperature, self.top_k, self.top_p = do_sample, float(temperature), top_k, top_p
        self.capture = capture
        pad = model.config.pad_token_id if pad_token_id is None else int(pad_token_id)
        B, V, dev = self.batch_size, model.config.vocab_size, self.device
        self.token = torch.zeros(B, dtype=torch.long, device=dev)
        self.position = torch.zeros((), dtype=torch.long, device=dev)
        self.logits = torch.zeros(B, V, dtype=torch.float32, device=dev)
        self.finished = torch.zeros(B, dtype=torch.bool, device=dev)
        self.noise = torch.ones(B, V, dtype=torch.float32, device=dev) if do_sample else None
        self.stop = torch.tensor(_stop_ids(eos_token_id), dtype=torch.long, device=dev)
        self.pad = torch.full((B,), pad, dtype=torch.long, device=dev)
        self.states: List[Tuple[torch.Tensor, torch.Tensor]] = []  # allocated on the first start (cache's shapes)
        self.tpe_state: Optional[torch.Tensor] = None
        self.graph: Optional["torch.cuda.CUDAGraph"] = None
        self.generator: Optional[torch.Generator] = None

    # ---- the captured step -------------------------------------------------------------------------------------
    def step_function(self) -> None:
        """One decode step on the static buffers (the function the CUDA graph records): consume ``token`` at
        ``position``, write the new states, ``position + 1``, the logits, the next token and the finished flags."""
        cache = LightNetCache(list(self.states), self.tpe_state, self.position)
        hidden, new = self.model.model.run(self.token[:, None], None, cache=cache, use_cache=True)
        for (S, z), (S1, z1) in zip(self.states, new.layer_states):
            S.copy_(S1)
            z.copy_(z1)
        if self.tpe_state is not None:
            self.tpe_state.copy_(new.tpe_state)
        self.position.add_(1)
        self.logits.copy_(self.model.lm_head(hidden[:, -1]).float())
        self._emit()

    def _emit(self) -> None:
        """Pick the next token from the logits buffer (device ops only) into ``token``; update ``finished``."""
        if self.do_sample:
            scores = filter_logits(self.logits, self.temperature, self.top_k, self.top_p)
            token = (scores - self.noise.clamp_min(1e-30).log()).argmax(dim=-1)  # Gumbel-max
        else:
            token = self.logits.argmax(dim=-1)
        token = torch.where(self.finished, self.pad, token)
        self.token.copy_(token)
        if self.stop.numel():  # a shape, fixed at construction
            self.finished.logical_or_(torch.isin(token, self.stop))

    # ---- host side ---------------------------------------------------------------------------------------------
    def _draw_noise(self) -> None:
        if self.noise is not None:
            self.noise.exponential_(generator=self.generator)

    def _load(self, logits: torch.Tensor, cache: LightNetCache) -> None:
        for (S, z), (S1, z1) in zip(self.states, cache.layer_states):
            S.copy_(S1)
            z.copy_(z1)
        if self.tpe_state is not None:
            self.tpe_state.copy_(cache.tpe_state)
        self.position.fill_(int(cache.seen_tokens))
        self.logits.copy_(logits)
        self.finished.zero_()

    def _allocate(self, cache: LightNetCache) -> None:
        if any(st is None for st in cache.layer_states) or len(cache.layer_states) != len(self.model.model.blocks):
            raise ValueError("GraphedDecoder: the cache must hold one state per block (from model.prefill)")
        self.states = [(torch.empty_like(S), torch.empty_like(z)) for S, z in cache.layer_states]
        self.tpe_state = None if cache.tpe_state is None else torch.empty_like(cache.tpe_state)

    def _check_cache(self, logits: torch.Tensor, cache: LightNetCache) -> None:
        if not isinstance(cache, LightNetCache):
            raise TypeError(f"GraphedDecoder: cache must be a LightNetCache, got {type(cache).__name__}")
        if cache.batch_size != self.batch_size or tuple(logits.shape) != tuple(self.logits.shape):
            raise ValueError(
                f"GraphedDecoder: built for batch {self.batch_size}; got a cache of {cache.batch_size} rows and "
                f"logits {tuple(logits.shape)} (expected {tuple(self.logits.shape)})"
            )
        if self.states:
            got = [tuple(t.shape) for st in cache.layer_states for t in st]
            want = [tuple(t.shape) for st in self.states for t in st]
            if got != want:
                raise ValueError(f"GraphedDecoder: cache state shapes {got[:2]}... differ from the captured {want[:2]}...")

    def _capture(self) -> None:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(_WARMUP_STEPS):
                self.step_function()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.step_function()

    @torch.no_grad()
    def start(self, logits: torch.Tensor, cache: LightNetCache, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Load a prefill's ``logits [B, V]`` and ``cache`` (copied: they stay valid) and pick the first token;
        captures the graph on the first call. Returns the static token buffer ``[B]``."""
        self._check_cache(logits, cache)
        self.model.eval()
        self.generator = generator
        if not self.states:
            self._allocate(cache)
        if self.capture and self.graph is None:
            self._load(logits, cache)  # warm-up and capture run on real values, then the buffers are reloaded
            self._capture()
        self._load(logits, cache)
        self._draw_noise()
        self._emit()
        return self.token

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """One decode step (a graph replay, or the step function run eagerly with ``capture=False``); returns the
        static token buffer ``[B]``."""
        if not self.states:
            raise RuntimeError("GraphedDecoder.step: call start(logits, cache) first")
        self._draw_noise()
        if self.graph is not None:
            self.graph.replay()
        else:
            self.step_function()
        return self.token

    @torch.no_grad()
    def decode(
        self, logits: torch.Tensor, cache: LightNetCache, max_new_tokens: int,
        generator: Optional[torch.Generator] = None, check_every: int = 64,
    ) -> torch.Tensor:
        """Up to ``max_new_tokens`` tokens after a prefill: ``[B, T]`` long, as :func:`generate` appends them (rows
        that emitted a stop token continue with padding; ``T`` ends at the first step where every row has stopped).
        Whether every row has stopped is read on the host every ``check_every`` steps (one sync each)."""
        if max_new_tokens < 0:
            raise ValueError(f"GraphedDecoder.decode: max_new_tokens must be >= 0, got {max_new_tokens}")
        out = torch.empty(self.batch_size, max_new_tokens, dtype=torch.long, device=self.device)
        if max_new_tokens == 0:
            return out
        self.start(logits, cache, generator)
        T = max_new_tokens
        for t in range(max_new_tokens):
            out[:, t].copy_(self.token)
            if self.stop.numel() and (t + 1) % check_every == 0 and bool(self.finished.all()):
                T = t + 1
                break
            if t + 1 < max_new_tokens:
                self.step()
        out = out[:, :T]
        if self.stop.numel():  # cut where the eager loop stops: the first step after which every row has stopped
            stopped = torch.isin(out, self.stop).long().cummax(dim=1).values.all(dim=0)  # [T]
            if bool(stopped.any()):
                out = out[:, : int(stopped.nonzero()[0, 0]) + 1]
        return out
