"""Plain-PyTorch reference of LightNet's additive linear recurrence (the definition of truth).

Shapes (per call):
    q: ``[B, N, H, D]``  queries (already activated by the layer)
    k: ``[B, N, H, D]``  raw key logits
    v: ``[B, N, H, E]``  values
    lrpe_theta: ``[N, D]`` optional MD-LRPE angles per token and key channel (shared by heads)
    key_padding_mask: ``[B, N]`` bool, **True marks padding** (PyTorch ``nn.MultiheadAttention`` convention)
    state: ``(S, z)`` with ``S: [B, H, D', E]`` fp32 normalised state and ``z: [B, H, D]`` fp32 log-normaliser,
        where ``D' = 2 D`` when ``lrpe_theta`` is given (cosine/sine halves) and ``D`` otherwise.

Math (see ``docs/design.md``):
    non-causal:  k̂ = softmax over tokens of k (per channel);  S = k̂ᵀ V;  o_n = scale · q_nᵀ S
    causal:      z_t = logcumsumexp(k)_t;  o_t = scale · Σ_{s≤t} Σ_c q_{t,c} exp(k_{s,c} − z_{t,c}) v_s

With LRPE (cosine form) the channel ``c`` of ``q_t`` and of the normalised key is replaced by the pair
``(x cos θ_{t,c}, x sin θ_{t,c})`` so that the score becomes ``Σ_c q_{t,c} k̂_{s,c} cos(θ_{t,c} − θ_{s,c})``.

All normalisation runs in fp32 with max subtraction; outputs are cast back to q's dtype.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

State = Tuple[torch.Tensor, torch.Tensor]

__all__ = [
    "State",
    "Q_ACTIVATIONS",
    "check_query_activation",
    "additive_attention_torch",
    "noncausal_attention_torch",
    "causal_attention_chunked_torch",
    "causal_attention_recurrent_torch",
]


# query activations ``additive_attention(q_activation=...)`` accepts (None: q as given); every backend checks with
# :func:`check_query_activation`
Q_ACTIVATIONS = (None, "silu")


def check_query_activation(name: Optional[str]) -> None:
    """Raise a ValueError naming ``name`` unless it is one of :data:`Q_ACTIVATIONS`."""
    if name not in Q_ACTIVATIONS:
        raise ValueError(f"additive_attention: unknown q_activation {name!r}; choose one of {Q_ACTIVATIONS}")


def _lrpe_expand(x: torch.Tensor, theta: Optional[torch.Tensor]) -> torch.Tensor:
    """``[B, N, H, D]`` → ``[B, N, H, 2D]`` (cos half, sin half) when ``theta`` ``[N, D]`` is given."""
    if theta is None:
        return x
    t = theta.to(x.dtype)[None, :, None, :]
    return torch.cat([x * torch.cos(t), x * torch.sin(t)], dim=-1)


def _dup(x: torch.Tensor, theta: Optional[torch.Tensor]) -> torch.Tensor:
    """Duplicate the key-channel axis (last) when LRPE doubles the state width."""
    return x if theta is None else torch.cat([x, x], dim=-1)


# Padded keys get this finite logit (exp underflows to exactly 0 next to any real key) and their weights are
# also multiplied by the keep-mask, so an all-padding prefix contributes nothing and never produces NaN.
_PAD_LOGIT = -1e30


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """fp32 for half/bf16/fp32 inputs, fp64 for fp64 inputs (so the reference can serve as an fp64 oracle)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _masked_logits(
    k: torch.Tensor, key_padding_mask: Optional[torch.Tensor]
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Logits in the compute dtype with padding filled, and the keep-mask ``[B, N, 1, 1]`` (None without padding)."""
    kf = k.to(compute_dtype(k))
    if key_padding_mask is None:
        return kf, None
    pad = key_padding_mask[:, :, None, None]
    return kf.masked_fill(pad, -1e30), (~pad).to(kf.dtype)  # -1e30: _PAD_LOGIT (TorchScript reads no float globals)


def _safe_exp_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """exp(a − b), with exp(−inf − ·) = 0 (an empty prefix) and a NaN-free gradient."""
    empty = torch.isneginf(a)
    d = torch.where(empty, torch.zeros_like(a), a - b)
    return torch.where(empty, torch.zeros_like(d), torch.exp(d))


def _start_state(initial_state: Optional[State], kf: torch.Tensor, E: int, theta: Optional[torch.Tensor]) -> State:
    """The state a causal pass starts from: the given one in the compute dtype, or the empty state
    (``S = 0 [B, H, D', E]``, ``z = −inf [B, H, D]``)."""
    if initial_state is not None:
        S, z = initial_state
        return S.to(kf.dtype), z.to(kf.dtype)
    B, _, H, D = kf.shape
    Dp = 2 * D if theta is not None else D
    return kf.new_zeros((B, H, Dp, E)), kf.new_full((B, H, D), float("-inf"))


def noncausal_attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float = 1.0,
    key_padding_mask: Optional[torch.Tensor] = None,
    lrpe_theta: Optional[torch.Tensor] = None,
    initial_state: Optional[State] = None,
) -> Tuple[torch.Tensor, State]:
    """Single-scan (order-free) additive attention. Returns ``(o [B,N,H,E], (S, z))`` in the compute dtype."""
    kf, keep = _masked_logits(k, key_padding_mask)  # [B, N, H, D]
    z = torch.logsumexp(kf, dim=1)  # [B, H, D]
    if initial_state is not None:
        z = torch.logaddexp(z, initial_state[1].to(kf.dtype))
    # softmax over tokens; without a prior state torch.softmax keeps full relative precision for huge logits
    w = torch.softmax(kf, dim=1) if initial_state is None else torch.exp(kf - z[:, None])
    if keep is not None:
        w = w * keep  # padding takes no part (also when every token is padding)
    w = _lrpe_expand(w, lrpe_theta)
    S = torch.einsum("bnhd,bnhe->bhde", w, v.to(kf.dtype))
    if initial_state is not None:
        S0, z0 = initial_state
        S = S + _dup(_safe_exp_diff(z0.to(kf.dtype), z), lrpe_theta)[..., None] * S0.to(kf.dtype)
    qf = _lrpe_expand(q.to(kf.dtype), lrpe_theta)
    o = torch.einsum("bnhd,bhde->bnhe", qf, S) * scale
    return o, (S, z)


def causal_attention_recurrent_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float = 1.0,
    key_padding_mask: Optional[torch.Tensor] = None,
    lrpe_theta: Optional[torch.Tensor] = None,
    initial_state: Optional[State] = None,
) -> Tuple[torch.Tensor, State]:
    """Token-by-token recurrence (O(1) state per step); the decode path and a test oracle."""
    B, N, H, D = k.shape
    E = v.shape[-1]
    kf, keep = _masked_logits(k, key_padding_mask)
    qf = _lrpe_expand(q.to(kf.dtype), lrpe_theta)
    vf = v.to(kf.dtype)
    S, z = _start_state(initial_state, kf, E, lrpe_theta)
    outs = []
    for t in range(N):
        kt = kf[:, t]  # [B, H, D]
        z_new = torch.logaddexp(z, kt)
        decay = _dup(_safe_exp_diff(z, z_new), lrpe_theta)  # [B, H, D']
        w = torch.exp(kt - z_new)  # [B, H, D]
        if keep is not None:
            w = w * keep[:, t]
        if lrpe_theta is not None:
            th = lrpe_theta[t].to(kf.dtype)
            w = torch.cat([w * torch.cos(th), w * torch.sin(th)], dim=-1)
        S = decay[..., None] * S + w[..., None] * vf[:, t, :, None, :]
        z = z_new
        outs.append(torch.einsum("bhd,bhde->bhe", qf[:, t], S))
    o = torch.stack(outs, dim=1) * scale if N > 0 else qf.new_zeros((B, 0, H, E))
    return o, (S, z)


def causal_attention_chunked_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float = 1.0,
    key_padding_mask: Optional[torch.Tensor] = None,
    lrpe_theta: Optional[torch.Tensor] = None,
    initial_state: Optional[State] = None,
    chunk_size: int = 32,
) -> Tuple[torch.Tensor, State]:
    """Chunked causal form (Lightning-Attention-2 split), O(N) memory.

    Per chunk of C tokens: intra-chunk scores ``Σ_c q_{t,c} exp(k_{s,c} − z_{t,c})`` for s ≤ t inside the
    chunk (an exact ``[C, C, D]`` product, stable for any logit range), plus the inter-chunk term
    ``q_t ⊙ exp(z_prev − z_t)`` against the running state. No cumsum over the whole sequence.
    """
    B, N, H, D = k.shape
    E = v.shape[-1]
    kf, keep = _masked_logits(k, key_padding_mask)
    qf = q.to(kf.dtype)
    vf = v.to(kf.dtype)
    S, z = _start_state(initial_state, kf, E, lrpe_theta)
    outs = []
    for start in range(0, N, chunk_size):
        end = min(start + chunk_size, N)
        C = end - start
        kc, qc, vc = kf[:, start:end], qf[:, start:end], vf[:, start:end]  # [B, C, H, *]
        th = None if lrpe_theta is None else lrpe_theta[start:end].to(kf.dtype)
        zc = torch.logaddexp(z[:, None], torch.logcumsumexp(kc, dim=1))  # [B, C, H, D]
        # inter-chunk: q_t ⊙ exp(z_prev − z_t) against S_prev
        q_inter = _lrpe_expand(qc * _safe_exp_diff(z[:, None], zc), th)
        o = torch.einsum("bchd,bhde->bche", q_inter, S)
        # intra-chunk: exact pairwise weights exp(k_s − z_t), s ≤ t
        future = torch.ones(C, C, dtype=torch.bool, device=k.device).triu(1)[None, :, :, None, None]
        w = torch.exp((kc[:, None] - zc[:, :, None]).masked_fill(future, float("-inf")))  # [B, Ct, Cs, H, D]
        if keep is not None:
            w = w * keep[:, None, start:end]
        if th is None:
            scores = torch.einsum("bthd,btshd->bths", qc, w)
        else:
            rel = th[:, None, :] - th[None, :, :]  # [Ct, Cs, D]: cos(θ_t − θ_s)
            scores = torch.einsum("bthd,btshd,tsd->bths", qc, w, torch.cos(rel))
        o = o + torch.einsum("bths,bshe->bthe", scores, vc)
        outs.append(o)
        # state update to the end of the chunk
        z_end = zc[:, -1]
        wk = torch.exp(kc - z_end[:, None])
        if keep is not None:
            wk = wk * keep[:, start:end]
        wk = _lrpe_expand(wk, th)  # [B, C, H, D']
        S = _dup(_safe_exp_diff(z, z_end), lrpe_theta)[..., None] * S + torch.einsum("bchd,bche->bhde", wk, vc)
        z = z_end
    o = torch.cat(outs, dim=1) * scale if outs else qf.new_zeros((B, 0, H, E))
    return o, (S, z)


def additive_attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float = 1.0,
    key_padding_mask: Optional[torch.Tensor] = None,
    lrpe_theta: Optional[torch.Tensor] = None,
    initial_state: Optional[State] = None,
    chunk_size: int = 32,
) -> Tuple[torch.Tensor, State]:
    """Reference entry point (no validation; see :func:`lightnet.kernels.additive_attention`)."""
    if not causal:
        return noncausal_attention_torch(q, k, v, scale=scale, key_padding_mask=key_padding_mask,
                                         lrpe_theta=lrpe_theta, initial_state=initial_state)
    if q.shape[1] == 1:
        return causal_attention_recurrent_torch(q, k, v, scale=scale, key_padding_mask=key_padding_mask,
                                                lrpe_theta=lrpe_theta, initial_state=initial_state)
    return causal_attention_chunked_torch(q, k, v, scale=scale, key_padding_mask=key_padding_mask,
                                          lrpe_theta=lrpe_theta, initial_state=initial_state, chunk_size=chunk_size)
