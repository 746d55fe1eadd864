"""The causal kernels as an op: ``torch.library`` custom ops for ``torch.compile`` and an eager autograd Function.

As for the non-causal op (:mod:`lightnet.kernels.noncausal.op`): the custom ops make the whole launch sequence one
opaque graph node with fake (shape) functions and registered autograd; eager calls go through :class:`CausalFn`,
which shares their implementations, ``setup_context`` and backward without the dispatcher's host overhead.

Ops (tensors contiguous; ``mask [B, N]`` bool, ``theta [N, D]`` fp32, ``S0 [B, H, D', E]`` / ``z0 [B, H, D]`` fp32
given together or not at all):

    lightnet::causal_fwd(q, k, v, float scale, Tensor? mask, Tensor? theta, Tensor? S0, Tensor? z0)
        -> (o [B, N, H, E], S [B, H, D', E], z [B, H, D], Tensor[] saved)
    lightnet::causal_bwd(do, Tensor? dS, Tensor? dz, q, k, v, S, Tensor[] saved, float scale, Tensor? mask,
                         Tensor? theta) -> (dq, dk, dv)

``saved`` is the forward's list of per-segment / per-chunk statistics
(:func:`~lightnet.kernels.causal.kernels.causal_forward`); the fake function builds it from
:func:`~lightnet.kernels.causal.kernels.saved_specs`, whose sizes depend only on the shapes, the device's SM count and
the interpreter. Gradients flow to q, k, v only; unused outputs get ``None`` gradients, so the kernels skip the
final-state terms.
"""
from __future__ import annotations

import functools
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..triton_utils import contiguous_all, empty_output_and_state, initial_state_arg, zeros_output_grad
from .kernels import CausalLaunch, causal_backward, causal_forward, saved_specs

__all__ = ["causal_attention", "causal_fwd", "causal_bwd", "CausalFn"]


def _forward_views(
    q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Optional[Tensor], theta: Optional[Tensor],
    S0: Optional[Tensor], z0: Optional[Tensor], launch: Optional[CausalLaunch] = None,
) -> Tuple[Tensor, Tensor, Tensor, List[Tensor]]:
    """Prefix scan: ``(o, S, z, saved)`` with ``S`` / ``z`` views of the last slots of ``saved[0]`` / ``saved[1]``."""
    q, k, v, mask, theta, S0, z0 = contiguous_all(q, k, v, mask, theta, S0, z0)
    o, S, z, saved = causal_forward(q, k, v, scale, mask, theta, initial_state_arg(S0, z0), launch=launch)
    return o, S, z, list(saved)


@torch.library.custom_op("lightnet::causal_fwd", mutates_args=())
def causal_fwd(
    q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Optional[Tensor], theta: Optional[Tensor],
    S0: Optional[Tensor], z0: Optional[Tensor],
) -> Tuple[Tensor, Tensor, Tensor, List[Tensor]]:
    """``(o, S, z, saved)``; ``S`` / ``z`` are copies of the last slots of ``saved[0]`` / ``saved[1]`` (a custom op's
    outputs must not alias each other; two small copies per call)."""
    o, S, z, saved = _forward_views(q, k, v, scale, mask, theta, S0, z0)
    return o, S.clone(), z.clone(), saved


@causal_fwd.register_fake
def _fwd_fake(q, k, v, scale, mask, theta, S0, z0):
    o, S, z = empty_output_and_state(q, v, theta)
    return o, S, z, [q.new_empty(shape, dtype=dtype) for shape, dtype in saved_specs(q, v, theta)]


