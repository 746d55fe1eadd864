"""Triton kernels of the causal additive attention in the Lightning-Attention-2 form, forward and backward.

Per (batch, head), channel c:  z_t = logcumsumexp(k)_t (merged with the initial log-normaliser),
o_t = scale · Σ_{s≤t} Σ_c q̄_{t,c} exp(k_{s,c} − z_{t,c}) v_s  (+ the initial state's share), with the cosine
MD-LRPE (``q̄`` / ``k̄`` the ``[x cos θ, x sin θ]`` halves, ``D' = 2D``) applied in registers.

Tokens are cut into chunks of ``C`` (:func:`chunk_size`) and the chunks of every (batch, head) into segments of
``SEG`` chunks (:func:`segment_chunks`); one program owns one segment and walks its chunks in order, carrying the fp32
state (``S [D', E]`` normalised, and its log-normaliser ``z [D]``) from chunk to chunk in registers. Full states are
materialised only per segment (9 state transfers per segment over forward and backward).
    forward   F1  per segment, walking its chunks with the segment-local z (the logcumsumexp of the keys from the
                  segment's first token), stores
                      ZL [BH, N, D]   fp32  segment-local z of every token (padding repeats the previous value;
                                            NEG_BIG before the segment's first kept token),
                      RL [BH, NC, D]  fp32  local z at the chunk's first kept token (its smallest kept z; z entering
                                            the chunk when it keeps none),
                      EL [BH, NC, D]  fp32  local z leaving the chunk (the stable chunk log-sum-exp),
                      FLAG [BH, NSEG, SEG] int32  the chunk needs the exact path (see Stability);
                  with several segments also the segment-local log-normaliser and normalised state
              F2  scan over segments (:mod:`.scan`): state and z entering every segment, ``SIN [BH, NSEG + 1, D', E]``
                  / ``ZSEG [BH, NSEG + 1, D]`` (slot NSEG: the final state)
              F3  per segment, chunk by chunk: inter ``(q̄ ⊙ e^{z_in − z_t}) S_in`` + intra ``(A ⊙ mask) V``, then
                  ``S ← e^{z_in − z_out} S + (e^{k − z_out} ⊙ rot)ᵀ V``
    backward  B1  per segment, forward walk (same carried state): dq, and the segment's local gradient w.r.t. the
                  state entering it, ``Σ_t (q̄ ⊙ e^{z_seg − z_t})ᵀ dO`` and ``Σ_t e^{z_seg − z_t} g_t`` (g = −q ⊙ dq)
              B2  reverse scans over segments (:mod:`.scan`) → gradient of the state (and of its z) leaving every
                  segment
              B3  per segment, reverse walk: dk, dv of a chunk from the gradient of the state leaving it, then
                  ``G ← e^{z_in − z_out} G + (q̄ ⊙ e^{z_in − z_t})ᵀ dO`` (and the same for z) for the previous chunk
When one segment holds every chunk (short sequences), F1 runs without the state and F2 and B2 are skipped: F3 starts
from the initial state and stores the state it carries out of the last chunk as the final state.

F3, B1 and B3 get every z elementwise from F1's: with ``z_seg`` = ZSEG of the segment,
    z_t = logaddexp(z_seg, ZL_t),  r = logaddexp(z_seg, RL_j),  z_out = logaddexp(z_seg, EL_j),
    z_in = logaddexp(z_seg, EL_{j−1}) (z_seg for the segment's first chunk);
z_t itself is never formed: ``e^{z_in − z_t}`` and ``e^{r − z_t}`` are ``1 / (e^{z_seg − a} + e^{ZL_t − a})``
(:func:`~.chunk._z_factors`), so their fast chunk steps do no reduction or scan over tokens (such loops are
latency-bound on a GPU). B1 sums its z-gradient into a ``[C, D]`` tile, reduced once per segment; B3 carries the
z-gradient as a ``[C, D]`` tile of equal rows updated by a product with a ones matrix, and its in-chunk tail
``Σ_{t ≥ s} e^{r − z_t} g_t`` is a product with a triangular ones matrix (both through ``_sum_mm``: x is split into
bf16 high and low parts, so the sums keep ~16 mantissa bits where the other products keep 8). B3 takes ``z_out`` of
the segment's last chunk from ZSEG (the units of the state gradient B2 hands it).

Stability. All exponents of the inter terms are ≤ 0 (z is non-decreasing). Inside a chunk the pairwise weight
``exp(k_s − z_t)`` is factored as ``exp(k_s − r) · exp(r − z_t)`` with ``r`` the chunk's smallest (non-empty) ``z``;
both factors stay inside fp32 while the chunk's spread ``max z − r`` is ≤ 40 (then the scores are one tensor-core
product), and the in-chunk logcumsumexp is ``M + log(cumsum(exp(k − M)))`` while no key sits more than 80 below the
chunk's maximum. F1 flags the chunks outside those bounds (local spread ``max_c (EL − RL) > 40`` or the fast cumsum's
check failing, key logits of ~±1e2 and beyond); ``logaddexp(z_seg, ·)`` is non-decreasing and 1-Lipschitz, so the
global spread is never larger than the local one and the flags cover every chunk that needs them. F3, B1 and B3 are
launched twice: the fast launch (no exact code, fewer registers) handles every segment; the exact launch returns at
once for segments without a flagged chunk and redoes the others whole (the carried state must pass through every
chunk), taking the fast path for unflagged chunks and, for flagged ones, a log-space scan for z and every pairwise
weight formed directly (a loop over the chunk's keys): slower, never inf/NaN. The carried ``z_out`` comes from EL
(a stable log-sum-exp), so the fast launch's state stays right on flagged chunks.

Memory. Saved for the backward (:func:`causal_forward`'s ``saved``): SIN / ZSEG, ZL (``4 · D`` bytes per token and
head), RL / EL (``8 · D / C`` bytes per token and head) and the flags. Keeping ZL spares the backward a pass over K;
it is written once and read three times (``16 · D`` bytes of traffic per token and head).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from ..triton_utils import (
    NEG_BIG, Launcher, block_size, cdiv, dot_mode, interpreting, load_keep, load_rows, load_state, mm, num_sms,
    problem_shape, store_rows, store_state,
)
from .chunk import (
    _advance, _chunk_end_z, _chunk_inputs, _chunk_z, _exact_intra, _local_grad, _pin, _rotation, _scores, _sum_mm,
    _z_bounds, _z_factors,
)
from .scan import scan_backward, scan_config, scan_forward

__all__ = ["CausalLaunch", "causal_forward", "causal_backward", "chunk_size", "segment_chunks", "saved_specs"]


# ----------------------------------------------------------------------------------------------------------------
# segment helpers (a segment is ``SEG`` consecutive chunks walked in order by one program)


@triton.jit
def _segment_selected(FLAG, pid_bh, seg, SEG, NC, FSTRIDE, BLOCK_G: tl.constexpr, EXACT: tl.constexpr):
    """The fast launch takes every segment; the exact launch only segments holding a chunk the fast forward flagged.

    ``FLAG [BH, NSEG, SEG]`` int32 (``FSTRIDE = NSEG · SEG``), chunk j at flat index j of its (batch, head) row;
    entries past NC are never read.
    """
    if EXACT:
        offs = tl.arange(0, BLOCK_G)
        js = seg * SEG + offs
        fl = tl.load(FLAG + pid_bh.to(tl.int64) * FSTRIDE + js, mask=(offs < SEG) & (js < NC), other=0)
        run = tl.max(fl, 0) != 0
    else:
        run = True
    return run


@triton.jit
def _chunk_flagged(FLAG, pid_bh, j, FSTRIDE):
    """True when the fast forward launch flagged chunk ``j`` (``FSTRIDE = NSEG · SEG`` flags per (batch, head))."""
    return tl.load(FLAG + pid_bh.to(tl.int64) * FSTRIDE + j) != 0


@triton.jit
def _segment_entry(
    SIN, ZSEG, S0, Z0, pid_bh, slot, D, E,
    BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, HAS_LRPE: tl.constexpr, HAS_INIT: tl.constexpr,
    FROM_INITIAL: tl.constexpr,
):
    """State ``(Sc, Ss [D, E], z [D])`` entering a segment: read from ``SIN`` / ``ZSEG`` slot ``slot``, or with
    ``FROM_INITIAL`` (one segment, no scan ran) taken from the initial state ``(S0, Z0)`` (or the empty state) and
    written to that slot for the backward."""
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    DP = 2 * D if HAS_LRPE else D
    if FROM_INITIAL:
        if HAS_INIT:
            Sc, Ss = load_state(S0, pid_bh.to(tl.int64) * DP * E, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
            z = tl.maximum(tl.load(Z0 + pid_bh.to(tl.int64) * D + offs_d, mask=dmask, other=NEG_BIG), NEG_BIG)
        else:
            Sc = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
            Ss = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
            z = tl.full([BLOCK_D], NEG_BIG, tl.float32)
        store_state(SIN, slot * DP * E, Sc, Ss, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        tl.store(ZSEG + slot * D + offs_d, z, mask=dmask)
    else:
        Sc, Ss = load_state(SIN, slot * DP * E, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        z = tl.load(ZSEG + slot * D + offs_d, mask=dmask, other=0.0)
    return Sc, Ss, z


# ----------------------------------------------------------------------------------------------------------------
# forward


@triton.jit
def _c_seg_state_kernel(
    K, V, THETA, MASK, LJ, SL, ZL, RL, EL, FLAG, N, H, D, E, NC, NSEG, SEG,
    stride_kb, stride_kn, stride_vb, stride_vn,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, STATE: tl.constexpr,
):
    """F1: per segment, the segment-local ``ZL [BH, N, D]``, ``RL / EL [BH, NC, D]`` and the chunk flags
    ``FLAG [BH, NSEG, SEG]``; with ``STATE`` (several segments) also the segment's log-normaliser
    ``LJ [BH, NSEG, D]`` and normalised state ``SL [BH, NSEG, D', E]``, an online merge over its chunks from the empty
    state."""
    seg = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    DP = 2 * D if HAS_LRPE else D
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    dmask = offs_d < D
    k_base = b.to(tl.int64) * stride_kb + h * D
    v_base = b.to(tl.int64) * stride_vb + h * E
    zl_base = pid_bh.to(tl.int64) * N * D
    Sc = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
    Ss = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
    zc = tl.full([BLOCK_D], NEG_BIG, tl.float32)
    j0 = seg * SEG
    j1 = tl.minimum(j0 + SEG, NC)
    for j in range(j0, j1):
        rows = j * BLOCK_C + offs_c
        valid = rows < N
        keep = load_keep(MASK, b.to(tl.int64) * N, rows, valid, HAS_MASK)
        kb = load_rows(K + k_base, rows, offs_d, stride_kn, valid, D, 0.0)
        zl, ok = _chunk_z(kb, keep, zc, False)
        zout = _chunk_end_z(kb, keep, zc)
        rl = tl.minimum(tl.min(tl.where(keep[:, None], zl, -NEG_BIG), 0), zout)
        flag = ((tl.max(zout - rl, 0) > 40.0) | (ok == 0)).to(tl.int32)
        store_rows(ZL + zl_base, zl, rows, offs_d, D, valid, D)
        cslot = pid_bh.to(tl.int64) * NC + j
        tl.store(RL + cslot * D + offs_d, rl, mask=dmask)
        tl.store(EL + cslot * D + offs_d, zout, mask=dmask)
        tl.store(FLAG + pid_bh.to(tl.int64) * NSEG * SEG + j, flag)
        if STATE:
            vb = load_rows(V + v_base, rows, offs_e, stride_vn, valid, E, 0.0)
            th, cq, sq = _rotation(THETA, rows, valid, D, kb, BLOCK_D, HAS_LRPE)
            Sc, Ss = _advance(Sc, Ss, zc, zout, kb, keep, vb, cq, sq, HAS_LRPE, DOT, False)
        zc = zout
    if STATE:
        slot = pid_bh.to(tl.int64) * NSEG + seg
        store_state(SL, slot * DP * E, Sc, Ss, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        tl.store(LJ + slot * D + offs_d, zc, mask=dmask)


@triton.jit
def _fwd_chunk(
    Q, K, V, O, THETA, MASK, ZL, RL, Sc, Ss, zseg, zin, zout, pid_bh, j, N, H, D, E, NC,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """Output of chunk ``j`` (inter: the state entering it ``(Sc, Ss [D, E])`` in units of ``zin [D]``; intra: the
    masked scores), with the factors of :func:`_z_factors`; returns the state leaving it (units ``zout``)."""
    offs_c = tl.arange(0, BLOCK_C)
    offs_e = tl.arange(0, BLOCK_E)
    b, c0, end, rows, valid, keep, k_base, v_base, qb, kb, vb = _chunk_inputs(
        Q, K, V, MASK, pid_bh, j, N, H, D, E, stride_qb, stride_qn, stride_vb, stride_vn,
        BLOCK_C, BLOCK_D, BLOCK_E, HAS_MASK,
    )
    z, r, decay, qf = _z_factors(ZL, RL, kb, keep, zseg, zin, pid_bh, j, rows, valid, N, NC, D, BLOCK_D, EXACT)
    th, cq, sq = _rotation(THETA, rows, valid, D, qb, BLOCK_D, HAS_LRPE)
    if HAS_LRPE:
        o = mm(_pin(qb * decay * cq), Sc, DOT) + mm(_pin(qb * decay * sq), Ss, DOT)
    else:
        o = mm(_pin(qb * decay), Sc, DOT)
    Sc, Ss = _advance(Sc, Ss, zin, zout, kb, keep, vb, cq, sq, HAS_LRPE, DOT, True)  # the entering state is used
    causal = (offs_c[:, None] >= offs_c[None, :]) & keep[None, :]
    if not EXACT:
        qt = qb * qf
        kt = tl.where(keep[:, None], tl.exp(tl.minimum(kb - r[None, :], 80.0)), 0.0)
        A = _scores(qt, kt, cq, sq, HAS_LRPE, DOT)
    else:
        A, _dq, _dk = _exact_intra(
            K, THETA, MASK, k_base, b.to(tl.int64) * N, c0, end, stride_qn, D, qb, z, th, qb, qb, scale,
            BLOCK_C, BLOCK_D, HAS_LRPE, HAS_MASK, True, False, False,
        )
    A = tl.where(causal, A, 0.0)
    o += mm(A, vb, DOT)
    store_rows(O + v_base, o * scale, rows, offs_e, stride_vn, valid, E)
    return Sc, Ss


@triton.jit
def _c_seg_out_kernel(
    Q, K, V, O, THETA, MASK, FLAG, SIN, ZSEG, ZL, RL, EL, S0, Z0, N, H, D, E, NC, NSEG, SEG,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_G: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
    SINGLE: tl.constexpr, HAS_INIT: tl.constexpr,
):
    """F3: outputs of one segment's chunks, in order, carrying the state from the segment's entering state.

    Fast launch: every segment, fast path everywhere. Exact launch: only segments with a chunk F1 flagged, exact path
    for those chunks. ``SINGLE`` (one segment holds every chunk, so F2 is skipped): the fast launch starts from the
    initial state ``(S0, Z0)`` (or the empty state) and writes the entering and the final state into ``SIN`` /
    ``ZSEG`` itself; the carried state at the end of the walk is the final state.
    """
    seg = tl.program_id(0)
    pid_bh = tl.program_id(1)
    if _segment_selected(FLAG, pid_bh, seg, SEG, NC, NSEG * SEG, BLOCK_G, EXACT):
        DP = 2 * D if HAS_LRPE else D
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        FSTRIDE = NSEG * SEG
        slot = pid_bh.to(tl.int64) * (NSEG + 1) + seg
        Sc, Ss, zseg = _segment_entry(
            SIN, ZSEG, S0, Z0, pid_bh, slot, D, E, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_INIT, SINGLE and not EXACT,
        )
        j0 = seg * SEG
        j1 = tl.minimum(j0 + SEG, NC)
        zout = zseg
        for j in range(j0, j1):
            zin, zout = _z_bounds(EL, zseg, pid_bh, j, j0, NC, D, BLOCK_D)
            if EXACT and _chunk_flagged(FLAG, pid_bh, j, FSTRIDE):  # the exact launch: flagged chunks only
                Sc, Ss = _fwd_chunk(
                    Q, K, V, O, THETA, MASK, ZL, RL, Sc, Ss, zseg, zin, zout, pid_bh, j, N, H, D, E, NC,
                    stride_qb, stride_qn, stride_vb, stride_vn, scale,
                    BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, True,
                )
            else:
                Sc, Ss = _fwd_chunk(
                    Q, K, V, O, THETA, MASK, ZL, RL, Sc, Ss, zseg, zin, zout, pid_bh, j, N, H, D, E, NC,
                    stride_qb, stride_qn, stride_vb, stride_vn, scale,
                    BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, False,
                )
        if SINGLE and not EXACT:  # the carried state is the final state
            store_state(SIN, (slot + 1) * DP * E, Sc, Ss, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
            tl.store(ZSEG + (slot + 1) * D + offs_d, zout, mask=dmask)


# ----------------------------------------------------------------------------------------------------------------
# backward


@triton.jit
def _dq_chunk(
    Q, K, V, DO, DQ, THETA, MASK, ZL, RL, Sc, Ss, Lc, Ls, lzt, zseg, zin, zout, pid_bh, j, N, H, D, E, NC,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """dq of chunk ``j`` from the state entering it ``(Sc, Ss)``; adds the chunk's share of the segment-level local
    gradients ``Lc, Ls [D, E]`` (unscaled ``Σ (q ⊙ e^{z_seg − z_t} ⊙ rot)ᵀ dO``) and of ``Σ_t e^{z_seg − z_t} g_t``
    (``g = −q ⊙ dq``) to the ``[C, D]`` tile ``lzt`` (summed over tokens once per segment). Returns
    ``(Sc, Ss, Lc, Ls, lzt)`` with the state leaving the chunk."""
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    b, c0, end, rows, valid, keep, k_base, v_base, qb, kb, vb = _chunk_inputs(
        Q, K, V, MASK, pid_bh, j, N, H, D, E, stride_qb, stride_qn, stride_vb, stride_vn,
        BLOCK_C, BLOCK_D, BLOCK_E, HAS_MASK,
    )
    dob = load_rows(DO + v_base, rows, offs_e, stride_vn, valid, E, 0.0)
    z, r, decay, qf = _z_factors(ZL, RL, kb, keep, zseg, zin, pid_bh, j, rows, valid, N, NC, D, BLOCK_D, EXACT)
    causal = (offs_c[:, None] >= offs_c[None, :]) & keep[None, :]
    dA = tl.where(causal, mm(dob, tl.trans(vb), DOT), 0.0)
    th, cq, sq = _rotation(THETA, rows, valid, D, qb, BLOCK_D, HAS_LRPE)
    if HAS_LRPE:
        dq = decay * (cq * mm(dob, tl.trans(Sc), DOT) + sq * mm(dob, tl.trans(Ss), DOT))
    else:
        dq = decay * mm(dob, tl.trans(Sc), DOT)
    Sc, Ss = _advance(Sc, Ss, zin, zout, kb, keep, vb, cq, sq, HAS_LRPE, DOT, True)  # the entering state is used
    if not EXACT:
        kt = tl.where(keep[:, None], tl.exp(tl.minimum(kb - r[None, :], 80.0)), 0.0)
        if HAS_LRPE:
            dq += qf * (cq * mm(dA, _pin(kt * cq), DOT) + sq * mm(dA, _pin(kt * sq), DOT))
        else:
            dq += qf * mm(dA, _pin(kt), DOT)
    else:
        _A, dqi, _dk = _exact_intra(
            K, THETA, MASK, k_base, b.to(tl.int64) * N, c0, end, stride_qn, D, qb, z, th, dA, qb, scale,
            BLOCK_C, BLOCK_D, HAS_LRPE, HAS_MASK, False, True, False,
        )
        dq += dqi
    dq = dq * scale
    store_rows(DQ + k_base, dq, rows, offs_d, stride_qn, valid, D)
    wseg = decay * tl.exp(tl.minimum(zseg - zin, 0.0))[None, :]  # e^{z_seg − z_t}, both factors ≤ 1
    lc, ls = _local_grad(qb, dob, wseg, cq, sq, HAS_LRPE, DOT)
    Lc += lc
    if HAS_LRPE:
        Ls += ls
    else:
        Ls = Lc
    lzt += wseg * (-qb * dq)  # −q ⊙ dq: gradient reaching z_t directly from o_t
    return Sc, Ss, Lc, Ls, lzt


@triton.jit
def _c_seg_bwd_dq_kernel(
    Q, K, V, DO, DQ, THETA, MASK, FLAG, SIN, ZSEG, ZL, RL, EL, LG, LZ, N, H, D, E, NC, NSEG, SEG,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_G: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """B1: dq of one segment's chunks (forward walk carrying the state), and the segment's local gradients w.r.t. the
    state entering it, ``LG [BH, NSEG + 1, D', E]`` / ``LZ [BH, NSEG + 1, D]`` slot ``seg`` (relative to its z)."""
    seg = tl.program_id(0)
    pid_bh = tl.program_id(1)
    if _segment_selected(FLAG, pid_bh, seg, SEG, NC, NSEG * SEG, BLOCK_G, EXACT):
        DP = 2 * D if HAS_LRPE else D
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        FSTRIDE = NSEG * SEG
        slot = pid_bh.to(tl.int64) * (NSEG + 1) + seg
        Sc, Ss = load_state(SIN, slot * DP * E, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        zseg = tl.load(ZSEG + slot * D + offs_d, mask=dmask, other=0.0)
        Lc = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
        Ls = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
        lzt = tl.zeros([BLOCK_C, BLOCK_D], tl.float32)
        j0 = seg * SEG
        j1 = tl.minimum(j0 + SEG, NC)
        for j in range(j0, j1):
            zin, zout = _z_bounds(EL, zseg, pid_bh, j, j0, NC, D, BLOCK_D)
            if EXACT and _chunk_flagged(FLAG, pid_bh, j, FSTRIDE):  # the exact launch: flagged chunks only
                Sc, Ss, Lc, Ls, lzt = _dq_chunk(
                    Q, K, V, DO, DQ, THETA, MASK, ZL, RL, Sc, Ss, Lc, Ls, lzt, zseg, zin, zout, pid_bh, j,
                    N, H, D, E, NC, stride_qb, stride_qn, stride_vb, stride_vn, scale,
                    BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, True,
                )
            else:
                Sc, Ss, Lc, Ls, lzt = _dq_chunk(
                    Q, K, V, DO, DQ, THETA, MASK, ZL, RL, Sc, Ss, Lc, Ls, lzt, zseg, zin, zout, pid_bh, j,
                    N, H, D, E, NC, stride_qb, stride_qn, stride_vb, stride_vn, scale,
                    BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, False,
                )
        store_state(LG, slot * DP * E, Lc * scale, Ls * scale, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        lz = tl.sum(lzt, 0)
        tl.store(LZ + slot * D + offs_d, lz, mask=dmask)


@triton.jit
def _dkdv_chunk(
    Q, K, V, DO, DQ, DK, DV, THETA, MASK, ZL, RL, Gc, Gs, gzt, zseg, zin, zout, pid_bh, j, N, H, D, E, NC,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """dk, dv of chunk ``j`` given the gradient of the state leaving it (``Gc, Gs [D, E]`` in units of ``zout``, and
    the gradient of that z as a ``[C, D]`` tile of equal rows ``gzt``); returns the same gradients for the state
    entering the chunk: ``G ← e^{z_in − z_out} G + scale · Σ (q ⊙ e^{z_in − z_t} ⊙ rot)ᵀ dO``,
    ``gz ← e^{z_in − z_out} gz + Σ_t e^{z_in − z_t} g_t`` (through :func:`_sum_mm` with a ones matrix). The in-chunk
    tail ``Σ_{t ≥ s} e^{r − z_t} g_t`` is a product with a triangular ones matrix."""
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    b, c0, end, rows, valid, keep, k_base, v_base, qb, kb, vb = _chunk_inputs(
        Q, K, V, MASK, pid_bh, j, N, H, D, E, stride_qb, stride_qn, stride_vb, stride_vn,
        BLOCK_C, BLOCK_D, BLOCK_E, HAS_MASK,
    )
    dob = load_rows(DO + v_base, rows, offs_e, stride_vn, valid, E, 0.0)
    g = -qb * load_rows(DQ + k_base, rows, offs_d, stride_qn, valid, D, 0.0)
    z, r, decay, qf = _z_factors(ZL, RL, kb, keep, zseg, zin, pid_bh, j, rows, valid, N, NC, D, BLOCK_D, EXACT)
    causal = (offs_c[:, None] >= offs_c[None, :]) & keep[None, :]
    dA = tl.where(causal, mm(dob, tl.trans(vb), DOT), 0.0)
    th, cq, sq = _rotation(THETA, rows, valid, D, qb, BLOCK_D, HAS_LRPE)
    # inter: the state leaving this chunk holds exp(k_s − z_out) k̄-rotation v_s
    ko = tl.where(keep[:, None], tl.exp(tl.minimum(kb - zout[None, :], 0.0)), 0.0)
    if HAS_LRPE:
        dv = mm(_pin(ko * cq), Gc, DOT) + mm(_pin(ko * sq), Gs, DOT)
        dk = ko * (cq * mm(vb, tl.trans(Gc), DOT) + sq * mm(vb, tl.trans(Gs), DOT) + gzt)
    else:
        dv = mm(_pin(ko), Gc, DOT)
        dk = ko * (mm(vb, tl.trans(Gc), DOT) + gzt)
    # the leaving state's gradients are used: fold in this chunk's local terms (gradients of the entering state)
    a = tl.exp(tl.minimum(zin - zout, 0.0))
    lc, ls = _local_grad(qb, dob, decay, cq, sq, HAS_LRPE, DOT)
    Gc = a[:, None] * Gc + scale * lc
    if HAS_LRPE:
        Gs = a[:, None] * Gs + scale * ls
    else:
        Gs = Gc
    ones = tl.full([BLOCK_C, BLOCK_C], 1.0, tl.float32)
    gzt = a[None, :] * gzt + _sum_mm(ones, decay * g, DOT)  # every row: a · gz + Σ_t e^{z_in − z_t} g_t
    if not EXACT:
        qt = qb * qf
        kt = tl.where(keep[:, None], tl.exp(tl.minimum(kb - r[None, :], 80.0)), 0.0)
        A = tl.where(causal, _scores(qt, kt, cq, sq, HAS_LRPE, DOT), 0.0)
        if HAS_LRPE:
            attn = cq * mm(tl.trans(dA), _pin(qt * cq), DOT) + sq * mm(tl.trans(dA), _pin(qt * sq), DOT)
        else:
            attn = mm(tl.trans(dA), _pin(qt), DOT)
        upper = (offs_c[None, :] >= offs_c[:, None]).to(tl.float32)  # [s, t]: t ≥ s
        tail = _sum_mm(upper, qf * g, DOT)  # Σ_{t ≥ s} exp(r − z_t) g_t
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
    return Gc, Gs, gzt


@triton.jit
def _c_seg_bwd_dkdv_kernel(
    Q, K, V, DO, DQ, DK, DV, THETA, MASK, FLAG, ZSEG, ZL, RL, EL, LG, LZ, N, H, D, E, NC, NSEG, SEG,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_G: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """B3: dk and dv of one segment's chunks, walking them in reverse from the gradient of the state leaving the
    segment (``LG`` / ``LZ`` slot ``seg + 1`` after B2, in units of ``ZSEG`` slot ``seg + 1``)."""
    seg = tl.program_id(0)
    pid_bh = tl.program_id(1)
    if _segment_selected(FLAG, pid_bh, seg, SEG, NC, NSEG * SEG, BLOCK_G, EXACT):
        DP = 2 * D if HAS_LRPE else D
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        FSTRIDE = NSEG * SEG
        slot = pid_bh.to(tl.int64) * (NSEG + 1) + seg + 1
        Gc, Gs = load_state(LG, slot * DP * E, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        gz = tl.load(LZ + slot * D + offs_d, mask=dmask, other=0.0)
        gzt = tl.zeros([BLOCK_C, BLOCK_D], tl.float32) + gz[None, :]
        zseg = tl.load(ZSEG + (slot - 1) * D + offs_d, mask=dmask, other=0.0)
        zlast = tl.load(ZSEG + slot * D + offs_d, mask=dmask, other=0.0)
        j0 = seg * SEG
        n = tl.minimum(SEG, NC - j0)
        for i in range(0, n):
            j = j0 + n - 1 - i  # walk backwards
            zin, zout = _z_bounds(EL, zseg, pid_bh, j, j0, NC, D, BLOCK_D)
            zout = tl.where(i == 0, zlast, zout)  # the segment's last chunk: the units of LG / LZ
            if EXACT and _chunk_flagged(FLAG, pid_bh, j, FSTRIDE):  # the exact launch: flagged chunks only
                Gc, Gs, gzt = _dkdv_chunk(
                    Q, K, V, DO, DQ, DK, DV, THETA, MASK, ZL, RL, Gc, Gs, gzt, zseg, zin, zout, pid_bh, j,
                    N, H, D, E, NC, stride_qb, stride_qn, stride_vb, stride_vn, scale,
                    BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, True,
                )
            else:
                Gc, Gs, gzt = _dkdv_chunk(
                    Q, K, V, DO, DQ, DK, DV, THETA, MASK, ZL, RL, Gc, Gs, gzt, zseg, zin, zout, pid_bh, j,
                    N, H, D, E, NC, stride_qb, stride_qn, stride_vb, stride_vn, scale,
                    BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, False,
                )


# ----------------------------------------------------------------------------------------------------------------
# launch parameters and host code


_LAUNCH = {fn.__name__: Launcher(fn) for fn in (
    _c_seg_state_kernel, _c_seg_out_kernel, _c_seg_bwd_dq_kernel, _c_seg_bwd_dkdv_kernel)}


@dataclass(frozen=True)
class CausalLaunch:
    """Launch parameters of the causal kernels, for experiments that vary them; ``None`` = the heuristic. Pass the
    same value to :func:`causal_forward` and :func:`causal_backward` (the backward reads the chunk size from it and
    the segmentation from the forward's ``saved``).

    Attributes:
        chunk: tokens per chunk (``C``, a power of two ≥ 16).
        segment: chunks per segment (one program walks a segment).
        num_warps: warps of the forward chunk-walk launches (F1, F3).
        bwd_num_warps: warps of the backward chunk-walk launches (B1, B3).
        num_stages: Triton's software-pipelining stages of the chunk-walk launches.
        scan_block_j: segments per group of the segment scans (``BLOCK_J``).
        scan_block_x: state elements per program of the segment scans (``BLOCK_X``).
    """

    chunk: Optional[int] = None
    segment: Optional[int] = None
    num_warps: Optional[int] = None
    bwd_num_warps: Optional[int] = None
    num_stages: Optional[int] = None
    scan_block_j: Optional[int] = None
    scan_block_x: Optional[int] = None


_HEURISTIC = CausalLaunch()


def chunk_size(D: int, E: int, launch: CausalLaunch = _HEURISTIC) -> int:
    """Tokens per chunk: 32 on a GPU (with 4 warps up to head dims of 64, the fastest of the chunk sizes swept); 16
    under the interpreter, so small CPU tests cross chunk borders; or ``launch.chunk``."""
    if launch.chunk:
        return launch.chunk
    return 16 if interpreting() else 32


def segment_chunks(NC: int, BH: int, device: torch.device, segment: Optional[int] = None,
                   sms: Optional[int] = None) -> int:
    """Chunks per segment (one program walks a segment's chunks in order) for ``NC`` chunks of ``BH`` (batch, head)
    rows.

    ``segment`` given: that many; 2 under the interpreter (so small tests cross segment borders). On a GPU one
    segment per (batch, head) when the heads alone give two programs per SM and there are at most 64 chunks (F1's
    state, the scans F2 / B2 and their tensors are skipped), else about four programs per SM:
    ``clamp(ceil(NC · BH / (4 · SMs)), 1, 16)``. Never more than ``NC``. ``sms``: the GPU rule for a GPU of that many
    SMs, whatever the device (what ``benchmarks/launches.py`` counts on the CPU).
    """
    n_sms = sms or (None if interpreting() else num_sms(device))
    if segment:
        seg = int(segment)
    elif n_sms is None:
        seg = 2
    elif BH >= 2 * n_sms and NC <= 64:
        seg = NC
    else:
        seg = min(16, cdiv(NC * BH, 4 * n_sms))
    return max(1, min(seg, NC))


def _warps(D: int, E: int, backward: bool, launch: CausalLaunch) -> int:
    """Warps of a chunk-walking launch: forward 4 up to head dims of 64, 8 for wider tiles (registers); backward 8 at
    every width (its fast launches' stack frames shrink from hundreds of bytes per thread to a few); always 4 under
    the interpreter (warps change nothing there); or as ``launch`` says."""
    given = launch.bwd_num_warps if backward else launch.num_warps
    if given:
        return given
    if interpreting():
        return 4
    if backward:
        return 8
    return 4 if max(block_size(D), block_size(E)) <= 64 else 8


def _walk_options(D: int, E: int, backward: bool, launch: CausalLaunch) -> dict:
    """Launch options of the chunk-walk kernels (F1, F3 / B1, B3)."""
    opts = {"num_warps": _warps(D, E, backward, launch)}
    if launch.num_stages:
        opts["num_stages"] = launch.num_stages
    return opts


def _saved_layout(
    BH: int, N: int, D: int, DP: int, E: int, NC: int, NSEG: int, SEG: int
) -> List[Tuple[Tuple[int, ...], torch.dtype]]:
    """``(shape, dtype)`` of each tensor of the forward's ``saved = [SIN, ZSEG, ZL, RL, EL, FLAG]``."""
    f32 = torch.float32
    return [((BH, NSEG + 1, DP, E), f32), ((BH, NSEG + 1, D), f32), ((BH, N, D), f32), ((BH, NC, D), f32),
            ((BH, NC, D), f32), ((BH, NSEG, SEG), torch.int32)]


def saved_specs(
    q: torch.Tensor, v: torch.Tensor, theta: Optional[torch.Tensor]
) -> List[Tuple[Tuple[int, ...], torch.dtype]]:
    """``(shape, dtype)`` of each tensor in :func:`causal_forward`'s ``saved`` list with the heuristic launch
    parameters (they depend only on the shapes, the device's SM count and the interpreter): the custom op's fake
    function. ``q [B, N, H, D]``, ``v [B, N, H, E]``, ``theta [N, D]`` or None."""
    B, N, H, D = q.shape
    E = v.shape[-1]
    NC = cdiv(N, chunk_size(D, E))
    SEG = segment_chunks(NC, B * H, q.device)
    return _saved_layout(B * H, N, D, 2 * D if theta is not None else D, E, NC, cdiv(NC, SEG), SEG)


def causal_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, key_padding_mask: Optional[torch.Tensor],
    lrpe_theta: Optional[torch.Tensor], initial_state: Optional[Tuple[torch.Tensor, torch.Tensor]], *,
    launch: Optional[CausalLaunch] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[torch.Tensor]]:
    """``(o [B, N, H, E] in q's dtype, S [B, H, D', E] fp32, z [B, H, D] fp32, saved)`` of contiguous
    ``q, k [B, N, H, D]``, ``v [B, N, H, E]`` (mask ``[B, N]``, angles ``[N, D]``, initial state contiguous).

    ``saved = [SIN, ZSEG, ZL, RL, EL, FLAG]``: states ``[BH, NSEG + 1, D', E]`` and log-normalisers
    ``[BH, NSEG + 1, D]`` entering every segment (slot NSEG: the final state, of which ``S`` / ``z`` are views), the
    segment-local z of every token ``[BH, N, D]``, at every chunk's first kept token and leaving it ``[BH, NC, D]``,
    and the chunk flags ``[BH, NSEG, SEG]`` (its last size is the segment length) — see the module docstring.
    """
    launch = launch or _HEURISTIC
    B, N, H, D, E, lrpe, DP, BD, BE, mask, theta = problem_shape(q, v, key_padding_mask, lrpe_theta)
    C = chunk_size(D, E, launch)
    NC = cdiv(N, C)
    BH = B * H
    SEG = segment_chunks(NC, BH, q.device, launch.segment)
    NSEG = cdiv(NC, SEG)
    X = DP * E
    dev = q.device
    dot = dot_mode(q.dtype)
    opts = _walk_options(D, E, False, launch)
    has_mask = key_padding_mask is not None
    SIN, ZSEG, ZL, RL, EL, FLAG = (torch.empty(shape, device=dev, dtype=dtype)
                                   for shape, dtype in _saved_layout(BH, N, D, DP, E, NC, NSEG, SEG))
    S0, z0 = initial_state if initial_state is not None else (SIN, ZSEG)
    single = NSEG == 1  # one segment: F1 writes only ZL / RL / EL / FLAG, F2 is skipped, F3 starts from (S0, z0)
    if single:
        LJ, SL = ZSEG, SIN  # never touched (STATE=False)
    else:
        LJ = torch.empty((BH, NSEG, D), device=dev, dtype=torch.float32)
        SL = torch.empty((BH, NSEG, DP, E), device=dev, dtype=torch.float32)
    _LAUNCH["_c_seg_state_kernel"][(NSEG, BH)](
        k, v, theta, mask, LJ, SL, ZL, RL, EL, FLAG, N, H, D, E, NC, NSEG, SEG, k.stride(0), k.stride(1),
        v.stride(0), v.stride(1), BLOCK_C=C, BLOCK_D=BD, BLOCK_E=BE, HAS_LRPE=lrpe, HAS_MASK=has_mask, DOT=dot,
        STATE=not single, **opts,
    )
    if not single:
        BJ, BX = scan_config(X, NSEG, BH, dev, launch.scan_block_j, launch.scan_block_x)
        scan_forward(LJ, SL, S0, z0, SIN, ZSEG, D, E, NSEG, X, initial_state is not None, BJ, BX)
    o = torch.empty((B, N, H, E), device=dev, dtype=q.dtype)
    for exact in (False, True):
        _LAUNCH["_c_seg_out_kernel"][(NSEG, BH)](
            q, k, v, o, theta, mask, FLAG, SIN, ZSEG, ZL, RL, EL, S0, z0, N, H, D, E, NC, NSEG, SEG,
            q.stride(0), q.stride(1), v.stride(0), v.stride(1), scale, BLOCK_C=C, BLOCK_D=BD, BLOCK_E=BE,
            BLOCK_G=block_size(SEG, 1), HAS_LRPE=lrpe, HAS_MASK=has_mask, DOT=dot, EXACT=exact, SINGLE=single,
            HAS_INIT=initial_state is not None, **opts,
        )
    S = SIN[:, NSEG].reshape(B, H, DP, E)
    z = ZSEG[:, NSEG].reshape(B, H, D)
    return o, S, z, [SIN, ZSEG, ZL, RL, EL, FLAG]


def _grad_slots(
    dS_out: Optional[torch.Tensor], dz_out: Optional[torch.Tensor], S: torch.Tensor, BH: int, NSEG: int, DP: int,
    D: int, E: int, dev: torch.device,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(LG [BH, NSEG + 1, D', E], LZ [BH, NSEG + 1, D])`` fp32, slot NSEG holding the gradients of the returned
    final state ``(S, z)`` (z also collects ``−rowsum(S ⊙ dS)``); the other slots are filled by B1."""
    LG = torch.empty((BH, NSEG + 1, DP, E), device=dev, dtype=torch.float32)
    LZ = torch.empty((BH, NSEG + 1, D), device=dev, dtype=torch.float32)
    if dS_out is None:  # the usual training call: the final state is unused (two fills, no zeros + copy)
        LG[:, NSEG] = 0
        LZ[:, NSEG] = 0 if dz_out is None else dz_out.reshape(BH, D)
        return LG, LZ
    LG[:, NSEG] = dS_out.reshape(BH, DP, E)
    gz = -(S * dS_out).sum(-1).reshape(BH, -1, D).sum(1)
    if dz_out is not None:
        gz = gz + dz_out.reshape(BH, D)
    LZ[:, NSEG] = gz
    return LG, LZ


def causal_backward(
    do: torch.Tensor, dS_out: Optional[torch.Tensor], dz_out: Optional[torch.Tensor], q: torch.Tensor,
    k: torch.Tensor, v: torch.Tensor, S: torch.Tensor, saved: List[torch.Tensor], scale: float,
    key_padding_mask: Optional[torch.Tensor], lrpe_theta: Optional[torch.Tensor], *,
    launch: Optional[CausalLaunch] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` given ``dO [B, N, H, E]``, the (optional) gradients ``dS_out [B, H, D', E]``,
    ``dz_out [B, H, D]`` of the returned final state ``S``, and the forward's ``saved`` (same ``launch``)."""
    launch = launch or _HEURISTIC
    SIN, ZSEG, ZL, RL, EL, FLAG = saved
    B, N, H, D, E, lrpe, DP, BD, BE, mask, theta = problem_shape(q, v, key_padding_mask, lrpe_theta)
    C = chunk_size(D, E, launch)
    NC = cdiv(N, C)
    BH = B * H
    NSEG, SEG = FLAG.shape[1], FLAG.shape[2]  # the forward's segmentation
    X = DP * E
    dot = dot_mode(q.dtype)
    do = do.contiguous()
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    LG, LZ = _grad_slots(dS_out, dz_out, S, BH, NSEG, DP, D, E, q.device)
    common = dict(BLOCK_C=C, BLOCK_D=BD, BLOCK_E=BE, BLOCK_G=block_size(SEG, 1), HAS_LRPE=lrpe,
                  HAS_MASK=key_padding_mask is not None, DOT=dot, **_walk_options(D, E, True, launch))
    strides = (q.stride(0), q.stride(1), v.stride(0), v.stride(1))
    for exact in (False, True):
        _LAUNCH["_c_seg_bwd_dq_kernel"][(NSEG, BH)](
            q, k, v, do, dq, theta, mask, FLAG, SIN, ZSEG, ZL, RL, EL, LG, LZ, N, H, D, E, NC, NSEG, SEG,
            *strides, scale, EXACT=exact, **common,
        )
    if NSEG > 1:  # with one segment the reverse scans would only update slot 0 (the initial state's gradient)
        BJ, BX = scan_config(X, NSEG, BH, q.device, launch.scan_block_j, launch.scan_block_x)
        scan_backward(LG, LZ, ZSEG, D, E, NSEG, X, BJ, BX)
    for exact in (False, True):
        _LAUNCH["_c_seg_bwd_dkdv_kernel"][(NSEG, BH)](
            q, k, v, do, dq, dk, dv, theta, mask, FLAG, ZSEG, ZL, RL, EL, LG, LZ, N, H, D, E, NC, NSEG, SEG,
            *strides, scale, EXACT=exact, **common,
        )
    return dq, dk, dv
