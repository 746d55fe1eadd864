"""Triton kernels run under the CPU interpreter (``TRITON_INTERPRET=1``) against the PyTorch reference.

Triton decides at import time whether ``@triton.jit`` functions (its own standard library included) are
interpreted, so the comparisons run in one subprocess that sets ``TRITON_INTERPRET=1`` before importing triton:
this module is also that worker (``python tests/kernels/test_triton_interpret.py`` prints a JSON report). The pytest side
never imports triton, so no other test sees the flag. Gradients are compared through a loss that also touches the
returned final state ``(S, z)``; errors are norm-relative against the fp64 reference.
"""
from __future__ import annotations

import contextlib

import importlib.util
import json
import os
import subprocess
import sys
from typing import Dict, Optional, Tuple

if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _compare(
    B: int,
    N: int,
    H: int,
    D: int,
    E: int,
    *,
    causal: bool,
    dtype: torch.dtype = torch.float32,
    mask: bool = False,
    lrpe: bool = False,
    init: bool = False,
    k_scale: float = 1.0,
    seed: int = 0,
    k_spike: Optional[Tuple[int, float]] = None,
    c_segment: Optional[int] = None,
    c_scan_j: Optional[int] = None,
    c_scan_x: Optional[int] = None,
    q_silu: bool = False,
    launch: Optional[object] = None,
) -> Dict[str, float]:
    """Relative errors of (o, S, z, dq, dk, dv) of the Triton path against the fp64 reference.

    ``k_spike = (t, value)`` adds ``value`` to key channel 0 of token t (one chunk with a large spread, so the exact
    path runs for that chunk only); ``c_segment`` forces the causal kernels' chunks per segment, ``c_scan_j`` /
    ``c_scan_x`` the segment scans' group of segments (``BLOCK_J``) and of state elements (``BLOCK_X``), through a
    :class:`~lightnet.kernels.causal.CausalLaunch`. ``q_silu``: the Triton path gets ``q_activation='silu'`` (in
    the non-causal kernels), the reference ``silu(q)``; dq is the raw query's gradient on both sides. ``launch``:
    launch parameters passed as they are (a ``NonCausalLaunch`` / ``CausalLaunch``).
    """
    from lightnet.kernels.api import triton_attention
    from lightnet.kernels.causal import CausalLaunch
    from lightnet.kernels.reference import additive_attention_torch

    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, N, H, D, generator=g).to(dtype)
    k = torch.randn(B, N, H, D, generator=g) * k_scale
    if k_spike is not None:
        k[:, k_spike[0], :, 0] += k_spike[1]
    k = k.to(dtype)
    v = torch.randn(B, N, H, E, generator=g).to(dtype)
    kpm: Optional[torch.Tensor] = None
    if mask:
        kpm = torch.rand(B, N, generator=g) < 0.3
        kpm[0, :] = False
        if B > 1:
            kpm[1, : N // 2] = True  # a left-padded row: empty prefix
    Dp = 2 * D if lrpe else D
    theta = torch.rand(N, D, generator=g) * 6.0 if lrpe else None
    state = (torch.randn(B, H, Dp, E, generator=g), torch.randn(B, H, D, generator=g)) if init else None
    do = torch.randn(B, N, H, E, generator=g)
    wS = torch.randn(B, H, Dp, E, generator=g)
    wz = torch.randn(B, H, D, generator=g)
    results = []
    for use_triton in (False, True):
        tensors = [t.detach().clone() for t in (q, k, v)]
        if not use_triton:
            tensors = [t.double() for t in tensors]
        q_, k_, v_ = (t.requires_grad_() for t in tensors)
        th = theta if (theta is None or use_triton) else theta.double()
        st = state if (state is None or use_triton) else tuple(s.double() for s in state)
        fn = triton_attention if use_triton else additive_attention_torch
        extra = {}
        q_in = q_
        if q_silu and use_triton:
            extra = dict(q_activation="silu")
        elif q_silu:
            q_in = torch.nn.functional.silu(q_)
        if use_triton and (c_segment, c_scan_j, c_scan_x) != (None, None, None):
            extra["launch"] = CausalLaunch(segment=c_segment, scan_block_j=c_scan_j, scan_block_x=c_scan_x)
        elif use_triton and launch is not None:
            extra["launch"] = launch
        o, (S, z) = fn(q_in, k_, v_, causal=causal, scale=0.7, key_padding_mask=kpm, lrpe_theta=th,
                       initial_state=st, **extra)
        if use_triton:
            assert o.dtype == dtype and S.dtype == torch.float32 and z.dtype == torch.float32
        loss = (o.double() * do.double()).sum() + (S.double() * wS.double()).sum()
        loss = loss + (z.double() * wz.double()).sum()
        loss.backward()
        results.append((o, S, z, q_.grad, k_.grad, v_.grad))
    names = ("o", "S", "z", "dq", "dk", "dv")
    errs = {n: _rel(t, r) for n, r, t in zip(names, *results)}
    for n, t in zip(names, results[1]):
        assert torch.isfinite(t).all(), f"{n} has non-finite values"
    return errs


def _assert_close(errs: Dict[str, float], tol: float) -> None:
    bad = {n: e for n, e in errs.items() if not e <= tol}
    assert not bad, f"relative errors above {tol}: {bad} (all: {errs})"


# name -> (arguments of _compare, tolerance on every relative error)
CASES = {
    # non-causal
    "nc_split_oddN": (dict(B=2, N=37, H=2, D=16, E=16, causal=False), 1e-4),
    "nc_single_token": (dict(B=1, N=1, H=1, D=16, E=16, causal=False), 1e-4),
    "nc_fused_all": (dict(B=1, N=21, H=1, D=32, E=16, causal=False, mask=True, lrpe=True, init=True), 1e-4),
    "nc_split_all": (dict(B=2, N=100, H=1, D=16, E=32, causal=False, mask=True, lrpe=True, init=True), 1e-4),
    "nc_dims_not_pow2": (dict(B=2, N=50, H=1, D=24, E=20, causal=False, mask=True), 1e-4),
    "nc_large_logits": (dict(B=2, N=45, H=1, D=16, E=16, causal=False, mask=True, k_scale=1e4), 3e-3),
    "nc_bf16": (dict(B=2, N=40, H=2, D=16, E=16, causal=False, dtype=torch.bfloat16, mask=True, lrpe=True), 1e-2),
    # the query's SiLU inside the kernels (q_activation='silu'): fused one-range kernels, split ranges + merge, bf16
    "nc_qsilu_fused_all": (
        dict(B=1, N=21, H=1, D=32, E=16, causal=False, mask=True, lrpe=True, init=True, q_silu=True), 1e-4),
    "nc_qsilu_split_all": (
        dict(B=2, N=100, H=1, D=16, E=32, causal=False, mask=True, lrpe=True, init=True, q_silu=True), 1e-4),
    "nc_qsilu_plain": (dict(B=2, N=37, H=2, D=16, E=16, causal=False, q_silu=True), 1e-4),
    "nc_qsilu_bf16": (
        dict(B=2, N=40, H=2, D=16, E=16, causal=False, dtype=torch.bfloat16, mask=True, lrpe=True, q_silu=True), 1e-2),
    # causal (chunks of 16 tokens under the interpreter)
    "c_oddN": (dict(B=1, N=37, H=1, D=16, E=16, causal=True), 1e-4),
    "c_single_token_with_state": (dict(B=2, N=1, H=1, D=16, E=16, causal=True, init=True, mask=True), 1e-4),
    "c_mask_E_neq_D": (dict(B=2, N=40, H=1, D=16, E=32, causal=True, mask=True), 1e-4),
    "c_lrpe_init": (dict(B=1, N=33, H=2, D=16, E=16, causal=True, lrpe=True, init=True), 1e-4),
    "c_large_logits_exact_path": (dict(B=2, N=35, H=1, D=16, E=16, causal=True, mask=True, k_scale=1e4), 3e-3),
    "c_mixed_spread_lrpe": (dict(B=1, N=35, H=1, D=16, E=16, causal=True, lrpe=True, k_scale=30.0), 1e-4),
    "c_bf16": (dict(B=1, N=40, H=2, D=16, E=16, causal=True, dtype=torch.bfloat16, mask=True, lrpe=True), 1e-2),
    "c_qsilu_lrpe_init": (dict(B=1, N=33, H=2, D=16, E=16, causal=True, lrpe=True, init=True, q_silu=True), 1e-4),
    # causal, several segments per (batch, head) (segments of c_segment chunks, each walked in order by one program)
    "c_segments_all": (
        dict(B=2, N=100, H=1, D=16, E=16, causal=True, mask=True, lrpe=True, init=True, c_segment=2), 1e-4),
    "c_segments_dims_not_pow2": (
        dict(B=2, N=100, H=1, D=24, E=20, causal=True, mask=True, init=True, c_segment=3), 1e-4),
    "c_segments_large_logits": (
        dict(B=2, N=100, H=1, D=16, E=16, causal=True, mask=True, lrpe=True, k_scale=1e4, c_segment=4), 3e-3),
    "c_segments_of_one_chunk": (
        dict(B=2, N=40, H=1, D=16, E=16, causal=True, mask=True, lrpe=True, init=True, c_segment=1), 1e-4),
    # more segments than one scan group holds (7 one-chunk segments in groups of 2): the reverse scan's carry between
    # groups (on an H200 a tl.reduce there composed out of order: dk/dv 6e-2 at 65 segments, run E)
    "c_scan_groups": (
        dict(B=1, N=100, H=2, D=16, E=16, causal=True, lrpe=True, init=True, c_segment=1, c_scan_j=2), 1e-4),
    # the GPU's scan tiles for few segments: a group as wide as the segments, one tile wider than the whole state
    "c_scan_wide_tile": (
        dict(B=2, N=100, H=1, D=16, E=16, causal=True, mask=True, lrpe=True, init=True, c_segment=3, c_scan_j=4,
             c_scan_x=1024), 1e-4),
    "c_one_segment_for_all_chunks": (
        dict(B=2, N=100, H=1, D=16, E=16, causal=True, mask=True, k_scale=30.0, c_segment=64), 1e-4),
    # one segment for all chunks: F1/F2/B2 skipped, F3 starts from the initial state and writes the final state
    "c_one_segment_init_lrpe_spread": (
        dict(B=2, N=70, H=1, D=16, E=16, causal=True, mask=True, lrpe=True, init=True, k_scale=30.0, c_segment=64),
        1e-4),
    "c_segments_mixed_spread": (
        dict(B=1, N=100, H=2, D=16, E=16, causal=True, lrpe=True, init=True, k_scale=30.0, c_segment=3), 1e-4),
    # one flagged chunk after an unflagged one inside a segment (chunk 3 of segment [2, 3]) ...
    "c_segments_flag_mid_segment": (
        dict(B=2, N=100, H=1, D=16, E=16, causal=True, mask=True, lrpe=True, init=True, k_spike=(56, 120.0),
             c_segment=2), 1e-4),
    # ... and between unflagged ones (chunk 2 of segment [0, 3]; the spike underflows every earlier weight)
    "c_segments_flag_inside_segment": (
        dict(B=1, N=100, H=2, D=16, E=16, causal=True, mask=True, k_spike=(40, 200.0), c_segment=4), 1e-4),
}


def _flags_mark_wide_chunks() -> Dict[str, float]:
    """F1 flags exactly the chunks that need the exact path: none for unit-scale logits, the chunk holding a key
    spike (token 56: chunk 3 of 16 tokens), and the backward uses the forward's flags (0.0 = holds, per check)."""
    from lightnet.kernels.causal import CausalLaunch, causal_forward

    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 100, 1, 16, generator=g) for _ in range(3))
    launch = CausalLaunch(segment=2)
    *_, calm = causal_forward(q, k, v, 1.0, None, None, None, launch=launch)
    k[:, 56, :, 0] += 120.0  # one chunk with a large spread
    *_, spiky = causal_forward(q, k, v, 1.0, None, None, None, launch=launch)
    NC = calm[3].shape[1]
    flags_calm, flags_spiky = calm[5].flatten(1)[:, :NC], spiky[5].flatten(1)[:, :NC]
    return {"calm_unflagged": float(bool((flags_calm != 0).any())),
            "spike_chunk_flagged": float(not bool((flags_spiky[:, 3] != 0).all())),
            "saved_layout": float(len(spiky) != 6 or tuple(spiky[5].shape) != (2, 4, 2))}


