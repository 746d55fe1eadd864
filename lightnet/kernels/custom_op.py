"""The Triton kernels as ``torch.library`` custom ops, so ``torch.compile`` sees one opaque node per call.

Why: dynamo traces Python. Inlined, the kernels' host code (``Launcher``'s specialisation key takes
``tensor.data_ptr() & 15``, which a fake tensor cannot answer) broke the graph once per attention call
("Failed to trace builtin operator ``and_``"). As custom ops with fake (shape) functions and registered autograd, the
whole launch sequence is one graph node that inductor calls as an extern kernel, and the elementwise work around it
(q activation, norms, gates) is fused as usual.

Ops (tensors contiguous, except that the non-causal ops read q, k, v, do in place when the last dim is
contiguous and the head stride equals its size, e.g. slices of a fused qkv projection, and copy them otherwise;
``B`` batch, ``N`` tokens, ``H`` heads, ``D`` key width, ``E`` value width,
``D' = 2D`` with LRPE else ``D``; ``mask [B, N]`` bool, ``theta [N, D]`` fp32, ``S0 [B, H, D', E]`` /
``z0 [B, H, D]`` fp32, given together or not at all):

    lightnet::noncausal_fwd(q, k, v, float scale, Tensor? mask, Tensor? theta, Tensor? S0, Tensor? z0,
                            bool q_silu=False, bool recompute_state=False)
        -> (o [B, N, H, E] q.dtype, S [B, H, D', E] fp32, z [B, H, D] fp32)
        (recompute_state: its autograd keeps z but not S, the backward rebuilds S; an argument rather than a
        lookup of TUNING["nc_recompute_state"] in setup_context, so that it is part of the traced graph and of
        the compile caches' keys: a cached backward never keeps S when it should not, or the reverse)
    lightnet::noncausal_bwd(do, Tensor? dS, Tensor? dz, q, k, v, Tensor? S, z, float scale, Tensor? mask,
                            Tensor? theta, bool q_silu=False) -> (dq, dk, dv)
        (S None: recomputed from k, v)
        (q_silu: q is the raw query, the kernels use silu(q) and return the raw query's gradient)
    lightnet::causal_fwd(q, k, v, float scale, Tensor? mask, Tensor? theta, Tensor? S0, Tensor? z0)
        -> (o, S, z, Tensor[] saved)      # saved: the kernels' per-segment / per-chunk statistics
    lightnet::causal_bwd(do, Tensor? dS, Tensor? dz, q, k, v, S, Tensor[] saved, float scale, Tensor? mask,
                         Tensor? theta) -> (dq, dk, dv)
    lightnet::causal_decode(q, k, v, float scale, Tensor? mask, Tensor? theta, Tensor? S0, Tensor? z0)
        -> (o [B, 1, H, E], S, z)         # one token, forward only (no autograd formula)

Gradients flow to q, k, v only (``*_fwd`` backward returns None for mask, theta and the initial state; the Python
entry point refuses those gradients before dispatch). Unused outputs get ``None`` gradients, not zeros
(``set_materialize_grads(False)``), so the kernels skip the final-state terms as the eager autograd Functions did.

Eager mode skips the dispatcher: :class:`NonCausalEagerFn` / :class:`CausalEagerFn` (autograd Functions sharing the
ops' implementations, ``setup_context`` and backward) and ``causal_decode_eager``; ``triton_ops`` picks them unless
``torch.compiler.is_compiling()``. Measured on this repo's 2-core CPU with stub kernels, a custom op's Python
autograd wrapper adds ~30 µs of host time per forward + backward (63 µs vs 31 µs), which matters to host-bound runs.

The fake functions mirror the host code's shape logic, including the causal ``saved`` list, whose sizes depend on
``TUNING`` (``c_chunk``, ``c_segment``, ``c_zpass``) and the device's SM count: a compiled graph records them at trace
time, so set ``TUNING`` before compiling. ``torch.library.opcheck`` (tests/test_custom_op.py) checks that the fake
shapes equal the real ones.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .decode import decode_step
from .triton_causal import causal_backward, causal_forward, chunk_size, segment_chunks, zpass_enabled
from .triton_common import cdiv
from .triton_noncausal import noncausal_backward, noncausal_forward

__all__ = [
    "noncausal_fwd", "noncausal_bwd", "causal_fwd", "causal_bwd", "causal_decode",
    "NonCausalEagerFn", "CausalEagerFn", "causal_decode_eager",
]

_F32 = torch.float32


def _contig_all(*ts: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
    """Each tensor contiguous (None stays None). The Python entry point already passes contiguous tensors; this
    covers a compiled graph whose layout pass hands the op other strides (free when already contiguous)."""
    return tuple(None if t is None else t.contiguous() for t in ts)


def _init(S0: Optional[Tensor], z0: Optional[Tensor]) -> Optional[Tuple[Tensor, Tensor]]:
    """The kernels' ``initial_state`` argument from the op's two optional tensors."""
    if (S0 is None) != (z0 is None):
        raise ValueError("lightnet custom op: S0 and z0 must be given together")
    return None if S0 is None else (S0, z0)


def _state_shapes(q: Tensor, v: Tensor, theta: Optional[Tensor]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """``(S shape [B, H, D', E], z shape [B, H, D])`` for ``q [B, N, H, D]``, ``v [B, N, H, E]``."""
    B, _, H, D = q.shape
    DP = 2 * D if theta is not None else D
    return (B, H, DP, v.shape[-1]), (B, H, D)


# ----------------------------------------------------------------------------------------------------------------
# non-causal
# ----------------------------------------------------------------------------------------------------------------
def _noncausal_fwd_impl(
    q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Optional[Tensor], theta: Optional[Tensor],
    S0: Optional[Tensor], z0: Optional[Tensor], q_silu: bool = False, recompute_state: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Order-free scan: ``(o [B, N, H, E], S [B, H, D', E] fp32, z [B, H, D] fp32)``; q, k, v in place when their
    layout allows (:func:`~lightnet.kernels.triton_noncausal.kernel_layout`); ``q_silu``: silu applied to q in the
    kernels; ``recompute_state`` only tells the autograd formula not to keep ``S`` (see the module doc)."""
    mask, theta, S0, z0 = _contig_all(mask, theta, S0, z0)  # q, k, v: noncausal_forward applies kernel_layout
    return noncausal_forward(q, k, v, scale, mask, theta, _init(S0, z0), q_silu=q_silu)


noncausal_fwd = torch.library.custom_op("lightnet::noncausal_fwd", _noncausal_fwd_impl, mutates_args=())


@noncausal_fwd.register_fake
def _noncausal_fwd_fake(q, k, v, scale, mask, theta, S0, z0, q_silu=False, recompute_state=False):
    s_shape, z_shape = _state_shapes(q, v, theta)
    o = q.new_empty((*q.shape[:3], v.shape[-1]))
    return o, q.new_empty(s_shape, dtype=_F32), q.new_empty(z_shape, dtype=_F32)


def _noncausal_bwd_impl(
    do: Tensor, dS: Optional[Tensor], dz: Optional[Tensor], q: Tensor, k: Tensor, v: Tensor, S: Optional[Tensor],
    z: Tensor, scale: float, mask: Optional[Tensor], theta: Optional[Tensor], q_silu: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` (new contiguous tensors) of the order-free scan given ``dO`` and the optional final-state
    gradients; do, q, k, v in place when their layout allows; ``q_silu`` as in the forward (dq is the raw query's);
    ``S = None``: recomputed from k and v first (``TUNING["nc_recompute_state"]``, forward without initial state)."""
    dS, dz, S, z, mask, theta = _contig_all(dS, dz, S, z, mask, theta)  # do, q, k, v: see noncausal_backward
    return noncausal_backward(do, dS, dz, q, k, v, S, z, scale, mask, theta, q_silu=q_silu)


noncausal_bwd = torch.library.custom_op("lightnet::noncausal_bwd", _noncausal_bwd_impl, mutates_args=())


@noncausal_bwd.register_fake
def _noncausal_bwd_fake(do, dS, dz, q, k, v, S, z, scale, mask, theta, q_silu=False):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape))  # contiguous, as the kernels write


# ----------------------------------------------------------------------------------------------------------------
# causal
# ----------------------------------------------------------------------------------------------------------------
def causal_saved_specs(
    q: Tensor, v: Tensor, theta: Optional[Tensor]
) -> List[Tuple[Tuple[int, ...], torch.dtype]]:
    """``(shape, dtype)`` of each tensor in the causal forward's ``saved`` list (mirrors the host code of
    :func:`~lightnet.kernels.triton_causal.causal_forward` and its ``TUNING["c_zpass"]`` variant)."""
    B, N, H, D = q.shape
    E = v.shape[-1]
    DP = 2 * D if theta is not None else D
    BH = B * H
    NC = cdiv(N, chunk_size(D, E))
    SEG = segment_chunks(NC, BH, q.device)
    NSEG = cdiv(NC, SEG)
    states = [((BH, NSEG + 1, DP, E), _F32), ((BH, NSEG + 1, D), _F32)]
    flags = ((BH, NSEG, SEG), torch.int32)
    if zpass_enabled():  # the zpass variant (the default) saves six tensors, the lean path four
        return [*states, ((BH, N, D), _F32), ((BH, NC, D), _F32), ((BH, NC, D), _F32), flags]
    return [*states, ((BH, NC + 1, D), _F32), flags]


def _causal_forward_views(
    q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Optional[Tensor], theta: Optional[Tensor],
    S0: Optional[Tensor], z0: Optional[Tensor],
) -> Tuple[Tensor, Tensor, Tensor, List[Tensor]]:
    """Prefix scan: ``(o, S, z, saved)`` with ``S`` / ``z`` views of the last slots of ``saved[0]`` / ``saved[1]``."""
    q, k, v, mask, theta, S0, z0 = _contig_all(q, k, v, mask, theta, S0, z0)
    o, S, z, saved = causal_forward(q, k, v, scale, mask, theta, _init(S0, z0))
    return o, S, z, list(saved)


def _causal_fwd_impl(
    q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Optional[Tensor], theta: Optional[Tensor],
    S0: Optional[Tensor], z0: Optional[Tensor],
) -> Tuple[Tensor, Tensor, Tensor, List[Tensor]]:
    """Prefix scan: ``(o, S, z, saved)``. ``S [B, H, D', E]`` / ``z [B, H, D]`` fp32 are copies of the last slots of
    ``saved[0]`` / ``saved[1]`` (a custom op's outputs must not alias each other; two small copies per call)."""
    o, S, z, saved = _causal_forward_views(q, k, v, scale, mask, theta, S0, z0)
    return o, S.clone(), z.clone(), saved


causal_fwd = torch.library.custom_op("lightnet::causal_fwd", _causal_fwd_impl, mutates_args=())


@causal_fwd.register_fake
def _causal_fwd_fake(q, k, v, scale, mask, theta, S0, z0):
    s_shape, z_shape = _state_shapes(q, v, theta)
    o = q.new_empty((*q.shape[:3], v.shape[-1]))
    saved = [q.new_empty(shape, dtype=dtype) for shape, dtype in causal_saved_specs(q, v, theta)]
    return o, q.new_empty(s_shape, dtype=_F32), q.new_empty(z_shape, dtype=_F32), saved


def _causal_bwd_impl(
    do: Tensor, dS: Optional[Tensor], dz: Optional[Tensor], q: Tensor, k: Tensor, v: Tensor, S: Tensor,
    saved: List[Tensor], scale: float, mask: Optional[Tensor], theta: Optional[Tensor],
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` of the prefix scan given ``dO``, the optional final-state gradients and ``saved``."""
    do, dS, dz, q, k, v, S, mask, theta = _contig_all(do, dS, dz, q, k, v, S, mask, theta)
    return causal_backward(do, dS, dz, q, k, v, S, list(saved), scale, mask, theta)


causal_bwd = torch.library.custom_op("lightnet::causal_bwd", _causal_bwd_impl, mutates_args=())


@causal_bwd.register_fake
def _causal_bwd_fake(do, dS, dz, q, k, v, S, saved, scale, mask, theta):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _causal_decode_impl(
    q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Optional[Tensor], theta: Optional[Tensor],
    S0: Optional[Tensor], z0: Optional[Tensor],
) -> Tuple[Tensor, Tensor, Tensor]:
    """One decoding step (``N = 1``): ``(o [B, 1, H, E], S, z)``; forward only."""
    q, k, v, mask, theta, S0, z0 = _contig_all(q, k, v, mask, theta, S0, z0)
    o, (S, z) = decode_step(q, k, v, scale, mask, theta, _init(S0, z0))
    return o, S, z


causal_decode = torch.library.custom_op("lightnet::causal_decode", _causal_decode_impl, mutates_args=())


@causal_decode.register_fake
def _causal_decode_fake(q, k, v, scale, mask, theta, S0, z0):
    return _noncausal_fwd_fake(q, k, v, scale, mask, theta, S0, z0)


# ----------------------------------------------------------------------------------------------------------------
# autograd
# ----------------------------------------------------------------------------------------------------------------
def _zeros_do(q: Tensor, v: Tensor) -> Tensor:
    """``dO`` when only the final state was used (``[B, N, H, E]`` zeros in q's dtype)."""
    return q.new_zeros((*q.shape[:3], v.shape[-1]))


def _setup_noncausal(ctx, inputs: Sequence, output: Sequence) -> None:
    q, k, v, scale, mask, theta, S0, _, *rest = inputs  # rest: (q_silu, recompute_state) as far as given
    _, S, z = output
    recompute = len(rest) > 1 and bool(rest[1]) and S0 is None  # the backward rebuilds S from k, v
    ctx.save_for_backward(q, k, v, None if recompute else S, z, mask, theta)
    ctx.scale = scale
    ctx.q_silu = bool(rest[0]) if rest else False
    ctx.n_inputs = len(inputs)
    ctx.set_materialize_grads(False)


def _backward_noncausal(ctx, do, dS, dz, bwd: Callable = noncausal_bwd):
    q, k, v, S, z, mask, theta = ctx.saved_tensors
    if do is None and dS is None and dz is None:
        return (None,) * ctx.n_inputs
    do = _zeros_do(q, v) if do is None else do
    dq, dk, dv = bwd(do, dS, dz, q, k, v, S, z, ctx.scale, mask, theta, ctx.q_silu)
    return (dq, dk, dv) + (None,) * (ctx.n_inputs - 3)


def _setup_causal(ctx, inputs: Sequence, output: Sequence) -> None:
    q, k, v, scale, mask, theta, _, _ = inputs
    _, S, _, saved = output
    ctx.save_for_backward(q, k, v, S, mask, theta, *saved)
    ctx.scale = scale
    ctx.set_materialize_grads(False)


def _backward_causal(ctx, do, dS, dz, dsaved=None, bwd: Callable = causal_bwd):
    q, k, v, S, mask, theta, *saved = ctx.saved_tensors
    if do is None and dS is None and dz is None:
        return (None,) * 8
    do = _zeros_do(q, v) if do is None else do
    dq, dk, dv = bwd(do, dS, dz, q, k, v, S, saved, ctx.scale, mask, theta)
    return dq, dk, dv, None, None, None, None, None


noncausal_fwd.register_autograd(_backward_noncausal, setup_context=_setup_noncausal)
causal_fwd.register_autograd(_backward_causal, setup_context=_setup_causal)


# ----------------------------------------------------------------------------------------------------------------
# eager twins
# ----------------------------------------------------------------------------------------------------------------
class NonCausalEagerFn(torch.autograd.Function):
    """``lightnet::noncausal_fwd`` for eager mode: the same implementation, ``setup_context`` and backward, called
    without the custom-op dispatcher (whose Python autograd wrapper costs ~30 µs more host time per forward +
    backward, measured on CPU). ``apply(q, k, v, scale, mask, theta, S0, z0, q_silu, recompute_state) ->
    (o, S, z)``."""

    @staticmethod
    def forward(ctx, q, k, v, scale, mask, theta, S0, z0, q_silu=False, recompute_state=False):  # type: ignore[override]
        inputs = (q, k, v, scale, mask, theta, S0, z0, q_silu, recompute_state)
        out = _noncausal_fwd_impl(*inputs)
        _setup_noncausal(ctx, inputs, out)
        return out

    @staticmethod
    def backward(ctx, do, dS, dz):  # type: ignore[override]
        return _backward_noncausal(ctx, do, dS, dz, bwd=_noncausal_bwd_impl)


class CausalEagerFn(torch.autograd.Function):
    """``lightnet::causal_fwd`` for eager mode (see :class:`NonCausalEagerFn`); returns ``(o, S, z)``, ``saved`` stays
    on the autograd context."""

    @staticmethod
    def forward(ctx, q, k, v, scale, mask, theta, S0, z0):  # type: ignore[override]
        inputs = (q, k, v, scale, mask, theta, S0, z0)
        out = _causal_forward_views(*inputs)  # no copies of the final state: autograd.Function outputs may be views
        _setup_causal(ctx, inputs, out)
        return out[:3]

    @staticmethod
    def backward(ctx, do, dS, dz):  # type: ignore[override]
        return _backward_causal(ctx, do, dS, dz, bwd=_causal_bwd_impl)


causal_decode_eager = _causal_decode_impl
