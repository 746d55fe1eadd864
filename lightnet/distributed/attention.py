"""Sequence-parallel additive attention: :func:`lightnet.kernels.additive_attention` over a sequence whose token axis
is split over the ranks of a process group, exchanging only the per-head states.

Notation per (batch, head): local logits ``k`` (``n`` tokens of this rank), ``S [D', E]`` state, ``z [D]``
log-normaliser (``D' = 2D`` with MD-LRPE), rank ``r`` of ``R``.

Non-causal. Each rank forms its max-shifted local sums ``S_r = Σ_s exp(k_s − m_r) k̄_s v_sᵀ``, ``l_r = Σ_s exp(k_s −
m_r)`` with the local max ``m_r``; one all-reduce of the max ``m = max_r m_r`` (``[D]`` floats) and one of the
rescaled sums ``(e^{m_r − m} S_r, e^{m_r − m} l_r)`` give the global state ``S / l`` (the log-sum-exp merge of
``docs/design.md`` §6); ``o = scale · q̄ᵀ (S / l)``. The sum's backward all-reduces the state gradients (the shift is a
constant: the softmax does not depend on it).

Causal. Each rank's local state is its slice's non-causal state ``(S_r, z_r)``; one all-gather of the states gives
every rank the exclusive prefix ``(S_p, z_p)`` of the ranks before it (merged with the rule of §1). With the local
cumulative log-normaliser ``ẑ_t = logcumsumexp(k)_t`` and the global one ``z_t = logaddexp(z_p, ẑ_t)`` the output
splits exactly into

    o_t = causal_op(q_t ⊙ e^{ẑ_t − z_t}, k, v)_t  +  scale · lrpe(q_t ⊙ e^{z_p − z_t})ᵀ S_p,

a zero-state call of the causal op on the local slice (Triton on CUDA, with its own gradients) plus the inter-rank
term (one GEMM). Autograd carries the gradients of ``(S_p, z_p)`` back through the gather to the earlier ranks.

Communication per rank and call: non-causal ``B·H·(D'·E + 2D)`` floats all-reduced; causal ``R·B·H·(D'·E + D)``
floats gathered (the same in the backward); independent of the sequence length.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch.nn import functional as F

from ..kernels import BACKENDS, additive_attention
from ..kernels.api import _check_inputs
from ..kernels.reference import _PAD_LOGIT, _dup, _lrpe_expand, _masked_logits, _safe_exp_diff, check_query_activation
from .comm import all_gather_states, group_rank, group_size

__all__ = ["sequence_parallel_attention"]


class _MergeNonCausal(torch.autograd.Function):
    """``(S_r, l_r, m_r)`` max-shifted local sums → the group's ``(S, l)`` shifted by the global max (one all-reduce
    of the max, one of the sums); backward: the state gradients all-reduced, rescaled to each rank's shift."""

    @staticmethod
    def forward(ctx, S_r: torch.Tensor, l_r: torch.Tensor, m_r: torch.Tensor, group: Optional[dist.ProcessGroup]):
        m = m_r.clone()
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
        a = _safe_exp_diff(m_r, m)  # [B, H, D], e^{m_r − m} (0 for an empty slice)
        aS = (a if S_r.shape[-2] == a.shape[-1] else torch.cat([a, a], dim=-1))[..., None]  # [B, H, D', 1]
        flat = torch.cat([(S_r * aS).reshape(-1), (l_r * a).reshape(-1)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        S, l = flat[: S_r.numel()].view_as(S_r), flat[S_r.numel():].view_as(l_r)
        ctx.group = group
        ctx.save_for_backward(a, aS)
        return S, l

    @staticmethod
    def backward(ctx, gS: torch.Tensor, gl: torch.Tensor):
        a, aS = ctx.saved_tensors
        flat = torch.cat([gS.contiguous().reshape(-1), gl.contiguous().reshape(-1)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=ctx.group)
        gS, gl = flat[: gS.numel()].view_as(gS), flat[gS.numel():].view_as(gl)
        return gS * aS, gl * a, None, None


def _noncausal(q, kf, keep, v, theta, scale, group):
    """Non-causal sequence-parallel output ``[B, n, H, E]`` in the compute dtype (see the module docstring)."""
    B, n, H, D = kf.shape
    if n > 0:
        m_r = kf.detach().amax(dim=1)  # [B, H, D]
    else:
        m_r = kf.new_full((B, H, D), _PAD_LOGIT)
    w = torch.exp(kf - m_r[:, None])
    if keep is not None:
        w = w * keep
    l_r = w.sum(dim=1)  # [B, H, D]
    S_r = torch.einsum("bnhd,bnhe->bhde", _lrpe_expand(w, theta), v.to(kf.dtype))
    S, l = _MergeNonCausal.apply(S_r, l_r, m_r, group)
    inv = torch.where(l > 0, 1.0 / l.clamp_min(torch.finfo(l.dtype).tiny), torch.zeros_like(l))  # all padding → 0
    S = S * _dup(inv, theta)[..., None]
    return torch.einsum("bnhd,bhde->bnhe", _lrpe_expand(q.to(kf.dtype), theta), S) * scale


def _exclusive_prefix(S_all: torch.Tensor, z_all: torch.Tensor, rank: int, theta):
    """Merge the states of ranks ``< rank`` (``S_all [R, B, H, D', E]``, ``z_all [R, B, H, D]``) into ``(S_p, z_p)``;
    rank 0 gets the empty state (``S = 0``, ``z`` = the padding logit, finite so every gradient stays finite).

    The empty state is still computed from the gathered tensor (times 0), so that every rank's backward reaches the
    gather's backward collective: a rank that skipped it would leave the others waiting (or pair them with the wrong
    collective)."""
    if rank == 0:
        return S_all[0] * 0, z_all[0] * 0 + _PAD_LOGIT
    z_p = torch.logsumexp(z_all[:rank], dim=0)  # [B, H, D]
    wts = torch.exp(z_all[:rank] - z_p)  # [r, B, H, D]
    S_p = (_dup(wts, theta)[..., None] * S_all[:rank]).sum(dim=0)
    return S_p, z_p


def _causal(q, k, v, kf, keep, key_padding_mask, theta, scale, group, backend):
    """Causal sequence-parallel output ``[B, n, H, E]`` (see the module docstring)."""
    B, n, H, D = kf.shape
    E = v.shape[-1]
    Dp = 2 * D if theta is not None else D
    # local state: the slice's non-causal state (z_r the logsumexp of the local logits). An empty slice has the
    # empty state, still computed from k and v so that its rank's backward joins the gather's collective.
    z_r = torch.logsumexp(kf, dim=1) if n > 0 else kf.sum(dim=1) * 0 + _PAD_LOGIT  # [B, H, D]
    w = torch.exp(kf - z_r[:, None])
    if keep is not None:
        w = w * keep
    S_r = torch.einsum("bnhd,bnhe->bhde", _lrpe_expand(w, theta), v.to(kf.dtype))  # [B, H, D', E]
    packed = all_gather_states(torch.cat([S_r.reshape(-1), z_r.reshape(-1)]), group)  # [R, numel]
    R = packed.shape[0]
    S_all = packed[:, : S_r.numel()].reshape(R, B, H, Dp, E)
    z_all = packed[:, S_r.numel():].reshape(R, B, H, D)
    S_p, z_p = _exclusive_prefix(S_all, z_all, group_rank(group), theta)
    qf = q.to(kf.dtype)
    if n == 0:  # empty slice: an empty output still tied to the prefix, so the backward joins the collective
        return torch.einsum("bnhd,bhde->bnhe", _lrpe_expand(qf, theta), S_p)
    z_loc = torch.logcumsumexp(kf, dim=1)  # [B, n, H, D]
    z_glob = torch.logaddexp(z_p[:, None], z_loc)
    alpha = torch.exp(z_loc - z_glob)  # weight of the local part
    beta = torch.exp(z_p[:, None] - z_glob)  # weight of the prefix
    o_local = additive_attention(
        (qf * alpha).to(q.dtype), k, v, causal=True, scale=scale, key_padding_mask=key_padding_mask,
        lrpe_theta=theta, backend=backend,
    )
    o_prefix = torch.einsum("bnhd,bhde->bnhe", _lrpe_expand(qf * beta, theta), S_p) * scale
    return o_local.to(kf.dtype) + o_prefix


def sequence_parallel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    group: Optional[dist.ProcessGroup] = None,
    causal: bool = False,
    scale: Optional[float] = None,
    key_padding_mask: Optional[torch.Tensor] = None,
    lrpe_theta: Optional[torch.Tensor] = None,
    q_activation: Optional[str] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """This rank's slice of :func:`lightnet.kernels.additive_attention` over the sequence split across ``group``.

    Every rank of ``group`` holds a contiguous slice of the token axis, in rank order (rank 0 the first tokens);
    slices may differ in length (even be empty). Forward and backward equal the single-process op on the
    concatenated sequence (up to the order of fp32 sums). Every rank of the group must call it (it communicates).

    Args:
        q, k: ``[B, n, H, D]`` this rank's queries and raw key logits; v: ``[B, n, H, E]``. ``B``, ``H``, ``D``, ``E``
            and the dtype must agree across the group.
        group: the sequence-parallel process group; None: the default (world) group.
        causal: prefix-only (LM) form; otherwise the single order-free scan.
        scale: output scale; None means 1.
        key_padding_mask: ``[B, n]`` bool for this rank's tokens, True = padding.
        lrpe_theta: ``[n, D]`` MD-LRPE angles of this rank's tokens at their **global** positions (the rows
            ``start:stop`` of the full sequence's table).
        q_activation: ``'silu'`` to use ``silu(q)`` as the query; None for q as given.
        backend: ``'auto'``, ``'torch'`` or ``'triton'``: the kernel backend of the local causal pass (and the whole
            call at world size 1). The non-causal path and the inter-rank terms are PyTorch GEMMs on any backend.

    Returns:
        ``o [B, n, H, E]`` in q's dtype.
    """
    if backend not in BACKENDS:
        raise ValueError(f"sequence_parallel_attention: unknown backend {backend!r}; choose one of {BACKENDS}")
    check_query_activation(q_activation)
    _check_inputs(q, k, v, key_padding_mask, lrpe_theta, None)
    world = group_size(group)
    if world == 1:
        return additive_attention(q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask,
                                  lrpe_theta=lrpe_theta, q_activation=q_activation, backend=backend)
    scale = 1.0 if scale is None else float(scale)
    if q_activation == "silu":
        q = F.silu(q)
    kf, keep = _masked_logits(k, key_padding_mask)
    if causal:
        o = _causal(q, k, v, kf, keep, key_padding_mask, lrpe_theta, scale, group, backend)
    else:
        o = _noncausal(q, kf, keep, v, lrpe_theta, scale, group)
    return o.to(q.dtype)
