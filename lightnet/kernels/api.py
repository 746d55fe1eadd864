"""The one dispatch point for LightNet's additive attention: validates inputs, picks a backend, calls the op.

:func:`additive_attention` validates and picks the backend (the PyTorch reference of :mod:`lightnet.kernels.reference`
or Triton); :func:`triton_attention` routes a Triton call to the op that runs it — the non-causal op
(:mod:`lightnet.kernels.noncausal`), the causal op (:mod:`lightnet.kernels.causal`) or the one-token decode kernel
(:mod:`lightnet.kernels.decode`) — and back to the reference where the kernels have nothing to add (fp64, empty
inputs).

``torch.compile(..., fullgraph=True)`` traces this module: validation depends only on shapes, dtypes, devices and
``requires_grad`` (resolved at trace time: bad input still fails with the same message while compiling, inside
dynamo's own error under ``fullgraph=True``), the Triton kernels are ``lightnet::*`` custom ops, and the one
value-dependent check (``check_finite``) is skipped while compiling.
"""
from __future__ import annotations

import numbers
import warnings
from typing import TYPE_CHECKING, Optional, Tuple, Union

import torch
from torch.nn import functional as F

from .reference import State, additive_attention_torch, check_query_activation

if TYPE_CHECKING:  # the op packages import triton: loaded on the first Triton call
    from .causal import CausalLaunch
    from .noncausal import NonCausalLaunch

__all__ = ["additive_attention", "available_backends", "triton_attention", "BACKENDS"]

BACKENDS = ("auto", "torch", "triton")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _triton_available(t: torch.Tensor) -> bool:
    if not t.is_cuda:
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def available_backends(device: Union[str, torch.device] = "cpu") -> Tuple[str, ...]:
    """Backends that can run on ``device`` (``'torch'`` always; ``'triton'`` on CUDA when installed)."""
    probe = torch.empty(0, device=device)
    return ("torch", "triton") if _triton_available(probe) else ("torch",)


def _check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: Optional[torch.Tensor],
    lrpe_theta: Optional[torch.Tensor],
    initial_state: Optional[State],
) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"additive_attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"additive_attention: {name} must have rank 4 [B, N, H, D], got shape {tuple(t.shape)}")
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"additive_attention: {name} must be a floating tensor (fp16/bf16/fp32/fp64), got {t.dtype}")
    if q.shape != k.shape:
        raise ValueError(f"additive_attention: q {tuple(q.shape)} and k {tuple(k.shape)} must have the same shape [B, N, H, D]")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"additive_attention: v {tuple(v.shape)} must match q {tuple(q.shape)} in batch, tokens and heads "
            "([B, N, H, E]); a head-count mismatch is the usual cause"
        )
    devices = {t.device for t in (q, k, v)}
    if len(devices) != 1:
        raise ValueError(f"additive_attention: q, k, v are on different devices: {sorted(map(str, devices))}")
    B, N, H, D = q.shape
    for name, t in (("key_padding_mask", key_padding_mask), ("lrpe_theta", lrpe_theta)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"additive_attention: {name} must be a torch.Tensor or None, got {type(t).__name__}")
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"additive_attention: key_padding_mask must be bool (True = padding), got {key_padding_mask.dtype}")
        if tuple(key_padding_mask.shape) != (B, N):
            raise ValueError(
                f"additive_attention: key_padding_mask must have shape [B, N] = {(B, N)}, got {tuple(key_padding_mask.shape)}"
            )
        if key_padding_mask.device != q.device:
            raise ValueError(f"additive_attention: key_padding_mask is on {key_padding_mask.device}, inputs on {q.device}")
    if lrpe_theta is not None:
        if tuple(lrpe_theta.shape) != (N, D):
            raise ValueError(f"additive_attention: lrpe_theta must have shape [N, D] = {(N, D)}, got {tuple(lrpe_theta.shape)}")
        if lrpe_theta.device != q.device:
            raise ValueError(f"additive_attention: lrpe_theta is on {lrpe_theta.device}, inputs on {q.device}")
    if initial_state is not None:
        if not (isinstance(initial_state, (tuple, list)) and len(initial_state) == 2):
            raise TypeError("additive_attention: initial_state must be a pair (S [B, H, D', E], z [B, H, D])")
        S, z = initial_state
        for name, t in (("S", S), ("z", z)):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                what = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
                raise TypeError(f"additive_attention: initial_state {name} must be a floating tensor (fp32), got {what}")
            if t.device != q.device:
                raise ValueError(f"additive_attention: initial_state {name} is on {t.device}, inputs on {q.device}")
        Dp = 2 * D if lrpe_theta is not None else D
        if tuple(S.shape) != (B, H, Dp, v.shape[-1]):
            raise ValueError(f"additive_attention: initial_state S must have shape {(B, H, Dp, v.shape[-1])}, got {tuple(S.shape)}")
        if tuple(z.shape) != (B, H, D):
            raise ValueError(f"additive_attention: initial_state z must have shape {(B, H, D)}, got {tuple(z.shape)}")


