"""Autograd wrappers of the Triton kernels and the entry point used by :func:`lightnet.kernels.additive_attention`.

Differentiable w.r.t. ``q``, ``k``, ``v`` and through the returned final state ``(S, z)`` (so chunked prefill can be
trained end to end). Not differentiable w.r.t. ``initial_state`` or ``lrpe_theta``: if either requires a gradient a
``RuntimeError`` names the problem (use ``backend='torch'`` for those cases).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .decode import decode_step
from .reference import State, additive_attention_torch
from .triton_causal import causal_backward, causal_forward
from .triton_noncausal import noncausal_backward, noncausal_forward

__all__ = ["additive_attention_triton"]


def _contig(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.contiguous()


class _NonCausalFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, mask, theta, S0, z0):  # type: ignore[override]
        init = None if S0 is None else (S0, z0)
        o, S, z = noncausal_forward(q, k, v, scale, mask, theta, init)
        ctx.save_for_backward(q, k, v, S, z, mask, theta)
        ctx.scale = scale
        ctx.set_materialize_grads(False)
        return o, S, z

    @staticmethod
    def backward(ctx, do, dS, dz):  # type: ignore[override]
        q, k, v, S, z, mask, theta = ctx.saved_tensors
        if do is None:
            do = torch.zeros((*q.shape[:3], v.shape[-1]), device=q.device, dtype=q.dtype)
        dq, dk, dv = noncausal_backward(
            do, _contig(dS), _contig(dz), q, k, v, S, z, ctx.scale, mask, theta
        )
        return dq, dk, dv, None, None, None, None, None


class _CausalFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, mask, theta, S0, z0):  # type: ignore[override]
        init = None if S0 is None else (S0, z0)
        o, S, z, saved = causal_forward(q, k, v, scale, mask, theta, init)
        ctx.save_for_backward(q, k, v, mask, theta, S, *saved)
        ctx.scale = scale
        ctx.set_materialize_grads(False)
        return o, S, z

    @staticmethod
    def backward(ctx, do, dS, dz):  # type: ignore[override]
        q, k, v, mask, theta, S, *saved = ctx.saved_tensors
        if do is None:
            do = torch.zeros((*q.shape[:3], v.shape[-1]), device=q.device, dtype=q.dtype)
        dq, dk, dv = causal_backward(
            do, _contig(dS), _contig(dz), q, k, v, S, saved, ctx.scale, mask, theta
        )
        return dq, dk, dv, None, None, None, None, None


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
) -> Tuple[torch.Tensor, State]:
    """Triton additive attention with the semantics of :func:`~lightnet.kernels.reference.additive_attention_torch`.

    Args:
        q, k: ``[B, N, H, D]``; v: ``[B, N, H, E]`` (fp16 / bf16 / fp32; fp64 is computed by the reference).
        causal: cumulative (prefix) normalisation instead of the single order-free scan.
        scale: output scale.
        key_padding_mask: ``[B, N]`` bool, True = padding.
        lrpe_theta: ``[N, D]`` fp32 MD-LRPE angles.
        initial_state: ``(S [B, H, D', E], z [B, H, D])`` fp32.

    Returns:
        ``(o [B, N, H, E] in q's dtype, (S [B, H, D', E] fp32, z [B, H, D] fp32))``.
    """
    if q.dtype == torch.float64 or q.shape[0] == 0 or q.shape[1] == 0:  # fp64 / empty batch / empty sequence
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
    dtype = q.dtype
    q, k, v = q.contiguous(), k.to(dtype).contiguous(), v.to(dtype).contiguous()
    mask = _contig(key_padding_mask)
    theta = None if lrpe_theta is None else lrpe_theta.detach().to(torch.float32).contiguous()
    S0 = z0 = None
    if initial_state is not None:
        S0 = initial_state[0].detach().to(torch.float32).contiguous()
        z0 = initial_state[1].detach().to(torch.float32).contiguous()
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if causal and q.shape[1] == 1 and not needs_grad:
        return decode_step(q, k, v, float(scale), mask, theta, None if S0 is None else (S0, z0))
    fn = _CausalFn if causal else _NonCausalFn
    o, S, z = fn.apply(q, k, v, float(scale), mask, theta, S0, z0)
    return o, (S, z)
