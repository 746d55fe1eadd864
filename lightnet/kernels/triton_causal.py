"""Triton kernels of the causal additive attention in the Lightning-Attention-2 form, forward and backward.

Per (batch, head), channel c:  z_t = logcumsumexp(k)_t (merged with the initial log-normaliser),
o_t = scale · Σ_{s≤t} Σ_c q̄_{t,c} exp(k_{s,c} − z_{t,c}) v_s  (+ the initial state's share).

Tokens are cut into chunks of ``C`` and the chunks of every (batch, head) into segments of ``SEG`` chunks
(:func:`segment_chunks`); one program owns one segment and walks its chunks in order, carrying the fp32 state
(``S [D', E]`` normalised, and its log-normaliser ``z [D]``) from chunk to chunk in registers. Full states are
materialised only per segment; per chunk only z (``[D]``) and a flag are stored:
    forward   F1  per segment: segment-local log-normaliser and normalised state (online merge over its chunks)
              F2  scan over segments (blocked ``tl.associative_scan``): state and z entering every segment
              F3  per segment, chunk by chunk: inter ``(q̄ ⊙ e^{z_in − z_t}) S_in`` + intra ``(A ⊙ mask) V``, then
                  ``S ← e^{z_in − z_out} S + (e^{k − z_out} ⊙ rot)ᵀ V`` with ``z_out`` the stable chunk log-sum-exp;
                  records z entering every chunk (``ZC``) and the chunk's flag
    backward  B1  per segment, forward walk (same carried state): dq, and the segment's local gradient w.r.t. the
                  state entering it, ``Σ_t (q̄ ⊙ e^{z_seg − z_t})ᵀ dO`` and ``Σ_t e^{z_seg − z_t} g_t`` (g = −q ⊙ dq)
              B2  reverse scans over segments → gradient of the state (and of its z) leaving every segment
              B3  per segment, reverse walk: dk, dv of a chunk from the gradient of the state leaving it, then
                  ``G ← e^{z_in − z_out} G + (q̄ ⊙ e^{z_in − z_t})ᵀ dO`` (and the same for z) for the previous chunk
When one segment holds every chunk (short sequences), F1, F2 and B2 are skipped: F3 starts from the initial state
and stores the state it carries out of the last chunk as the final state.

Bytes. Per (batch, head) and token, with ``C = 64`` and ``D' = E = 64`` (a 16 KiB fp32 state): the fp32 state
traffic is 9 state transfers (F1 write, F2 read + write, F3 read, B1 read + write, B2 read + write, B3 read) per
segment, ``9 · 16 KiB / (64 · SEG)`` = ``2304 / SEG`` B/token (144 B at SEG = 16; it was 2304 B/token with one
chunk per program), plus ~20 B/token of per-chunk z (``ZC``: F3 write, B1 and B3 reads). Saved for the backward:
``(NSEG + 1) · D' · E`` fp32 per (batch, head), ``256 / SEG`` B/token (16 B at SEG = 16, was 256), and ``ZC``
(``4 · D / C`` = 4 B/token).

Stability. All exponents of the inter terms are ≤ 0 (z is non-decreasing). Inside a chunk the pairwise weight
``exp(k_s − z_t)`` is factored as ``exp(k_s − r) · exp(r − z_t)`` with ``r`` the chunk's smallest (non-empty)
``z``; both factors stay inside fp32 while the chunk's spread ``max z − r`` is ≤ 40 (then the scores are one
tensor-core product), and the in-chunk logcumsumexp is ``M + log(cumsum(exp(k − M)))`` while no key sits more than
80 below the chunk's maximum. F3, B1 and B3 are launched twice: the fast launch (no exact code, fewer registers)
handles every segment and F3's fast launch flags the chunks outside those bounds (key logits of ~±1e2 and beyond);
the exact launch returns at once for segments without a flagged chunk and redoes the others whole (the carried state
must pass through every chunk), taking the fast path for unflagged chunks and, for flagged ones, a log-space scan for
z and every pairwise weight formed directly (a loop over the chunk's keys): slower, never inf/NaN. The carried
``z_out`` never comes from the fast in-chunk z, so the fast launch's state stays right on flagged chunks.

Default: the zpass variant (:mod:`lightnet.kernels.triton_causal_zpass`, ``TUNING["c_zpass"]`` None or 1). F1' also
stores every token's segment-local z (``ZL [BH, N, D]`` fp32) and per chunk the local z at its first kept token and
leaving it (``RL``, ``EL [BH, NC, D]``) and the chunk flags (local spread, a superset of the flags above); F1' runs
even with one segment (without the state then). F3' / B1' / B3' get every z as ``logaddexp(z_seg, local)``
elementwise, so their fast chunk steps have no reduction or scan over tokens (B3's token sums become products with
ones matrices). Launches: F1', F2, F3' ×2; B1' ×2, B2, B3' ×2 (no ZC). Its backward launches take 8 warps
(``_warps``). Why it is the default: CUDA-graph GPU time of causal forward+backward on one H200 (2026-11-23,
torch 2.11.0+cu130, Triton 3.6.0, bf16, 6 heads × D = E = 64, B · N = 65,536, ``benchmarks/sweep_kernels.py
--causal-only``, ``benchmarks/results/run_d_h200/sweep_causal.json``), ms at N = 4,096 / 65,536 / 1,024 / 196:
    this path (zpass, 4 warps forward, 8 warps backward)   1.819 / 1.532 / 3.018 / 1.599
    zpass with 4 warps backward                            1.977 / 1.694 / 3.178 / 1.845
    lean path (``c_zpass = 0``, 4 warps)                    2.050 / 1.762 / 3.271 / 1.837
    lean path, 8 warps backward                            2.374 / 2.089 / 3.579 / 2.226
i.e. 11 % / 13 % / 8 % / 13 % less time than the lean path, with equal errors against the fp32 reference at
N = 4,096 (dk 3.07e-3). Memory: ZL is saved for the backward, ``4 · D`` B per token and head (256 B at D = 64, two
thirds of bf16 q, k, v), plus ``8 · D / C`` B of RL / EL, less the lean path's ``ZC`` (``4 · D / C``): at the
benchmark shape (65,536 tokens × 6 heads, D = 64, C = 32) ZL is 96 MiB (100,663,296 B) and the saved tensors grow by
about 99 MiB (+96 ZL, +6 RL / EL, −3 ZC) per causal attention call, against 144 MiB of bf16 q, k, v. Traffic: ZL is
written once and read three times (``16 · D`` B/token). ``TUNING["c_zpass"] = 0`` keeps the lean path above (z
recomputed in every chunk step, only ``ZC`` saved; 4 warps backward at D ≤ 64): for runs short of activation memory.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from .triton_common import (
    Launcher,
    cdiv,
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
    num_sms,
    store_rows,
)

__all__ = ["causal_forward", "causal_backward", "chunk_size", "segment_chunks", "zpass_enabled"]



def chunk_size(D: int, E: int) -> int:
    """Tokens per chunk: 32 on a GPU (H100, D = E = 64, CUDA-graph GPU time of forward+backward: chunks of 32 with
    4 warps 1.99 / 1.74 ms at N = 4K / 64K against 2.59 / 2.05 ms for chunks of 64 with 8 warps,
    ``benchmarks/sweep_kernels.py --causal``); 16 under the interpreter to keep CPU tests small."""
    if interpreting():
        return 16
    return TUNING["c_chunk"] or 32


def _warps(D: int, E: int, lrpe: bool, backward: bool = False, zpass: bool = False) -> int:
    """Warps of a chunk-walking launch: 4 up to head dims of 64 (measured, see ``chunk_size``), 8 for wider tiles
    (registers); the zpass path's backward launches take 8 at every width (measured on an H200: 5 % to 13 % less
    forward+backward time than with 4; on the lean path 8 backward warps took 9 % to 21 % more, see the module
    docstring). Overrides, strongest first: ``TUNING['c_bwd_warps']`` (backward launches alone), ``TUNING['c_warps']``
    (every launch). Always 4 under the interpreter (one configuration; warps change nothing there)."""
    if interpreting():
        return 4
    if backward and TUNING.get("c_bwd_warps"):
        return TUNING["c_bwd_warps"]
    if TUNING["c_warps"]:
        return TUNING["c_warps"]
    if backward and zpass:
        return 8
    return 4 if max(block_size(D), block_size(E)) <= 64 else 8


def zpass_enabled() -> bool:
    """Whether :func:`causal_forward` takes the zpass path (the default: ``TUNING["c_zpass"]`` None or 1) or the
    memory-lean one (``0``); any other value is an error."""
    val = TUNING.get("c_zpass")
    if val is None:
        return True
    if val not in (0, 1):
        raise ValueError(f'TUNING["c_zpass"] must be None (default: 1), 1 (zpass) or 0 (memory-lean path), got {val!r}')
    return bool(val)


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
def _chunk_grad_inputs(
    Q, K, V, DO, MASK, ZC, pid_bh, j, N, H, D, E, NC, stride_qb, stride_qn, stride_vb, stride_vn,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, HAS_MASK: tl.constexpr,
):
    """What both backward chunk steps load: ``_chunk_inputs`` plus ``dO [C, E]`` and the z entering / leaving the
    chunk (``ZC [BH, NC + 1, D]``)."""
    b, c0, end, rows, valid, keep, k_base, v_base, qb, kb, vb = _chunk_inputs(
        Q, K, V, MASK, pid_bh, j, N, H, D, E, stride_qb, stride_qn, stride_vb, stride_vn,
        BLOCK_C, BLOCK_D, BLOCK_E, HAS_MASK,
    )
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    dob = load_rows(DO + v_base, rows, tl.arange(0, BLOCK_E), stride_vn, valid, E, 0.0)
    zslot = pid_bh.to(tl.int64) * (NC + 1) + j
    zin = tl.load(ZC + zslot * D + offs_d, mask=dmask, other=0.0)
    zout = tl.load(ZC + (zslot + 1) * D + offs_d, mask=dmask, other=0.0)
    return b, c0, end, rows, valid, keep, k_base, v_base, qb, kb, vb, dob, zin, zout


@triton.jit
def _scores(qt, kt, cq, sq, ck, sk, HAS_LRPE: tl.constexpr, DOT: tl.constexpr):
    """Factored intra-chunk scores ``Σ_c qt_{t,c} kt_{s,c} cos(θ_t − θ_s)`` as tensor-core products."""
    if HAS_LRPE:
        A = mm(qt * cq, tl.trans(kt * ck), DOT) + mm(qt * sq, tl.trans(kt * sk), DOT)
    else:
        A = mm(qt, tl.trans(kt), DOT)
    return A


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
def _rotation(THETA, rows, valid, D, like, BLOCK_D: tl.constexpr, HAS_LRPE: tl.constexpr):
    """``(θ, cos θ, sin θ)`` ``[C, D]`` of a chunk's tokens; without LRPE ``like`` three times (never read)."""
    if HAS_LRPE:
        th = load_rows(THETA, rows, tl.arange(0, BLOCK_D), D, valid, D, 0.0)
        cq = tl.cos(th)
        sq = tl.sin(th)
    else:
        th = like
        cq = like
        sq = like
    return th, cq, sq