def _bwd_impl(
    do: Tensor, dS: Optional[Tensor], dz: Optional[Tensor], q: Tensor, k: Tensor, v: Tensor, S: Tensor,
    saved: List[Tensor], scale: float, mask: Optional[Tensor], theta: Optional[Tensor],
    launch: Optional[CausalLaunch] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` of the prefix scan given ``dO``, the optional final-state gradients and ``saved``."""
    do, dS, dz, q, k, v, S, mask, theta = contiguous_all(do, dS, dz, q, k, v, S, mask, theta)
    return causal_backward(do, dS, dz, q, k, v, S, list(saved), scale, mask, theta, launch=launch)


@torch.library.custom_op("lightnet::causal_bwd", mutates_args=())
def causal_bwd(
    do: Tensor, dS: Optional[Tensor], dz: Optional[Tensor], q: Tensor, k: Tensor, v: Tensor, S: Tensor,
    saved: List[Tensor], scale: float, mask: Optional[Tensor], theta: Optional[Tensor],
) -> Tuple[Tensor, Tensor, Tensor]:
    return _bwd_impl(do, dS, dz, q, k, v, S, saved, scale, mask, theta)


@causal_bwd.register_fake
def _bwd_fake(do, dS, dz, q, k, v, S, saved, scale, mask, theta):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs: Sequence, output: Sequence) -> None:
    q, k, v, scale, mask, theta, _, _ = inputs
    _, S, _, saved = output
    ctx.save_for_backward(q, k, v, S, mask, theta, *saved)
    ctx.scale = scale
    ctx.set_materialize_grads(False)


def _backward(ctx, do, dS, dz, dsaved=None, bwd: Callable = causal_bwd):
    q, k, v, S, mask, theta, *saved = ctx.saved_tensors
    if do is None and dS is None and dz is None:
        return (None,) * 8
    do = zeros_output_grad(q, v) if do is None else do
    dq, dk, dv = bwd(do, dS, dz, q, k, v, S, saved, ctx.scale, mask, theta)
    return dq, dk, dv, None, None, None, None, None


causal_fwd.register_autograd(_backward, setup_context=_setup_context)


class CausalFn(torch.autograd.Function):
    """``lightnet::causal_fwd`` for eager mode, plus the ``launch`` parameters (used by both directions).
    ``apply(q, k, v, scale, mask, theta, S0, z0, launch) -> (o, S, z)``; ``saved`` stays on the autograd context."""

    @staticmethod
    def forward(ctx, q, k, v, scale, mask, theta, S0, z0, launch=None):  # type: ignore[override]
        out = _forward_views(q, k, v, scale, mask, theta, S0, z0, launch)  # Function outputs may be views
        _setup_context(ctx, (q, k, v, scale, mask, theta, S0, z0), out)
        ctx.launch = launch
        return out[:3]

    @staticmethod
    def backward(ctx, do, dS, dz):  # type: ignore[override]
        grads = _backward(ctx, do, dS, dz, bwd=functools.partial(_bwd_impl, launch=ctx.launch))
        return (*grads, None)


def causal_attention(
    q: Tensor, k: Tensor, v: Tensor, scale: float, key_padding_mask: Optional[Tensor], lrpe_theta: Optional[Tensor],
    initial_state: Optional[Tuple[Tensor, Tensor]], *, launch: Optional[CausalLaunch] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Differentiable prefix scan: ``(o [B, N, H, E], S [B, H, D', E] fp32, z [B, H, D] fp32)`` of contiguous
    ``q, k [B, N, H, D]``, ``v [B, N, H, E]`` (same dtype; no gradient through mask, angles or initial state). While
    ``torch.compile`` traces: the ``lightnet::causal_fwd`` custom op (heuristic launch parameters only); eager:
    :class:`CausalFn`."""
    S0, z0 = initial_state if initial_state is not None else (None, None)
    if torch.compiler.is_compiling():
        if launch is not None:
            raise ValueError("causal_attention: launch parameters are for eager calls (the compiled custom op uses "
                             "the heuristics)")
        o, S, z, _ = causal_fwd(q, k, v, scale, key_padding_mask, lrpe_theta, S0, z0)
        return o, S, z
    return CausalFn.apply(q, k, v, scale, key_padding_mask, lrpe_theta, S0, z0, launch)