def _causal_launch_defaults() -> Dict[str, object]:
    """Launch defaults of the causal kernels as a GPU would get them (the interpreter check patched out): segment
    scans, chunks per segment, warps per (D, E, direction), and a CausalLaunch's warps replacing them."""
    from lightnet.kernels.causal import CausalLaunch
    from lightnet.kernels.causal import kernels as ck
    from lightnet.kernels.causal import scan as cs

    saved = [(m, m.interpreting, m.num_sms) for m in (ck, cs)]
    out: Dict[str, object] = {}
    try:
        for m in (ck, cs):
            m.interpreting = lambda: False
            m.num_sms = lambda device: 132
        cpu = torch.device("cpu")
        # segment scans (BLOCK_J, BLOCK_X) at the benchmark shape (X = 64 · 64): N = 1K (BH = 384, 2 segments),
        # 4K (BH = 96, 8), 64K (BH = 6, 128); with LRPE at 64K; a 16-element state
        out["scan_1k"] = list(cs.scan_config(4096, 2, 384, cpu))
        out["scan_4k"] = list(cs.scan_config(4096, 8, 96, cpu))
        out["scan_64k"] = list(cs.scan_config(4096, 128, 6, cpu))
        out["scan_64k_lrpe"] = list(cs.scan_config(8192, 128, 6, cpu))
        out["scan_tiny"] = list(cs.scan_config(16, 3, 1, cpu))
        # chunks per segment: N = 1K (NC = 32, BH = 384: one segment), 4K (NC = 128, BH = 96), 64K (NC = 2048, BH = 6),
        # many heads but 128 chunks (not one segment)
        out["seg_1k"] = ck.segment_chunks(32, 384, cpu)
        out["seg_4k"] = ck.segment_chunks(128, 96, cpu)
        out["seg_64k"] = ck.segment_chunks(2048, 6, cpu)
        out["seg_many_heads_long"] = ck.segment_chunks(128, 384, cpu)
        out["chunk"] = ck.chunk_size(64, 64)
        default = CausalLaunch()
        out["fwd_64"] = ck._warps(64, 64, False, default)
        out["bwd_64"] = ck._warps(64, 64, True, default)
        out["fwd_128"] = ck._warps(128, 128, False, default)
        out["bwd_128"] = ck._warps(128, 128, True, default)
        out["fwd_num_warps_2"] = ck._warps(64, 64, False, CausalLaunch(num_warps=2))
        out["bwd_num_warps_2"] = ck._warps(64, 64, True, CausalLaunch(num_warps=2))
        out["bwd_bwd_num_warps_4"] = ck._warps(64, 64, True, CausalLaunch(bwd_num_warps=4))
        out["fwd_bwd_num_warps_4"] = ck._warps(64, 64, False, CausalLaunch(bwd_num_warps=4))
    finally:
        for m, interp, sms in saved:
            m.interpreting, m.num_sms = interp, sms
    out["interpreter_bwd"] = ck._warps(64, 64, True, CausalLaunch())
    out["interpreter_chunk"] = ck.chunk_size(64, 64)
    return out


