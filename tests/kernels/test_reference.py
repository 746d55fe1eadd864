"""The PyTorch reference of the additive recurrence against an independent naive fp64 formula."""
from __future__ import annotations

import pytest
import torch

from lightnet.kernels import (
    additive_attention,
    causal_attention_chunked_torch,
    causal_attention_recurrent_torch,
    noncausal_attention_torch,
)


def naive_additive(q, k, v, causal, mask=None, theta=None, scale=1.0):
    """O(N²) fp64 oracle written from the definition: per query t, softmax of keys over the visible tokens."""
    q, k, v = q.double(), k.double(), v.double()
    B, N, H, D = q.shape
    out = torch.zeros(B, N, H, v.shape[-1], dtype=torch.float64)
    for b in range(B):
        for t in range(N):
            visible = [s for s in range(t + 1 if causal else N) if mask is None or not mask[b, s]]
            if not visible:
                continue
            ks = k[b, visible]  # [S, H, D]
            w = torch.softmax(ks, dim=0)
            if theta is not None:
                w = w * torch.cos(theta[t].double()[None] - theta[visible].double())[:, None, :]
            out[b, t] = torch.einsum("hd,shd,she->he", q[b, t], w, v[b, visible]) * scale
    return out


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def make_inputs(B=2, N=13, H=3, D=8, E=5, key_scale=2.0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, N, H, D, generator=g).to(dtype)
    k = (torch.randn(B, N, H, D, generator=g) * key_scale).to(dtype)
    v = torch.randn(B, N, H, E, generator=g).to(dtype)
    return q, k, v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("use_lrpe", [False, True])
@pytest.mark.parametrize("N", [1, 2, 13, 40])
def test_forward_matches_naive(causal, use_mask, use_lrpe, N):
    q, k, v = make_inputs(N=N, seed=N)
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(2, N, generator=g) < 0.3) if use_mask else None
    theta = torch.randn(N, 8, generator=g) if use_lrpe else None
    o = additive_attention(q, k, v, causal=causal, key_padding_mask=mask, lrpe_theta=theta, scale=0.7, backend="torch")
    ref = naive_additive(q, k, v, causal, mask, theta, scale=0.7)
    assert o.shape == (2, N, 3, 5) and o.dtype == q.dtype
    assert torch.isfinite(o).all()
    if ref.norm() > 0:
        assert rel_err(o, ref) < 1e-5


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_lrpe", [False, True])
def test_gradients_match_naive(causal, use_lrpe):
    q, k, v = make_inputs(N=11, seed=3, dtype=torch.float64)
    theta = torch.randn(11, 8, dtype=torch.float64) if use_lrpe else None
    mask = torch.zeros(2, 11, dtype=torch.bool)
    mask[1, :3] = True  # left padding in one row
    grads = []
    for fn in (
        lambda a, b, c: additive_attention(a, b, c, causal=causal, key_padding_mask=mask, lrpe_theta=theta, backend="torch"),
        lambda a, b, c: naive_additive(a, b, c, causal, mask, theta),
    ):
        inputs = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = fn(*inputs)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
        (out * weight).sum().backward()
        grads.append([t.grad for t in inputs])
    for g_ours, g_ref in zip(*grads):
        assert torch.isfinite(g_ours).all()
        assert rel_err(g_ours, g_ref) < 1e-9


def test_gradcheck_chunked_causal():
    q, k, v = make_inputs(B=1, N=6, H=1, D=3, E=2, seed=5, dtype=torch.float64)
    inputs = [t.requires_grad_(True) for t in (q, k, v)]
    fn = lambda a, b, c: causal_attention_chunked_torch(a, b, c, chunk_size=4)[0]
    assert torch.autograd.gradcheck(fn, inputs)


def test_noncausal_permutation_invariance_of_state():
    q, k, v = make_inputs(N=17, seed=7)
    perm = torch.randperm(17, generator=torch.Generator().manual_seed(0))
    o, (S, z) = noncausal_attention_torch(q, k, v)
    o_p, (S_p, z_p) = noncausal_attention_torch(q[:, perm], k[:, perm], v[:, perm])
    assert rel_err(S_p, S) < 1e-6 and rel_err(z_p, z) < 1e-6
    assert rel_err(o_p, o[:, perm]) < 1e-6


