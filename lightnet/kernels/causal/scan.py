"""The scans over segments of the causal op (F2 forward, B2 backward; see :mod:`lightnet.kernels.causal.kernels`).

A segment is ``SEG`` consecutive chunks walked by one program. F2 turns every segment's local state (log-normaliser
``LJ [BH, NSEG, D]`` and normalised state ``SL [BH, NSEG, D', E]``) into the state entering every segment, B2 turns
the segments' local gradients into the gradient of the state leaving every segment. Both treat the flattened
``[D', E]`` state of a (batch, head) as ``X`` independent elements (row ``r`` uses channel ``r % D``) and walk the
segments in groups of ``BLOCK_J`` with ``tl.associative_scan``, carrying the result from group to group.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ..triton_utils import NEG_BIG, Launcher, cdiv, interpreting, logaddexp, num_sms

__all__ = ["scan_config", "scan_forward", "scan_backward"]


@triton.jit
def _lse_merge(z1, s1, z2, s2):
    """Associative merge of two normalised states (log-normaliser, state element)."""
    z = logaddexp(z1, z2)
    return z, tl.exp(z1 - z) * s1 + tl.exp(z2 - z) * s2


@triton.jit
def _affine_compose(a1, b1, a2, b2):
    """Compose ``x ↦ a1 x + b1`` then ``x ↦ a2 x + b2``."""
    return a1 * a2, a2 * b1 + b2


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
        # _lse_merge) but wrong for this non-commutative composition (wrong dk / dv as soon as a (batch, head) has
        # more than BLOCK_J segments); the interpreter reduces in order and cannot show it.
        carry = tl.sum(tl.where(offs_j[:, None] == BLOCK_J - 1, out, 0.0), 0)


def scan_config(
    X: int, NSEG: int, BH: int, device: torch.device, block_j: Optional[int] = None, block_x: Optional[int] = None
) -> Tuple[int, int]:
    """``(BLOCK_J, BLOCK_X)`` of the segment scans over ``NSEG`` segments of a flattened state of ``X`` elements per
    (batch, head); ``block_j`` / ``block_x`` given: used as they are.

    ``BLOCK_J`` covers the segments (next power of two, 2..32: few segments leave no lanes idle), ``BLOCK_X`` fills a
    tile of 4,096 elements (32 per thread at 4 warps) and is halved (down to 32) until there are at least four
    programs per SM. Under the interpreter ``(4, 64)``, so small tests cross scan groups."""
    if interpreting():
        return block_j or 4, block_x or 64
    bj = min(32, max(2, triton.next_power_of_2(NSEG)))
    bx = min(4096 // bj, max(32, triton.next_power_of_2(X)))
    while bx > 32 and BH * cdiv(X, bx) < 4 * num_sms(device):
        bx //= 2
    return block_j or bj, block_x or bx


_LAUNCH = {fn.__name__: Launcher(fn) for fn in (_c_scan_fwd_kernel, _c_scan_bwd_kernel)}


def scan_forward(
    LJ: torch.Tensor, SL: torch.Tensor, S0: torch.Tensor, z0: torch.Tensor, SIN: torch.Tensor, ZSEG: torch.Tensor,
    D: int, E: int, NSEG: int, X: int, has_init: bool, block_j: int, block_x: int,
) -> None:
    """F2: ``SIN [BH, NSEG + 1, D', E]`` / ``ZSEG [BH, NSEG + 1, D]`` (state and z entering every segment, slot NSEG
    the final state) from the segments' ``LJ`` / ``SL`` and the initial state ``(S0, z0)`` (read when ``has_init``);
    ``X = D' · E``."""
    BH = SIN.shape[0]
    _LAUNCH["_c_scan_fwd_kernel"][(BH, cdiv(X, block_x))](
        LJ, SL, S0, z0, SIN, ZSEG, D, E, NSEG, X, BLOCK_J=block_j, BLOCK_X=block_x, HAS_INIT=has_init, num_warps=4,
    )


def scan_backward(
    LG: torch.Tensor, LZ: torch.Tensor, ZSEG: torch.Tensor, D: int, E: int, NSEG: int, X: int,
    block_j: int, block_x: int,
) -> None:
    """B2, in place: ``LG [BH, NSEG + 1, D', E]`` / ``LZ [BH, NSEG + 1, D]`` from the segments' local gradients (slots
    0..NSEG−1) and the final state's gradient (slot NSEG) to the gradient of the state leaving every segment
    (slot ``seg + 1``), in units of ``ZSEG``; ``X = D' · E``."""
    BH = LG.shape[0]
    _LAUNCH["_c_scan_bwd_kernel"][(BH, cdiv(X, block_x))](LG, ZSEG, D, X, E, NSEG, BLOCK_J=block_j, BLOCK_X=block_x,
                                                          num_warps=4)
    _LAUNCH["_c_scan_bwd_kernel"][(BH, cdiv(D, block_x))](LZ, ZSEG, D, D, 1, NSEG, BLOCK_J=block_j, BLOCK_X=block_x,
                                                          num_warps=4)
