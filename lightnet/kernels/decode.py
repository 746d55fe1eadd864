"""One causal decode step of the additive recurrence: a single fused Triton kernel per call.

Given the state ``(S [B, H, D', E], z [B, H, D])`` after ``t`` tokens and token ``t + 1``:
    z' = logaddexp(z, k);  S' = exp(z − z') S + exp(k − z') k̄-rotation vᵀ;  o = scale · q̄ S'
One program per (batch, head) reads the state once and writes the new one (no in-place update, so the caller's
state stays valid). Forward only: :func:`lightnet.kernels.api.triton_attention` uses it for one causal token when no
gradient is needed (the causal op otherwise). ``lightnet::causal_decode`` is the custom op ``torch.compile`` sees:

    lightnet::causal_decode(q, k, v, float scale, Tensor? mask, Tensor? theta, Tensor? S0, Tensor? z0)
        -> (o [B, 1, H, E], S [B, H, D', E], z [B, H, D])      # no autograd formula
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .triton_utils import (
    NEG_BIG, Launcher, contiguous_all, empty_output_and_state, initial_state_arg, load_rows, logaddexp, problem_shape,
    store_rows,
)

__all__ = ["decode_step", "causal_decode", "causal_decode_op"]


@triton.jit
def _decode_kernel(
    Q, K, V, O, THETA, MASK, S0, Z0, S1, Z1, H, D, E, stride_qb, stride_vb, scale,
    BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr,
    HAS_INIT: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    b = pid_bh // H
    h = pid_bh % H
    DP = 2 * D if HAS_LRPE else D
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    dmask = offs_d < D
    emask = offs_e < E
    q = tl.load(Q + b.to(tl.int64) * stride_qb + h * D + offs_d, mask=dmask, other=0.0).to(tl.float32)
    k = tl.load(K + b.to(tl.int64) * stride_qb + h * D + offs_d, mask=dmask, other=0.0).to(tl.float32)
    v = tl.load(V + b.to(tl.int64) * stride_vb + h * E + offs_e, mask=emask, other=0.0).to(tl.float32)
    keep = True
    if HAS_MASK:
        keep = tl.load(MASK + b) == 0
    k = tl.where(keep, k, NEG_BIG)
    s_base = pid_bh.to(tl.int64) * DP * E
    if HAS_INIT:
        z = tl.maximum(tl.load(Z0 + pid_bh.to(tl.int64) * D + offs_d, mask=dmask, other=NEG_BIG), NEG_BIG)
        Sc = load_rows(S0 + s_base, offs_d, offs_e, E, dmask, E, 0.0)
        if HAS_LRPE:
            Ss = load_rows(S0 + s_base + D * E, offs_d, offs_e, E, dmask, E, 0.0)
        else:
            Ss = Sc
    else:
        z = tl.full([BLOCK_D], NEG_BIG, tl.float32)
        Sc = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
        Ss = Sc
    z_new = logaddexp(z, k)
    a = tl.exp(z - z_new)
    w = tl.where(keep, tl.exp(k - z_new), 0.0)
    if HAS_LRPE:
        th = tl.load(THETA + offs_d, mask=dmask, other=0.0)
        c = tl.cos(th)
        s = tl.sin(th)
        Sc = a[:, None] * Sc + (w * c)[:, None] * v[None, :]
        Ss = a[:, None] * Ss + (w * s)[:, None] * v[None, :]
        o = tl.sum((q * c)[:, None] * Sc, 0) + tl.sum((q * s)[:, None] * Ss, 0)
        store_rows(S1 + s_base + D * E, Ss, offs_d, offs_e, E, dmask, E)
    else:
        Sc = a[:, None] * Sc + w[:, None] * v[None, :]
        o = tl.sum(q[:, None] * Sc, 0)
    store_rows(S1 + s_base, Sc, offs_d, offs_e, E, dmask, E)
    tl.store(Z1 + pid_bh.to(tl.int64) * D + offs_d, z_new, mask=dmask)
    tl.store(O + b.to(tl.int64) * stride_vb + h * E + offs_e, (o * scale).to(O.dtype.element_ty), mask=emask)


_LAUNCH = {"_decode_kernel": Launcher(_decode_kernel)}


def decode_step(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, key_padding_mask: Optional[torch.Tensor],
    lrpe_theta: Optional[torch.Tensor], initial_state: Optional[Tuple[torch.Tensor, torch.Tensor]],
) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """One token: ``q, k [B, 1, H, D]``, ``v [B, 1, H, E]`` (contiguous) → ``(o [B, 1, H, E], (S', z'))``."""
    B, N, H, D, E, lrpe, DP, BD, BE, mask, theta = problem_shape(q, v, key_padding_mask, lrpe_theta)
    if N != 1:
        raise ValueError(f"decode_step: expects one token, got N = {N}")
    o = torch.empty((B, 1, H, E), device=q.device, dtype=q.dtype)
    S1 = torch.empty((B, H, DP, E), device=q.device, dtype=torch.float32)
    z1 = torch.empty((B, H, D), device=q.device, dtype=torch.float32)
    S0, z0 = initial_state if initial_state is not None else (S1, z1)
    _LAUNCH["_decode_kernel"][(B * H,)](
        q, k, v, o, theta, mask, S0, z0, S1, z1, H, D, E, q.stride(0), v.stride(0), scale,
        BLOCK_D=BD, BLOCK_E=BE, HAS_LRPE=lrpe, HAS_MASK=key_padding_mask is not None,
        HAS_INIT=initial_state is not None, num_warps=4 if BD * BE * (2 if lrpe else 1) <= 8192 else 8,
    )
    return o, (S1, z1)


def _decode_impl(
    q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Optional[Tensor], theta: Optional[Tensor],
    S0: Optional[Tensor], z0: Optional[Tensor],
) -> Tuple[Tensor, Tensor, Tensor]:
    """One decoding step (``N = 1``): ``(o [B, 1, H, E], S, z)``; forward only."""
    q, k, v, mask, theta, S0, z0 = contiguous_all(q, k, v, mask, theta, S0, z0)
    o, (S, z) = decode_step(q, k, v, scale, mask, theta, initial_state_arg(S0, z0))
    return o, S, z


causal_decode_op = torch.library.custom_op("lightnet::causal_decode", _decode_impl, mutates_args=())


@causal_decode_op.register_fake
def _decode_fake(q, k, v, scale, mask, theta, S0, z0):
    return empty_output_and_state(q, v, theta)


def causal_decode(
    q: Tensor, k: Tensor, v: Tensor, scale: float, key_padding_mask: Optional[Tensor], lrpe_theta: Optional[Tensor],
    initial_state: Optional[Tuple[Tensor, Tensor]],
) -> Tuple[Tensor, Tensor, Tensor]:
    """One causal token, no gradient: ``(o [B, 1, H, E], S [B, H, D', E] fp32, z [B, H, D] fp32)`` — the custom op
    while ``torch.compile`` traces, the same implementation called directly in eager mode."""
    S0, z0 = initial_state if initial_state is not None else (None, None)
    fn = causal_decode_op if torch.compiler.is_compiling() else _decode_impl
    return fn(q, k, v, scale, key_padding_mask, lrpe_theta, S0, z0)