@pytest.mark.parametrize("use_lrpe", [False, True])
@pytest.mark.parametrize("chunk", [1, 4, 7, 64])
def test_chunked_equals_recurrent_equals_full(use_lrpe, chunk):
    q, k, v = make_inputs(N=23, seed=11, key_scale=5.0)
    theta = torch.randn(23, 8) if use_lrpe else None
    mask = torch.zeros(2, 23, dtype=torch.bool)
    mask[0, :4] = True
    o_rec, (S_rec, z_rec) = causal_attention_recurrent_torch(q, k, v, key_padding_mask=mask, lrpe_theta=theta)
    o_chk, (S_chk, z_chk) = causal_attention_chunked_torch(q, k, v, key_padding_mask=mask, lrpe_theta=theta, chunk_size=chunk)
    o_full = additive_attention(q, k, v, causal=True, key_padding_mask=mask, lrpe_theta=theta, backend="torch")
    assert rel_err(o_chk, o_rec) < 1e-5 and rel_err(o_full, o_rec) < 1e-5
    assert rel_err(S_chk, S_rec) < 1e-5 and rel_err(z_chk, z_rec) < 1e-6


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_lrpe", [False, True])
def test_state_continuation_equals_full_pass(causal, use_lrpe):
    """Chunk-by-chunk (and token-by-token) continuation reproduces the full pass and its final state."""
    q, k, v = make_inputs(N=20, seed=13)
    theta = torch.randn(20, 8) if use_lrpe else None
    o_full, st_full = additive_attention(q, k, v, causal=causal, lrpe_theta=theta, output_final_state=True, backend="torch")
    state, outs = None, []
    for lo, hi in [(0, 7), (7, 8), (8, 20)]:
        th = None if theta is None else theta[lo:hi]
        o, state = additive_attention(
            q[:, lo:hi], k[:, lo:hi], v[:, lo:hi], causal=causal, lrpe_theta=th,
            initial_state=state, output_final_state=True, backend="torch",
        )
        outs.append(o)
    assert rel_err(state[0], st_full[0]) < 1e-5 and rel_err(state[1], st_full[1]) < 1e-6
    if causal:  # non-causal chunks see only their past state, so only the final state must agree
        assert rel_err(torch.cat(outs, 1), o_full) < 1e-5
        state, steps = None, []
        for t in range(20):
            o, state = additive_attention(
                q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], causal=True,
                lrpe_theta=None if theta is None else theta[t : t + 1],
                initial_state=state, output_final_state=True, backend="torch",
            )
            steps.append(o)
        assert rel_err(torch.cat(steps, 1), o_full) < 1e-5
    else:
        o_last = additive_attention(q, k, v, lrpe_theta=theta, backend="torch")
        assert rel_err(o_last, o_full) < 1e-6


@pytest.mark.parametrize("causal", [False, True])
def test_extreme_logits_and_zeros(causal):
    q, k, v = make_inputs(N=19, seed=17)
    k = torch.sign(k) * 1e4  # ±1e4 logits
    k.requires_grad_(True)
    o = additive_attention(q, k, v, causal=causal, backend="torch")
    o.sum().backward()
    assert torch.isfinite(o).all() and torch.isfinite(k.grad).all()
    # causal: the running log-normaliser z ≈ 1e4 is held in fp32 (ulp ≈ 1e-3), which bounds the weights' accuracy
    tol = 2e-3 if causal else 1e-5
    assert rel_err(o, naive_additive(q, k.detach(), v, causal)) < tol
    zeros = torch.zeros(1, 5, 2, 4)
    oz = additive_attention(zeros, zeros, zeros, causal=causal, backend="torch")
    assert torch.isfinite(oz).all() and (oz == 0).all()
    one = additive_attention(q[:, :1], k.detach()[:, :1], v[:, :1], causal=causal, backend="torch")
    assert torch.isfinite(one).all()
    assert rel_err(one, (q[:, :1, :, :].sum(-1, keepdim=True) * v[:, :1])) < 1e-6  # softmax of one token is 1


def test_fully_padded_rows_are_zero_and_finite():
    q, k, v = make_inputs(N=9, seed=19)
    mask = torch.ones(2, 9, dtype=torch.bool)
    for causal in (False, True):
        o = additive_attention(q, k, v, causal=causal, key_padding_mask=mask, backend="torch")
        assert torch.isfinite(o).all() and (o == 0).all()


def test_padding_does_not_change_real_tokens():
    q, k, v = make_inputs(B=1, N=10, seed=23)
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, 6:] = True
    o_masked = additive_attention(q, k, v, key_padding_mask=mask, backend="torch")
    o_short = additive_attention(q[:, :6], k[:, :6], v[:, :6], backend="torch")
    assert rel_err(o_masked[:, :6], o_short) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("causal", [False, True])
def test_dtype_round_trip(dtype, causal):
    q, k, v = make_inputs(N=16, seed=29)
    ref = additive_attention(q, k, v, causal=causal, backend="torch")
    o = additive_attention(q.to(dtype), k.to(dtype), v.to(dtype), causal=causal, backend="torch")
    assert o.dtype == dtype
    tol = {torch.float16: 5e-3, torch.bfloat16: 3e-2, torch.float32: 1e-6}[dtype]
    assert rel_err(o.float(), ref) < tol


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(q=torch.randn(2, 3, 4)), "rank 4"),
        (dict(v=torch.randn(2, 5, 4, 6)), "heads"),
        (dict(k=torch.randn(2, 5, 3, 7)), "same shape"),
        (dict(key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)), r"\[B, N\]"),
        (dict(key_padding_mask=torch.zeros(2, 5)), "bool"),
        (dict(lrpe_theta=torch.zeros(5, 3)), "lrpe_theta"),
        (dict(initial_state=(torch.zeros(2, 3, 5, 6), torch.zeros(2, 3, 4))), "initial_state S"),
        (dict(initial_state=torch.zeros(2)), "pair"),
        (dict(backend="cuda"), "unknown backend"),
        (dict(q=torch.randint(0, 3, (2, 5, 3, 4))), "floating"),
        (dict(k=torch.randn(2, 5, 3, 4, device="meta")), "different devices"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, match):
    args = dict(q=torch.randn(2, 5, 3, 4), k=torch.randn(2, 5, 3, 4), v=torch.randn(2, 5, 3, 6))
    args.update(kwargs)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    with pytest.raises((ValueError, TypeError), match=match):
        additive_attention(q, k, v, **args)


def test_check_finite_flags_nan():
    q, k, v = make_inputs(N=4)
    k[0, 1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        additive_attention(q, k, v, check_finite=True)


def test_triton_backend_on_cpu_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = make_inputs(N=4)
    with pytest.raises(RuntimeError, match="triton"):
        additive_attention(q, k, v, backend="triton")