@triton.jit
def _chunk_end_z(kb, keep, zin):
    """Log-normaliser leaving a chunk ``[D]``: ``logaddexp(z_in, M + log Σ_s exp(k_s − M))`` (stable for any spread;
    ``kb [C, D]``, padding rows have ``keep`` False)."""
    km = tl.where(keep[:, None], kb, NEG_BIG)
    m = tl.max(km, 0)
    l = tl.sum(tl.where(keep[:, None], tl.exp(km - m[None, :]), 0.0), 0)
    lse = tl.where(l > 0, m + tl.log(tl.maximum(l, 1e-30)), NEG_BIG)
    return tl.maximum(logaddexp(zin, lse), NEG_BIG)


@triton.jit
def _advance(Sc, Ss, zin, zout, kb, keep, vb, cq, sq, HAS_LRPE: tl.constexpr, DOT: tl.constexpr):
    """State leaving a chunk: ``S ← e^{z_in − z_out} S + (e^{k − z_out} ⊙ rotation)ᵀ V`` (every exponent ≤ 0).

    ``Sc, Ss [D, E]``: cosine / sine halves normalised by ``z_in [D]``; ``kb, cq, sq [C, D]``, ``vb [C, E]``.
    """
    a = tl.exp(tl.minimum(zin - zout, 0.0))[:, None]
    ko = tl.where(keep[:, None], tl.exp(tl.minimum(kb - zout[None, :], 0.0)), 0.0)
    if HAS_LRPE:
        Sc = a * Sc + mm(tl.trans(ko * cq), vb, DOT)
        Ss = a * Ss + mm(tl.trans(ko * sq), vb, DOT)
    else:
        Sc = a * Sc + mm(tl.trans(ko), vb, DOT)
        Ss = Sc
    return Sc, Ss