def _prefill_in_pieces() -> Dict[str, float]:
    """Causal prefill in two pieces (state carried) and token-by-token decode equal one full pass (with padding)."""
    from lightnet.kernels.api import triton_attention as f

    g = torch.Generator().manual_seed(5)
    q, k = (torch.randn(2, 29, 2, 16, generator=g) for _ in range(2))
    v = torch.randn(2, 29, 2, 32, generator=g)
    theta = torch.rand(29, 16, generator=g) * 6
    kpm = torch.rand(2, 29, generator=g) < 0.25
    kpm[1, :3] = True
    full, (S, z) = f(q, k, v, causal=True, lrpe_theta=theta, key_padding_mask=kpm)
    a, st = f(q[:, :20], k[:, :20], v[:, :20], causal=True, lrpe_theta=theta[:20], key_padding_mask=kpm[:, :20])
    b, (S2, z2) = f(q[:, 20:], k[:, 20:], v[:, 20:], causal=True, lrpe_theta=theta[20:], initial_state=st,
                    key_padding_mask=kpm[:, 20:])
    steps, st = [], None
    for t in range(29):
        o_t, st = f(q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], causal=True, lrpe_theta=theta[t : t + 1],
                    initial_state=st, key_padding_mask=kpm[:, t : t + 1])
        steps.append(o_t)
    return {
        "prefill_o": _rel(torch.cat([a, b], 1), full), "prefill_S": _rel(S2, S), "prefill_z": _rel(z2, z),
        "decode_o": _rel(torch.cat(steps, 1), full), "decode_S": _rel(st[0], S), "decode_z": _rel(st[1], z),
    }


