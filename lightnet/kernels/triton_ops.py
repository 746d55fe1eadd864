"""Autograd wrappers of the Triton kernels and the entry point used by :func:`lightnet.kernels.additive_attention`.

Differentiable w.r.t. ``q``, ``k``, ``v`` and through the returned final state ``(S, z)`` (so chunked prefill can be
trained end to end). Not differentiable w.r.t. ``initial_state`` or ``lrpe_theta``: if either requires a gradient a
``RuntimeError`` names the problem (use ``backend='torch'`` for those cases).

Under ``torch.compile`` the kernels are called through the ``lightnet::*`` custom ops of
:mod:`lightnet.kernels.custom_op` (which carry their autograd formulas), so dynamo traces this function without graph
breaks: everything here before the op call is shape / dtype / ``requires_grad`` logic resolved at trace time. Eager
calls go through that module's autograd Functions, which share the ops' implementations and backward.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch.nn import functional as F

from . import custom_op as ops
from .gemm_noncausal import noncausal_attention_gemm
from .reference import State, additive_attention_torch, check_query_activation
from .triton_common import TUNING
from .triton_noncausal import kernel_layout

__all__ = ["additive_attention_triton"]


def _gemm_path(num_tokens: int) -> bool:
    """Whether a non-causal call of ``num_tokens`` tokens runs as PyTorch GEMMs instead of the Triton kernels: only
    while ``torch.compile`` traces (inductor fuses the elementwise work around the two GEMMs; eager it would be ~10
    launches) and only up to ``TUNING["nc_gemm_max_tokens"]`` tokens (default off)."""
    limit = TUNING.get("nc_gemm_max_tokens") or 0
    return num_tokens <= limit and torch.compiler.is_compiling()


def _contig(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.contiguous()


def additive_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float = 1.0,
    key_padding_mask: Optional[torch.Tensor] = None,
    lrpe_theta: Optional[torch.Tensor] = None,
    initial_state: Optional[State] = None,
    q_activation: Optional[str] = None,
) -> Tuple[torch.Tensor, State]:
    """Triton additive attention with the semantics of :func:`~lightnet.kernels.reference.additive_attention_torch`.

    Args:
        q, k: ``[B, N, H, D]``; v: ``[B, N, H, E]`` (fp16 / bf16 / fp32; fp64 is computed by the reference).
        causal: cumulative (prefix) normalisation instead of the single order-free scan.
        scale: output scale.
        key_padding_mask: ``[B, N]`` bool, True = padding.
        lrpe_theta: ``[N, D]`` fp32 MD-LRPE angles.
        initial_state: ``(S [B, H, D', E], z [B, H, D])`` fp32.
        q_activation: ``'silu'`` to use ``silu(q)`` as the query: inside the non-causal kernels (no activated copy of
            q is kept for the backward), applied before the call on every other path; ``None`` for q as given.

    Returns:
        ``(o [B, N, H, E] in q's dtype, (S [B, H, D', E] fp32, z [B, H, D] fp32))``.
    """
    check_query_activation(q_activation)
    by_reference = q.dtype == torch.float64 or q.shape[0] == 0 or q.shape[1] == 0  # fp64 / empty batch / sequence
    gemm = not causal and initial_state is None and _gemm_path(q.shape[1])
    in_kernel_silu = q_activation == "silu" and not (causal or by_reference or gemm)
    if q_activation == "silu" and not in_kernel_silu:
        q = F.silu(q)
    if by_reference:
        return additive_attention_torch(
            q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask,
            lrpe_theta=lrpe_theta, initial_state=initial_state,
        )
    if torch.is_grad_enabled():
        if initial_state is not None and any(t.requires_grad for t in initial_state):
            raise RuntimeError(
                "additive_attention (triton): gradients w.r.t. initial_state are not supported; "
                "detach the state or use backend='torch'"
            )
        if lrpe_theta is not None and lrpe_theta.requires_grad:
            raise RuntimeError(
                "additive_attention (triton): gradients w.r.t. lrpe_theta (learnable LRPE frequencies) are not "
                "supported; use fixed frequencies or backend='torch'"
            )
    if gemm:
        return noncausal_attention_gemm(
            q, k.to(q.dtype), v.to(q.dtype), scale=scale, key_padding_mask=key_padding_mask, lrpe_theta=lrpe_theta
        )
    dtype = q.dtype
    # the non-causal kernels take any batch / token strides (k, v sliced from a fused qkv projection are used in
    # place); the causal kernels need contiguous inputs
    layout = torch.Tensor.contiguous if causal else kernel_layout
    q, k, v = layout(q), layout(k.to(dtype)), layout(v.to(dtype))
    mask = _contig(key_padding_mask)
    theta = None if lrpe_theta is None else lrpe_theta.detach().to(torch.float32).contiguous()
    S0 = z0 = None
    if initial_state is not None:
        S0 = initial_state[0].detach().to(torch.float32).contiguous()
        z0 = initial_state[1].detach().to(torch.float32).contiguous()
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    args = (q, k, v, float(scale), mask, theta, S0, z0)
    decode = causal and q.shape[1] == 1 and not needs_grad
    recompute_state = bool(TUNING["nc_recompute_state"]) and initial_state is None  # read while tracing: in the graph
    if torch.compiler.is_compiling():  # one opaque graph node per call (torch.library custom ops)
        if decode:
            o, S, z = ops.causal_decode(*args)
        elif causal:
            o, S, z, _ = ops.causal_fwd(*args)
        else:
            o, S, z = ops.noncausal_fwd(*args, in_kernel_silu, recompute_state)
    elif decode:  # eager: the same implementations without the custom-op dispatcher's host overhead
        o, S, z = ops.causal_decode_eager(*args)
    elif causal:
        o, S, z = ops.CausalEagerFn.apply(*args)
    else:
        o, S, z = ops.NonCausalEagerFn.apply(*args, in_kernel_silu, recompute_state)
    return o, (S, z)
