"""The non-causal kernels as an op: ``torch.library`` custom ops for ``torch.compile`` and an eager autograd Function.

Why custom ops: dynamo traces Python. Inlined, the kernels' host code (``Launcher``'s specialisation key takes
``tensor.data_ptr() & 15``, which a fake tensor cannot answer) would break the graph once per attention call. As
custom ops with fake (shape) functions and registered autograd, the whole launch sequence is one graph node that
inductor calls as an extern kernel, and the elementwise work around it (q activation, norms, gates) is fused as
usual. Eager calls skip the dispatcher (its Python autograd wrapper costs host time per call): :class:`NonCausalFn`
shares the ops' implementations, ``setup_context`` and backward.

Ops (``mask [B, N]`` bool, ``theta [N, D]`` fp32, ``S0 [B, H, D', E]`` / ``z0 [B, H, D]`` fp32 given together or
not at all; q, k, v, do are read in place when :func:`~lightnet.kernels.noncausal.kernels.in_kernel_layout`, e.g.
slices of a fused qkv projection, and copied otherwise):

    lightnet::noncausal_fwd(q, k, v, float scale, Tensor? mask, Tensor? theta, Tensor? S0, Tensor? z0,
                            bool q_silu=False, bool recompute_state=False)
        -> (o [B, N, H, E] q.dtype, S [B, H, D', E] fp32, z [B, H, D] fp32)
    lightnet::noncausal_bwd(do, Tensor? dS, Tensor? dz, q, k, v, Tensor? S, z, float scale, Tensor? mask,
                            Tensor? theta, bool q_silu=False) -> (dq, dk, dv)

``q_silu``: q is the raw query, the kernels use ``silu(q)`` and return the raw query's gradient. ``recompute_state``:
the autograd formula keeps ``z`` but not ``S`` (forward without initial state) and the backward rebuilds ``S`` from
k and v (``noncausal_bwd`` with ``S = None``). It is an op argument, so it is part of the traced graph and of the
compile caches' keys: a cached backward never keeps ``S`` when it should not, or the reverse. Gradients flow to q, k,
v only; unused outputs get ``None`` gradients (``set_materialize_grads(False)``), so the kernels skip the
final-state terms.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..triton_utils import contiguous_all, empty_output_and_state, initial_state_arg, zeros_output_grad
from .kernels import NonCausalLaunch, noncausal_backward, noncausal_forward

__all__ = ["noncausal_attention", "noncausal_fwd", "noncausal_bwd", "NonCausalFn"]


def _fwd_impl(
    q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Optional[Tensor], theta: Optional[Tensor],
    S0: Optional[Tensor], z0: Optional[Tensor], q_silu: bool = False, launch: Optional[NonCausalLaunch] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(o, S, z)`` of the order-free scan."""
    mask, theta, S0, z0 = contiguous_all(mask, theta, S0, z0)  # q, k, v: noncausal_forward applies kernel_layout
    o, S, z = noncausal_forward(q, k, v, scale, mask, theta, initial_state_arg(S0, z0), q_silu=q_silu, launch=launch)
    return o, S, z