def _unsupported_gradients() -> Dict[str, float]:
    """Gradients the Triton path does not provide raise a clear error (0.0 = raised with the right message)."""
    from lightnet.kernels.api import triton_attention as f

    q = torch.randn(1, 5, 1, 16, requires_grad=True)
    out = {}
    cases = {
        "initial_state": dict(initial_state=(torch.zeros(1, 1, 16, 16, requires_grad=True), torch.zeros(1, 1, 16))),
        "lrpe_theta": dict(lrpe_theta=torch.zeros(5, 16, requires_grad=True)),
    }
    for name, kwargs in cases.items():
        try:
            f(q, q, q, causal=True, **kwargs)
            out[name] = 1.0
        except RuntimeError as exc:
            out[name] = 0.0 if name in str(exc) else 1.0
    return out


def _splits_agree() -> Dict[str, float]:
    """The fused single-range kernel and the split + merge path give the same forward."""
    from lightnet.kernels.noncausal import NonCausalLaunch, noncausal_forward

    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 70, 2, 16, generator=g) for _ in range(3))
    one = noncausal_forward(q, k, v, 1.0, None, None, None, launch=NonCausalLaunch(splits=1))
    many = noncausal_forward(q, k, v, 1.0, None, None, None, launch=NonCausalLaunch(splits=4))
    return {n: _rel(b, a) for n, a, b in zip(("o", "S", "z"), one, many)}


