"""Short non-causal sequences as two half-precision GEMMs, written for ``torch.compile`` to fuse.

The single order-free scan is ``S = softmax_N(k)ᵀ V`` and ``o = scale · q S`` (with MD-LRPE: q and the normalised keys
widened to cos | sin halves). At a few hundred tokens those are two small batched GEMMs per (image, head) around a
softmax and four products, which inductor fuses into a few elementwise / reduction kernels and two cuBLAS calls; the
Triton kernels instead walk the token blocks of each (image, head) serially in one program. Which is faster at which
length is measured by ``benchmarks/bench_short_noncausal.py``; the dispatch uses this form only when
``TUNING["nc_gemm_max_tokens"]`` allows it (:func:`lightnet.kernels.triton_ops.additive_attention_triton`). Run J7
(H200, bf16, 6 heads × 64, MD-LRPE, compiled forward + backward) found it slower than the Triton kernels with the
cos / sin table at every models' shape — 0.64× at 128 × 196 tokens, 0.53× at 256 × 256, 0.91× at 32 × 1024, 0.48× at
8 × 4096 — so it stays off by default (kept as the measured alternative and for GPUs where it may win).

Numerics: the softmax and the LRPE products run in fp32; the GEMM operands are cast to the input dtype (bf16 / fp16
under autocast: the normalised keys lose their low bits, as the Triton kernels' bf16 tiles do), S is produced in that
dtype, and the returned state is S in fp32.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .reference import _PAD_LOGIT, State

__all__ = ["noncausal_attention_gemm"]


def _widen(x: torch.Tensor, cos: Optional[torch.Tensor], sin: Optional[torch.Tensor]) -> torch.Tensor:
    """``[B, N, H, D]`` → ``[B, N, H, 2D]`` (``x cos θ | x sin θ``) with MD-LRPE, else ``x``."""
    return x if cos is None else torch.cat([x * cos, x * sin], dim=-1)


def noncausal_attention_gemm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float = 1.0,
    key_padding_mask: Optional[torch.Tensor] = None,
    lrpe_theta: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, State]:
    """Non-causal additive attention as two GEMMs (no initial state; no validation: reached through
    :func:`lightnet.kernels.additive_attention`, which checks the inputs).

    Args:
        q, k: ``[B, N, H, D]``; v: ``[B, N, H, E]`` (same floating dtype).
        key_padding_mask: ``[B, N]`` bool, True = padding (no weight, no part in the normaliser).
        lrpe_theta: ``[N, D]`` MD-LRPE angles.

    Returns:
        ``(o [B, N, H, E] in q's dtype, (S [B, H, D', E] fp32, z [B, H, D] fp32))``.
    """
    logits = k.float()
    if key_padding_mask is not None:  # the reference's finite padding logit: no NaN even when all tokens are padding
        pad = key_padding_mask[:, :, None, None]
        logits = logits.masked_fill(pad, _PAD_LOGIT)
    z = torch.logsumexp(logits, dim=1)  # [B, H, D]
    w = torch.exp(logits - z[:, None])  # softmax over tokens
    if key_padding_mask is not None:
        w = w.masked_fill(pad, 0.0)
    cos = sin = None
    if lrpe_theta is not None:
        theta = lrpe_theta.float()[None, :, None, :]
        cos, sin = torch.cos(theta), torch.sin(theta)
    gemm_dtype = v.dtype
    w = _widen(w, cos, sin).to(gemm_dtype)
    qw = _widen(q.float(), cos, sin).to(gemm_dtype)
    S = torch.einsum("bnhd,bnhe->bhde", w, v)  # [B, H, D', E]
    o = torch.einsum("bnhd,bhde->bnhe", qw, S)
    if scale != 1.0:
        o = o * scale
    return o.to(q.dtype), (S.float(), z)