def additive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: Optional[float] = None,
    key_padding_mask: Optional[torch.Tensor] = None,
    lrpe_theta: Optional[torch.Tensor] = None,
    initial_state: Optional[State] = None,
    output_final_state: bool = False,
    backend: str = "auto",
    check_finite: bool = False,
    q_activation: Optional[str] = None,
    recompute_state: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, State]]:
    """LightNet additive linear attention.

    Args:
        q: ``[B, N, H, D]`` queries.
        k: ``[B, N, H, D]`` raw key logits (normalised here by a softmax over tokens per channel;
            a cumulative one when ``causal``). The causal Triton path needs ``|k| < 1e30`` (its padding sentinel).
        v: ``[B, N, H, E]`` values.
        causal: prefix-only (LM) form; otherwise the single order-free scan.
        scale: output scale; ``None`` means 1 (the paper's normalised form).
        key_padding_mask: ``[B, N]`` bool, True marks padding tokens (excluded from normalisation and state).
        lrpe_theta: ``[N, D]`` MD-LRPE angles (cosine form) applied to q and the normalised keys.
        initial_state: ``(S [B, H, D', E], z [B, H, D])`` fp32 from a previous call (``D' = 2D`` with LRPE).
        output_final_state: also return the final state.
        backend: ``'auto'`` (Triton on CUDA when available, else reference), ``'torch'`` or ``'triton'``.
        check_finite: raise if q, k, v (or the initial state) hold NaN/inf (costs a reduction and a host sync; off
            by default). Eager only: skipped while ``torch.compile`` traces (the check branches on tensor values,
            which would break the graph), so run the model eagerly to use it.
        q_activation: ``'silu'``: the queries are ``silu(q)`` (LightNet's default query activation). The non-causal
            Triton kernels apply it as they load q and return the raw query's gradient, so no activated copy of q is
            written or kept for the backward; every other path applies ``F.silu`` first. ``None``: q as given.
        recompute_state: non-causal Triton path without ``initial_state``: the backward rebuilds the fp32 state
            ``S [B, H, D', E]`` from k and v instead of keeping it from the forward. Saves ``4 · D' · E`` bytes per
            (batch, head) of memory held between forward and backward, for one more pass over k and v in the
            backward (the gradients are the same up to the order of fp32 sums). Ignored by the other paths.

    Returns:
        ``o [B, N, H, E]`` in q's dtype, or ``(o, (S, z))`` with ``output_final_state=True``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"additive_attention: unknown backend {backend!r}; choose one of {BACKENDS}")
    check_query_activation(q_activation)
    _check_inputs(q, k, v, key_padding_mask, lrpe_theta, initial_state)
    if check_finite and not torch.compiler.is_compiling():
        named = [("q", q), ("k", k), ("v", v)]
        if initial_state is not None:
            named += [("initial_state S", initial_state[0]), ("initial_state z", initial_state[1])]
        for name, t in named:
            if not torch.isfinite(t).all():
                raise ValueError(f"additive_attention: {name} contains NaN or inf")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, numbers.Real)):
        raise TypeError(f"additive_attention: scale must be a number or None, got {type(scale).__name__}")
    scale = 1.0 if scale is None else float(scale)
    too_big = causal_too_wide_for_triton(causal, q.dtype, q.shape[-1], v.shape[-1], q.device.type)
    dtype_name = str(q.dtype).replace("torch.", "")
    if too_big and backend == "triton":
        raise ValueError(
            f"additive_attention: the causal Triton kernels need more shared memory than a GPU has for {dtype_name} "
            f"inputs with head dims D = {too_big}, E = {v.shape[-1]} (limits: fp32 D <= {CAUSAL_FP32_MAX_HEAD_DIM}; "
            f"fp16 D or E <= {CAUSAL_FP16_MAX_HEAD_DIM}); pass bf16 inputs or backend='torch'"
        )
    if too_big and backend == "auto":
        warnings.warn(
            f"additive_attention: {dtype_name} causal head dims D = {too_big}, E = {v.shape[-1]} are wider than the "
            f"causal Triton kernels launch with (fp32 D <= {CAUSAL_FP32_MAX_HEAD_DIM}, fp16 D or E <= "
            f"{CAUSAL_FP16_MAX_HEAD_DIM}; shared memory); using the PyTorch reference (slower). bf16 inputs (autocast) "
            "keep the Triton path.",
            stacklevel=2,
        )
    use_triton = backend == "triton" or (
        backend == "auto" and _triton_available(q) and not _needs_torch_autograd(lrpe_theta, initial_state)
        and not too_big
    )
    if use_triton:
        if not _triton_available(q) and not _interpreting():
            raise RuntimeError("additive_attention: backend='triton' needs CUDA tensors and triton installed")
        o, state = triton_attention(
            q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask, lrpe_theta=lrpe_theta,
            initial_state=initial_state, q_activation=q_activation, recompute_state=recompute_state,
        )
    else:
        if q_activation == "silu":
            q = F.silu(q)
        o, state = additive_attention_torch(
            q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask,
            lrpe_theta=lrpe_theta, initial_state=initial_state,
        )
    o = o.to(q.dtype)
    return (o, state) if output_final_state else o


def _contiguous_or_none(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.contiguous()


def triton_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, scale: float = 1.0,
    key_padding_mask: Optional[torch.Tensor] = None, lrpe_theta: Optional[torch.Tensor] = None,
    initial_state: Optional[State] = None, q_activation: Optional[str] = None, recompute_state: bool = False,
    launch: Optional[Union["NonCausalLaunch", "CausalLaunch"]] = None,
) -> Tuple[torch.Tensor, State]:
    """The Triton backend of :func:`additive_attention` (inputs already validated), with its semantics.

    Differentiable w.r.t. ``q``, ``k``, ``v`` and through the returned final state ``(S, z)`` (so chunked prefill can
    be trained end to end); a gradient w.r.t. ``initial_state`` or ``lrpe_theta`` raises ``RuntimeError`` (use the
    reference). fp64 and empty inputs are computed by the reference.

    Args:
        q, k: ``[B, N, H, D]``; v: ``[B, N, H, E]`` (fp16 / bf16 / fp32; k and v are cast to q's dtype).
        causal: cumulative (prefix) normalisation instead of the single order-free scan.
        scale: output scale.
        key_padding_mask: ``[B, N]`` bool, True = padding.
        lrpe_theta: ``[N, D]`` MD-LRPE angles.
        initial_state: ``(S [B, H, D', E], z [B, H, D])`` fp32.
        q_activation: ``'silu'`` to use ``silu(q)`` as the query: inside the non-causal kernels (no activated copy of
            q is kept for the backward), applied before the call on every other path; ``None`` for q as given.
        recompute_state: see :func:`additive_attention` (non-causal, without initial state).
        launch: launch parameters for experiments (eager calls only): a
            :class:`~lightnet.kernels.noncausal.NonCausalLaunch` for a non-causal call, a
            :class:`~lightnet.kernels.causal.CausalLaunch` for a causal one (the one-token decode kernel takes none);
            ``None``: the heuristics.

    Returns:
        ``(o [B, N, H, E] in q's dtype, (S [B, H, D', E] fp32, z [B, H, D] fp32))``.
    """
    check_query_activation(q_activation)
    if q.dtype == torch.float64 or q.shape[0] == 0 or q.shape[1] == 0:  # fp64 / empty batch / empty sequence
        if q_activation == "silu":
            q = F.silu(q)
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
    mask = _contiguous_or_none(key_padding_mask)
    theta = None if lrpe_theta is None else lrpe_theta.detach().to(torch.float32).contiguous()
    state = None
    if initial_state is not None:
        state = tuple(t.detach().to(torch.float32).contiguous() for t in initial_state)
    if not causal:
        from .noncausal import NonCausalLaunch, kernel_layout, noncausal_attention

        if launch is not None and not isinstance(launch, NonCausalLaunch):
            raise TypeError(f"triton_attention: a non-causal call takes a NonCausalLaunch, got {type(launch).__name__}")
        # the non-causal kernels take any batch / token strides (k, v sliced from a fused qkv projection are used in
        # place) and apply the query's SiLU themselves
        q, k, v = kernel_layout(q), kernel_layout(k.to(q.dtype)), kernel_layout(v.to(q.dtype))
        o, S, z = noncausal_attention(
            q, k, v, float(scale), mask, theta, state, q_silu=q_activation == "silu",
            recompute_state=recompute_state and state is None, launch=launch,
        )
        return o, (S, z)
    from .causal import CausalLaunch, causal_attention
    from .decode import causal_decode

    if launch is not None and not isinstance(launch, CausalLaunch):
        raise TypeError(f"triton_attention: a causal call takes a CausalLaunch, got {type(launch).__name__}")
    if q_activation == "silu":
        q = F.silu(q)
    q, k, v = q.contiguous(), k.to(q.dtype).contiguous(), v.to(q.dtype).contiguous()
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if q.shape[1] == 1 and not needs_grad:
        o, S, z = causal_decode(q, k, v, float(scale), mask, theta, state)
    else:
        o, S, z = causal_attention(q, k, v, float(scale), mask, theta, state, launch=launch)
    return o, (S, z)


# Largest head dims the causal Triton kernels launch with: an sm_90 block may use 232,448 B of shared memory. In
# fp32 every causal kernel fits at D = 64 (with or without MD-LRPE, up to E = 128) while D = 128 asks more than the
# limit (except without LRPE at E = 32, too close to the edge to rely on). bf16 halves the operand tiles and fits at
# every head dim. fp16 multiplies in tf32 (fp32 operand tiles): D = 128 fits up to E = 64, D = E = 128 does not; so
# fp16 needs D or E <= 64.
CAUSAL_FP32_MAX_HEAD_DIM = 64
CAUSAL_FP16_MAX_HEAD_DIM = 64


def causal_too_wide_for_triton(causal: bool, dtype: torch.dtype, D: int, E: int, device_type: str) -> int:
    """The head dim ``D`` when a causal call on ``device_type`` is wider than the causal Triton kernels can launch
    with — fp32 with ``D > CAUSAL_FP32_MAX_HEAD_DIM``, or fp16 with both ``D`` and ``E`` over
    ``CAUSAL_FP16_MAX_HEAD_DIM`` — else 0. ``backend='auto'`` then takes the PyTorch reference; ``backend='triton'``
    raises. The interpreter (CPU) has no such limit."""
    if causal and dtype == torch.float16 and device_type == "cuda":
        return D if min(D, E) > CAUSAL_FP16_MAX_HEAD_DIM else 0
    return causal_fp32_too_wide_for_triton(causal, dtype, D, device_type)


def causal_fp32_too_wide_for_triton(causal: bool, dtype: torch.dtype, D: int, device_type: str) -> int:
    """The head dim ``D`` when a causal call on ``device_type`` has fp32 inputs wider than the causal Triton kernels
    can launch with (``CAUSAL_FP32_MAX_HEAD_DIM``), else 0. ``backend='auto'`` then takes the PyTorch reference;
    ``backend='triton'`` raises. The interpreter (CPU) has no such limit."""
    if not causal or dtype != torch.float32 or device_type != "cuda":
        return 0
    return D if D > CAUSAL_FP32_MAX_HEAD_DIM else 0


def _needs_torch_autograd(lrpe_theta: Optional[torch.Tensor], initial_state: Optional[State]) -> bool:
    """The Triton path has no gradient for learnable LRPE angles or for the initial state; 'auto' then uses torch."""
    if not torch.is_grad_enabled():
        return False
    if lrpe_theta is not None and lrpe_theta.requires_grad:
        return True
    return initial_state is not None and any(t.requires_grad for t in initial_state)


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") == "1"