@torch.library.custom_op("lightnet::noncausal_fwd", mutates_args=())
def noncausal_fwd(
    q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Optional[Tensor], theta: Optional[Tensor],
    S0: Optional[Tensor], z0: Optional[Tensor], q_silu: bool = False, recompute_state: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    return _fwd_impl(q, k, v, scale, mask, theta, S0, z0, q_silu)


@noncausal_fwd.register_fake
def _fwd_fake(q, k, v, scale, mask, theta, S0, z0, q_silu=False, recompute_state=False):
    return empty_output_and_state(q, v, theta)


def _bwd_impl(
    do: Tensor, dS: Optional[Tensor], dz: Optional[Tensor], q: Tensor, k: Tensor, v: Tensor, S: Optional[Tensor],
    z: Tensor, scale: float, mask: Optional[Tensor], theta: Optional[Tensor], q_silu: bool = False,
    launch: Optional[NonCausalLaunch] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` (new contiguous tensors) given ``dO`` and the optional final-state gradients; ``S = None``:
    recomputed from k and v first."""
    dS, dz, S, z, mask, theta = contiguous_all(dS, dz, S, z, mask, theta)  # do, q, k, v: see noncausal_backward
    return noncausal_backward(do, dS, dz, q, k, v, S, z, scale, mask, theta, q_silu=q_silu, launch=launch)


@torch.library.custom_op("lightnet::noncausal_bwd", mutates_args=())
def noncausal_bwd(
    do: Tensor, dS: Optional[Tensor], dz: Optional[Tensor], q: Tensor, k: Tensor, v: Tensor, S: Optional[Tensor],
    z: Tensor, scale: float, mask: Optional[Tensor], theta: Optional[Tensor], q_silu: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    return _bwd_impl(do, dS, dz, q, k, v, S, z, scale, mask, theta, q_silu)


@noncausal_bwd.register_fake
def _bwd_fake(do, dS, dz, q, k, v, S, z, scale, mask, theta, q_silu=False):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape))  # contiguous, as the kernels write


def _setup_context(ctx, inputs: Sequence, output: Sequence) -> None:
    q, k, v, scale, mask, theta, S0, _, *rest = inputs  # rest: (q_silu, recompute_state) as far as given
    _, S, z = output
    recompute = len(rest) > 1 and bool(rest[1]) and S0 is None  # the backward rebuilds S from k, v
    ctx.save_for_backward(q, k, v, None if recompute else S, z, mask, theta)
    ctx.scale = scale
    ctx.q_silu = bool(rest[0]) if rest else False
    ctx.n_inputs = len(inputs)
    ctx.set_materialize_grads(False)


def _backward(ctx, do, dS, dz, bwd: Callable = noncausal_bwd):
    q, k, v, S, z, mask, theta = ctx.saved_tensors
    if do is None and dS is None and dz is None:
        return (None,) * ctx.n_inputs
    do = zeros_output_grad(q, v) if do is None else do
    dq, dk, dv = bwd(do, dS, dz, q, k, v, S, z, ctx.scale, mask, theta, ctx.q_silu)
    return (dq, dk, dv) + (None,) * (ctx.n_inputs - 3)


noncausal_fwd.register_autograd(_backward, setup_context=_setup_context)


class NonCausalFn(torch.autograd.Function):
    """``lightnet::noncausal_fwd`` for eager mode: the same implementation, ``setup_context`` and backward, called
    without the custom-op dispatcher, plus the ``launch`` parameters (used by both directions).
    ``apply(q, k, v, scale, mask, theta, S0, z0, q_silu, recompute_state, launch) -> (o, S, z)``."""

    @staticmethod
    def forward(ctx, q, k, v, scale, mask, theta, S0, z0, q_silu=False, recompute_state=False,  # type: ignore[override]
                launch=None):
        out = _fwd_impl(q, k, v, scale, mask, theta, S0, z0, q_silu, launch)
        _setup_context(ctx, (q, k, v, scale, mask, theta, S0, z0, q_silu, recompute_state), out)
        ctx.n_inputs = 11
        ctx.launch = launch
        return out

    @staticmethod
    def backward(ctx, do, dS, dz):  # type: ignore[override]
        return _backward(ctx, do, dS, dz, bwd=functools.partial(_bwd_impl, launch=ctx.launch))


def noncausal_attention(
    q: Tensor, k: Tensor, v: Tensor, scale: float, key_padding_mask: Optional[Tensor], lrpe_theta: Optional[Tensor],
    initial_state: Optional[Tuple[Tensor, Tensor]], *, q_silu: bool = False, recompute_state: bool = False,
    launch: Optional[NonCausalLaunch] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Differentiable order-free scan: ``(o [B, N, H, E], S [B, H, D', E] fp32, z [B, H, D] fp32)`` of
    ``q, k [B, N, H, D]``, ``v [B, N, H, E]`` (same dtype; mask, angles and initial state contiguous, no gradient
    through them). While ``torch.compile`` traces: the ``lightnet::noncausal_fwd`` custom op (heuristic launch
    parameters only); eager: :class:`NonCausalFn`. ``recompute_state``: see the module docstring."""
    S0, z0 = initial_state if initial_state is not None else (None, None)
    if torch.compiler.is_compiling():
        if launch is not None:
            raise ValueError("noncausal_attention: launch parameters are for eager calls (the compiled custom op "
                             "uses the heuristics)")
        return noncausal_fwd(q, k, v, scale, key_padding_mask, lrpe_theta, S0, z0, q_silu, recompute_state)
    return NonCausalFn.apply(q, k, v, scale, key_padding_mask, lrpe_theta, S0, z0, q_silu, recompute_state, launch)
