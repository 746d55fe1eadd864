"""Default causal kernels (``TUNING["c_zpass"]`` None or 1): the in-chunk z is computed once, in F1, and stored.

Same math, segmentation and launches as :mod:`lightnet.kernels.triton_causal` (read its docstring first), but the
chunk loops of F3, B1 and B3 do no reduction or scan over tokens on their fast paths (on an H100 those loops are
latency-bound: today each chunk step does about seven cross-warp reductions / scans, one dependent chain per program).

    F1' (``_z_seg_state_kernel``, per segment) also writes, walking the segment's chunks with the segment-local z
        (the logcumsumexp of the keys from the segment's first token):
            ZL [BH, N, D]  fp32  segment-local z of every token (padding repeats the previous value; NEG_BIG before the
                               segment's first kept token),
            RL [BH, NC, D] fp32  local z at the chunk's first kept token (= its smallest kept z; z entering the chunk
                               when it keeps none),
            EL [BH, NC, D] fp32  local z leaving the chunk (the stable chunk log-sum-exp, as F1 always carried),
            FLAG               the chunk's flag: local spread ``max_c (EL − RL) > 40`` or the fast cumsum's check
                               failing (as in ``_chunk_z``).
        With one segment (``NSEG == 1``) it runs without the state (no V loads, no products): F2 is skipped as before.
    F2  unchanged (``_c_scan_fwd_kernel``).
    F3', B1', B3' per chunk, elementwise: with ``z_seg`` = ZSEG of the segment (from F2),
            z_t = logaddexp(z_seg, ZL_t),  r = logaddexp(z_seg, RL_j),  z_out = logaddexp(z_seg, EL_j),
            z_in = logaddexp(z_seg, EL_{j−1}) (z_seg for the segment's first chunk);
        z_t itself is never formed: ``e^{z_in − z_t}`` and ``e^{r − z_t}`` are ``1 / (e^{z_seg − a} + e^{ZL_t − a})``
        (``_z_factors``; fewer sm_90 spills than a tile logaddexp), then the same tensor-core products as the
        lean-path kernels (``_scores``, ``_advance``, ``_local_grad``, dk/dv; here ``_zp_*`` copies whose elementwise
        operands pass through the layout anchor ``_pin``, see there).
        B1' sums its z-gradient ``Σ_t e^{z_seg − z_t} g_t`` into a ``[C, D]`` tile, reduced once per segment. B3' carries
        the z-gradient as a ``[C, D]`` tile of equal rows updated by a product with a ones matrix, and its in-chunk
        tail ``Σ_{t ≥ s} e^{r − z_t} g_t`` is a product with a triangular ones matrix (both through ``_sum_mm``: x is
        split into bf16 high and low parts, so the sums keep ~16 mantissa bits where the other products keep 8).
        B3' takes ``z_out`` of the segment's last chunk from ZSEG (the units of the state gradient B2 hands it).
    B2  unchanged (``_c_scan_bwd_kernel``).
    Exact launches: unchanged logic (today's ``_chunk_z`` / ``_chunk_reference`` / ``_exact_intra`` on flagged chunks,
        z_in / z_out as above); the fast launches no longer write flags or ``ZC`` (F1' wrote the flags).

Why the local flag is safe. ``logaddexp(z_seg, ·)`` is non-decreasing and 1-Lipschitz, so the global in-chunk spread
is never larger than the local one, and the local fast-cumsum check implies the global one: F1' flags a superset of
the chunks the lean path's F3 flags (more only near segment starts, where the local z has not accumulated yet).

Saved for the backward instead of recomputed: ZL (``4 · D`` bytes per token and head, 256 B at D = 64, two thirds of
the 384 B of bf16 q, k, v at D = E = 64) plus RL / EL (``8 · D / C`` B/token, 16 B at C = 32) and the flags;
the lean path's ``ZC`` (``4 · D / C``) is not kept. At the benchmark shape (65,536 tokens × 6 heads, D = 64, C = 32)
that is 96 MiB of ZL (100,663,296 B) and about 99 MiB more saved per causal attention call than the lean path
(+96 ZL, +6 RL / EL, −3 ZC), against 144 MiB of bf16 q, k, v. Recomputing instead would re-run F1' (a pass over K,
writing ZL again) in every backward. A run short of activation memory sets ``TUNING["c_zpass"] = 0`` (the lean path
of :mod:`lightnet.kernels.triton_causal`). Traffic per token and head (fp32 ZL): F1' write, F3' / B1' / B3' reads =
``16 · D`` B (1 KiB at D = 64) against ~``12 · D / C`` B of ``ZC`` on the lean path.

Registers (ptxas for sm_90a, fast launches, C = 32, 4 warps, D = E = 64, bf16, no mask; compiled without a GPU
through ``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))``), registers / spill stores in bytes,
lean path → this variant (a removed ``c_zpass = 2`` form, B1' / B3' with ``tl.sum`` / ``tl.cumsum`` token sums,
in brackets):
    no LRPE:  F1 112/0 → 189/0,  F3 248/0 → 240/0,  B1 255/152 → 255/264 (192),  B3 255/192 → 255/496 (624);
    LRPE:     F1 192/0 → 225/0,  F3 255/348 → 255/272,  B1 255/1428 → 255/1788 (1720),  B3 255/1440 → 255/2012 (1726).
(Without ``_pin`` / ``_pin1`` F3 spilled 508 B, 3.4 KB with LRPE.) The backward launches take 8 warps (``_warps``):
per-thread stack frame of the fast launches (``cuobjdump -res-usage``, Triton 3.8, same compile, 255 registers in
every case), 4 → 8 warps: B1' 520 → 8 B, B3' 856 → 40 B; with LRPE B1' 1640 → 328 B, B3' 2056 → 496 B.

Timed (one H200, 2026-11-23, CUDA-graph GPU time of causal forward+backward, bf16, 6 heads × 64, B · N = 65,536;
``benchmarks/results/run_d_h200/sweep_causal.json``), ms at N = 4,096 / 65,536 / 1,024 / 196: this variant with
8-warp backward launches 1.819 / 1.532 / 3.018 / 1.599, with 4-warp ones 1.977 / 1.694 / 3.178 / 1.845, the lean path
2.050 / 1.762 / 3.271 / 1.837 (the removed ``c_zpass = 2`` form, 4 warps: 1.993 / 1.709 / 3.194 / 1.688). Hence the
default: this variant, 8 warps backward (:mod:`lightnet.kernels.triton_causal` has the full table).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from .triton_causal import (
    _LAUNCH as _CAUSAL_LAUNCH,
    _advance,
    _chunk_end_z,
    _chunk_flagged,
    _chunk_inputs,
    _chunk_reference,
    _chunk_z,
    _exact_intra,
    _grad_slots,
    _rotation,
    _scan_config,
    _stages,
    _segment_entry,
    _segment_selected,
    _warps,
    chunk_size,
    segment_chunks,
)
from .triton_common import (
    NEG_BIG,
    Launcher,
    block_size,
    cdiv,
    dot_mode,
    load_keep,
    load_rows,
    load_state,
    logaddexp,
    mm,
    problem_shape,
    store_rows,
    store_state,
)

__all__ = ["causal_forward_zpass", "causal_backward_zpass"]


# ----------------------------------------------------------------------------------------------------------------
# device helpers


@triton.jit
def _z_bounds(EL, zseg, pid_bh, j, j0, NC, D, BLOCK_D: tl.constexpr):
    """``(z_in, z_out) [D]`` of chunk ``j`` (segment starting at chunk ``j0``, entering log-normaliser ``zseg``):
    ``logaddexp(zseg, EL_{j−1})`` (``zseg`` itself for ``j == j0``) and ``logaddexp(zseg, EL_j)``; ``EL [BH, NC, D]``."""
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    base = pid_bh.to(tl.int64) * NC + j
    prev = tl.load(EL + (base - 1) * D + offs_d, mask=dmask & (j > j0), other=NEG_BIG)
    cur = tl.load(EL + base * D + offs_d, mask=dmask, other=NEG_BIG)
    return _pin1(logaddexp(zseg, prev)), _pin1(logaddexp(zseg, cur))


@triton.jit
def _z_factors(
    ZL, RL, kb, keep, zseg, zin, pid_bh, j, rows, valid, N, NC, D,
    BLOCK_D: tl.constexpr, EXACT: tl.constexpr,
):
    """``(z [C, D], r [D], decay [C, D], qf [C, D])`` of chunk ``j``: the in-chunk z, its reference, ``e^{z_in − z_t}``
    and ``e^{r − z_t}`` (both ≤ 1).

    Fast: from the stored segment-local values, without forming z (``z`` returned is ``ZL``, not read on this path):
    with ``z_t = logaddexp(zseg, ZL_t)`` and ``r = logaddexp(zseg, RL_j)``, ``e^{a − z_t} = 1 / (e^{zseg − a} +
    e^{ZL_t − a})``, the denominator clamped to ``≥ 1`` (as the lean path's exponents are clamped to ``≤ 0``) and its
    exponent to ``≤ 80`` (flagged chunks stay finite; an unflagged chunk's ``ZL − r`` is ≤ 40).
    Exact (flagged chunks): today's log-space scan from ``zin`` and ``_chunk_reference``.
    """
    if EXACT:
        z, _ok = _chunk_z(kb, keep, zin, True)
        r, _spread = _chunk_reference(z)
        decay = tl.exp(tl.minimum(zin[None, :] - z, 0.0))
        qf = tl.exp(tl.minimum(r[None, :] - z, 0.0))
    else:
        offs_d = tl.arange(0, BLOCK_D)
        z = load_rows(ZL + pid_bh.to(tl.int64) * N * D, rows, offs_d, D, valid, D, NEG_BIG)
        rl = tl.load(RL + (pid_bh.to(tl.int64) * NC + j) * D + offs_d, mask=offs_d < D, other=NEG_BIG)
        r = _pin1(logaddexp(zseg, rl))
        decay = 1.0 / tl.maximum(tl.exp(zseg - zin)[None, :] + tl.exp(tl.minimum(z - zin[None, :], 80.0)), 1.0)
        qf = 1.0 / tl.maximum(tl.exp(zseg - r)[None, :] + tl.exp(tl.minimum(z - r[None, :], 80.0)), 1.0)
    return z, r, decay, qf


@triton.jit
def _pin(x):
    """``x`` unchanged, through a sum over a new axis of size 1 (no data exchange): a layout anchor for a product's
    operand. Without it Triton recomputes a chain of elementwise ops that starts from loads (as every chain of the
    fast path does here, no reduction in between) directly in the product's operand layout, which holds the tile in
    every warp: at C = 32, D = E = 64, 4 warps, sm_90, F3 then spilled 508 B (3.4 KB with LRPE) where it spills none.
    ``_pin1`` does the same for the ``[D]`` log-normalisers (else recomputed, loads and logaddexp, once per layout)."""
    return tl.sum(tl.expand_dims(x, 2), 2)


@triton.jit
def _pin1(x):
    """``_pin`` for a vector ``[D]``."""
    return tl.sum(tl.expand_dims(x, 1), 1)


@triton.jit
def _zp_scores(qt, kt, cq, sq, HAS_LRPE: tl.constexpr, DOT: tl.constexpr):
    """``triton_causal._scores`` (same product) with its operands anchored by ``_pin``."""
    if HAS_LRPE:
        A = mm(_pin(qt * cq), tl.trans(_pin(kt * cq)), DOT) + mm(_pin(qt * sq), tl.trans(_pin(kt * sq)), DOT)
    else:
        A = mm(_pin(qt), tl.trans(_pin(kt)), DOT)
    return A


@triton.jit
def _zp_advance(Sc, Ss, zin, zout, kb, keep, vb, cq, sq, HAS_LRPE: tl.constexpr, DOT: tl.constexpr):
    """``triton_causal._advance`` (state leaving a chunk, same math) with its operands anchored by ``_pin``."""
    a = tl.exp(tl.minimum(zin - zout, 0.0))[:, None]
    ko = tl.where(keep[:, None], tl.exp(tl.minimum(kb - zout[None, :], 0.0)), 0.0)
    if HAS_LRPE:
        Sc = a * Sc + mm(tl.trans(_pin(ko * cq)), vb, DOT)
        Ss = a * Ss + mm(tl.trans(_pin(ko * sq)), vb, DOT)
    else:
        Sc = a * Sc + mm(tl.trans(_pin(ko)), vb, DOT)
        Ss = Sc
    return Sc, Ss


@triton.jit
def _zp_local_grad(qb, dob, w, cq, sq, HAS_LRPE: tl.constexpr, DOT: tl.constexpr):
    """``triton_causal._local_grad`` (``(q ⊙ w ⊙ rotation)ᵀ dO``) with its operands anchored by ``_pin``."""
    if HAS_LRPE:
        Lc = mm(tl.trans(_pin(qb * w * cq)), dob, DOT)
        Ls = mm(tl.trans(_pin(qb * w * sq)), dob, DOT)
    else:
        Lc = mm(tl.trans(_pin(qb * w)), dob, DOT)
        Ls = Lc
    return Lc, Ls


@triton.jit
def _sum_mm(T, x, DOT: tl.constexpr):
    """``T @ x`` for a 0/1 matrix ``T [C, C]`` and fp32 ``x [C, D]``, close to fp32 accuracy on tensor cores: with
    bf16 / tf32 products ``x`` is split into a bf16 high part and a bf16 remainder (``T`` is exact in bf16)."""
    x = _pin(x)
    if DOT == 1:
        out = tl.dot(T, x, input_precision="ieee")
    else:
        tb = T.to(tl.bfloat16)
        hi = x.to(tl.bfloat16)
        lo = _pin((x - hi.to(tl.float32)).to(tl.bfloat16))
        out = tl.dot(tb, lo, tl.dot(tb, _pin(hi)))
    return out


# ----------------------------------------------------------------------------------------------------------------
# forward


@triton.jit
def _z_seg_state_kernel(
    K, V, THETA, MASK, LJ, SL, ZL, RL, EL, FLAG, N, H, D, E, NC, NSEG, SEG,
    stride_kb, stride_kn, stride_vb, stride_vn,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, STATE: tl.constexpr,
):
    """F1': per segment, the segment-local ``ZL [BH, N, D]``, ``RL / EL [BH, NC, D]`` and the chunk flags
    ``FLAG [BH, NSEG, SEG]``; with ``STATE`` also F1's ``LJ [BH, NSEG, D]`` and ``SL [BH, NSEG, D', E]``."""
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
            Sc, Ss = _advance(Sc, Ss, zc, zout, kb, keep, vb, cq, sq, HAS_LRPE, DOT)
        zc = zout
    if STATE:
        slot = pid_bh.to(tl.int64) * NSEG + seg
        store_state(SL, slot * DP * E, Sc, Ss, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        tl.store(LJ + slot * D + offs_d, zc, mask=dmask)


@triton.jit
def _z_fwd_chunk(
    Q, K, V, O, THETA, MASK, ZL, RL, Sc, Ss, zseg, zin, zout, pid_bh, j, N, H, D, E, NC,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """Output of chunk ``j`` from the state entering it ``(Sc, Ss [D, E])`` in units of ``zin [D]``; returns the state
    leaving it (units ``zout``). As ``triton_causal._fwd_chunk`` with the factors from ``_z_factors``."""
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
    Sc, Ss = _zp_advance(Sc, Ss, zin, zout, kb, keep, vb, cq, sq, HAS_LRPE, DOT)  # the entering state is used
    causal = (offs_c[:, None] >= offs_c[None, :]) & keep[None, :]
    if not EXACT:
        qt = qb * qf
        kt = tl.where(keep[:, None], tl.exp(tl.minimum(kb - r[None, :], 80.0)), 0.0)
        A = _zp_scores(qt, kt, cq, sq, HAS_LRPE, DOT)
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
def _z_seg_out_kernel(
    Q, K, V, O, THETA, MASK, FLAG, SIN, ZSEG, ZL, RL, EL, S0, Z0, N, H, D, E, NC, NSEG, SEG,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_G: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
    SINGLE: tl.constexpr, HAS_INIT: tl.constexpr,
):
    """F3': outputs of one segment's chunks, in order, carrying the state from the segment's entering state.

    Fast launch: every segment, fast path everywhere. Exact launch: only segments with a chunk F1' flagged, exact path
    for those chunks. ``SINGLE``: as ``_c_seg_out_kernel`` (the fast launch starts from the initial state, writes
    the entering and the final state into ``SIN`` / ``ZSEG``).
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
            if EXACT:
                if _chunk_flagged(FLAG, pid_bh, j, FSTRIDE):
                    Sc, Ss = _z_fwd_chunk(
                        Q, K, V, O, THETA, MASK, ZL, RL, Sc, Ss, zseg, zin, zout, pid_bh, j, N, H, D, E, NC,
                        stride_qb, stride_qn, stride_vb, stride_vn, scale,
                        BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, True,
                    )
                else:
                    Sc, Ss = _z_fwd_chunk(
                        Q, K, V, O, THETA, MASK, ZL, RL, Sc, Ss, zseg, zin, zout, pid_bh, j, N, H, D, E, NC,
                        stride_qb, stride_qn, stride_vb, stride_vn, scale,
                        BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, False,
                    )
            else:
                Sc, Ss = _z_fwd_chunk(
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
def _z_dq_chunk(
    Q, K, V, DO, DQ, THETA, MASK, ZL, RL, Sc, Ss, Lc, Ls, lzt, zseg, zin, zout, pid_bh, j, N, H, D, E, NC,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """dq of chunk ``j`` as ``triton_causal._dq_chunk``; the z-gradient share ``e^{z_seg − z_t} g_t`` is added to
    the ``[C, D]`` tile ``lzt`` (summed over tokens once per segment). Returns ``(Sc, Ss, Lc, Ls, lzt)``."""
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
    Sc, Ss = _zp_advance(Sc, Ss, zin, zout, kb, keep, vb, cq, sq, HAS_LRPE, DOT)  # the entering state is used
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
    lc, ls = _zp_local_grad(qb, dob, wseg, cq, sq, HAS_LRPE, DOT)
    Lc += lc
    if HAS_LRPE:
        Ls += ls
    else:
        Ls = Lc
    lzt += wseg * (-qb * dq)  # −q ⊙ dq: gradient reaching z_t directly from o_t
    return Sc, Ss, Lc, Ls, lzt


@triton.jit
def _z_seg_bwd_dq_kernel(
    Q, K, V, DO, DQ, THETA, MASK, FLAG, SIN, ZSEG, ZL, RL, EL, LG, LZ, N, H, D, E, NC, NSEG, SEG,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_G: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """B1': dq of one segment's chunks and the segment's local gradients ``LG`` / ``LZ`` slot ``seg`` (as
    ``_c_seg_bwd_dq_kernel``, z from F1')."""
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
            if EXACT:
                if _chunk_flagged(FLAG, pid_bh, j, FSTRIDE):
                    Sc, Ss, Lc, Ls, lzt = _z_dq_chunk(
                        Q, K, V, DO, DQ, THETA, MASK, ZL, RL, Sc, Ss, Lc, Ls, lzt, zseg, zin, zout, pid_bh, j,
                        N, H, D, E, NC, stride_qb, stride_qn, stride_vb, stride_vn, scale,
                        BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, True,
                    )
                else:
                    Sc, Ss, Lc, Ls, lzt = _z_dq_chunk(
                        Q, K, V, DO, DQ, THETA, MASK, ZL, RL, Sc, Ss, Lc, Ls, lzt, zseg, zin, zout, pid_bh, j,
                        N, H, D, E, NC, stride_qb, stride_qn, stride_vb, stride_vn, scale,
                        BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, False,
                    )
            else:
                Sc, Ss, Lc, Ls, lzt = _z_dq_chunk(
                    Q, K, V, DO, DQ, THETA, MASK, ZL, RL, Sc, Ss, Lc, Ls, lzt, zseg, zin, zout, pid_bh, j,
                    N, H, D, E, NC, stride_qb, stride_qn, stride_vb, stride_vn, scale,
                    BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, False,
                )
        store_state(LG, slot * DP * E, Lc * scale, Ls * scale, D, E, BLOCK_D, BLOCK_E, HAS_LRPE)
        lz = tl.sum(lzt, 0)
        tl.store(LZ + slot * D + offs_d, lz, mask=dmask)


@triton.jit
def _z_dkdv_chunk(
    Q, K, V, DO, DQ, DK, DV, THETA, MASK, ZL, RL, Gc, Gs, gzt, zseg, zin, zout, pid_bh, j, N, H, D, E, NC,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """dk, dv of chunk ``j`` as ``triton_causal._dkdv_chunk``. The z-gradient of the leaving state is a ``[C, D]``
    tile of equal rows ``gzt`` (updated by ``_sum_mm`` with a ones matrix) and the in-chunk tail
    ``Σ_{t ≥ s} e^{r − z_t} g_t`` a product with a triangular ones matrix. Returns ``(Gc, Gs, gzt)`` entering."""
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
    lc, ls = _zp_local_grad(qb, dob, decay, cq, sq, HAS_LRPE, DOT)
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
        A = tl.where(causal, _zp_scores(qt, kt, cq, sq, HAS_LRPE, DOT), 0.0)
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
def _z_seg_bwd_dkdv_kernel(
    Q, K, V, DO, DQ, DK, DV, THETA, MASK, FLAG, ZSEG, ZL, RL, EL, LG, LZ, N, H, D, E, NC, NSEG, SEG,
    stride_qb, stride_qn, stride_vb, stride_vn, scale,
    BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_G: tl.constexpr,
    HAS_LRPE: tl.constexpr, HAS_MASK: tl.constexpr, DOT: tl.constexpr, EXACT: tl.constexpr,
):
    """B3': dk and dv of one segment's chunks, walking them in reverse from the gradient of the state leaving the
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
            if EXACT:
                if _chunk_flagged(FLAG, pid_bh, j, FSTRIDE):
                    Gc, Gs, gzt = _z_dkdv_chunk(
                        Q, K, V, DO, DQ, DK, DV, THETA, MASK, ZL, RL, Gc, Gs, gzt, zseg, zin, zout, pid_bh, j,
                        N, H, D, E, NC, stride_qb, stride_qn, stride_vb, stride_vn, scale,
                        BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, True,
                    )
                else:
                    Gc, Gs, gzt = _z_dkdv_chunk(
                        Q, K, V, DO, DQ, DK, DV, THETA, MASK, ZL, RL, Gc, Gs, gzt, zseg, zin, zout, pid_bh, j,
                        N, H, D, E, NC, stride_qb, stride_qn, stride_vb, stride_vn, scale,
                        BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, False,
                    )
            else:
                Gc, Gs, gzt = _z_dkdv_chunk(
                    Q, K, V, DO, DQ, DK, DV, THETA, MASK, ZL, RL, Gc, Gs, gzt, zseg, zin, zout, pid_bh, j,
                    N, H, D, E, NC, stride_qb, stride_qn, stride_vb, stride_vn, scale,
                    BLOCK_C, BLOCK_D, BLOCK_E, HAS_LRPE, HAS_MASK, DOT, False,
                )


# ----------------------------------------------------------------------------------------------------------------
# launchers


_LAUNCH = {fn.__name__: Launcher(fn) for fn in (
    _z_seg_state_kernel, _z_seg_out_kernel, _z_seg_bwd_dq_kernel, _z_seg_bwd_dkdv_kernel)}


def causal_forward_zpass(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    key_padding_mask: Optional[torch.Tensor],
    lrpe_theta: Optional[torch.Tensor],
    initial_state: Optional[Tuple[torch.Tensor, torch.Tensor]],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[torch.Tensor]]:
    """``(o, S_final, z_final, saved)`` as ``triton_causal.causal_forward``; ``saved = [SIN, ZSEG, ZL, RL, EL, FLAG]``
    (``ZL [BH, N, D]``, ``RL / EL [BH, NC, D]`` fp32, see the module docstring)."""
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
    f32 = torch.float32
    SIN = torch.empty((BH, NSEG + 1, DP, E), device=dev, dtype=f32)
    ZSEG = torch.empty((BH, NSEG + 1, D), device=dev, dtype=f32)
    ZL = torch.empty((BH, N, D), device=dev, dtype=f32)
    RL = torch.empty((BH, NC, D), device=dev, dtype=f32)
    EL = torch.empty((BH, NC, D), device=dev, dtype=f32)
    FLAG = torch.empty((BH, NSEG, SEG), device=dev, dtype=torch.int32)
    S0, z0 = initial_state if initial_state is not None else (SIN, ZSEG)
    single = NSEG == 1  # one segment: F1' writes only ZL / RL / EL / FLAG, F2 is skipped, F3' starts from (S0, z0)
    if single:
        LJ, SL = ZSEG, SIN  # never touched (STATE=False)
    else:
        LJ = torch.empty((BH, NSEG, D), device=dev, dtype=f32)
        SL = torch.empty((BH, NSEG, DP, E), device=dev, dtype=f32)
    _LAUNCH["_z_seg_state_kernel"][(NSEG, BH)](
        k, v, theta, mask, LJ, SL, ZL, RL, EL, FLAG, N, H, D, E, NC, NSEG, SEG, k.stride(0), k.stride(1),
        v.stride(0), v.stride(1), BLOCK_C=C, BLOCK_D=BD, BLOCK_E=BE, HAS_LRPE=lrpe, HAS_MASK=has_mask, DOT=dot,
        STATE=not single, num_warps=warps, **_stages(),
    )
    if not single:
        BJ, BX = _scan_config(X, NSEG, BH, dev)
        _CAUSAL_LAUNCH["_c_scan_fwd_kernel"][(BH, cdiv(X, BX))](
            LJ, SL, S0, z0, SIN, ZSEG, D, E, NSEG, X, BLOCK_J=BJ, BLOCK_X=BX, HAS_INIT=initial_state is not None,
            num_warps=4,
        )
    o = torch.empty((B, N, H, E), device=dev, dtype=q.dtype)
    for exact in (False, True):
        _LAUNCH["_z_seg_out_kernel"][(NSEG, BH)](
            q, k, v, o, theta, mask, FLAG, SIN, ZSEG, ZL, RL, EL, S0, z0, N, H, D, E, NC, NSEG, SEG,
            q.stride(0), q.stride(1), v.stride(0), v.stride(1), scale, BLOCK_C=C, BLOCK_D=BD, BLOCK_E=BE,
            BLOCK_G=block_size(SEG, 1), HAS_LRPE=lrpe, HAS_MASK=has_mask, DOT=dot, EXACT=exact, SINGLE=single,
            HAS_INIT=initial_state is not None, num_warps=warps, **_stages(),
        )
    S = SIN[:, NSEG].reshape(B, H, DP, E)
    z = ZSEG[:, NSEG].reshape(B, H, D)
    return o, S, z, [SIN, ZSEG, ZL, RL, EL, FLAG]


def causal_backward_zpass(
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
    """``(dq, dk, dv)`` as ``triton_causal.causal_backward``, from the ``saved`` of :func:`causal_forward_zpass`."""
    SIN, ZSEG, ZL, RL, EL, FLAG = saved
    B, N, H, D, E, lrpe, DP, BD, BE, mask, theta = problem_shape(q, v, key_padding_mask, lrpe_theta)
    C = chunk_size(D, E)
    NC = cdiv(N, C)
    BH = B * H
    NSEG, SEG = FLAG.shape[1], FLAG.shape[2]  # the forward's segmentation
    X = DP * E
    dot = dot_mode(q.dtype)
    warps = _warps(D, E, lrpe, backward=True, zpass=True)
    do = do.contiguous()
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    LG, LZ = _grad_slots(dS_out, dz_out, S, BH, NSEG, DP, D, E, q.device)
    common = dict(BLOCK_C=C, BLOCK_D=BD, BLOCK_E=BE, BLOCK_G=block_size(SEG, 1), HAS_LRPE=lrpe,
                  HAS_MASK=key_padding_mask is not None, DOT=dot, num_warps=warps, **_stages())
    strides = (q.stride(0), q.stride(1), v.stride(0), v.stride(1))
    for exact in (False, True):
        _LAUNCH["_z_seg_bwd_dq_kernel"][(NSEG, BH)](
            q, k, v, do, dq, theta, mask, FLAG, SIN, ZSEG, ZL, RL, EL, LG, LZ, N, H, D, E, NC, NSEG, SEG,
            *strides, scale, EXACT=exact, **common,
        )
    if NSEG > 1:
        BJ, BX = _scan_config(X, NSEG, BH, q.device)
        _CAUSAL_LAUNCH["_c_scan_bwd_kernel"][(BH, cdiv(X, BX))](LG, ZSEG, D, X, E, NSEG, BLOCK_J=BJ, BLOCK_X=BX,
                                                                num_warps=4)
        _CAUSAL_LAUNCH["_c_scan_bwd_kernel"][(BH, cdiv(D, BX))](LZ, ZSEG, D, D, 1, NSEG, BLOCK_J=BJ, BLOCK_X=BX,
                                                                num_warps=4)
    for exact in (False, True):
        _LAUNCH["_z_seg_bwd_dkdv_kernel"][(NSEG, BH)](
            q, k, v, do, dq, dk, dv, theta, mask, FLAG, ZSEG, ZL, RL, EL, LG, LZ, N, H, D, E, NC, NSEG, SEG,
            *strides, scale, EXACT=exact, **common,
        )
    return dq, dk, dv