def _trig_table_agrees() -> Dict[str, float]:
    """MD-LRPE with the precomputed cos / sin table (the default up to D = 64) gives the forward and the gradients of
    the in-kernel cos / sin path (D = 128's), fused (one range) and split (4 ranges, partial states), with a mask and
    an initial state (``NonCausalLaunch(trig_table=...)`` picks the form)."""
    from lightnet.kernels.noncausal import NonCausalLaunch
    from lightnet.kernels.noncausal import kernels as tn

    g = torch.Generator().manual_seed(5)
    B, N, H, D, E = 2, 70, 2, 16, 8
    q, k, do = (torch.randn(B, N, H, D if i < 2 else E, generator=g) for i in range(3))
    v = torch.randn(B, N, H, E, generator=g)
    theta = torch.rand(N, D, generator=g) * 6.0
    mask = torch.zeros(B, N, dtype=torch.bool)
    mask[1, 60:] = True
    init = (torch.randn(B, H, 2 * D, E, generator=g).abs() * 0.1, torch.randn(B, H, D, generator=g))
    out = {}
    for splits in (1, 4):
        runs = []
        for flag in (False, True):
            launch = NonCausalLaunch(splits=splits, trig_table=flag)
            o, S, z = tn.noncausal_forward(q, k, v, 0.5, mask, theta, init, launch=launch)
            grads = tn.noncausal_backward(do, None, None, q, k, v, S, z, 0.5, mask, theta, launch=launch)
            runs.append((o, S, z, *grads))
        for name, a, b in zip(("o", "S", "z", "dq", "dk", "dv"), *runs):
            out[f"{name}_splits{splits}"] = _rel(b, a)
    out["table_shape_ok"] = 0.0 if tuple(tn.trig_table(theta).shape) == (N, 2 * D) else 1.0
    return out


