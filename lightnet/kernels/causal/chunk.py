"""Device helpers of one chunk step of the causal kernels (see :mod:`lightnet.kernels.causal.kernels`).

A chunk is ``C`` consecutive tokens of one (batch, head) (tiles ``[C, D]`` / ``[C, E]``); its in-chunk
log-normalisers ``z [C, D]`` come from the segment-local values F1 stores (:func:`_z_bounds`, :func:`_z_factors`) on
the fast path, or from a log-space scan (:func:`_chunk_z`, exact path).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..triton_utils import NEG_BIG, load_keep, load_rows, logaddexp, mm

@triton.jit
def _chunk_z(kb, keep, zin, EXACT: tl.constexpr):
    """In-chunk ``z_t = logaddexp(z_in, logcumsumexp(k)_t)`` for a ``[C, D]`` tile (padding: ``keep`` False).

    Fast form (``EXACT`` False): ``M + log(cumsum(exp(k − M)) + exp(z_in − M))``, exact unless a channel's keys spread
    over more than 80 (then ``ok`` is 0 and the chunk is flagged for the exact launch). Exact form: a log-space scan.
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
def _chunk_end_z(kb, keep, zin):
    """Log-normaliser leaving a chunk ``[D]``: ``logaddexp(z_in, M + log Σ_s exp(k_s − M))`` (stable for any spread;
    ``kb [C, D]``, padding rows have ``keep`` False)."""
    km = tl.where(keep[:, None], kb, NEG_BIG)
    m = tl.max(km, 0)
    l = tl.sum(tl.where(keep[:, None], tl.exp(km - m[None, :]), 0.0), 0)
    lse = tl.where(l > 0, m + tl.log(tl.maximum(l, 1e-30)), NEG_BIG)
    return tl.maximum(logaddexp(zin, lse), NEG_BIG)


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
def _pin(x):
    """``x`` unchanged, through a sum over a new axis of size 1 (no data exchange): a layout anchor for a product's
    operand. Without it Triton recomputes a chain of elementwise ops that starts from loads (as every chain of the
    fast path does here, no reduction in between) directly in the product's operand layout, which holds the tile in
    every warp: the sm_90 build of F3 then spills registers. ``_pin1`` does the same for the ``[D]`` log-normalisers
    (else recomputed, loads and logaddexp, once per layout)."""
    return tl.sum(tl.expand_dims(x, 2), 2)


@triton.jit
def _pin1(x):
    """``_pin`` for a vector ``[D]``."""
    return tl.sum(tl.expand_dims(x, 1), 1)


@triton.jit
def _pin_if(x, PIN: tl.constexpr):
    """``_pin(x)`` when ``PIN``, else ``x`` (the same generated code as writing either directly)."""
    if PIN:
        x = _pin(x)
    return x


@triton.jit
def _advance(Sc, Ss, zin, zout, kb, keep, vb, cq, sq, HAS_LRPE: tl.constexpr, DOT: tl.constexpr, PIN: tl.constexpr):
    """State leaving a chunk: ``S ← e^{z_in − z_out} S + (e^{k − z_out} ⊙ rotation)ᵀ V`` (every exponent ≤ 0).

    ``Sc, Ss [D, E]``: cosine / sine halves normalised by ``z_in [D]``; ``kb, cq, sq [C, D]``, ``vb [C, E]``.
    ``PIN``: the products' operands pass through :func:`_pin` (the chunk steps of F3 / B1, whose operands come straight
    from loads); F1 keeps them unanchored.
    """
    a = tl.exp(tl.minimum(zin - zout, 0.0))[:, None]
    ko = tl.where(keep[:, None], tl.exp(tl.minimum(kb - zout[None, :], 0.0)), 0.0)
    if HAS_LRPE:
        Sc = a * Sc + mm(tl.trans(_pin_if(ko * cq, PIN)), vb, DOT)
        Ss = a * Ss + mm(tl.trans(_pin_if(ko * sq, PIN)), vb, DOT)
    else:
        Sc = a * Sc + mm(tl.trans(_pin_if(ko, PIN)), vb, DOT)
        Ss = Sc
    return Sc, Ss


@triton.jit
def _scores(qt, kt, cq, sq, HAS_LRPE: tl.constexpr, DOT: tl.constexpr):
    """Factored intra-chunk scores ``Σ_c qt_{t,c} kt_{s,c} cos(θ_t − θ_s)`` ``[C, C]`` as tensor-core products (operands
    anchored by :func:`_pin`)."""
    if HAS_LRPE:
        A = mm(_pin(qt * cq), tl.trans(_pin(kt * cq)), DOT) + mm(_pin(qt * sq), tl.trans(_pin(kt * sq)), DOT)
    else:
        A = mm(_pin(qt), tl.trans(_pin(kt)), DOT)
    return A


@triton.jit
def _local_grad(qb, dob, w, cq, sq, HAS_LRPE: tl.constexpr, DOT: tl.constexpr):
    """Unscaled gradient of a chunk's outputs w.r.t. an earlier state: ``(q ⊙ w ⊙ rotation)ᵀ dO`` ``[D, E]`` halves,
    with ``w = e^{z_ref − z_t}`` ``[C, D]`` the decay from that state's log-normaliser (operands anchored by
    :func:`_pin`)."""
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
    e^{ZL_t − a})``, the denominator clamped to ``≥ 1`` (the factor ``≤ 1``, as every inter exponent is ``≤ 0``) and
    its exponent to ``≤ 80`` (flagged chunks stay finite; an unflagged chunk's ``ZL − r`` is ≤ 40).
    Exact (flagged chunks): the log-space scan of :func:`_chunk_z` from ``zin`` and :func:`_chunk_reference`.
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