@triton.jit
def _local_grad(qb, dob, w, cq, sq, HAS_LRPE: tl.constexpr, DOT: tl.constexpr):
    """Unscaled gradient of a chunk's outputs w.r.t. an earlier state: ``(q ⊙ w ⊙ rotation)ᵀ dO`` ``[D, E]`` halves,
    with ``w = e^{z_ref − z_t}`` ``[C, D]`` the decay from that state's log-normaliser."""
    if HAS_LRPE:
        Lc = mm(tl.trans(qb * w * cq), dob, DOT)
        Ls = mm(tl.trans(qb * w * sq), dob, DOT)
    else:
        Lc = mm(tl.trans(qb * w), dob, DOT)
        Ls = Lc
    return Lc, Ls


# ----------------------------------------------------------------------------------------------------------------
# forward


@triton.jit
def _c_seg_state_kernel(
    K, V, THETA, MASK, LJ, SL, N, H, D, E, NC, NSEG, SEG, stride_kb, stride_kn, stride_vb, stride_vn,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr,
):
    """F1: segment-local log-normaliser ``LJ [BH, NSEG, D]`` and normalised state ``SL [BH, NSEG, D', E]``: an online
    merge over the segment's chunks, in order, starting from the empty state."""
    seg = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    DP = 2 * D if HAS_LRPE else D
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    k_base = b.to(tl.int64) * stride_kb + h * D
    v_base = b.to(tl.int64) * stride_vb + h * E
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
        vb = load_rows(V + v_base, rows, offs_e, stride_vn, valid, E, 0.0)
        th, cq, sq = _rotation(THETA, rows, valid, D, kb, BLOCK_D, HAS_LRPE)
        zout = _chunk_end_z(kb, keep, zc)
        Sc, Ss = _advance(Sc, Ss, zc, zout, kb, keep, vb, cq, sq, HAS_LRPE, DOT)
        zc = zout
    slot = pid_bh.to(tl.int64) * NSEG + seg
    store_state(SL, slot * DP * E, Sc, Ss, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
    tl.store(LJ + slot * D + offs_d, zc, mask=offs_d < D)


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
    """F2: states entering every block (segment), ``SIN[:, j]`` / ``ZIN[:, j]`` for j = 0..NC (slot NC = final state).

    ``NC`` counts the blocks scanned (segments here). One program owns ``BLOCK_X`` elements of the flattened
    ``[D', E]`` state of one (batch, head) and walks the blocks in groups of ``BLOCK_J`` with a blocked associative
    scan. Row ``r`` of the state uses channel ``r % D``.
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
def _fwd_chunk(
    Q, K, V, O, THETA, MASK, FLAG, ZC, Sc, Ss, zin, pid_bh, j, N, H, D, E, NC, FSTRIDE,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
    FAST_LAUNCH: tl.constexpr,
):
    """Output of chunk ``j`` (inter: the entering state ``(Sc, Ss [D, E], zin [D])``; intra: masked scores); returns
    the state leaving the chunk. The fast launch also records the chunk's flag and its entering z (``ZC``)."""
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    b, c0, end, rows, valid, keep, k_base, v_base, qb, kb, vb = _chunk_inputs(
        Q, K, V, MASK, pid_bh, j, N, H, D, E, stride_qb, stride_qn, stride_vb, stride_vn,
        BLOCK_C, BLOCK_D, BLOCK_E, HAS_MASK,
    )
    z, z_ok = _chunk_z(kb, keep, zin, EXACT)
    r, spread = _chunk_reference(z)
    if FAST_LAUNCH:  # the exact launch redoes segments whose factored scores or fast z could leave fp32
        tl.store(FLAG + pid_bh.to(tl.int64) * FSTRIDE + j, ((spread > 40.0) | (z_ok == 0)).to(tl.int32))
        tl.store(ZC + (pid_bh.to(tl.int64) * (NC + 1) + j) * D + offs_d, zin, mask=offs_d < D)
    decay = tl.exp(tl.minimum(zin[None, :] - z, 0.0))
    th, cq, sq = _rotation(THETA, rows, valid, D, qb, BLOCK_D, HAS_LRPE)
    if HAS_LRPE:
        o = mm(qb * decay * cq, Sc, DOT) + mm(qb * decay * sq, Ss, DOT)
    else:
        o = mm(qb * decay, Sc, DOT)
    zout = _chunk_end_z(kb, keep, zin)
    Sc, Ss = _advance(Sc, Ss, zin, zout, kb, keep, vb, cq, sq, HAS_LRPE, DOT)  # the entering state is used
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
    return Sc, Ss, zout


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


@triton.jit
def _c_seg_out_kernel(
    Q, K, V, O, THETA, MASK, FLAG, SIN, ZSEG, ZC, S0, Z0, N, H, D, E, NC, NSEG, SEG,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_G: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
    SINGLE: tl.constexpr, HAS_INIT: tl.constexpr,
):
    """F3: outputs of one segment's chunks, in order, carrying the state from the segment's entering state.

    Fast launch: every segment, fast path everywhere; writes ``FLAG`` and ``ZC [BH, NC + 1, D]`` (z entering every
    chunk; slot NC = final z). Exact launch: only segments with a flagged chunk, exact path for the flagged chunks.
    ``SINGLE`` (one segment holds every chunk, so F1 and F2 are skipped): the fast launch starts from the initial
    state ``(S0, Z0)`` (or the empty state), and writes the entering and the final state into ``SIN`` / ``ZSEG``
    itself; the carried state at the end of the walk is the final state.
    """
    seg = tl.program_id(0)
    pid_bh = tl.program_id(1)
    if _segment_selected(FLAG, pid_bh, seg, SEG, NC, NSEG * SEG, BLOCK_G, EXACT):
        DP = 2 * D if HAS_LRPE else D
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        FSTRIDE = NSEG * SEG
        slot = pid_bh.to(tl.int64) * (NSEG + 1) + seg
        Sc, Ss, zc = _segment_entry(
            SIN, ZSEG, S0, Z0, pid_bh, slot, D, E, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_INIT, SINGLE and not EXACT,
        )
        j0 = seg * SEG
        j1 = tl.minimum(j0 + SEG, NC)
        for j in range(j0, j1):
            if EXACT:
                if _chunk_flagged(FLAG, pid_bh, j, FSTRIDE):
                    Sc, Ss, zc = _fwd_chunk(
                        Q, K, V, O, THETA, MASK, FLAG, ZC, Sc, Ss, zc, pid_bh, j, N, H, D, E, NC, FSTRIDE,
                        stride_qb, stride_qn, stride_vb, stride_vn, scale,
                        BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, True, False,
                    )
                else:
                    Sc, Ss, zc = _fwd_chunk(
                        Q, K, V, O, THETA, MASK, FLAG, ZC, Sc, Ss, zc, pid_bh, j, N, H, D, E, NC, FSTRIDE,
                        stride_qb, stride_qn, stride_vb, stride_vn, scale,
                        BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, False, False,
                    )
            else:
                Sc, Ss, zc = _fwd_chunk(
                    Q, K, V, O, THETA, MASK, FLAG, ZC, Sc, Ss, zc, pid_bh, j, N, H, D, E, NC, FSTRIDE,
                    stride_qb, stride_qn, stride_vb, stride_vn, scale,
                    BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, False, True,
                )
        if not EXACT:
            if SINGLE:  # the carried state is the final state
                store_state(SIN, (slot + 1) * DP * E, Sc, Ss, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
                tl.store(ZSEG + (slot + 1) * D + offs_d, zc, mask=dmask)
                tl.store(ZC + (pid_bh.to(tl.int64) * (NC + 1) + NC) * D + offs_d, zc, mask=dmask)
            elif seg == NSEG - 1:  # the final z, as the segment scan returns it
                zf = tl.load(ZSEG + (slot + 1) * D + offs_d, mask=dmask, other=0.0)
                tl.store(ZC + (pid_bh.to(tl.int64) * (NC + 1) + NC) * D + offs_d, zf, mask=dmask)


# ----------------------------------------------------------------------------------------------------------------
# backward


@triton.jit
def _dq_chunk(
    Q, K, V, DO, DQ, THETA, MASK, ZC, Sc, Ss, Lc, Ls, lz, zseg, pid_bh, j, N, H, D, E, NC,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """dq of chunk ``j`` from the state entering it ``(Sc, Ss)``; adds the chunk's share of the segment-level local
    gradients ``Lc, Ls [D, E]`` (unscaled ``Σ (q ⊙ e^{z_seg − z_t} ⊙ rot)ᵀ dO``) and ``lz [D]``
    (``Σ e^{z_seg − z_t} g_t``, ``g = −q ⊙ dq``). Returns the state leaving the chunk and the updated sums."""
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    b, c0, end, rows, valid, keep, k_base, v_base, qb, kb, vb, dob, zin, zout = _chunk_grad_inputs(
        Q, K, V, DO, MASK, ZC, pid_bh, j, N, H, D, E, NC, stride_qb, stride_qn, stride_vb, stride_vn,
        BLOCK_C, BLOCK_D, BLOCK_E, HAS_MASK,
    )
    z, z_ok = _chunk_z(kb, keep, zin, EXACT)
    r, spread = _chunk_reference(z)
    decay = tl.exp(tl.minimum(zin[None, :] - z, 0.0))
    causal = (offs_c[:, None] >= offs_c[None, :]) & keep[None, :]
    dA = tl.where(causal, mm(dob, tl.trans(vb), DOT), 0.0)
    th, cq, sq = _rotation(THETA, rows, valid, D, qb, BLOCK_D, HAS_LRPE)
    if HAS_LRPE:
        dq = decay * (cq * mm(dob, tl.trans(Sc), DOT) + sq * mm(dob, tl.trans(Ss), DOT))
    else:
        dq = decay * mm(dob, tl.trans(Sc), DOT)
    Sc, Ss = _advance(Sc, Ss, zin, zout, kb, keep, vb, cq, sq, HAS_LRPE, DOT)  # the entering state is used
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
    wseg = tl.exp(tl.minimum(zseg[None, :] - z, 0.0))
    lc, ls = _local_grad(qb, dob, wseg, cq, sq, HAS_LRPE, DOT)
    Lc += lc
    if HAS_LRPE:
        Ls += ls
    else:
        Ls = Lc
    lz += tl.sum(wseg * (-qb * dq), 0)  # −q ⊙ dq: gradient reaching z_t directly from o_t
    return Sc, Ss, Lc, Ls, lz


@triton.jit
def _c_seg_bwd_dq_kernel(
    Q, K, V, DO, DQ, THETA, MASK, FLAG, SIN, ZSEG, ZC, LG, LZ, N, H, D, E, NC, NSEG, SEG,
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
        lz = tl.zeros([BLOCK_D], tl.float32)
        j0 = seg * SEG
        j1 = tl.minimum(j0 + SEG, NC)
        for j in range(j0, j1):
            if EXACT:
                if _chunk_flagged(FLAG, pid_bh, j, FSTRIDE):
                    Sc, Ss, Lc, Ls, lz = _dq_chunk(
                        Q, K, V, DO, DQ, THETA, MASK, ZC, Sc, Ss, Lc, Ls, lz, zseg, pid_bh, j, N, H, D, E, NC,
                        stride_qb, stride_qn, stride_vb, stride_vn, scale,
                        BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, True,
                    )
                else:
                    Sc, Ss, Lc, Ls, lz = _dq_chunk(
                        Q, K, V, DO, DQ, THETA, MASK, ZC, Sc, Ss, Lc, Ls, lz, zseg, pid_bh, j, N, H, D, E, NC,
                        stride_qb, stride_qn, stride_vb, stride_vn, scale,
                        BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, False,
                    )
            else:
                Sc, Ss, Lc, Ls, lz = _dq_chunk(
                    Q, K, V, DO, DQ, THETA, MASK, ZC, Sc, Ss, Lc, Ls, lz, zseg, pid_bh, j, N, H, D, E, NC,
                    stride_qb, stride_qn, stride_vb, stride_vn, scale,
                    BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, False,
                )
        store_state(LG, slot * DP * E, Lc * scale, Ls * scale, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        tl.store(LZ + slot * D + offs_d, lz, mask=dmask)


@triton.jit
def _c_scan_bwd_kernel(
    G, ZIN, D, X, COLS, NC,
    BLOCK_J: tl.constexpr, BLOCK_X: tl.constexpr,
):
    """B2: in place, ``G[:, j] ← G[:, j] + exp(z_in_j − z_in_{j+1}) G[:, j+1]`` for j = NC−1 … 0 (blocks = segments).

    ``G [BH, NC + 1, X]`` holds the local terms in slots 0..NC−1 and the gradient of the final state in slot NC;
    afterwards slot j + 1 is the gradient of the state leaving block j. ``X = rows · COLS``, row r uses channel r % D.
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
        # the carry into the next group is the scan's last row (masked rows, js < 0, are identities). Not
        # tl.reduce: Triton's GPU reductions may combine lanes out of order, fine for commutative merges (F2's
        # _lse_merge) but wrong for this non-commutative composition — on an H200 that gave dk/dv errors of 6e-2
        # whenever a (batch, head) had more than BLOCK_J segments (run E); the interpreter reduces in order.
        carry = tl.sum(tl.where(offs_j[:, None] == BLOCK_J - 1, out, 0.0), 0)


@triton.jit
def _affine_compose(a1, b1, a2, b2):
    """Compose ``x ↦ a1 x + b1`` then ``x ↦ a2 x + b2``."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _dkdv_chunk(
    Q, K, V, DO, DQ, DK, DV, THETA, MASK, ZC, Gc, Gs, gz, pid_bh, j, N, H, D, E, NC,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """dk, dv of chunk ``j`` given the gradient of the state leaving it (``Gc, Gs [D, E]`` in units of its z, and
    ``gz [D]`` of that z); returns the same gradients for the state entering the chunk:
    ``G ← e^{z_in − z_out} G + scale · Σ (q ⊙ e^{z_in − z_t} ⊙ rot)ᵀ dO``, ``gz ← e^{z_in − z_out} gz + Σ e^{z_in − z_t} g_t``.
    """
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    b, c0, end, rows, valid, keep, k_base, v_base, qb, kb, vb, dob, zin, zout = _chunk_grad_inputs(
        Q, K, V, DO, MASK, ZC, pid_bh, j, N, H, D, E, NC, stride_qb, stride_qn, stride_vb, stride_vn,
        BLOCK_C, BLOCK_D, BLOCK_E, HAS_MASK,
    )
    g = -qb * load_rows(DQ + k_base, rows, offs_d, stride_qn, valid, D, 0.0)
    z, z_ok = _chunk_z(kb, keep, zin, EXACT)
    r, spread = _chunk_reference(z)
    causal = (offs_c[:, None] >= offs_c[None, :]) & keep[None, :]
    dA = tl.where(causal, mm(dob, tl.trans(vb), DOT), 0.0)
    th, cq, sq = _rotation(THETA, rows, valid, D, qb, BLOCK_D, HAS_LRPE)
    # inter: the state leaving this chunk holds exp(k_s − z_out) k̄-rotation v_s
    ko = tl.where(keep[:, None], tl.exp(tl.minimum(kb - zout[None, :], 0.0)), 0.0)
    if HAS_LRPE:
        dv = mm(ko * cq, Gc, DOT) + mm(ko * sq, Gs, DOT)
        dk = ko * (cq * mm(vb, tl.trans(Gc), DOT) + sq * mm(vb, tl.trans(Gs), DOT) + gz[None, :])
    else:
        dv = mm(ko, Gc, DOT)
        dk = ko * (mm(vb, tl.trans(Gc), DOT) + gz[None, :])
    # the leaving state's gradients are used: fold in this chunk's local terms (gradients of the entering state)
    decay = tl.exp(tl.minimum(zin[None, :] - z, 0.0))
    a = tl.exp(tl.minimum(zin - zout, 0.0))
    lc, ls = _local_grad(qb, dob, decay, cq, sq, HAS_LRPE, DOT)
    Gc = a[:, None] * Gc + scale * lc
    if HAS_LRPE:
        Gs = a[:, None] * Gs + scale * ls
    else:
        Gs = Gc
    gz = a * gz + tl.sum(decay * g, 0)
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
    return Gc, Gs, gz


@triton.jit
def _c_seg_bwd_dkdv_kernel(
    Q, K, V, DO, DQ, DK, DV, THETA, MASK, FLAG, ZC, LG, LZ, N, H, D, E, NC, NSEG, SEG,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_G: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """B3: dk and dv of one segment's chunks, walking them in reverse from the gradient of the state leaving the
    segment (``LG`` / ``LZ`` slot ``seg + 1`` after B2)."""
    seg = tl.program_id(0)
    pid_bh = tl.program_id(1)
    if _segment_selected(FLAG, pid_bh, seg, SEG, NC, NSEG * SEG, BLOCK_G, EXACT):
        DP = 2 * D if HAS_LRPE else D
        offs_d = tl.arange(0, BLOCK_D)
        FSTRIDE = NSEG * SEG
        slot = pid_bh.to(tl.int64) * (NSEG + 1) + seg + 1
        Gc, Gs = load_state(LG, slot * DP * E, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        gz = tl.load(LZ + slot * D + offs_d, mask=offs_d < D, other=0.0)
        j0 = seg * SEG
        n = tl.minimum(SEG, NC - j0)
        for i in range(0, n):
            j = j0 + n - 1 - i  # walk backwards
            if EXACT:
                if _chunk_flagged(FLAG, pid_bh, j, FSTRIDE):
                    Gc, Gs, gz = _dkdv_chunk(
                        Q, K, V, DO, DQ, DK, DV, THETA, MASK, ZC, Gc, Gs, gz, pid_bh, j, N, H, D, E, NC,
                        stride_qb, stride_qn, stride_vb, stride_vn, scale,
                        BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, True,
                    )
                else:
                    Gc, Gs, gz = _dkdv_chunk(
                        Q, K, V, DO, DQ, DK, DV, THETA, MASK, ZC, Gc, Gs, gz, pid_bh, j, N, H, D, E, NC,
                        stride_qb, stride_qn, stride_vb, stride_vn, scale,
                        BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, False,
                    )
            else:
                Gc, Gs, gz = _dkdv_chunk(
                    Q, K, V, DO, DQ, DK, DV, THETA, MASK, ZC, Gc, Gs, gz, pid_bh, j, N, H, D, E, NC,
                    stride_qb, stride_qn, stride_vb, stride_vn, scale,
                    BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, False,
                )


# ----------------------------------------------------------------------------------------------------------------
# launchers


def _scan_config(X: int, NSEG: int, BH: int, device: torch.device) -> Tuple[int, int]:
    """``(BLOCK_J, BLOCK_X)`` of the segment scans over ``NSEG`` segments of a flattened state of ``X`` elements per
    (batch, head) (``TUNING['c_scan_j'] / ['c_scan_x']`` override).

    ``BLOCK_J`` covers the segments (next power of two, 2..32: few segments leave no lanes idle), ``BLOCK_X`` fills a
    tile of 4,096 elements (32 per thread at 4 warps) and is halved (down to 32) until there are at least four
    programs per SM. The fixed ``(32, 32)`` this replaces launched ``BH · X / 32`` programs with 3 of 32 lanes busy
    at N = 1,024 (49,152 programs per scan at the benchmark shape). Under the interpreter ``(4, 64)``, so small tests
    cross scan groups."""
    if interpreting():
        return TUNING.get("c_scan_j") or 4, TUNING.get("c_scan_x") or 64
    block_j = min(32, max(2, triton.next_power_of_2(NSEG)))
    block_x = min(4096 // block_j, max(32, triton.next_power_of_2(X)))
    while block_x > 32 and BH * cdiv(X, block_x) < 4 * num_sms(device):
        block_x //= 2
    return TUNING.get("c_scan_j") or block_j, TUNING.get("c_scan_x") or block_x


_LAUNCH = {fn.__name__: Launcher(fn) for fn in (
    _c_seg_state_kernel, _c_scan_fwd_kernel, _c_seg_out_kernel, _c_seg_bwd_dq_kernel, _c_scan_bwd_kernel,
    _c_seg_bwd_dkdv_kernel)}


def _stages() -> dict:
    """Launch option of the chunk-walk kernels: ``num_stages`` from ``TUNING['c_stages']`` when set (GPU only)."""
    stages = TUNING.get("c_stages")
    return {"num_stages": int(stages)} if stages and not interpreting() else {}


def segment_chunks(NC: int, BH: int, device: torch.device) -> int:
    """Chunks per segment (one program walks a segment's chunks in order).

    ``TUNING["c_segment"]`` overrides; 2 under the interpreter (so small tests cross segment borders). On a GPU one
    segment per (batch, head) when the heads alone give two programs per SM and there are at most 64 chunks (F1's
    state, the scans F2 / B2 and their tensors are skipped), else about four programs per SM:
    ``clamp(ceil(NC · BH / (4 · SMs)), 1, 16)``. Never more than ``NC``. Measured on an H200 (run G, 2026-12-04,
    bf16, 6 heads × 64, B · N = 65,536, CUDA-graph GPU time of causal forward+backward, ms): at N = 1,024 (BH = 384,
    NC = 32) 1.468 with 2 segments of 16 chunks, 1.364 with one of 32, 1.591 with 4 of 8; at N = 4,096 (BH = 96)
    segments of 16 stay best (1.468 vs 1.558 for 32, 1.709 for 8, 1.847 for 64).
    """
    if TUNING.get("c_segment"):
        seg = int(TUNING["c_segment"])
    elif interpreting():
        seg = 2
    elif BH >= 2 * num_sms(device) and NC <= 64:
        seg = NC
    else:
        seg = min(16, cdiv(NC * BH, 4 * num_sms(device)))
    return max(1, min(seg, NC))


def causal_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    key_padding_mask: Optional[torch.Tensor],
    lrpe_theta: Optional[torch.Tensor],
    initial_state: Optional[Tuple[torch.Tensor, torch.Tensor]],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[torch.Tensor]]:
    """``(o, S_final, z_final, saved)``; ``saved = [SIN, ZSEG, ZC, FLAG]``: states ``[BH, NSEG + 1, D', E]`` and
    log-normalisers ``[BH, NSEG + 1, D]`` entering every segment, z entering every chunk ``[BH, NC + 1, D]`` and the
    flags of the chunks that took the exact path ``[BH, NSEG, SEG]`` (its last size is the segment length).
    That is the lean path (``TUNING["c_zpass"] = 0``); by default (:func:`zpass_enabled`) this runs the zpass variant
    of :mod:`lightnet.kernels.triton_causal_zpass` instead (its own ``saved``, six tensors)."""
    if zpass_enabled():
        from .triton_causal_zpass import causal_forward_zpass

        return causal_forward_zpass(q, k, v, scale, key_padding_mask, lrpe_theta, initial_state)
    B, N, H, D, E, lrpe, DP, BD, BE, mask, theta = problem_shape(q, v, key_padding_mask, lrpe_theta)
    C = chunk_size(D, E)
    NC = cdiv(N, C)
    BH = B * H
    SEG = segment_chunks(NC, BH, q.device)
    NSEG = cdiv(NC, SEG)
    X = DP * E
    dev = q.device
    dot = dot_mode(q.dtype)
    warps = _warps(D, E, lrpe)
    has_mask = key_padding_mask is not None
    SIN = torch.empty((BH, NSEG + 1, DP, E), device=dev, dtype=torch.float32)
    ZSEG = torch.empty((BH, NSEG + 1, D), device=dev, dtype=torch.float32)
    S0, z0 = initial_state if initial_state is not None else (SIN, ZSEG)
    single = NSEG == 1  # one segment: F3 starts from the initial state and ends on the final one (no F1 / F2)
    if not single:
        LJ = torch.empty((BH, NSEG, D), device=dev, dtype=torch.float32)
        SL = torch.empty((BH, NSEG, DP, E), device=dev, dtype=torch.float32)
        _LAUNCH["_c_seg_state_kernel"][(NSEG, BH)](
            k, v, theta, mask, LJ, SL, N, H, D, E, NC, NSEG, SEG, k.stride(0), k.stride(1), v.stride(0),
            v.stride(1), BLOCK_C=C, BLOCK_D=BD, BLOCK_E=BE, HAS_LRPE=lrpe, HAS_MASK=has_mask, DOT=dot,
            num_warps=warps, **_stages(),
        )
        BJ, BX = _scan_config(X, NSEG, BH, dev)
        _LAUNCH["_c_scan_fwd_kernel"][(BH, cdiv(X, BX))](
            LJ, SL, S0, z0, SIN, ZSEG, D, E, NSEG, X, BLOCK_J=BJ, BLOCK_X=BX, HAS_INIT=initial_state is not None,
            num_warps=4,
        )
    o = torch.empty((B, N, H, E), device=dev, dtype=q.dtype)
    FLAG = torch.empty((BH, NSEG, SEG), device=dev, dtype=torch.int32)
    ZC = torch.empty((BH, NC + 1, D), device=dev, dtype=torch.float32)
    for exact in (False, True):
        _LAUNCH["_c_seg_out_kernel"][(NSEG, BH)](
            q, k, v, o, theta, mask, FLAG, SIN, ZSEG, ZC, S0, z0, N, H, D, E, NC, NSEG, SEG,
            q.stride(0), q.stride(1), v.stride(0), v.stride(1), scale, BLOCK_C=C, BLOCK_D=BD, BLOCK_E=BE,
            BLOCK_G=block_size(SEG, 1), HAS_LRPE=lrpe, HAS_MASK=has_mask, DOT=dot, EXACT=exact, SINGLE=single,
            HAS_INIT=initial_state is not None, num_warps=warps, **_stages(),
        )
    S = SIN[:, NSEG].reshape(B, H, DP, E)
    z = ZSEG[:, NSEG].reshape(B, H, D)
    return o, S, z, [SIN, ZSEG, ZC, FLAG]


def _grad_slots(
    dS_out: Optional[torch.Tensor],
    dz_out: Optional[torch.Tensor],
    S: torch.Tensor,
    BH: int,
    NSEG: int,
    DP: int,
    D: int,
    E: int,
    dev: torch.device,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(LG [BH, NSEG + 1, D', E], LZ [BH, NSEG + 1, D])`` fp32, slot NSEG holding the gradients of the returned
    final state ``(S, z)`` (z also collects ``−rowsum(S ⊙ dS)``); the other slots are filled by B1."""
    LG = torch.empty((BH, NSEG + 1, DP, E), device=dev, dtype=torch.float32)
    LZ = torch.empty((BH, NSEG + 1, D), device=dev, dtype=torch.float32)
    if dS_out is not None:
        LG[:, NSEG] = dS_out.reshape(BH, DP, E)
        gz = -(S * dS_out).sum(-1).reshape(BH, -1, D).sum(1)
    else:
        LG[:, NSEG] = 0
        gz = torch.zeros((BH, D), device=dev, dtype=torch.float32)
    if dz_out is not None:
        gz = gz + dz_out.reshape(BH, D)
    LZ[:, NSEG] = gz
    return LG, LZ


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
    if len(saved) == 6:  # saved by the zpass variant (the default): the forward's choice, whatever TUNING says now
        from .triton_causal_zpass import causal_backward_zpass

        return causal_backward_zpass(do, dS_out, dz_out, q, k, v, S, saved, scale, key_padding_mask, lrpe_theta)
    SIN, ZSEG, ZC, FLAG = saved
    B, N, H, D, E, lrpe, DP, BD, BE, mask, theta = problem_shape(q, v, key_padding_mask, lrpe_theta)
    C = chunk_size(D, E)
    NC = cdiv(N, C)
    BH = B * H
    NSEG, SEG = FLAG.shape[1], FLAG.shape[2]  # the forward's segmentation
    X = DP * E
    dev = q.device
    dot = dot_mode(q.dtype)
    warps = _warps(D, E, lrpe, backward=True)
    do = do.contiguous()
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    LG, LZ = _grad_slots(dS_out, dz_out, S, BH, NSEG, DP, D, E, dev)
    common = dict(BLOCK_C=C, BLOCK_D=BD, BLOCK_E=BE, BLOCK_G=block_size(SEG, 1), HAS_LRPE=lrpe,
                  HAS_MASK=key_padding_mask is not None, DOT=dot, num_warps=warps, **_stages())
    strides = (q.stride(0), q.stride(1), v.stride(0), v.stride(1))
    for exact in (False, True):
        _LAUNCH["_c_seg_bwd_dq_kernel"][(NSEG, BH)](
            q, k, v, do, dq, theta, mask, FLAG, SIN, ZSEG, ZC, LG, LZ, N, H, D, E, NC, NSEG, SEG,
            *strides, scale, EXACT=exact, **common,
        )
    if NSEG > 1:  # with one segment the reverse scans would only update slot 0 (the initial state's gradient)
        BJ, BX = _scan_config(X, NSEG, BH, dev)
        _LAUNCH["_c_scan_bwd_kernel"][(BH, cdiv(X, BX))](LG, ZSEG, D, X, E, NSEG, BLOCK_J=BJ, BLOCK_X=BX,
                                                         num_warps=4)
        _LAUNCH["_c_scan_bwd_kernel"][(BH, cdiv(D, BX))](LZ, ZSEG, D, D, 1, NSEG, BLOCK_J=BJ, BLOCK_X=BX,
                                                         num_warps=4)
    for exact in (False, True):
        _LAUNCH["_c_seg_bwd_dkdv_kernel"][(NSEG, BH)](
            q, k, v, do, dq, dk, dv, theta, mask, FLAG, ZC, LG, LZ, N, H, D, E, NC, NSEG, SEG,
            *strides, scale, EXACT=exact, **common,
        )
    return dq, dk, dv