def _mixer_q_silu_in_kernel() -> Dict[str, float]:
    """``LightNetAttention`` passes its query's SiLU to the kernels (``q_activation='silu'``) against the same mixer
    with the activation applied before the call (the mixer's kernel call wrapped to do so): outputs and gradients
    agree, and the storage autograd keeps for the backward shrinks by exactly one activated query ``[B, N, C]``."""
    from unittest import mock

    from tests._saved_bytes import saved_bytes
    from lightnet.kernels import additive_attention
    from lightnet.layers import LightNetAttention, mixer as mixer_module

    def silu_before_the_call(q, k, v, *, q_activation=None, **kwargs):
        if q_activation == "silu":
            q, q_activation = torch.nn.functional.silu(q), None
        return additive_attention(q, k, v, q_activation=q_activation, **kwargs)

    torch.manual_seed(0)
    B, N, C = 2, 49, 32
    mixer = LightNetAttention(C, 2, num_axes=2, backend="triton")
    x = torch.randn(B, N, C)
    runs = []
    for in_kernel in (True, False):
        patch = mock.patch.object(mixer_module, "additive_attention", silu_before_the_call) if not in_kernel else None
        with patch or contextlib.nullcontext():
            xi = x.clone().requires_grad_()
            y, nbytes = saved_bytes(lambda: mixer(xi, grid_shape=(7, 7)))
            y.square().sum().backward()
        grads = [xi.grad] + [p.grad.clone() for p in mixer.parameters()]
        mixer.zero_grad()
        runs.append((y.detach(), grads, nbytes))
    (y1, g1, b1), (y0, g0, b0) = runs
    out = {"y": _rel(y1, y0), "grads": max(_rel(a, b) for a, b in zip(g1, g0))}
    out["saved_bytes_less"] = float(b0 - b1)
    out["activated_query_bytes"] = float(B * N * C * 4)
    return out


def _recompute_state_agrees() -> Dict[str, float]:
    """``additive_attention(..., recompute_state=True)``: the backward rebuilds ``S`` from k and v instead of keeping
    it. Forward and gradients equal the kept-state path (one range and split ranges, padding, MD-LRPE, query SiLU in
    the kernels), autograd keeps exactly one ``[B, H, D', E]`` fp32 state less, and with an initial state ``S`` is
    still kept (the flag does not apply). Values: relative errors, and 0.0 / 1.0 for the byte checks (0.0 = holds)."""
    from tests._saved_bytes import saved_bytes
    from lightnet.kernels import additive_attention

    out: Dict[str, float] = {}
    g = torch.Generator().manual_seed(11)
    for N, init in ((21, False), (100, False), (40, True)):
        B, H, D = 2, 2, 16
        q, k, v = (torch.randn(B, N, H, D, generator=g) for _ in range(3))
        theta = torch.rand(N, D, generator=g) * 6.0
        mask = torch.rand(B, N, generator=g) < 0.3
        state = (torch.randn(B, H, 2 * D, D, generator=g), torch.randn(B, H, D, generator=g)) if init else None
        do = torch.randn(B, N, H, D, generator=g)
        runs = []
        for flag in (False, True):
            inputs = [t.clone().requires_grad_() for t in (q, k, v)]
            o, nbytes = saved_bytes(lambda: additive_attention(
                *inputs, scale=0.5, key_padding_mask=mask, lrpe_theta=theta, initial_state=state,
                q_activation="silu", backend="triton", recompute_state=flag))
            grads = torch.autograd.grad((o * do).sum(), inputs)
            runs.append((o, *grads, nbytes))
        tag = f"N{N}" + ("_init" if init else "")
        for name, a, b in zip(("o", "dq", "dk", "dv"), runs[0][:4], runs[1][:4]):
            out[f"{tag}/{name}"] = _rel(b, a)
        state_bytes = B * H * 2 * D * D * 4
        out[f"{tag}/saved_less_ok"] = 0.0 if runs[0][4] - runs[1][4] == (0 if init else state_bytes) else 1.0
    return out


