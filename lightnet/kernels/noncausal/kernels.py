"""Triton kernels of the non-causal (single-scan) additive attention, forward and backward.

Per (batch, head):  k̂ = softmax over tokens of k (per channel),  S = k̂ᵀ V  ``[D', E]``,  o_n = scale · q̄_n S,
with the cosine MD-LRPE (``q̄ = [q cos θ, q sin θ]``, ``k̄ = [k̂ cos θ, k̂ sin θ]``, ``D' = 2D``) applied in
registers from the ``[N, D]`` angle table: read as a precomputed ``[N, 2D]`` cos | sin table for ``D <= 64``,
as the angles (cos and sin computed in every tile) for wider heads, whose table tiles would not fit shared memory.

Work split: the tokens of every (batch, head) are cut into ``splits`` contiguous ranges, one program per range.
    forward   pass 1  online max / sum of exp(k) and Σ exp(k − m) vᵀ per range → partial states
              merge   partial states (and the initial state) → normalised ``S``, log-normaliser ``z``
              pass 2  o = scale · q̄ S
    backward  pass 1  dq = scale · dO S̄ᵀ (folded back through the rotation), partial dS = Σ q̄ᵀ dO
              (sum)   dS = scale · Σ partials + dS_out
              pass 2  dv = k̄ dS, dk = k̂ ⊙ (fold(v dSᵀ) + g_z), g_z = dz_out − fold(rowsum(S ⊙ dS))
With ``splits == 1`` (short sequences, many heads) each direction is one fused kernel; with few ranges the output
and dk / dv passes merge the partials themselves (``MAX_INLINE_PARTIALS``). Launch parameters come from heuristics
by shape (:func:`_launch_config`, :func:`choose_splits`) unless a :class:`NonCausalLaunch` sets them.
The query activation can be applied in the kernels (``q_silu``: q is the raw query, the passes that read q use
``silu(q)`` and dq is the raw query's gradient), so no activated copy of q is written or kept for the backward.
Bytes moved: forward reads k, v, q and writes o; backward reads q, dO, k, v and writes dq, dk, dv (11 tensor
passes against the 8 of the floor), plus the small fp32 states.
Layouts: q, k, v (and dO) are read in place with their own batch / token strides as long as the last dim is
contiguous and the head stride equals the last-dim size (e.g. k, v sliced from a fused ``[B, N, 3, H, D]`` qkv
projection); other layouts are copied first (:func:`kernel_layout`). o, dq, dk, dv are written contiguous.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import triton
import triton.language as tl

from ..triton_utils import (
    DOT_BF16, DOT_TF32, NEG_BIG, Launcher, block_size, cdiv, dot_mode, interpreting, load_keep, load_rows, load_state,
    mm, num_sms, problem_shape, store_rows, store_state,
)

__all__ = [
    "NonCausalLaunch", "noncausal_forward", "noncausal_backward", "noncausal_state", "choose_splits",
    "kernel_layout", "in_kernel_layout",
]

# Up to this many ranges per (batch, head), the output pass merges the partial states itself and the dk/dv pass
# sums the partial state gradients itself (each reads them from L2); beyond it one extra launch does that.
MAX_INLINE_PARTIALS = 8


# ----------------------------------------------------------------------------------------------------------------
# device helpers


@triton.jit
def _cos_sin(THETA, rows, offs_d, D, valid, TRIG: tl.constexpr):
    """``(cos θ, sin θ)`` tiles ``[BLOCK_N, BLOCK_D]`` of rows ``rows``: computed from the angle table ``[N, D]``, or
    with ``TRIG`` loaded from a precomputed ``[N, 2D]`` table (cos | sin; :func:`trig_table`). Padded entries are
    never stored (q / k / their gradients are masked there), so their values do not matter."""
    if TRIG:
        c = load_rows(THETA, rows, offs_d, 2 * D, valid, D, 0.0)
        s = load_rows(THETA + D, rows, offs_d, 2 * D, valid, D, 0.0)
    else:
        th = load_rows(THETA, rows, offs_d, D, valid, D, 0.0)
        c = tl.cos(th)
        s = tl.sin(th)
    return c, s


@triton.jit
def _accumulate_state(
    K, V, THETA, MASK, k_base, v_base, mask_base, start, end, stride_kn, stride_vn, D, E,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, TRIG: tl.constexpr,
):
    """Max / sum / state over tokens ``[start, end)``: returns ``(m [BD], l [BD], Sc, Ss [BD, BE])``.

    ``Sc`` (and ``Ss`` with LRPE) hold ``Σ exp(k − m) (cos θ | sin θ) vᵀ`` relative to the max ``m``, found with an
    online max in one sweep (the state is rescaled by ``exp(m_old − m_new)`` whenever a tile raises it).
    """
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    Sc = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
    Ss = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
    m = tl.full([BLOCK_D], NEG_BIG, tl.float32)
    l = tl.zeros([BLOCK_D], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        rows = n0 + offs_n
        valid = rows < end
        keep = load_keep(MASK, mask_base, rows, valid, HAS_MASK)
        kb = load_rows(K + k_base, rows, offs_d, stride_kn, valid, D, 0.0)
        kb = tl.where(keep[:, None], kb, NEG_BIG)
        m_new = tl.maximum(m, tl.max(kb, 0))
        alpha = tl.exp(m - m_new)
        p = tl.where(keep[:, None], tl.exp(kb - m_new[None, :]), 0.0)
        l = l * alpha + tl.sum(p, 0)
        vb = load_rows(V + v_base, rows, offs_e, stride_vn, valid, E, 0.0)
        if HAS_LRPE:
            c, sn = _cos_sin(THETA, rows, offs_d, D, valid, TRIG)
            Sc = Sc * alpha[:, None] + mm(tl.trans(p * c), vb, DOT)
            Ss = Ss * alpha[:, None] + mm(tl.trans(p * sn), vb, DOT)
        else:
            Sc = Sc * alpha[:, None] + mm(tl.trans(p), vb, DOT)
        m = m_new
    return m, l, Sc, Ss


@triton.jit
def _finalise(m, l, Sc, Ss, z0, S0c, S0s, HAS_INIT: tl.constexpr):
    """Merge the initial state ``(S0, z0)`` into ``(m, l, S)`` and normalise: returns ``(z, Sc, Ss)``."""
    if HAS_INIT:
        m_new = tl.maximum(m, z0)
        a = tl.exp(m - m_new)
        b = tl.exp(z0 - m_new)
        l = l * a + b
        Sc = Sc * a[:, None] + S0c * b[:, None]
        Ss = Ss * a[:, None] + S0s * b[:, None]
        m = m_new
    inv = tl.where(l > 0, 1.0 / l, 0.0)
    z = tl.where(l > 0, m + tl.log(l), m)
    return z, Sc * inv[:, None], Ss * inv[:, None]


@triton.jit
def _finalise_with_initial(
    m, l, Sc, Ss, S0, Z0, pid_bh, D, E,
    BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, HAS_LRPE: tl.constexpr, HAS_INIT: tl.constexpr,
):
    """``_finalise`` with the initial state of (batch, head) ``pid_bh`` read from ``S0 [BH, D', E]`` / ``Z0 [BH, D]``."""
    offs_d = tl.arange(0, BLOCK_D)
    DP = 2 * D if HAS_LRPE else D
    z0 = tl.zeros([BLOCK_D], tl.float32)
    S0c = Sc
    S0s = Ss
    if HAS_INIT:
        z0 = tl.maximum(tl.load(Z0 + pid_bh.to(tl.int64) * D + offs_d, mask=offs_d < D, other=NEG_BIG), NEG_BIG)
        S0c, S0s = load_state(S0, pid_bh.to(tl.int64) * DP * E, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
    return _finalise(m, l, Sc, Ss, z0, S0c, S0s, HAS_INIT)


@triton.jit
def _merge_partials(
    PM, PL, PS, S0, Z0, pid_bh, splits, D, E,
    BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, HAS_LRPE: tl.constexpr, HAS_INIT: tl.constexpr,
):
    """Merge the ``splits`` partial states of one (batch, head) (and the initial state): ``(z [BD], Sc, Ss)``.

    Partial s holds ``(m_s [D], l_s [D], S_s [D', E])`` relative to its own max; a running max keeps every factor
    ``exp(· − m) ≤ 1``. Reads ``splits`` fp32 states (from L2): used when ``splits`` is small.
    """
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    DP = 2 * D if HAS_LRPE else D
    base = pid_bh.to(tl.int64) * splits
    m = tl.full([BLOCK_D], NEG_BIG, tl.float32)
    l = tl.zeros([BLOCK_D], tl.float32)
    Sc = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
    Ss = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
    for s in range(0, splits):
        pm = tl.load(PM + (base + s) * D + offs_d, mask=dmask, other=NEG_BIG)
        pl = tl.load(PL + (base + s) * D + offs_d, mask=dmask, other=0.0)
        m_new = tl.maximum(m, pm)
        a = tl.exp(m - m_new)
        b = tl.exp(pm - m_new)
        Pc, Ps = load_state(PS, (base + s) * DP * E, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        l = l * a + pl * b
        Sc = Sc * a[:, None] + Pc * b[:, None]
        if HAS_LRPE:
            Ss = Ss * a[:, None] + Ps * b[:, None]
        m = m_new
    return _finalise_with_initial(m, l, Sc, Ss, S0, Z0, pid_bh, D, E, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_INIT)


@triton.jit
def _output_loop(
    Q, O, THETA, q_base, o_base, start, end, stride_qn, stride_on, D, E, Sc, Ss, scale,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, DOT: tl.constexpr, TRIG: tl.constexpr, Q_SILU: tl.constexpr,
):
    """o = scale · q̄ S for tokens ``[start, end)`` (``Q_SILU``: q is the raw query and ``silu(q)`` is used)."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    for n0 in range(start, end, BLOCK_N):
        rows = n0 + offs_n
        valid = rows < end
        qb = load_rows(Q + q_base, rows, offs_d, stride_qn, valid, D, 0.0)
        if Q_SILU:
            qb = qb * tl.sigmoid(qb)
        if HAS_LRPE:
            c, sn = _cos_sin(THETA, rows, offs_d, D, valid, TRIG)
            o = mm(qb * c, Sc, DOT) + mm(qb * sn, Ss, DOT)
        else:
            o = mm(qb, Sc, DOT)
        store_rows(O + o_base, o * scale, rows, offs_e, stride_on, valid, E)


# ----------------------------------------------------------------------------------------------------------------
# forward kernels


@triton.jit
def _nc_fwd_kernel(
    Q, K, V, O, THETA, MASK, S0, Z0, PM, PL, PS, S_OUT, Z_OUT,
    N, H, D, E, stride_qb, stride_qn, stride_kb, stride_kn, stride_vb, stride_vn, stride_ob, stride_on,
    tokens_per_split, splits, scale,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, HAS_INIT: tl.constexpr, FUSED: tl.constexpr,
    DOT: tl.constexpr, TRIG: tl.constexpr, OUTPUT: tl.constexpr, Q_SILU: tl.constexpr,
):
    """Pass 1 over one token range; with ``FUSED`` (one range) also the merge and (``OUTPUT``) pass 2.

    Each of q, k, v, o has its own batch / token strides (head stride = its last-dim size, last dim contiguous).
    """
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    k_base = b.to(tl.int64) * stride_kb + h * D
    v_base = b.to(tl.int64) * stride_vb + h * E
    mask_base = b.to(tl.int64) * N
    start = pid_s * tokens_per_split
    end = tl.minimum(start + tokens_per_split, N)
    m, l, Sc, Ss = _accumulate_state(
        K, V, THETA, MASK, k_base, v_base, mask_base, start, end, stride_kn, stride_vn, D, E,
        BLOCK_N, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, TRIG,
    )
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    DP = 2 * D if HAS_LRPE else D
    if FUSED:
        z, Sc, Ss = _finalise_with_initial(m, l, Sc, Ss, S0, Z0, pid_bh, D, E, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_INIT)
        tl.store(Z_OUT + pid_bh.to(tl.int64) * D + offs_d, z, mask=dmask)
        store_state(S_OUT, pid_bh.to(tl.int64) * DP * E, Sc, Ss, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        if OUTPUT:
            _output_loop(
                Q, O, THETA, b.to(tl.int64) * stride_qb + h * D, b.to(tl.int64) * stride_ob + h * E, 0, N,
                stride_qn, stride_on, D, E, Sc, Ss, scale, BLOCK_N, BLOCK_D, BLOCK_E, HAS_LRPE, DOT, TRIG, Q_SILU,
            )
    else:
        part = pid_bh.to(tl.int64) * splits + pid_s
        tl.store(PM + part * D + offs_d, m, mask=dmask)
        tl.store(PL + part * D + offs_d, l, mask=dmask)
        store_state(PS, part * DP * E, Sc, Ss, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)


@triton.jit
def _nc_merge_kernel(
    PM, PL, PS, S0, Z0, S_OUT, Z_OUT, D, E, X, splits,
    BLOCK_S: tl.constexpr, BLOCK_X: tl.constexpr, HAS_INIT: tl.constexpr,
):
    """Merge the per-range partial states of one (batch, head) into ``(S, z)``.

    One program owns ``BLOCK_X`` elements of the flattened ``[D', E]`` state (row r uses channel ``r % D``) and
    reads the partials ``BLOCK_S`` ranges at a time, so many loads are in flight even with hundreds of ranges.
    """
    pid_bh = tl.program_id(0)
    pid_x = tl.program_id(1)
    offs_x = pid_x * BLOCK_X + tl.arange(0, BLOCK_X)
    xmask = offs_x < X
    ch = (offs_x // E) % D
    zrow = (offs_x % E == 0) & (offs_x // E < D) & xmask
    offs_s = tl.arange(0, BLOCK_S)
    base = pid_bh.to(tl.int64) * splits
    m = tl.full([BLOCK_X], NEG_BIG, tl.float32)
    for s0 in range(0, splits, BLOCK_S):
        ss = s0 + offs_s
        m2 = (ss < splits)[:, None] & xmask[None, :]
        pm = tl.load(PM + (base + ss)[:, None] * D + ch[None, :], mask=m2, other=NEG_BIG)
        m = tl.maximum(m, tl.max(pm, 0))
    if HAS_INIT:
        z0 = tl.maximum(tl.load(Z0 + pid_bh.to(tl.int64) * D + ch, mask=xmask, other=NEG_BIG), NEG_BIG)
        m = tl.maximum(m, z0)
    l = tl.zeros([BLOCK_X], tl.float32)
    acc = tl.zeros([BLOCK_X], tl.float32)
    for s0 in range(0, splits, BLOCK_S):
        ss = s0 + offs_s
        m2 = (ss < splits)[:, None] & xmask[None, :]
        a = tl.exp(tl.load(PM + (base + ss)[:, None] * D + ch[None, :], mask=m2, other=NEG_BIG) - m[None, :])
        a = tl.where(m2, a, 0.0)
        l += tl.sum(a * tl.load(PL + (base + ss)[:, None] * D + ch[None, :], mask=m2, other=0.0), 0)
        acc += tl.sum(a * tl.load(PS + (base + ss)[:, None] * X + offs_x[None, :], mask=m2, other=0.0), 0)
    if HAS_INIT:
        b0 = tl.exp(z0 - m)
        l += b0
        acc += b0 * tl.load(S0 + pid_bh.to(tl.int64) * X + offs_x, mask=xmask, other=0.0)
    inv = tl.where(l > 0, 1.0 / l, 0.0)
    tl.store(S_OUT + pid_bh.to(tl.int64) * X + offs_x, acc * inv, mask=xmask)
    tl.store(Z_OUT + pid_bh.to(tl.int64) * D + ch, tl.where(l > 0, m + tl.log(l), m), mask=zrow)


@triton.jit
def _nc_out_kernel(
    Q, O, THETA, S, PM, PL, PS, S0, Z0, Z_OUT, N, H, D, E, stride_qb, stride_qn, stride_ob, stride_on,
    tokens_per_split, splits, scale,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, HAS_LRPE: tl.constexpr,
    HAS_INIT: tl.constexpr, MERGE: tl.constexpr, DOT: tl.constexpr, TRIG: tl.constexpr, Q_SILU: tl.constexpr,
):
    """Pass 2 over one token range: o = scale · q̄ S.

    With ``MERGE`` the program first merges the partial states itself (few ranges) and the first range of each
    (batch, head) writes the final ``(S, z)``; otherwise ``S`` was written by ``_nc_merge_kernel``.
    """
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    DP = 2 * D if HAS_LRPE else D
    if MERGE:
        z, Sc, Ss = _merge_partials(PM, PL, PS, S0, Z0, pid_bh, splits, D, E, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_INIT)
        if pid_s == 0:
            offs_d = tl.arange(0, BLOCK_D)
            tl.store(Z_OUT + pid_bh.to(tl.int64) * D + offs_d, z, mask=offs_d < D)
            store_state(S, pid_bh.to(tl.int64) * DP * E, Sc, Ss, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
    else:
        Sc, Ss = load_state(S, pid_bh.to(tl.int64) * DP * E, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
    start = pid_s * tokens_per_split
    end = tl.minimum(start + tokens_per_split, N)
    _output_loop(
        Q, O, THETA, b.to(tl.int64) * stride_qb + h * D, b.to(tl.int64) * stride_ob + h * E, start, end,
        stride_qn, stride_on, D, E, Sc, Ss, scale, BLOCK_N, BLOCK_D, BLOCK_E, HAS_LRPE, DOT, TRIG, Q_SILU,
    )


# ----------------------------------------------------------------------------------------------------------------
# backward kernels


@triton.jit
def _dq_loop(
    Q, DO, DQ, THETA, q_base, do_base, dq_base, start, end, stride_qn, stride_don, stride_dqn, D, E, Sc, Ss, scale,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, HAS_LRPE: tl.constexpr, DOT: tl.constexpr,
    TRIG: tl.constexpr, Q_SILU: tl.constexpr,
):
    """dq = scale · fold(dO Sᵀ) over ``[start, end)``; returns the unscaled partial ``Σ q̄ᵀ dO`` (cos, sin).

    ``Q_SILU``: ``Q`` holds the raw query, the forward used ``a = silu(q)``; the partials use ``a`` and the stored
    gradient is the raw query's, ``dq = da · σ(q) (1 + q (1 − σ(q)))``."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    dSc = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
    dSs = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        rows = n0 + offs_n
        valid = rows < end
        qb = load_rows(Q + q_base, rows, offs_d, stride_qn, valid, D, 0.0)
        dob = load_rows(DO + do_base, rows, offs_e, stride_don, valid, E, 0.0)
        if Q_SILU:
            sig = tl.sigmoid(qb)
            act_grad = sig * (1.0 + qb * (1.0 - sig))
            qb = qb * sig
        if HAS_LRPE:
            c, s = _cos_sin(THETA, rows, offs_d, D, valid, TRIG)
            dq = c * mm(dob, tl.trans(Sc), DOT) + s * mm(dob, tl.trans(Ss), DOT)
            dSc += mm(tl.trans(qb * c), dob, DOT)
            dSs += mm(tl.trans(qb * s), dob, DOT)
        else:
            dq = mm(dob, tl.trans(Sc), DOT)
            dSc += mm(tl.trans(qb), dob, DOT)
        if Q_SILU:
            dq = dq * act_grad
        store_rows(DQ + dq_base, dq * scale, rows, offs_d, stride_dqn, valid, D)
    return dSc, dSs


@triton.jit
def _dkdv_loop(
    K, V, DK, DV, THETA, MASK, k_base, v_base, dk_base, dv_base, mask_base, start, end,
    stride_kn, stride_vn, stride_dkn, stride_dvn, D, E, z, gz, dSc, dSs,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, TRIG: tl.constexpr,
):
    """dv = k̄ dS and dk = k̂ ⊙ (fold(v dSᵀ) + g_z) over ``[start, end)``."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    for n0 in range(start, end, BLOCK_N):
        rows = n0 + offs_n
        valid = rows < end
        keep = load_keep(MASK, mask_base, rows, valid, HAS_MASK)
        kb = load_rows(K + k_base, rows, offs_d, stride_kn, valid, D, 0.0)
        w = tl.where(keep[:, None], tl.exp(tl.minimum(kb - z[None, :], 0.0)), 0.0)
        vb = load_rows(V + v_base, rows, offs_e, stride_vn, valid, E, 0.0)
        if HAS_LRPE:
            c, s = _cos_sin(THETA, rows, offs_d, D, valid, TRIG)
            dv = mm(w * c, dSc, DOT) + mm(w * s, dSs, DOT)
            dw = c * mm(vb, tl.trans(dSc), DOT) + s * mm(vb, tl.trans(dSs), DOT)
        else:
            dv = mm(w, dSc, DOT)
            dw = mm(vb, tl.trans(dSc), DOT)
        dk = w * (dw + gz[None, :])
        store_rows(DK + dk_base, dk, rows, offs_d, stride_dkn, valid, D)
        store_rows(DV + dv_base, dv, rows, offs_e, stride_dvn, valid, E)


@triton.jit
def _total_state_grad(dSc, dSs, DS_OUT, s_base, scale, D, E, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
                      HAS_LRPE: tl.constexpr, HAS_DS: tl.constexpr):
    """Full gradient of the final state: ``scale · Σ q̄ᵀ dO`` (given unscaled) plus the caller's ``dS_out``."""
    dSc = dSc * scale
    dSs = dSs * scale
    if HAS_DS:
        dS0c, dS0s = load_state(DS_OUT, s_base, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        dSc += dS0c
        dSs += dS0s
    return dSc, dSs


@triton.jit
def _z_gradient(Sc, Ss, dSc, dSs, DZ_OUT, pid_bh, D, BLOCK_D: tl.constexpr, HAS_LRPE: tl.constexpr,
                HAS_DZ: tl.constexpr):
    """Total gradient reaching the log-normaliser: ``g_z = dz_out − fold(rowsum(S ⊙ dS))``."""
    gz = -tl.sum(Sc * dSc, 1)
    if HAS_LRPE:
        gz -= tl.sum(Ss * dSs, 1)
    if HAS_DZ:
        offs_d = tl.arange(0, BLOCK_D)
        gz += tl.load(DZ_OUT + pid_bh.to(tl.int64) * D + offs_d, mask=offs_d < D, other=0.0)
    return gz


@triton.jit
def _nc_bwd_dq_kernel(
    Q, K, V, DO, DQ, DK, DV, THETA, MASK, S, Z, DS_OUT, DZ_OUT, PDS,
    N, H, D, E, stride_qb, stride_qn, stride_kb, stride_kn, stride_vb, stride_vn, stride_dob, stride_don,
    stride_gkb, stride_gkn, stride_gvb, stride_gvn, tokens_per_split, splits, scale,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, HAS_DS: tl.constexpr, HAS_DZ: tl.constexpr,
    FUSED: tl.constexpr, DOT: tl.constexpr, TRIG: tl.constexpr, Q_SILU: tl.constexpr,
):
    """Backward pass 1 over one token range; with ``FUSED`` (one range) also pass 2.

    q, k, v, dO have their own batch / token strides; ``stride_gk*`` are those of DQ and DK (both fresh
    ``[B, N, H, D]`` tensors of one layout), ``stride_gv*`` those of DV.
    """
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    DP = 2 * D if HAS_LRPE else D
    q_base = b.to(tl.int64) * stride_qb + h * D
    do_base = b.to(tl.int64) * stride_dob + h * E
    gk_base = b.to(tl.int64) * stride_gkb + h * D
    gv_base = b.to(tl.int64) * stride_gvb + h * E
    s_base = pid_bh.to(tl.int64) * DP * E
    Sc, Ss = load_state(S, s_base, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
    start = pid_s * tokens_per_split
    end = tl.minimum(start + tokens_per_split, N)
    dSc, dSs = _dq_loop(
        Q, DO, DQ, THETA, q_base, do_base, gk_base, start, end, stride_qn, stride_don, stride_gkn, D, E,
        Sc, Ss, scale, BLOCK_N, BLOCK_D, BLOCK_E, HAS_LRPE, DOT, TRIG, Q_SILU,
    )
    if FUSED:
        dSc, dSs = _total_state_grad(dSc, dSs, DS_OUT, s_base, scale, D, E, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_DS)
        gz = _z_gradient(Sc, Ss, dSc, dSs, DZ_OUT, pid_bh, D, BLOCK_D, HAS_LRPE, HAS_DZ)
        offs_d = tl.arange(0, BLOCK_D)
        z = tl.load(Z + pid_bh.to(tl.int64) * D + offs_d, mask=offs_d < D, other=0.0)
        _dkdv_loop(
            K, V, DK, DV, THETA, MASK, b.to(tl.int64) * stride_kb + h * D, b.to(tl.int64) * stride_vb + h * E,
            gk_base, gv_base, b.to(tl.int64) * N, 0, N, stride_kn, stride_vn, stride_gkn, stride_gvn, D, E,
            z, gz, dSc, dSs, BLOCK_N, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, TRIG,
        )
    else:
        part = pid_bh.to(tl.int64) * splits + pid_s
        store_state(PDS, part * DP * E, dSc, dSs, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)


@triton.jit
def _nc_bwd_dkdv_kernel(
    K, V, DK, DV, THETA, MASK, S, Z, DS, PDS, DS_OUT, DZ_OUT,
    N, H, D, E, stride_kb, stride_kn, stride_vb, stride_vn, stride_dkb, stride_dkn, stride_dvb, stride_dvn,
    tokens_per_split, splits, scale,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, HAS_DS: tl.constexpr, HAS_DZ: tl.constexpr,
    SUM_PARTIALS: tl.constexpr, DOT: tl.constexpr, TRIG: tl.constexpr,
):
    """Backward pass 2 over one token range.

    ``SUM_PARTIALS``: the program sums the per-range partials ``PDS`` itself (few ranges):
    ``dS = scale · Σ_s PDS_s + dS_out``; otherwise ``DS`` holds that sum already.
    """
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    DP = 2 * D if HAS_LRPE else D
    s_base = pid_bh.to(tl.int64) * DP * E
    Sc, Ss = load_state(S, s_base, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
    if SUM_PARTIALS:
        dSc = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
        dSs = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
        for s in range(0, splits):
            Pc, Ps = load_state(PDS, (pid_bh.to(tl.int64) * splits + s) * DP * E, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
            dSc += Pc
            if HAS_LRPE:
                dSs += Ps
        dSc, dSs = _total_state_grad(dSc, dSs, DS_OUT, s_base, scale, D, E, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_DS)
    else:
        dSc, dSs = load_state(DS, s_base, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
    gz = _z_gradient(Sc, Ss, dSc, dSs, DZ_OUT, pid_bh, D, BLOCK_D, HAS_LRPE, HAS_DZ)
    offs_d = tl.arange(0, BLOCK_D)
    z = tl.load(Z + pid_bh.to(tl.int64) * D + offs_d, mask=offs_d < D, other=0.0)
    start = pid_s * tokens_per_split
    end = tl.minimum(start + tokens_per_split, N)
    _dkdv_loop(
        K, V, DK, DV, THETA, MASK, b.to(tl.int64) * stride_kb + h * D, b.to(tl.int64) * stride_vb + h * E,
        b.to(tl.int64) * stride_dkb + h * D, b.to(tl.int64) * stride_dvb + h * E,
        b.to(tl.int64) * N, start, end, stride_kn, stride_vn, stride_dkn, stride_dvn, D, E, z, gz, dSc, dSs,
        BLOCK_N, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, TRIG,
    )


# ----------------------------------------------------------------------------------------------------------------
# launchers


def in_kernel_layout(t: torch.Tensor) -> bool:
    """Whether the kernels can read ``t [B, N, H, X]`` in place: last dim contiguous and head stride ``X``.

    Batch and token strides are free (passed to the kernels), so slices of a fused ``[B, N, 3, H, D]`` projection
    qualify. A stride along a dimension of size 1 is never used and is not checked.
    """
    if t.dim() != 4:
        raise ValueError(f"non-causal kernels: expected a [B, N, H, X] tensor, got shape {tuple(t.shape)}")
    H, X = t.shape[-2:]
    return (X == 1 or t.stride(-1) == 1) and (H == 1 or t.stride(-2) == X)


def kernel_layout(t: torch.Tensor) -> torch.Tensor:
    """``t [B, N, H, X]`` itself if :func:`in_kernel_layout`, else a contiguous copy."""
    return t if in_kernel_layout(t) else t.contiguous()



_LAUNCH = {fn.__name__: Launcher(fn) for fn in (
    _nc_fwd_kernel, _nc_merge_kernel, _nc_out_kernel, _nc_bwd_dq_kernel, _nc_bwd_dkdv_kernel)}


@dataclass(frozen=True)
class NonCausalLaunch:
    """Launch parameters of the non-causal kernels, for experiments that vary them; ``None`` = the heuristic.

    Attributes:
        block_n: tokens per tile of the token loops (``BLOCK_N``).
        num_warps: warps of the forward launches (pass 1, merge excepted, and the output pass).
        bwd_num_warps: warps of the backward launches.
        num_stages: Triton's software-pipelining stages of the token loops (both directions).
        splits: token ranges per (batch, head); 1 runs each direction as one fused kernel.
        trig_table: MD-LRPE reads a precomputed ``[N, 2D]`` cos | sin table (True) or computes cos / sin of the
            angles in every tile (False).
        max_inline_partials: up to this many ranges the output pass merges the partial states and the dk / dv pass
            sums the partial state gradients itself; beyond it a separate launch (or sum) does it.
    """

    block_n: Optional[int] = None
    num_warps: Optional[int] = None
    bwd_num_warps: Optional[int] = None
    num_stages: Optional[int] = None
    splits: Optional[int] = None
    trig_table: Optional[bool] = None
    max_inline_partials: Optional[int] = None


_HEURISTIC = NonCausalLaunch()


def _launch_config(
    D: int, E: int, lrpe: bool, dtype: torch.dtype, backward: bool = False, launch: NonCausalLaunch = _HEURISTIC,
) -> Tuple[int, Dict[str, int]]:
    """``(BLOCK_N, launch options)`` for the token loops of the forward (or, ``backward``, the backward) launches;
    one config under the interpreter. Values set in ``launch`` replace the heuristic's.

    Warps by state width (``width`` = fp32 values of one state, ``2 · D · E`` with MD-LRPE's cos / sin halves):
    up to ``64 · 64`` (D = E = 64 without LRPE) 4 warps both ways; up to ``2 · 64 · 64`` (D = E = 64 with LRPE, what
    the vision and DiT models run) 4 warps forward and 16 backward (with 4 warps the sm_90 build of the fused backward
    spills registers); wider 8 warps (they would spill at 4). Plain states of the same width as LRPE's at
    ``D = E = 64`` (``D · E = 8192``) follow the LRPE rule.

    fp32 / fp16 inputs (fp32 operand tiles) with MD-LRPE states of ``2 · 64 · 128`` values or more (D · E ≥ 8192,
    e.g. D = 128, E = 64) and all states of ``2 · 128 · 128`` use one pipeline stage: with Triton's default 3 the
    fused backward asks for more shared memory than the 232,448 B an sm_90 block may use.
    """
    if interpreting():
        block_n, warps, opts = 16, 4, {}
    else:
        width = (2 if lrpe else 1) * block_size(D) * block_size(E)
        block_n = 32 if width >= 2 * 128 * 128 else 64
        if width <= 64 * 64:
            warps = 4
        elif width <= 2 * 64 * 64:
            warps = 16 if backward else 4
        else:
            warps = 8
        opts = {}
        if dot_mode(dtype) != DOT_BF16 and (width >= 2 * 128 * 128 or (lrpe and width >= 2 * 64 * 128)):
            opts["num_stages"] = 1
    warps = (launch.bwd_num_warps if backward else launch.num_warps) or warps
    opts = {"num_warps": warps, **opts}
    if launch.num_stages:
        opts["num_stages"] = launch.num_stages
    return launch.block_n or block_n, opts


def _inline_dkdv_only(D: int, E: int, lrpe: bool, dtype: torch.dtype) -> bool:
    """fp16 inputs (tf32 products of fp32 operand tiles) with MD-LRPE states of ``2 · 128 · 128`` values: the dk / dv
    launch that reads an already-summed state gradient needs more shared memory than sm_90 allows (232,448 B), the
    one that sums at most ``MAX_INLINE_PARTIALS`` partials itself fits. Such problems are split into at most that many
    ranges in the backward (bf16 and fp32 fit either way)."""
    width = (2 if lrpe else 1) * block_size(D) * block_size(E)
    return not interpreting() and dot_mode(dtype) == DOT_TF32 and lrpe and width >= 2 * 128 * 128


# Widest key head dim D for which the MD-LRPE launches read the cos / sin table: up to D = 64 the table fits the
# sm_90 shared memory (fp32 / fp16 / bf16, E <= 128); at D = 128 a [BLOCK_N, 256] fp32 table tile makes the fused /
# dk-dv backward ask more than the 232,448 B a block may use, so D = 128 computes cos / sin in the kernels.
TRIG_TABLE_MAX_D = 64


def use_trig_table(lrpe: bool, D: int, launch: NonCausalLaunch = _HEURISTIC) -> bool:
    """Whether the MD-LRPE launches read a precomputed cos / sin table (the faster form) instead of computing cos and
    sin of the angles in every tile: for key head dims ``D <= TRIG_TABLE_MAX_D`` (shared memory), or as
    ``launch.trig_table`` says."""
    if not lrpe:
        return False
    return D <= TRIG_TABLE_MAX_D if launch.trig_table is None else bool(launch.trig_table)


def trig_table(theta: torch.Tensor) -> torch.Tensor:
    """``[N, 2D]`` fp32 table ``[cos θ | sin θ]`` of the angle table ``theta [N, D]`` (the kernels' ``TRIG`` mode)."""
    theta = theta.float()
    return torch.cat([torch.cos(theta), torch.sin(theta)], dim=-1).contiguous()


def lrpe_operand(
    theta: torch.Tensor, lrpe: bool, D: int, launch: NonCausalLaunch = _HEURISTIC
) -> Tuple[torch.Tensor, bool]:
    """``(THETA, TRIG)`` for a launch: the cos / sin table when :func:`use_trig_table`, else the angles as given."""
    trig = use_trig_table(lrpe, D, launch)
    return (trig_table(theta) if trig else theta), trig


def choose_splits(N: int, BH: int, device: torch.device, block_n: int, splits: Optional[int] = None,
                  sms: Optional[int] = None) -> Tuple[int, int]:
    """``(splits, tokens_per_split)``: enough programs to fill the GPU (4 per SM), each range a multiple of
    ``block_n`` and long enough (≥ 16 blocks, 2 under the interpreter) that its partial state is cheap next to its
    token traffic; ``splits`` given: that many ranges (fewer if the blocks run out). ``sms``: the GPU rule for a GPU
    of that many SMs, whatever the device (what ``benchmarks/launches.py`` counts on the CPU)."""
    if splits is None:
        target = 4 * (sms or num_sms(device))
        min_tokens = 16 * block_n if sms or not interpreting() else 2 * block_n
        splits = max(1, min(cdiv(target, BH), cdiv(N, min_tokens)))
    tokens = cdiv(cdiv(N, splits), block_n) * block_n
    return cdiv(N, tokens), tokens


def _max_inline(launch: NonCausalLaunch) -> int:
    return MAX_INLINE_PARTIALS if launch.max_inline_partials is None else launch.max_inline_partials


def noncausal_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, key_padding_mask: Optional[torch.Tensor],
    lrpe_theta: Optional[torch.Tensor], initial_state: Optional[Tuple[torch.Tensor, torch.Tensor]], *,
    q_silu: bool = False, output: bool = True, launch: Optional[NonCausalLaunch] = None,
) -> Tuple[Optional[torch.Tensor], torch.Tensor, torch.Tensor]:
    """``(o [B, N, H, E] in q's dtype, S [B, H, D', E] fp32, z [B, H, D] fp32)`` of ``q, k [B, N, H, D]``,
    ``v [B, N, H, E]``; with ``output=False`` only the state ``(None, S, z)`` (pass 1 and the merge; ``q`` is then
    only read for its shape: :func:`noncausal_state`).

    ``q``, ``k``, ``v`` are read in place when :func:`in_kernel_layout` (any batch / token strides), else copied;
    the mask ``[B, N]`` bool, angle table ``[N, D]`` fp32 and initial state ``(S0 [B, H, D', E], z0 [B, H, D])``
    fp32 must be contiguous. ``q_silu``: ``q`` is the raw query and the kernels apply ``silu`` to it as they load it
    (no activated copy is written or kept for the backward). ``launch``: :class:`NonCausalLaunch` (None: heuristics).
    """
    launch = launch or _HEURISTIC
    q, k, v = (kernel_layout(t) for t in (q, k, v))
    B, N, H, D, E, lrpe, DP, BD, BE, mask, theta = problem_shape(q, v, key_padding_mask, lrpe_theta)
    BLOCK_N, opts = _launch_config(D, E, lrpe, q.dtype, launch=launch)
    n_splits, tps = choose_splits(N, B * H, q.device, BLOCK_N, launch.splits)
    theta, trig = lrpe_operand(theta, lrpe, D, launch)
    o = torch.empty((B, N, H, E), device=q.device, dtype=q.dtype) if output else q  # q: a never-written pointer
    S = torch.empty((B, H, DP, E), device=q.device, dtype=torch.float32)
    z = torch.empty((B, H, D), device=q.device, dtype=torch.float32)
    S0, z0 = initial_state if initial_state is not None else (S, z)
    fused = n_splits == 1
    if fused:
        PM = PL = PS = z
    else:  # one workspace for the partial maxima, sums and states of every range
        work = torch.empty(B * H * n_splits * (2 * D + DP * E), device=q.device, dtype=torch.float32)
        PM, PL, PS = work.split([B * H * n_splits * D, B * H * n_splits * D, B * H * n_splits * DP * E])
    dot = dot_mode(q.dtype)
    has_init = initial_state is not None
    _LAUNCH["_nc_fwd_kernel"][(n_splits, B * H)](
        q, k, v, o, theta, mask, S0, z0, PM, PL, PS, S, z,
        N, H, D, E, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        o.stride(0), o.stride(1), tps, n_splits, scale,
        BLOCK_N=BLOCK_N, BLOCK_D=BD, BLOCK_E=BE, HAS_LRPE=lrpe, HAS_MASK=key_padding_mask is not None,
        HAS_INIT=has_init, FUSED=fused, DOT=dot, TRIG=trig, OUTPUT=output, Q_SILU=q_silu, **opts,
    )
    if not fused:
        merge_inline = output and n_splits <= _max_inline(launch)
        if not merge_inline:
            BS, BX = (4, 64) if interpreting() else (16, 256)
            _LAUNCH["_nc_merge_kernel"][(B * H, cdiv(DP * E, BX))](
                PM, PL, PS, S0, z0, S, z, D, E, DP * E, n_splits,
                BLOCK_S=BS, BLOCK_X=BX, HAS_INIT=has_init, num_warps=4,
            )
        if output:  # the output pass over the ranges (merging the partial states itself when few)
            _LAUNCH["_nc_out_kernel"][(n_splits, B * H)](
                q, o, theta, S, PM, PL, PS, S0, z0, z, N, H, D, E, q.stride(0), q.stride(1), o.stride(0),
                o.stride(1), tps, n_splits, scale, BLOCK_N=BLOCK_N, BLOCK_D=BD, BLOCK_E=BE, HAS_LRPE=lrpe,
                HAS_INIT=has_init, MERGE=merge_inline, DOT=dot, TRIG=trig, Q_SILU=q_silu, **opts,
            )
    return (o if output else None), S, z


def noncausal_state(
    k: torch.Tensor, v: torch.Tensor, key_padding_mask: Optional[torch.Tensor], lrpe_theta: Optional[torch.Tensor], *,
    launch: Optional[NonCausalLaunch] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The final state ``(S [B, H, D', E] fp32, z [B, H, D] fp32)`` of the order-free scan of ``k [B, N, H, D]``,
    ``v [B, N, H, E]`` without the output pass (no initial state): what the backward recomputes when the forward's
    ``S`` was not kept (``recompute_state``). The same launches as :func:`noncausal_forward`'s state part, so ``S``
    equals the forward's up to the order of the merge's fp32 sums (split problems)."""
    _, S, z = noncausal_forward(k, k, v, 1.0, key_padding_mask, lrpe_theta, None, output=False, launch=launch)
    return S, z


def noncausal_backward(
    do: torch.Tensor, dS_out: Optional[torch.Tensor], dz_out: Optional[torch.Tensor], q: torch.Tensor,
    k: torch.Tensor, v: torch.Tensor, S: Optional[torch.Tensor], z: torch.Tensor, scale: float,
    key_padding_mask: Optional[torch.Tensor], lrpe_theta: Optional[torch.Tensor], *, q_silu: bool = False,
    launch: Optional[NonCausalLaunch] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` given ``dO [B, N, H, E]`` and the (optional) gradients ``dS_out [B, H, D', E]``,
    ``dz_out [B, H, D]`` of the final state ``(S, z)`` the forward returned.

    ``q``, ``k``, ``v``, ``do`` are read in place when :func:`in_kernel_layout`, else copied; ``dq``, ``dk``,
    ``dv`` are new contiguous tensors. ``q_silu`` as in :func:`noncausal_forward` (``dq`` is the raw query's).
    ``S = None``: the state is recomputed first (:func:`noncausal_state`; the forward had no initial state).
    """
    launch = launch or _HEURISTIC
    if S is None:
        S, _ = noncausal_state(kernel_layout(k), kernel_layout(v), key_padding_mask, lrpe_theta, launch=launch)
    B, N, H, D, E, lrpe, DP, BD, BE, mask, theta = problem_shape(q, v, key_padding_mask, lrpe_theta)
    BLOCK_N, opts = _launch_config(D, E, lrpe, q.dtype, backward=True, launch=launch)
    n_splits, tps = choose_splits(N, B * H, q.device, BLOCK_N, launch.splits)
    max_inline = _max_inline(launch)
    if n_splits > max_inline and _inline_dkdv_only(D, E, lrpe, q.dtype):
        n_splits, tps = choose_splits(N, B * H, q.device, BLOCK_N, max_inline)
    theta, trig = lrpe_operand(theta, lrpe, D, launch)
    q, k, v, do = (kernel_layout(t) for t in (q, k, v, do))
    dq = torch.empty(q.shape, device=q.device, dtype=q.dtype)  # contiguous, whatever the inputs' strides
    dk = torch.empty(k.shape, device=k.device, dtype=k.dtype)
    dv = torch.empty(v.shape, device=v.device, dtype=v.dtype)
    fused = n_splits == 1
    dot = dot_mode(q.dtype)
    common = dict(BLOCK_N=BLOCK_N, BLOCK_D=BD, BLOCK_E=BE, HAS_LRPE=lrpe, HAS_MASK=key_padding_mask is not None,
                  DOT=dot, TRIG=trig, **opts)
    dS_arg = dS_out if dS_out is not None else S  # never-read pointers when absent
    dz_arg = dz_out if dz_out is not None else z
    PDS = S if fused else torch.empty((B * H, n_splits, DP, E), device=q.device, dtype=torch.float32)
    _LAUNCH["_nc_bwd_dq_kernel"][(n_splits, B * H)](
        q, k, v, do, dq, dk, dv, theta, mask, S, z, dS_arg, dz_arg, PDS,
        N, H, D, E, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        do.stride(0), do.stride(1), dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1), tps, n_splits, scale,
        HAS_DS=dS_out is not None, HAS_DZ=dz_out is not None, FUSED=fused, Q_SILU=q_silu, **common,
    )
    if not fused:
        sum_inline = n_splits <= max_inline
        dS = S
        if not sum_inline:
            dS = PDS.sum(1).view(B, H, DP, E).mul_(scale)
            if dS_out is not None:
                dS += dS_out
        _LAUNCH["_nc_bwd_dkdv_kernel"][(n_splits, B * H)](
            k, v, dk, dv, theta, mask, S, z, dS, PDS, dS_arg, dz_arg,
            N, H, D, E, k.stride(0), k.stride(1), v.stride(0), v.stride(1), dk.stride(0), dk.stride(1),
            dv.stride(0), dv.stride(1), tps, n_splits, scale,
            HAS_DS=dS_out is not None, HAS_DZ=dz_out is not None, SUM_PARTIALS=sum_inline, **common,
        )
    return dq, dk, dv
