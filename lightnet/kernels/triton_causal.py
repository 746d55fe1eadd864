"""Triton kernels of the causal additive attention in the Lightning-Attention-2 form, forward and backward.

Per (batch, head), channel c:  z_t = logcumsumexp(k)_t (merged with the initial log-normaliser),
o_t = scale · Σ_{s≤t} Σ_c q̄_{t,c} exp(k_{s,c} − z_{t,c}) v_s  (+ the initial state's share).

Tokens are cut into chunks of ``C``; every chunk is one program (no cumsum over the whole sequence):
    forward   K1  per chunk: local log-sum-exp ``l_j`` and local normalised state (parallel over chunks)
              K2  scan over chunks (blocked ``tl.associative_scan``): state ``S_in_j`` and ``z_in_j`` entering chunk j
              K3  per chunk: inter  ``(q̄ ⊙ e^{z_in − z_t}) S_in_j``  +  intra ``(A ⊙ mask) V``
    backward  B1  per chunk: dq (complete), local ``Σ (q̄ ⊙ e^{z_in − z_t})ᵀ dO`` and ``Σ e^{z_in − z_t} g_t``
              B2  reverse scan over chunks → gradient of the state leaving every chunk (and of its z)
              B3  per chunk: dk, dv (intra from the masked scores, inter from the state gradient)

Stability. All exponents of the inter terms are ≤ 0 (z is non-decreasing). Inside a chunk the pairwise weight
``exp(k_s − z_t)`` is factored as ``exp(k_s − r) · exp(r − z_t)`` with ``r`` the chunk's smallest (non-empty)
``z``; both factors stay inside fp32 while the chunk's spread ``max z − r`` is ≤ 40 (then the scores are one
tensor-core product), and the in-chunk logcumsumexp is ``M + log(cumsum(exp(k − M)))`` while no key sits more than
80 below the chunk's maximum. Every per-chunk kernel is launched twice: the fast launch (no branches, fewer
registers) handles every chunk and flags the chunks outside those bounds (key logits of ~±1e2 and beyond); the exact
launch returns at once for unflagged chunks and redoes the flagged ones with a log-space scan for z and every pairwise
weight formed directly (a loop over the chunk's keys): slower, never inf/NaN.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from .triton_common import (
    problem_shape,
    NEG_BIG,
    load_state,
    store_state,
    TUNING,
    block_size,
    dot_mode,
    interpreting,
    load_keep,
    load_rows,
    logaddexp,
    mm,
    store_rows,
)

__all__ = ["causal_forward", "causal_backward", "chunk_size"]



def chunk_size(D: int, E: int) -> int:
    """Tokens per chunk (16 under the interpreter to keep CPU tests small; 32 for head dims above 64)."""
    if interpreting():
        return 16
    return TUNING["c_chunk"] or (64 if max(block_size(D), block_size(E)) <= 64 else 32)


def _warps(D: int, E: int, lrpe: bool) -> int:
    if interpreting():
        return 4
    return TUNING["c_warps"] or 8


# ----------------------------------------------------------------------------------------------------------------
# device helpers


@triton.jit
def _chunk_z(kb, keep, zin, EXACT: tl.constexpr):
    """In-chunk ``z_t = logaddexp(z_in, logcumsumexp(k)_t)`` for a ``[C, D]`` tile (padding: ``keep`` False).

    Fast form (``EXACT`` False): ``M + log(cumsum(exp(k − M)) + exp(z_in − M))``, exact unless a channel's keys spread
    over more than 80 (then ``ok`` is 0 and the chunk goes to the exact launch). Exact form: a log-space scan.
    Returns ``(z, ok)``.
    """
    km = tl.where(keep[:, None], kb, NEG_BIG)
    if EXACT:
        z = logaddexp(tl.associative_scan(km, 0, logaddexp), zin[None, :])
        ok = 1
    else:
        M = tl.maximum(tl.max(km, 0), zin)
        kmin = tl.min(tl.where(keep[:, None], kb, -NEG_BIG), 0)
        ok = tl.min(((zin >= M - 80.0) | (kmin >= M - 80.0)).to(tl.int32), 0)
        cs = tl.cumsum(tl.where(keep[:, None], tl.exp(km - M[None, :]), 0.0), 0)
        z = M[None, :] + tl.log(cs + tl.exp(zin - M)[None, :])
    return tl.maximum(z, NEG_BIG), ok


@triton.jit
def _chunk_reference(z):
    """``(r [D], spread)``: smallest non-empty z per channel and the largest ``max z − r`` over channels."""
    zmax = tl.max(z, 0)
    r = tl.min(tl.where(z > 0.5 * NEG_BIG, z, -NEG_BIG), 0)
    r = tl.minimum(r, zmax)
    return r, tl.max(zmax - r, 0)


@triton.jit
def _exact_intra(
    K, THETA, MASK, k_base, mask_base, c0, end, stride_kn, D,
    qb, z, th, dA, g, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr,
    NEED_A: tl.constexpr, NEED_DQ: tl.constexpr, NEED_DK: tl.constexpr,
):
    """Exact intra-chunk terms from every pairwise weight ``W_{t,s,c} = exp(k_{s,c} − z_{t,c})``, s ≤ t.

    Returns ``(A [C, C], dq_intra [C, D], dk_intra [C, D])``:
        A_{t,s} = Σ_c q_{t,c} W cos(θ_t − θ_s);  dq_{t,c} = Σ_s dA_{t,s} W cos(θ_t − θ_s);
        dk_{s,c} = Σ_t W (scale · q_{t,c} cos(θ_t − θ_s) dA_{t,s} + g_{t,c}).
    """
    offs_t = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    A = tl.zeros([BLOCK_C, BLOCK_C], tl.float32)
    DQ = tl.zeros([BLOCK_C, BLOCK_D], tl.float32)
    DK = tl.zeros([BLOCK_C, BLOCK_D], tl.float32)
    for s in range(0, BLOCK_C):
        row = c0 + s
        valid = row < end
        if HAS_MASK:
            keep_s = valid & (tl.load(MASK + mask_base + row, mask=valid, other=1) == 0)
        else:
            keep_s = valid
        ks = tl.load(K + k_base + row.to(tl.int64) * stride_kn + offs_d, mask=dmask & valid, other=0.0).to(tl.float32)
        live = (offs_t >= s) & keep_s
        w = tl.where(live[:, None], tl.exp(tl.minimum(ks[None, :] - z, 0.0)), 0.0)
        if HAS_LRPE:
            ths = tl.load(THETA + row.to(tl.int64) * D + offs_d, mask=dmask & valid, other=0.0)
            w_rel = w * tl.cos(th - ths[None, :])
        else:
            w_rel = w
        sel_col = offs_t[None, :] == s
        if NEED_A:
            A += tl.where(sel_col, tl.sum(qb * w_rel, 1)[:, None], 0.0)
        if NEED_DQ or NEED_DK:
            dA_col = tl.sum(tl.where(sel_col, dA, 0.0), 1)
            if NEED_DQ:
                DQ += dA_col[:, None] * w_rel
            if NEED_DK:
                vec = tl.sum(scale * qb * w_rel * dA_col[:, None] + w * g, 0)
                DK += tl.where(offs_t[:, None] == s, vec[None, :], 0.0)
    return A, DQ, DK


@triton.jit
def _chunk_selected(FLAG, pid_bh, j, NC, EXACT: tl.constexpr):
    """The fast launch takes every chunk; the exact launch only the chunks the fast forward launch flagged."""
    if EXACT:
        run = tl.load(FLAG + pid_bh.to(tl.int64) * NC + j) != 0
    else:
        run = True
    return run


@triton.jit
def _chunk_inputs(
    Q, K, V, MASK, pid_bh, j, N, H, D, E, stride_qb, stride_qn, stride_vb, stride_vn,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, HAS_MASK: tl.constexpr,
):
    """Token range, keep-flags and the fp32 ``q, k [C, D]`` and ``v [C, E]`` tiles of chunk ``j``."""
    b = pid_bh // H
    h = pid_bh % H
    c0 = j * BLOCK_C
    end = tl.minimum(c0 + BLOCK_C, N)
    rows = c0 + tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    valid = rows < end
    k_base = b.to(tl.int64) * stride_qb + h * D
    v_base = b.to(tl.int64) * stride_vb + h * E
    keep = load_keep(MASK, b.to(tl.int64) * N, rows, valid, HAS_MASK)
    qb = load_rows(Q + k_base, rows, offs_d, stride_qn, valid, D, 0.0)
    kb = load_rows(K + k_base, rows, offs_d, stride_qn, valid, D, 0.0)
    vb = load_rows(V + v_base, rows, tl.arange(0, BLOCK_E), stride_vn, valid, E, 0.0)
    return b, c0, end, rows, valid, keep, k_base, v_base, qb, kb, vb


@triton.jit
def _scores(qt, kt, cq, sq, ck, sk, HAS_LRPE: tl.constexpr, DOT: tl.constexpr):
    """Factored intra-chunk scores ``Σ_c qt_{t,c} kt_{s,c} cos(θ_t − θ_s)`` as tensor-core products."""
    if HAS_LRPE:
        A = mm(qt * cq, tl.trans(kt * ck), DOT) + mm(qt * sq, tl.trans(kt * sk), DOT)
    else:
        A = mm(qt, tl.trans(kt), DOT)
    return A


# ----------------------------------------------------------------------------------------------------------------
# forward


@triton.jit
def _c_chunk_state_kernel(
    K, V, THETA, MASK, LJ, SL, N, H, D, E, NC, stride_kb, stride_kn, stride_vb, stride_vn,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr,
):
    """K1: chunk-local log-sum-exp ``l_j [D]`` and normalised state ``Σ exp(k − l_j) k̄-rotation vᵀ``."""
    j = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    DP = 2 * D if HAS_LRPE else D
    c0 = j * BLOCK_C
    end = tl.minimum(c0 + BLOCK_C, N)
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    rows = c0 + offs_c
    valid = rows < end
    keep = load_keep(MASK, b.to(tl.int64) * N, rows, valid, HAS_MASK)
    kb = tl.where(keep[:, None], load_rows(K + b.to(tl.int64) * stride_kb + h * D, rows, offs_d, stride_kn, valid, D, 0.0), NEG_BIG)
    m = tl.max(kb, 0)
    p = tl.where(keep[:, None], tl.exp(kb - m[None, :]), 0.0)
    l = tl.sum(p, 0)
    inv = tl.where(l > 0, 1.0 / l, 0.0)
    p = p * inv[None, :]
    vb = load_rows(V + b.to(tl.int64) * stride_vb + h * E, rows, offs_e, stride_vn, valid, E, 0.0)
    slot = pid_bh.to(tl.int64) * NC + j
    if HAS_LRPE:
        th = load_rows(THETA, rows, offs_d, D, valid, D, 0.0)
        Sc = mm(tl.trans(p * tl.cos(th)), vb, DOT)
        Ss = mm(tl.trans(p * tl.sin(th)), vb, DOT)
    else:
        Sc = mm(tl.trans(p), vb, DOT)
        Ss = Sc
    store_state(SL, slot * DP * E, Sc, Ss, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
    tl.store(LJ + slot * D + offs_d, tl.where(l > 0, m + tl.log(l), NEG_BIG), mask=offs_d < D)


@triton.jit
def _lse_merge(z1, s1, z2, s2):
    """Associative merge of two normalised states (log-normaliser, state element)."""
    z = logaddexp(z1, z2)
    return z, tl.exp(z1 - z) * s1 + tl.exp(z2 - z) * s2


@triton.jit
def _c_scan_fwd_kernel(
    LJ, SL, S0, Z0, SIN, ZIN, D, E, NC, X,
    BLOCK_J: tl.constexpr, BLOCK_X: tl.constexpr, HAS_INIT: tl.constexpr,
):
    """K2: states entering every chunk, ``SIN[:, j]`` / ``ZIN[:, j]`` for j = 0..NC (slot NC = final state).

    One program owns ``BLOCK_X`` elements of the flattened ``[D', E]`` state of one (batch, head) and walks the
    chunks in blocks of ``BLOCK_J`` with a blocked associative scan. Row ``r`` of the state uses channel ``r % D``.
    """
    pid_bh = tl.program_id(0)
    pid_x = tl.program_id(1)
    offs_x = pid_x * BLOCK_X + tl.arange(0, BLOCK_X)
    xmask = offs_x < X
    ch = (offs_x // E) % D
    zrow = (offs_x % E == 0) & (offs_x // E < D) & xmask  # the element that writes z of its channel
    if HAS_INIT:
        cz = tl.maximum(tl.load(Z0 + pid_bh.to(tl.int64) * D + ch, mask=xmask, other=NEG_BIG), NEG_BIG)
        cs = tl.load(S0 + pid_bh.to(tl.int64) * X + offs_x, mask=xmask, other=0.0)
    else:
        cz = tl.full([BLOCK_X], NEG_BIG, tl.float32)
        cs = tl.zeros([BLOCK_X], tl.float32)
    base_s = pid_bh.to(tl.int64) * (NC + 1)
    tl.store(SIN + base_s * X + offs_x, cs, mask=xmask)
    tl.store(ZIN + base_s * D + ch, cz, mask=zrow)
    offs_j = tl.arange(0, BLOCK_J)
    for j0 in range(0, NC, BLOCK_J):
        js = j0 + offs_j
        jm = js < NC
        m2 = jm[:, None] & xmask[None, :]
        slot = pid_bh.to(tl.int64) * NC + js
        lz = tl.load(LJ + slot[:, None] * D + ch[None, :], mask=m2, other=NEG_BIG)
        ls = tl.load(SL + slot[:, None] * X + offs_x[None, :], mask=m2, other=0.0)
        sz, ss = tl.associative_scan((lz, ls), 0, _lse_merge)
        z = logaddexp(cz[None, :], sz)
        s = tl.exp(cz[None, :] - z) * cs[None, :] + tl.exp(sz - z) * ss
        out = base_s + 1 + js
        tl.store(SIN + out[:, None] * X + offs_x[None, :], s, mask=m2)
        tl.store(ZIN + out[:, None] * D + ch[None, :], z, mask=jm[:, None] & zrow[None, :])
        tz, ts = tl.reduce((lz, ls), 0, _lse_merge)
        cz, cs = _lse_merge(cz, cs, tz, ts)


@triton.jit
def _c_fwd_out_kernel(
    Q, K, V, O, THETA, MASK, FLAG, SIN, ZIN, N, H, D, E, NC, stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """K3: output of one chunk (inter-chunk state term + masked intra-chunk scores)."""
    j = tl.program_id(0)
    pid_bh = tl.program_id(1)
    if _chunk_selected(FLAG, pid_bh, j, NC, EXACT):
        DP = 2 * D if HAS_LRPE else D
        offs_c = tl.arange(0, BLOCK_C)
        offs_d = tl.arange(0, BLOCK_D)
        offs_e = tl.arange(0, BLOCK_E)
        b, c0, end, rows, valid, keep, k_base, v_base, qb, kb, vb = _chunk_inputs(
            Q, K, V, MASK, pid_bh, j, N, H, D, E, stride_qb, stride_qn, stride_vb, stride_vn,
            BLOCK_C, BLOCK_D, BLOCK_E, HAS_MASK,
        )
        slot = pid_bh.to(tl.int64) * (NC + 1) + j
        zin = tl.load(ZIN + slot * D + offs_d, mask=offs_d < D, other=0.0)
        Sc, Ss = load_state(SIN, slot * DP * E, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        z, z_ok = _chunk_z(kb, keep, zin, EXACT)
        r, spread = _chunk_reference(z)
        if not EXACT:  # the exact launch redoes chunks whose factored scores or fast z could leave fp32
            tl.store(FLAG + pid_bh.to(tl.int64) * NC + j, ((spread > 40.0) | (z_ok == 0)).to(tl.int32))
        decay = tl.exp(tl.minimum(zin[None, :] - z, 0.0))
        if HAS_LRPE:
            th = load_rows(THETA, rows, offs_d, D, valid, D, 0.0)
            cq = tl.cos(th)
            sq = tl.sin(th)
            o = mm(qb * decay * cq, Sc, DOT) + mm(qb * decay * sq, Ss, DOT)
        else:
            th = qb
            cq = qb
            sq = qb
            o = mm(qb * decay, Sc, DOT)
        causal = (offs_c[:, None] >= offs_c[None, :]) & keep[None, :]
        if not EXACT:
            qt = qb * tl.exp(tl.minimum(r[None, :] - z, 0.0))
            kt = tl.where(keep[:, None], tl.exp(tl.minimum(kb - r[None, :], 80.0)), 0.0)
            A = _scores(qt, kt, cq, sq, cq, sq, HAS_LRPE, DOT)
        else:
            A, _dq, _dk = _exact_intra(
                K, THETA, MASK, k_base, b.to(tl.int64) * N, c0, end, stride_qn, D, qb, z, th, qb, qb, scale,
                BLOCK_C, BLOCK_D, HAS_LRPE, HAS_MASK, True, False, False,
            )
        A = tl.where(causal, A, 0.0)
        o += mm(A, vb, DOT)
        store_rows(O + v_base, o * scale, rows, offs_e, stride_vn, valid, E)


# ----------------------------------------------------------------------------------------------------------------
# backward


@triton.jit
def _c_bwd_dq_kernel(
    Q, K, V, DO, DQ, THETA, MASK, FLAG, SIN, ZIN, LG, LZ, N, H, D, E, NC,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """B1: dq of one chunk, and its local contributions to the state / log-normaliser gradients."""
    j = tl.program_id(0)
    pid_bh = tl.program_id(1)
    if _chunk_selected(FLAG, pid_bh, j, NC, EXACT):
        DP = 2 * D if HAS_LRPE else D
        offs_c = tl.arange(0, BLOCK_C)
        offs_d = tl.arange(0, BLOCK_D)
        offs_e = tl.arange(0, BLOCK_E)
        b, c0, end, rows, valid, keep, k_base, v_base, qb, kb, vb = _chunk_inputs(
            Q, K, V, MASK, pid_bh, j, N, H, D, E, stride_qb, stride_qn, stride_vb, stride_vn,
            BLOCK_C, BLOCK_D, BLOCK_E, HAS_MASK,
        )
        dob = load_rows(DO + v_base, rows, offs_e, stride_vn, valid, E, 0.0)
        slot = pid_bh.to(tl.int64) * (NC + 1) + j
        zin = tl.load(ZIN + slot * D + offs_d, mask=offs_d < D, other=0.0)
        Sc, Ss = load_state(SIN, slot * DP * E, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        z, z_ok = _chunk_z(kb, keep, zin, EXACT)
        r, spread = _chunk_reference(z)
        decay = tl.exp(tl.minimum(zin[None, :] - z, 0.0))
        causal = (offs_c[:, None] >= offs_c[None, :]) & keep[None, :]
        dA = tl.where(causal, mm(dob, tl.trans(vb), DOT), 0.0)
        if HAS_LRPE:
            th = load_rows(THETA, rows, offs_d, D, valid, D, 0.0)
            cq = tl.cos(th)
            sq = tl.sin(th)
            dq = decay * (cq * mm(dob, tl.trans(Sc), DOT) + sq * mm(dob, tl.trans(Ss), DOT))
        else:
            th = qb
            cq = qb
            sq = qb
            dq = decay * mm(dob, tl.trans(Sc), DOT)
        if not EXACT:
            qf = tl.exp(tl.minimum(r[None, :] - z, 0.0))
            kt = tl.where(keep[:, None], tl.exp(tl.minimum(kb - r[None, :], 80.0)), 0.0)
            if HAS_LRPE:
                dq += qf * (cq * mm(dA, kt * cq, DOT) + sq * mm(dA, kt * sq, DOT))
            else:
                dq += qf * mm(dA, kt, DOT)
        else:
            _A, dqi, _dk = _exact_intra(
                K, THETA, MASK, k_base, b.to(tl.int64) * N, c0, end, stride_qn, D, qb, z, th, dA, qb, scale,
                BLOCK_C, BLOCK_D, HAS_LRPE, HAS_MASK, False, True, False,
            )
            dq += dqi
        dq = dq * scale
        store_rows(DQ + k_base, dq, rows, offs_d, stride_qn, valid, D)
        g = -qb * dq  # gradient reaching z_t directly from o_t
        lslot = pid_bh.to(tl.int64) * (NC + 1) + j
        if HAS_LRPE:
            Lc = mm(tl.trans(qb * decay * cq), dob, DOT) * scale
            Ls = mm(tl.trans(qb * decay * sq), dob, DOT) * scale
        else:
            Lc = mm(tl.trans(qb * decay), dob, DOT) * scale
            Ls = Lc
        store_state(LG, lslot * DP * E, Lc, Ls, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        tl.store(LZ + lslot * D + offs_d, tl.sum(decay * g, 0), mask=offs_d < D)


@triton.jit
def _c_scan_bwd_kernel(
    G, ZIN, D, X, COLS, NC,
    BLOCK_J: tl.constexpr, BLOCK_X: tl.constexpr,
):
    """B2: in place, ``G[:, j] ← G[:, j] + exp(z_in_j − z_in_{j+1}) G[:, j+1]`` for j = NC−1 … 0.

    ``G [BH, NC + 1, X]`` holds the local terms in slots 0..NC−1 and the gradient of the final state in slot NC;
    afterwards slot j + 1 is the gradient of the state leaving chunk j. ``X = rows · COLS``, row r uses channel r % D.
    """
    pid_bh = tl.program_id(0)
    pid_x = tl.program_id(1)
    offs_x = pid_x * BLOCK_X + tl.arange(0, BLOCK_X)
    xmask = offs_x < X
    ch = (offs_x // COLS) % D
    base = pid_bh.to(tl.int64) * (NC + 1)
    carry = tl.load(G + (base + NC) * X + offs_x, mask=xmask, other=0.0)
    offs_j = tl.arange(0, BLOCK_J)
    for i0 in range(0, NC, BLOCK_J):
        js = NC - 1 - i0 - offs_j  # walk backwards
        jm = js >= 0
        m2 = jm[:, None] & xmask[None, :]
        zj = tl.load(ZIN + (base + js)[:, None] * D + ch[None, :], mask=m2, other=0.0)
        zj1 = tl.load(ZIN + (base + js + 1)[:, None] * D + ch[None, :], mask=m2, other=0.0)
        a = tl.where(m2, tl.exp(tl.minimum(zj - zj1, 0.0)), 1.0)
        loc = tl.load(G + (base + js)[:, None] * X + offs_x[None, :], mask=m2, other=0.0)
        A, Bv = tl.associative_scan((a, loc), 0, _affine_compose)
        out = A * carry[None, :] + Bv
        tl.store(G + (base + js)[:, None] * X + offs_x[None, :], out, mask=m2)
        tA, tB = tl.reduce((a, loc), 0, _affine_compose)
        carry = tA * carry + tB


@triton.jit
def _affine_compose(a1, b1, a2, b2):
    """Compose ``x ↦ a1 x + b1`` then ``x ↦ a2 x + b2``."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _c_bwd_dkdv_kernel(
    Q, K, V, DO, DQ, DK, DV, THETA, MASK, FLAG, ZIN, G, GZ, N, H, D, E, NC,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """B3: dk and dv of one chunk."""
    j = tl.program_id(0)
    pid_bh = tl.program_id(1)
    if _chunk_selected(FLAG, pid_bh, j, NC, EXACT):
        DP = 2 * D if HAS_LRPE else D
        offs_c = tl.arange(0, BLOCK_C)
        offs_d = tl.arange(0, BLOCK_D)
        offs_e = tl.arange(0, BLOCK_E)
        b, c0, end, rows, valid, keep, k_base, v_base, qb, kb, vb = _chunk_inputs(
            Q, K, V, MASK, pid_bh, j, N, H, D, E, stride_qb, stride_qn, stride_vb, stride_vn,
            BLOCK_C, BLOCK_D, BLOCK_E, HAS_MASK,
        )
        dob = load_rows(DO + v_base, rows, offs_e, stride_vn, valid, E, 0.0)
        g = -qb * load_rows(DQ + k_base, rows, offs_d, stride_qn, valid, D, 0.0)
        dmask = offs_d < D
        slot = pid_bh.to(tl.int64) * (NC + 1) + j
        zin = tl.load(ZIN + slot * D + offs_d, mask=dmask, other=0.0)
        zout = tl.load(ZIN + (slot + 1) * D + offs_d, mask=dmask, other=0.0)
        Gc, Gs = load_state(G, (slot + 1) * DP * E, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        gz_out = tl.load(GZ + (slot + 1) * D + offs_d, mask=dmask, other=0.0)
        z, z_ok = _chunk_z(kb, keep, zin, EXACT)
        r, spread = _chunk_reference(z)
        causal = (offs_c[:, None] >= offs_c[None, :]) & keep[None, :]
        dA = tl.where(causal, mm(dob, tl.trans(vb), DOT), 0.0)
        # inter: the state leaving this chunk holds exp(k_s − z_out) k̄-rotation v_s
        ko = tl.where(keep[:, None], tl.exp(tl.minimum(kb - zout[None, :], 0.0)), 0.0)
        if HAS_LRPE:
            th = load_rows(THETA, rows, offs_d, D, valid, D, 0.0)
            cq = tl.cos(th)
            sq = tl.sin(th)
            dv = mm(ko * cq, Gc, DOT) + mm(ko * sq, Gs, DOT)
            dk = ko * (cq * mm(vb, tl.trans(Gc), DOT) + sq * mm(vb, tl.trans(Gs), DOT) + gz_out[None, :])
        else:
            th = qb
            cq = qb
            sq = qb
            dv = mm(ko, Gc, DOT)
            dk = ko * (mm(vb, tl.trans(Gc), DOT) + gz_out[None, :])
        if not EXACT:
            qf = tl.exp(tl.minimum(r[None, :] - z, 0.0))
            qt = qb * qf
            kt = tl.where(keep[:, None], tl.exp(tl.minimum(kb - r[None, :], 80.0)), 0.0)
            A = tl.where(causal, _scores(qt, kt, cq, sq, cq, sq, HAS_LRPE, DOT), 0.0)
            if HAS_LRPE:
                attn = cq * mm(tl.trans(dA), qt * cq, DOT) + sq * mm(tl.trans(dA), qt * sq, DOT)
            else:
                attn = mm(tl.trans(dA), qt, DOT)
            tail = tl.cumsum(qf * g, 0, reverse=True)  # Σ_{t ≥ s} exp(r − z_t) g_t
            dk += kt * (scale * attn + tail)
        else:
            A, _dq, dki = _exact_intra(
                K, THETA, MASK, k_base, b.to(tl.int64) * N, c0, end, stride_qn, D, qb, z, th, dA, g, scale,
                BLOCK_C, BLOCK_D, HAS_LRPE, HAS_MASK, True, False, True,
            )
            A = tl.where(causal, A, 0.0)
            dk += dki
        dv += scale * mm(tl.trans(A), dob, DOT)
        dk = tl.where(keep[:, None], dk, 0.0)
        store_rows(DK + k_base, dk, rows, offs_d, stride_qn, valid, D)
        store_rows(DV + v_base, dv, rows, offs_e, stride_vn, valid, E)


# ----------------------------------------------------------------------------------------------------------------
# launchers


def _scan_config(X: int) -> Tuple[int, int]:
    """``(BLOCK_J, BLOCK_X)`` of the chunk scans."""
    if interpreting():
        return 4, 64
    return 32, 128


def causal_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    key_padding_mask: Optional[torch.Tensor],
    lrpe_theta: Optional[torch.Tensor],
    initial_state: Optional[Tuple[torch.Tensor, torch.Tensor]],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[torch.Tensor]]:
    """``(o, S_final, z_final, saved)``; ``saved = [SIN, ZIN, FLAG]``: per-chunk entering states and the flags of the
    chunks that took the exact path."""
    B, N, H, D, E, lrpe, DP, BD, BE, mask, theta = problem_shape(q, v, key_padding_mask, lrpe_theta)
    C = chunk_size(D, E)
    NC = triton.cdiv(N, C)
    X = DP * E
    dev = q.device
    dot = dot_mode(q.dtype)
    warps = _warps(D, E, lrpe)
    LJ = torch.empty((B * H, NC, D), device=dev, dtype=torch.float32)
    SL = torch.empty((B * H, NC, DP, E), device=dev, dtype=torch.float32)
    _c_chunk_state_kernel[(NC, B * H)](
        k, v, theta, mask, LJ, SL, N, H, D, E, NC, k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        BLOCK_C=C, BLOCK_D=BD, BLOCK_E=BE, HAS_LRPE=lrpe, HAS_MASK=key_padding_mask is not None, DOT=dot,
        num_warps=warps,
    )
    SIN = torch.empty((B * H, NC + 1, DP, E), device=dev, dtype=torch.float32)
    ZIN = torch.empty((B * H, NC + 1, D), device=dev, dtype=torch.float32)
    S0, z0 = initial_state if initial_state is not None else (SIN, ZIN)
    BJ, BX = _scan_config(X)
    _c_scan_fwd_kernel[(B * H, triton.cdiv(X, BX))](
        LJ, SL, S0, z0, SIN, ZIN, D, E, NC, X, BLOCK_J=BJ, BLOCK_X=BX, HAS_INIT=initial_state is not None,
        num_warps=4,
    )
    o = torch.empty((B, N, H, E), device=dev, dtype=q.dtype)
    FLAG = torch.empty((B * H, NC), device=dev, dtype=torch.int32)
    for exact in (False, True):
        _c_fwd_out_kernel[(NC, B * H)](
            q, k, v, o, theta, mask, FLAG, SIN, ZIN, N, H, D, E, NC, q.stride(0), q.stride(1), v.stride(0),
            v.stride(1), scale, BLOCK_C=C, BLOCK_D=BD, BLOCK_E=BE, HAS_LRPE=lrpe,
            HAS_MASK=key_padding_mask is not None, DOT=dot, EXACT=exact, num_warps=warps,
        )
    S = SIN[:, NC].reshape(B, H, DP, E)
    z = ZIN[:, NC].reshape(B, H, D)
    return o, S, z, [SIN, ZIN, FLAG]


def causal_backward(
    do: torch.Tensor,
    dS_out: Optional[torch.Tensor],
    dz_out: Optional[torch.Tensor],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    S: torch.Tensor,
    saved: List[torch.Tensor],
    scale: float,
    key_padding_mask: Optional[torch.Tensor],
    lrpe_theta: Optional[torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` given ``dO`` and the (optional) gradients of the returned final state."""
    SIN, ZIN, FLAG = saved
    B, N, H, D, E, lrpe, DP, BD, BE, mask, theta = problem_shape(q, v, key_padding_mask, lrpe_theta)
    C = chunk_size(D, E)
    NC = triton.cdiv(N, C)
    X = DP * E
    dev = q.device
    dot = dot_mode(q.dtype)
    warps = _warps(D, E, lrpe)
    do = do.contiguous()
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    LG = torch.empty((B * H, NC + 1, DP, E), device=dev, dtype=torch.float32)
    LZ = torch.empty((B * H, NC + 1, D), device=dev, dtype=torch.float32)
    # slot NC: gradients of the returned final state (S, z); z also collects −rowsum(S ⊙ dS)
    if dS_out is not None:
        LG[:, NC] = dS_out.reshape(B * H, DP, E)
        gz = -(S * dS_out).sum(-1).reshape(B * H, -1, D).sum(1)
    else:
        LG[:, NC] = 0
        gz = torch.zeros((B * H, D), device=dev, dtype=torch.float32)
    if dz_out is not None:
        gz = gz + dz_out.reshape(B * H, D)
    LZ[:, NC] = gz
    common = dict(BLOCK_C=C, BLOCK_D=BD, BLOCK_E=BE, HAS_LRPE=lrpe, HAS_MASK=key_padding_mask is not None, DOT=dot,
                  num_warps=warps)
    for exact in (False, True):
        _c_bwd_dq_kernel[(NC, B * H)](
            q, k, v, do, dq, theta, mask, FLAG, SIN, ZIN, LG, LZ, N, H, D, E, NC,
            q.stride(0), q.stride(1), v.stride(0), v.stride(1), scale, EXACT=exact, **common,
        )
    BJ, BX = _scan_config(X)
    _c_scan_bwd_kernel[(B * H, triton.cdiv(X, BX))](LG, ZIN, D, X, E, NC, BLOCK_J=BJ, BLOCK_X=BX, num_warps=4)
    _c_scan_bwd_kernel[(B * H, triton.cdiv(D, BX))](LZ, ZIN, D, D, 1, NC, BLOCK_J=BJ, BLOCK_X=BX, num_warps=4)
    for exact in (False, True):
        _c_bwd_dkdv_kernel[(NC, B * H)](
            q, k, v, do, dq, dk, dv, theta, mask, FLAG, ZIN, LG, LZ, N, H, D, E, NC,
            q.stride(0), q.stride(1), v.stride(0), v.stride(1), scale, EXACT=exact, **common,
        )
    return dq, dk, dv