def _worker() -> None:
    report = {}
    jobs = {name: (lambda a=args: _compare(**a)) for name, (args, _) in CASES.items()}
    jobs["c_flags_mark_wide_chunks"] = _flags_mark_wide_chunks
    jobs["c_launch_defaults"] = _causal_launch_defaults
    jobs["nc_splits_agree"] = _splits_agree
    jobs["nc_trig_table_agrees"] = _trig_table_agrees
    jobs["c_prefill_in_pieces"] = _prefill_in_pieces
    jobs["unsupported_gradients"] = _unsupported_gradients
    jobs["mixer_q_silu_in_kernel"] = _mixer_q_silu_in_kernel
    jobs["nc_recompute_state_agrees"] = _recompute_state_agrees
    for name, job in jobs.items():
        try:
            report[name] = job()
        except Exception as exc:  # reported to the pytest side, which fails that case
            report[name] = f"{type(exc).__name__}: {exc}"
    print("REPORT" + json.dumps(report))


@pytest.fixture(scope="module")
def report() -> Dict[str, object]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path)
    proc = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=900,
        cwd=root,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT")]
    assert proc.returncode == 0 and lines, f"interpreter worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("REPORT"):])


pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_matches_reference(report, name):
    errs = report[name]
    assert isinstance(errs, dict), errs
    _assert_close(errs, CASES[name][1])


def test_causal_flags_mark_the_chunks_that_need_the_exact_path(report):
    got = report["c_flags_mark_wide_chunks"]
    assert got == {"calm_unflagged": 0.0, "spike_chunk_flagged": 0.0, "saved_layout": 0.0}, got


def test_causal_launch_defaults(report):
    """Chunks of 32; 8 backward warps at every width, 4 forward up to D = 64, 8 for wider tiles; a CausalLaunch's
    ``num_warps`` sets the forward launches, ``bwd_num_warps`` the backward ones; always 4 warps and chunks of 16
    under the interpreter. Segment scans: BLOCK_J = segments rounded up to a power of two (2..32), BLOCK_X fills 4,096
    elements but keeps ≥ 4 programs per SM (132 SMs) and ≥ 32 elements. Segments: one per (batch, head) when
    BH ≥ 2 · SMs and NC ≤ 64, else ~4 programs per SM, at most 16 chunks."""
    assert report["c_launch_defaults"] == {
        "scan_1k": [2, 2048], "scan_4k": [8, 512], "scan_64k": [32, 32], "scan_64k_lrpe": [32, 64],
        "scan_tiny": [4, 32], "seg_1k": 32, "seg_4k": 16, "seg_64k": 16, "seg_many_heads_long": 16, "chunk": 32,
        "fwd_64": 4, "bwd_64": 8, "fwd_128": 8, "bwd_128": 8,
        "fwd_num_warps_2": 2, "bwd_num_warps_2": 8, "bwd_bwd_num_warps_4": 4, "fwd_bwd_num_warps_4": 4,
        "interpreter_bwd": 4, "interpreter_chunk": 16,
    }, report["c_launch_defaults"]


def _check_job(report, name: str, tol: float, count: Optional[int] = None) -> None:
    """Worker job ``name`` returned relative errors (``count`` of them when given), all within ``tol``."""
    errs = report[name]
    assert isinstance(errs, dict), errs
    assert count is None or len(errs) == count, errs
    _assert_close(errs, tol)


def test_noncausal_split_and_fused_paths_agree(report):
    _check_job(report, "nc_splits_agree", 1e-5)


def test_noncausal_lrpe_trig_table_matches_in_kernel_cos_sin(report):
    _check_job(report, "nc_trig_table_agrees", 1e-5, count=13)


def test_causal_prefill_in_pieces_and_decode_match_one_pass(report):
    _check_job(report, "c_prefill_in_pieces", 1e-5)


def test_noncausal_backward_with_recomputed_state_matches_and_keeps_less(report):
    _check_job(report, "nc_recompute_state_agrees", 1e-6, count=15)


def test_mixer_query_silu_in_kernel_keeps_no_activated_copy(report):
    got = report["mixer_q_silu_in_kernel"]
    assert isinstance(got, dict), got
    assert got["y"] <= 1e-5 and got["grads"] <= 1e-5, got
    assert got["saved_bytes_less"] == got["activated_query_bytes"], got


def test_unsupported_gradients_raise_clear_errors(report):
    errs = report["unsupported_gradients"]
    assert isinstance(errs, dict), errs
    assert errs == {"initial_state": 0.0, "lrpe_theta": 0.0}, errs


if __name__ == "__main__":
    _worker()
