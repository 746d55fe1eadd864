"""Text generation for :class:`~lightnet.lm.modeling.LightNetForCausalLM`: chunked prefill, then O(1)-memory steps.

Left padding: prompts of unequal length are left-padded into one ``[B, N]`` batch with an ``attention_mask``. Padded
positions are zeroed before the TPE and excluded from every mixer state, and both positional encodings depend only on
relative offsets (TPE: Toeplitz kernel of ``i − j``; LRPE: ``cos(θ_i − θ_j)``), so every row generates exactly what it
would generate alone (up to floating-point rounding of the absolute angles).
"""
from __future__ import annotations

import math

from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import torch

__all__ = ["filter_logits", "generate", "left_pad", "sample_next_token"]


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int, device: Union[str, torch.device] = "cpu") -> Tuple[torch.Tensor, torch.Tensor]:
    """List of id lists → ``(input_ids [B, N], attention_mask [B, N])`` left-padded to the longest prompt."""
    if len(prompts) == 0:
        raise ValueError("generate: no prompts given")
    lengths = [len(p) for p in prompts]
    for i, n in enumerate(lengths):
        if n == 0:
            raise ValueError(f"generate: prompt {i} is empty; every prompt needs at least one token (e.g. <bos>)")
    N = max(lengths)
    ids = torch.full((len(prompts), N), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), N), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, N - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, N - len(p):] = 1
    return ids.to(device), mask.to(device)


def sample_next_token(
    logits: torch.Tensor,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Pick one token per row from ``logits [B, V]``: argmax, or a sample after temperature / top-k / top-p."""
    if not do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def filter_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None
) -> torch.Tensor:
    """Sampling logits ``[B, V]`` fp32: divided by ``temperature``, ``-inf`` outside the top-k / the top-p nucleus.

    Device ops only, whose shapes depend on ``[B, V]`` and the settings alone (no host sync): the CUDA-graph decoder
    captures it.
    """
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of strictly better tokens
        drop_sorted = before >= top_p  # the best token always stays (before = 0)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _stop_ids(eos_token_id: Union[None, int, Iterable[int]]) -> List[int]:
    if eos_token_id is None:
        return []
    if isinstance(eos_token_id, int):
        return [eos_token_id]
    return [int(i) for i in eos_token_id]


@torch.no_grad()
def generate(
    model: Any,
    input_ids: Union[torch.Tensor, Sequence[Sequence[int]]],
    attention_mask: Optional[torch.Tensor] = None,
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    eos_token_id: Union[None, int, Iterable[int]] = None,
    pad_token_id: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    seed: Optional[int] = None,
    prefill_chunk_size: Optional[int] = 4096,
    cuda_graph: bool = False,
) -> torch.Tensor:
    """Generate up to ``max_new_tokens`` tokens after each prompt.

    Args:
        model: a :class:`LightNetForCausalLM`.
        input_ids: ``[B, N]`` tensor (left-padded when ``attention_mask`` has zeros) or a list of id lists of any
            lengths (left-padded here).
        attention_mask: ``[B, N]`` 1 = token, 0 = padding; padding must be on the left.
        max_new_tokens: number of decode steps (at most).
        do_sample: sample instead of greedy argmax.
        temperature / top_k / top_p: sampling filters (``top_p`` = nucleus mass kept).
        eos_token_id: stop token(s); a row that emits one is finished and then padded with ``pad_token_id``.
            Generation ends early when every row is finished.
        pad_token_id: id for padding (defaults to ``config.pad_token_id``).
        generator / seed: randomness for sampling (``seed`` builds a fresh generator: same seed, same output).
        prefill_chunk_size: prompt tokens consumed per parallel chunk (bounds prefill memory for long prompts).
        cuda_graph: decode with one captured CUDA-graph step replayed per token
            (:class:`~lightnet.lm.graphs.GraphedDecoder`; CUDA models only, a ``RuntimeError`` otherwise). Greedy
            output is the same tokens; sampling draws from the same distribution with the Gumbel-max trick (other
            draws for one seed than the eager loop's ``torch.multinomial``).
    Returns:
        ``[B, N + T]`` long tensor: the (padded) prompt followed by ``T ≤ max_new_tokens`` generated tokens.
    """
    cfg = model.config
    pad_id = cfg.pad_token_id if pad_token_id is None else int(pad_token_id)
    device = next(model.parameters()).device
    if isinstance(input_ids, (str, bytes)):
        raise TypeError("generate: input_ids must be token ids (a [B, N] tensor or lists of ints), got text; "
                        "encode it first, e.g. ByteTokenizer().encode(text, add_bos=True)")
    if not isinstance(input_ids, torch.Tensor):
        if attention_mask is not None:
            raise ValueError("generate: attention_mask is only accepted with a tensor input_ids (lists are padded here)")
        input_ids, attention_mask = left_pad(input_ids, pad_id, device)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
        attention_mask = None if attention_mask is None else attention_mask[None]
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"generate: input_ids must be a non-empty [B, N] tensor, got shape {tuple(input_ids.shape)}")
    input_ids = input_ids.to(device)
    if attention_mask is not None:
        if tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(
                f"generate: attention_mask shape {tuple(attention_mask.shape)} does not match input_ids {tuple(input_ids.shape)}"
            )
        attention_mask = attention_mask.to(device)
        keep = attention_mask != 0
        empty = (~keep).all(dim=1)
        if empty.any():
            raise ValueError(f"generate: prompt(s) {empty.nonzero().flatten().tolist()} are empty (attention_mask all 0)")
        if (keep[:, :-1] & ~keep[:, 1:]).any():
            raise ValueError("generate: attention_mask must use left padding (zeros only before the first token of each row)")
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    if do_sample:
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"generate: temperature must be a finite number > 0 when sampling, got {temperature} (use do_sample=False for greedy)")
        if top_k is not None and top_k < 1:
            raise ValueError(f"generate: top_k must be >= 1, got {top_k}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"generate: top_p must be in (0, 1], got {top_p}")
    if seed is not None:
        if generator is not None:
            raise ValueError("generate: pass either seed or generator, not both")
        generator = torch.Generator(device=device).manual_seed(int(seed))
    stop = torch.tensor(_stop_ids(eos_token_id), device=device, dtype=torch.long)

    decoder = None
    if cuda_graph:
        from .graphs import GraphedDecoder

        decoder = GraphedDecoder(model, input_ids.shape[0], do_sample=do_sample, temperature=temperature, top_k=top_k,
                                 top_p=top_p, eos_token_id=eos_token_id, pad_token_id=pad_id)
    was_training = model.training
    model.eval()
    try:
        logits, cache = model.prefill(input_ids, attention_mask, chunk_size=prefill_chunk_size)
        if decoder is not None:
            new = decoder.decode(logits, cache, max_new_tokens, generator)
            return torch.cat([input_ids, new], dim=1)
        B = input_ids.shape[0]
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        out: List[torch.Tensor] = []
        for step in range(max_new_tokens):
            token = sample_next_token(logits, do_sample, temperature, top_k, top_p, generator)
            token = torch.where(finished, torch.full_like(token, pad_id), token)
            out.append(token)
            if stop.numel():
                finished = finished | torch.isin(token, stop)
                if bool(finished.all()):
                    break
            if step + 1 < max_new_tokens:
                logits, cache = model.decode_step(token, cache)
    finally:
        model.train(was_training)
    if not out:
        return input_ids.clone()
    return torch.cat([input_ids, torch.stack(out, dim=1)], dim=1)
