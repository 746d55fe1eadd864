"""Property-based tests (hypothesis) over random shapes for the recurrence and the positional encodings."""
from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightnet.kernels import additive_attention, causal_attention_recurrent_torch
from lightnet.layers import MDLRPE, MDTPE

SETTINGS = settings(max_examples=25, deadline=None)


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


shapes = st.tuples(
    st.integers(1, 3),  # B
    st.integers(1, 33),  # N
    st.integers(1, 3),  # H
    st.sampled_from([1, 2, 4, 8]),  # D
    st.sampled_from([1, 3, 8]),  # E
)


@SETTINGS
@given(shape=shapes, log_scale=st.floats(-2, 3), seed=st.integers(0, 2**16), causal=st.booleans(), lrpe=st.booleans(),
       pad_frac=st.sampled_from([0.0, 0.3, 1.0]))
def test_recurrence_matches_token_by_token_oracle(shape, log_scale, seed, causal, lrpe, pad_frac):
    B, N, H, D, E = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, N, H, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, N, H, D, generator=g, dtype=torch.float64) * 10**log_scale
    v = torch.randn(B, N, H, E, generator=g, dtype=torch.float64)
    mask = torch.rand(B, N, generator=g) < pad_frac if pad_frac else None
    theta = torch.randn(N, D, generator=g, dtype=torch.float64) if lrpe else None
    o = additive_attention(q, k, v, causal=causal, key_padding_mask=mask, lrpe_theta=theta, backend="torch")
    assert o.shape == (B, N, H, E) and torch.isfinite(o).all()
    if causal:
        ref, _ = causal_attention_recurrent_torch(q, k, v, key_padding_mask=mask, lrpe_theta=theta)
    else:  # non-causal == causal read-out with the final state for every query
        _, state = causal_attention_recurrent_torch(q, k, v, key_padding_mask=mask, lrpe_theta=theta)
        S = state[0]
        qf = q if theta is None else torch.cat([q * torch.cos(theta)[None, :, None], q * torch.sin(theta)[None, :, None]], -1)
        ref = torch.einsum("bnhd,bhde->bnhe", qf, S)
    assert _rel(o, ref) < 1e-8 or float((o - ref).abs().max()) < 1e-10


@SETTINGS
@given(dims=st.lists(st.integers(1, 5), min_size=1, max_size=3), seed=st.integers(0, 2**16), prefix=st.integers(0, 2))
def test_mdlrpe_relative_scores(dims, seed, prefix):
    A = len(dims)
    D = 2 * A
    lrpe = MDLRPE(D, num_axes=A, num_prefix_tokens=prefix)
    theta = lrpe.angles(dims)
    assert theta.shape == (prefix + math.prod(dims), D)
    assert (theta[:prefix] == 0).all()
    # θ is linear in the coordinates: θ(p + δ) − θ(p) does not depend on p
    coords = torch.stack(torch.meshgrid(*[torch.arange(s) for s in dims], indexing="ij"), -1).reshape(-1, A)
    grid_theta = theta[prefix:]
    base = grid_theta[0]
    for i in range(1, coords.shape[0]):
        expected = (coords[i].float() @ lrpe.freqs.float())
        assert torch.allclose(grid_theta[i] - base, expected, atol=1e-5)


@SETTINGS
@given(dims=st.lists(st.integers(1, 6), min_size=1, max_size=3), seed=st.integers(0, 2**16), C=st.integers(1, 5))
def test_mdtpe_shapes_and_linearity(dims, seed, C):
    torch.manual_seed(seed)
    tpe = MDTPE(C, num_axes=len(dims), residual=False)
    N = math.prod(dims)
    x, y = torch.randn(2, N, C), torch.randn(2, N, C)
    with torch.no_grad():
        fx, fy, fxy = tpe(x, dims), tpe(y, dims), tpe(2 * x + y, dims)
    assert fx.shape == (2, N, C)
    assert torch.allclose(fxy, 2 * fx + fy, atol=1e-4)
