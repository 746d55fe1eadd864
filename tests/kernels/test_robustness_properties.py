"""More hypothesis properties of the recurrence (reference) and the positional encodings, beyond test_properties.py:
streaming in random pieces, padding = removal, token-permutation equivariance, MD-LRPE translation invariance of
scores in 1-3 D with prefix tokens, MD-TPE shift equivariance and causality for impulses on random grids."""
from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightnet.kernels import additive_attention
from lightnet.kernels.reference import causal_attention_chunked_torch, causal_attention_recurrent_torch
from lightnet.layers import MDLRPE, MDTPE

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, database=None)


def _rand(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


@SETTINGS
@given(B=st.integers(1, 2), N=st.integers(1, 30), H=st.integers(1, 2), D=st.integers(1, 6), E=st.integers(1, 5),
       cuts=st.lists(st.integers(0, 30), max_size=3), causal=st.booleans(), lrpe=st.booleans(),
       log_scale=st.floats(-1, 2), seed=st.integers(0, 2**16))
def test_streaming_in_pieces_equals_one_pass(B, N, H, D, E, cuts, causal, lrpe, log_scale, seed):
    """Carrying the state (S, z) across arbitrary pieces gives the one-pass state (and, causally, outputs)."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = _rand(g, B, N, H, D), _rand(g, B, N, H, D, scale=10**log_scale), _rand(g, B, N, H, E)
    theta = _rand(g, N, D) if lrpe else None
    full, (S, z) = additive_attention(q, k, v, causal=causal, lrpe_theta=theta, output_final_state=True)
    bounds = sorted({0, N, *[c for c in cuts if c <= N]})
    state, outs = None, []
    for a, b in zip(bounds[:-1], bounds[1:]):
        o, state = additive_attention(q[:, a:b], k[:, a:b], v[:, a:b], causal=causal, initial_state=state,
                                      lrpe_theta=None if theta is None else theta[a:b], output_final_state=True)
        outs.append(o)
    assert torch.allclose(state[0], S, atol=1e-9, rtol=1e-8) and torch.allclose(state[1], z, atol=1e-9, rtol=1e-9)
    if causal:
        assert torch.allclose(torch.cat(outs, 1), full, atol=1e-9, rtol=1e-8)


@SETTINGS
@given(N=st.integers(2, 40), C=st.integers(1, 40), D=st.integers(1, 6), seed=st.integers(0, 2**16),
       log_scale=st.floats(-1, 3))
def test_chunked_causal_equals_recurrent_for_any_chunk(N, C, D, seed, log_scale):
    g = torch.Generator().manual_seed(seed)
    q, k, v = _rand(g, 1, N, 2, D), _rand(g, 1, N, 2, D, scale=10**log_scale), _rand(g, 1, N, 2, 3)
    a, (Sa, za) = causal_attention_chunked_torch(q, k, v, chunk_size=C)
    b, (Sb, zb) = causal_attention_recurrent_torch(q, k, v)
    assert torch.allclose(a, b, atol=1e-9, rtol=1e-8) and torch.allclose(Sa, Sb, atol=1e-9, rtol=1e-8)


@SETTINGS
@given(N=st.integers(2, 25), D=st.integers(1, 6), seed=st.integers(0, 2**16), causal=st.booleans(),
       data=st.data())
def test_padding_equals_removal(N, D, seed, causal, data):
    """Padding tokens (any positions) change nothing for the real tokens: equal to running without them."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = _rand(g, 1, N, 2, D), _rand(g, 1, N, 2, D), _rand(g, 1, N, 2, 4)
    pad = torch.tensor(data.draw(st.lists(st.booleans(), min_size=N, max_size=N)))
    if pad.all():
        pad[0] = False
    o = additive_attention(q, k, v, causal=causal, key_padding_mask=pad[None])
    keep = ~pad
    ref = additive_attention(q[:, keep], k[:, keep], v[:, keep], causal=causal)
    assert torch.allclose(o[:, keep], ref, atol=1e-9, rtol=1e-8)


@SETTINGS
@given(N=st.integers(2, 25), D=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_noncausal_scan_is_permutation_equivariant(N, D, seed):
    """Without position encodings the single order-free scan commutes with any permutation of the tokens."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = _rand(g, 2, N, 2, D), _rand(g, 2, N, 2, D, scale=5.0), _rand(g, 2, N, 2, 3)
    perm = torch.randperm(N, generator=g)
    o = additive_attention(q, k, v)
    assert torch.allclose(additive_attention(q[:, perm], k[:, perm], v[:, perm]), o[:, perm], atol=1e-10)


@SETTINGS
@given(dims=st.lists(st.integers(1, 4), min_size=1, max_size=3), prefix=st.integers(0, 2), seed=st.integers(0, 2**16),
       data=st.data())
def test_mdlrpe_scores_are_translation_invariant(dims, prefix, seed, data):
    """q̄_mᵀ k̄_n (through MDLRPE.forward) depends only on the offset between grid cells m and n; prefix tokens
    are left unrotated (cosine half = x, sine half = 0)."""
    A = len(dims)
    D = 2 * A + 1  # one channel left over when D is not divisible by the axis count: it carries no position
    lrpe = MDLRPE(D, num_axes=A, num_prefix_tokens=prefix, base=50.0)
    g = torch.Generator().manual_seed(seed)
    q1, k1 = torch.randn(1, 1, 1, D, generator=g), torch.randn(1, 1, 1, D, generator=g)
    M = math.prod(dims)
    Q = lrpe(q1.expand(1, prefix + M, 1, D).contiguous(), dims)  # the same vector at every cell
    K = lrpe(k1.expand(1, prefix + M, 1, D).contiguous(), dims)
    assert torch.allclose(Q[:, :prefix, :, :D], q1.expand(1, prefix, 1, D)) and (Q[:, :prefix, :, D:] == 0).all()
    grid = torch.stack(torch.meshgrid(*[torch.arange(s) for s in dims], indexing="ij"), -1).reshape(-1, A)
    scores = torch.einsum("md,nd->mn", Q[0, prefix:, 0], K[0, prefix:, 0])
    m1, n1, m2 = (data.draw(st.integers(0, M - 1)) for _ in range(3))
    target = grid[m2] + grid[n1] - grid[m1]  # n2 = m2 + (n1 - m1), if it lies on the grid
    if ((target >= 0) & (target < torch.tensor(dims))).all():
        n2 = int((grid == target).all(-1).nonzero()[0])
        assert math.isclose(scores[m1, n1].item(), scores[m2, n2].item(), rel_tol=1e-4, abs_tol=1e-5)


@SETTINGS
@given(dims=st.lists(st.integers(2, 6), min_size=1, max_size=3), seed=st.integers(0, 2**16), causal=st.booleans(),
       data=st.data())
def test_mdtpe_impulse_response_is_shift_equivariant_and_causal(dims, seed, causal, data):
    """An impulse at cell p gives a response that only depends on (cell − p): moving the impulse moves the
    response; with causal axes nothing appears before the impulse on any axis."""
    torch.manual_seed(seed)
    A, C = len(dims), 3
    tpe = MDTPE(C, num_axes=A, causal=causal, residual=False, init_std=0.5)
    with torch.no_grad():
        for ax in tpe.axes:
            ax.w0.normal_()
    p = [data.draw(st.integers(0, s - 2)) for s in dims]
    shift = [data.draw(st.integers(0, s - 1 - pi)) for s, pi in zip(dims, p)]
    x1, x2 = torch.zeros(1, *dims, C), torch.zeros(1, *dims, C)
    x1[(0, *p)] = 1.0
    x2[(0, *[a + b for a, b in zip(p, shift)])] = 1.0
    with torch.no_grad():
        y1 = tpe(x1.reshape(1, -1, C), dims).reshape(1, *dims, C)
        y2 = tpe(x2.reshape(1, -1, C), dims).reshape(1, *dims, C)
    src = tuple(slice(0, s - d) for s, d in zip(dims, shift))
    dst = tuple(slice(d, s) for s, d in zip(dims, shift))
    assert torch.allclose(y2[(0, *dst)], y1[(0, *src)], atol=1e-5)
    if causal:
        for a in range(A):  # cells strictly before the impulse along axis a (same other coordinates) stay zero
            idx = [pi for pi in p]
            for before in range(p[a]):
                idx[a] = before
                assert torch.allclose(y1[(0, *idx)], torch.zeros(C), atol=1e-6)
