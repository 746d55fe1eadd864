"""Bad input to the kernel dispatch point and the layers: every case gets an error naming the problem, or a correct
result (checked against the reference / an independent computation).

Devices: the ``meta`` device stands in for "another device" (a CUDA tensor next to CPU ones) on a CPU-only machine.
"""
from __future__ import annotations

import math

import pytest
import torch

from lightnet.kernels import additive_attention, causal_attention_recurrent_torch
from lightnet.layers import GLU, MDLRPE, MDTPE, LightNetAttention, LightNetBlock, RMSNorm, make_norm
from tests._assertions import raises


def qkv(B=2, N=5, H=2, D=4, E=3, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, N, H, D, generator=g, dtype=dtype), torch.randn(B, N, H, D, generator=g, dtype=dtype),
            torch.randn(B, N, H, E, generator=g, dtype=dtype))


# ----------------------------------------------------------------------------------------------- kernels: shapes
@pytest.mark.parametrize("bad, words", [
    (lambda q, k, v: (q[0], k[0], v[0]), ("q", "rank 4")),
    (lambda q, k, v: (q, k[:, :4], v), ("same shape",)),
    (lambda q, k, v: (q, k, torch.randn(2, 5, 3, 3)), ("v", "heads")),
    (lambda q, k, v: (q, k, v[:, :4]), ("v", "tokens")),
    (lambda q, k, v: (q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)), ("rank 4",)),
])
def test_kernel_wrong_shapes(bad, words):
    q, k, v = bad(*qkv())
    with raises(ValueError, *words):
        additive_attention(q, k, v)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_kernel_non_float_dtypes(dtype):
    q, k, v = qkv()
    with raises(TypeError, "q", "floating"):
        additive_attention(q.to(dtype), k.to(dtype), v.to(dtype))


def test_kernel_non_tensor_inputs():
    q, k, v = qkv()
    with raises(TypeError, "k", "torch.tensor"):
        additive_attention(q, k.tolist(), v)
    with raises(TypeError, "key_padding_mask"):
        additive_attention(q, k, v, key_padding_mask=[[False] * 5] * 2)
    with raises(TypeError, "lrpe_theta"):
        additive_attention(q, k, v, lrpe_theta=[[0.0] * 4] * 5)
    with raises(TypeError, "initial_state"):
        additive_attention(q, k, v, initial_state=[torch.zeros(2, 2, 4, 3)])
    with raises(TypeError, "initial_state", "z"):
        additive_attention(q, k, v, initial_state=(torch.zeros(2, 2, 4, 3), [0.0]))
    with raises(TypeError, "initial_state", "floating"):
        additive_attention(q, k, v, initial_state=(torch.zeros(2, 2, 4, 3, dtype=torch.long), torch.zeros(2, 2, 4)))
    with raises(TypeError, "scale"):
        additive_attention(q, k, v, scale="0.5")


def test_kernel_mixed_float_dtypes_give_the_result_in_q_dtype():
    """k/v in another float dtype are computed in fp32 like the all-fp32 call (no silent downcast)."""
    q, k, v = qkv()
    ref = additive_attention(q, k, v)
    out = additive_attention(q, k.double(), v.double())
    assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=1e-5)
    half = additive_attention(q.bfloat16(), k, v)
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), additive_attention(q.bfloat16().float(), k, v),
                                                           atol=2e-2, rtol=2e-2)


def test_kernel_device_mix_is_named():
    q, k, v = qkv()
    with raises(ValueError, "different devices", "meta"):
        additive_attention(q, k.to("meta"), v)
    with raises(ValueError, "key_padding_mask", "meta"):
        additive_attention(q, k, v, key_padding_mask=torch.zeros(2, 5, dtype=torch.bool, device="meta"))
    with raises(ValueError, "lrpe_theta", "meta"):
        additive_attention(q, k, v, lrpe_theta=torch.zeros(5, 4, device="meta"))
    with raises(ValueError, "initial_state", "meta"):
        additive_attention(q, k, v, initial_state=(torch.zeros(2, 2, 4, 3, device="meta"), torch.zeros(2, 2, 4, device="meta")))


def test_kernel_all_meta_inputs_give_shapes_only():
    """A device-agnostic call (shape inference on ``meta``) works: the result has the right shape and dtype."""
    q, k, v = (t.to("meta") for t in qkv())
    o, (S, z) = additive_attention(q, k, v, causal=True, output_final_state=True)
    assert o.device.type == "meta" and o.shape == (2, 5, 2, 3) and S.shape == (2, 2, 4, 3) and z.shape == (2, 2, 4)


def test_kernel_mask_theta_state_shapes_and_types():
    q, k, v = qkv()
    with raises(TypeError, "key_padding_mask", "bool"):
        additive_attention(q, k, v, key_padding_mask=torch.zeros(2, 5, dtype=torch.long))
    with raises(ValueError, "key_padding_mask", "[b, n]"):
        additive_attention(q, k, v, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with raises(ValueError, "key_padding_mask"):
        additive_attention(q, k, v, key_padding_mask=torch.zeros(5, 2, dtype=torch.bool))  # transposed
    with raises(ValueError, "lrpe_theta", "[n, d]"):
        additive_attention(q, k, v, lrpe_theta=torch.zeros(5, 8))
    with raises(ValueError, "initial_state s"):
        additive_attention(q, k, v, initial_state=(torch.zeros(2, 2, 4, 3), torch.zeros(2, 2, 4)),
                           lrpe_theta=torch.zeros(5, 4))  # LRPE doubles the state width to 2D
    with raises(ValueError, "initial_state z"):
        additive_attention(q, k, v, initial_state=(torch.zeros(2, 2, 4, 3), torch.zeros(2, 4)))
    with raises(TypeError, "pair"):
        additive_attention(q, k, v, initial_state=(torch.zeros(2, 2, 4, 3), torch.zeros(2, 2, 4), None))


def test_kernel_unknown_backend_and_triton_without_cuda(monkeypatch):
    q, k, v = qkv()
    with raises(ValueError, "unknown backend", "cuda"):
        additive_attention(q, k, v, backend="cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with raises(RuntimeError, "triton", "cuda"):
        additive_attention(q, k, v, backend="triton")


@pytest.mark.parametrize("causal", [False, True])
def test_kernel_query_activation_is_checked_and_equals_silu_first(causal):
    """``q_activation='silu'`` equals passing ``silu(q)`` (values and q's gradient, reference path); anything other
    than None / 'silu' is refused by name."""
    q, k, v = qkv()
    with raises(ValueError, "q_activation", "relu"):
        additive_attention(q, k, v, q_activation="relu")
    qa, qb = q.clone().requires_grad_(), q.clone().requires_grad_()
    got = additive_attention(qa, k, v, causal=causal, q_activation="silu")
    want = additive_attention(torch.nn.functional.silu(qb), k, v, causal=causal)
    assert torch.equal(got, want)
    (ga,) = torch.autograd.grad(got.sum(), qa)
    (gb,) = torch.autograd.grad(want.sum(), qb)
    assert torch.equal(ga, gb)


# ----------------------------------------------------------------------------------------------- kernels: values
@pytest.mark.parametrize("causal", [False, True])
def test_kernel_empty_batch_and_empty_sequence(causal):
    q, k, v = qkv()
    for sl in ((slice(0, 0), slice(None)), (slice(None), slice(0, 0))):
        o, (S, z) = additive_attention(q[sl], k[sl], v[sl], causal=causal, output_final_state=True)
        assert o.shape == (q[sl].shape[0], q[sl].shape[1], 2, 3)
        assert S.shape[0] == q[sl].shape[0] and torch.isfinite(S).all()
    # an empty chunk keeps a given state unchanged (streaming with nothing new)
    _, state = additive_attention(q, k, v, causal=True, output_final_state=True)
    _, (S2, z2) = additive_attention(q[:, :0], k[:, :0], v[:, :0], causal=True, initial_state=state,
                                     output_final_state=True)
    assert torch.allclose(S2, state[0]) and torch.allclose(z2, state[1])


@pytest.mark.parametrize("causal", [False, True])
def test_kernel_nan_and_inf_detected_when_asked(causal):
    q, k, v = qkv()
    for name, bad in (("q", (q * math.nan, k, v)), ("k", (q, k.masked_fill(k > 1, math.inf), v)), ("v", (q, k, v / 0))):
        with raises(ValueError, name, "nan or inf"):
            additive_attention(*bad, causal=causal, check_finite=True)
    state = (torch.zeros(2, 2, 4, 3), torch.full((2, 2, 4), math.nan))
    with raises(ValueError, "initial_state", "nan or inf"):
        additive_attention(q, k, v, causal=causal, initial_state=state, check_finite=True)
    # without the check a NaN input propagates (it is not silently replaced by a number)
    assert torch.isnan(additive_attention(q, k * math.nan, v, causal=causal)).all()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_kernel_huge_logits_match_the_hard_max(causal, scale):
    """Huge logits: softmax over tokens becomes a (prefix) argmax per channel; the kernel stays finite and exact."""
    q, k, v = qkv(dtype=torch.float64)
    o = additive_attention(q, k * scale, v, causal=causal)
    assert torch.isfinite(o).all()
    ref, _ = causal_attention_recurrent_torch(q, k * scale, v)
    if causal:
        assert torch.allclose(o, ref, atol=1e-9)
    # an independent hard-max oracle for the non-causal case
    B, N, H, D = q.shape
    win = (k * scale).argmax(dim=1)  # [B, H, D]
    onehot = torch.nn.functional.one_hot(win, N).permute(0, 3, 1, 2).to(q.dtype)  # [B, N, H, D]
    S = torch.einsum("bnhd,bnhe->bhde", onehot, v)
    hard = torch.einsum("bnhd,bhde->bnhe", q, S)
    if not causal:
        assert torch.allclose(o, hard, atol=1e-9)


def test_kernel_huge_logits_in_half_precision_stay_finite():
    q, k, v = qkv()
    k = k.clamp(-2, 2)
    for dtype, big in ((torch.float16, 3e4), (torch.bfloat16, 1e38)):
        for causal in (False, True):
            o = additive_attention(q.to(dtype), (k * big).to(dtype), v.to(dtype), causal=causal)
            assert o.dtype == dtype and torch.isfinite(o).all(), (dtype, causal)


@pytest.mark.parametrize("causal", [False, True])
def test_kernel_all_padding_rows_are_zero_not_nan(causal):
    q, k, v = qkv()
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1] = True
    o = additive_attention(q, k, v, causal=causal, key_padding_mask=mask)
    assert torch.isfinite(o).all() and (o[1] == 0).all()
    assert torch.allclose(o[0], additive_attention(q[:1], k[:1], v[:1], causal=causal)[0], atol=1e-6)


def test_kernel_gradients_finite_for_huge_logits():
    q, k, v = qkv()
    k = (k * 1e30).requires_grad_()
    for causal in (False, True):
        additive_attention(q, k, v, causal=causal).sum().backward()
        assert torch.isfinite(k.grad).all()
        k.grad = None


# ----------------------------------------------------------------------------------------------- layers
def test_attention_wrong_inputs():
    attn = LightNetAttention(16, 2, num_axes=2)
    x = torch.randn(2, 12, 16)
    with raises(ValueError, "grid_shape", "required"):
        attn(x)
    with raises(ValueError, "grid_shape", "9 tokens", "12"):
        attn(x, (3, 3))
    with raises(ValueError, "axes"):
        attn(x, (12,))
    with raises(ValueError, "expected [b, n, 16]"):
        attn(x[0], (3, 4))
    with raises(ValueError, "expected [b, n, 16]"):
        attn(torch.randn(2, 12, 8), (3, 4))
    with raises(ValueError, "key_padding_mask"):
        attn(x, (3, 4), key_padding_mask=torch.zeros(2, 11, dtype=torch.bool))
    with raises(RuntimeError, "double"):
        attn(x.double(), (3, 4))  # PyTorch's own dtype error names both dtypes
    with raises(RuntimeError, "meta"):
        attn(x.to("meta"), (3, 4))


def test_grid_sizes_must_be_non_negative():
    with raises(ValueError, "grid_shape", "-3"):
        LightNetAttention(16, 2, num_axes=2)(torch.randn(2, 12, 16), (-3, -4))
    with raises(ValueError, "grid_shape"):
        MDLRPE(8, 2).angles((-1, 4))
    with raises(ValueError, "grid_shape"):
        MDTPE(16, 2)(torch.randn(2, 12, 16), (-3, -4))


def test_layer_constructor_errors():
    with raises(ValueError, "not divisible"):
        LightNetAttention(16, 3)
    with raises(ValueError, "q_act"):
        LightNetAttention(16, 2, q_act="tanh")
    with raises(ValueError, "gate_act"):
        LightNetAttention(16, 2, gate_act="tanh")
    with raises(ValueError, "scale"):
        LightNetAttention(16, 2, scale="log")
    with raises(ValueError, "norm", "bn"):
        LightNetBlock(16, 2, norm="bn")
    with raises(ValueError, "norm"):
        make_norm("batchnorm", 4)
    with raises(ValueError, "num_axes"):
        MDLRPE(8, 0)
    with raises(ValueError, "head_dim"):
        MDLRPE(2, 3)
    with raises(ValueError, "causal flags"):
        MDTPE(16, 2, causal=[True])
    with raises(ValueError, "activation"):
        GLU(16, act="tanh")


@pytest.mark.parametrize("make", [
    lambda: (MDTPE(16, 2), lambda m, x: m(x, (3, 4))),
    lambda: (MDTPE(16, 1, causal=True), lambda m, x: m(x, (12,))),
    lambda: (LightNetBlock(16, 2, num_axes=2), lambda m, x: m(x, (3, 4))),
])
def test_layers_accept_an_empty_batch(make):
    module, call = make()
    x = torch.randn(2, 12, 16)
    out = call(module, x[:0])
    assert out.shape == (0, 12, 16)


def test_tpe_empty_sequence_and_streaming_state_checks():
    tpe = MDTPE(16, 1, causal=True)
    x = torch.randn(2, 12, 16)
    assert tpe(x[:, :0], (0,)).shape == (2, 0, 16)
    y, h = tpe(x, (12,), return_state=True)
    y0, h0 = tpe(x[:, :0], (0,), state=h, return_state=True)  # streaming nothing keeps the state
    assert y0.shape == (2, 0, 16) and torch.allclose(h0, h)
    with raises(ValueError, "state", "[b, c, j]"):
        tpe(x, (12,), state=torch.zeros(2, 16, 3))
    with raises(ValueError, "state", "[b, c, j]"):
        tpe(x, (12,), state=torch.zeros(3, 16, 4))
    with raises(ValueError, "single causal axis"):
        MDTPE(16, 2)(x, (3, 4), return_state=True)
    with raises(ValueError, "grid"):
        MDTPE(16, 2)(x, (3, 3))
    with raises(ValueError, "expected [b, n, 16]"):
        MDTPE(16, 2)(x[0], (3, 4))


def test_mdlrpe_wrong_inputs():
    lrpe = MDLRPE(8, 2)
    with raises(ValueError, "expected [b, n, h, 8]"):
        lrpe(torch.randn(2, 12, 2, 6), (3, 4))
    with raises(ValueError, "12 tokens", "11"):
        lrpe(torch.randn(2, 11, 2, 8), (3, 4))
    with raises(ValueError, "axes"):
        lrpe.angles((12,))


def test_glu_and_rmsnorm_wrong_inputs():
    with raises(ValueError, "glu", "16"):
        GLU(16)(torch.randn(2, 3, 8))
    norm = RMSNorm(16)
    with raises(ValueError, "rmsnorm", "16"):
        norm(torch.randn(2, 8))
    with raises(TypeError, "rmsnorm", "floating"):
        norm(torch.ones(2, 16, dtype=torch.long))  # would otherwise round the normalised values to integers


def test_rmsnorm_extreme_values():
    norm = RMSNorm(16)
    assert torch.equal(norm(torch.zeros(2, 16)), torch.zeros(2, 16))  # eps keeps 0/0 away
    big = norm(torch.full((2, 16), 1e18))  # x^2 = 1e36 still fits fp32 (|x| > ~1.8e19 would overflow to inf -> 0)
    assert torch.allclose(big, torch.ones(2, 16))
    half = norm(torch.full((2, 16), 6e4, dtype=torch.float16))
    assert half.dtype == torch.float16 and torch.allclose(half.float(), torch.ones(2, 16), atol=1e-3)


def test_causal_fp32_head_dim_limit_of_the_triton_kernels():
    """fp32 causal calls with a head dim over the shared-memory limit leave the Triton path (CUDA only): D = 128
    needs 257-372 KB of shared memory in fp32 (run F measured 273,408 B at E = 64 with LRPE), D = 64 at most 223 KB."""
    from lightnet.kernels.api import CAUSAL_FP32_MAX_HEAD_DIM, causal_fp32_too_wide_for_triton

    assert causal_fp32_too_wide_for_triton(True, torch.float32, 128, "cuda") == 128
    assert causal_fp32_too_wide_for_triton(True, torch.float32, 64, "cuda") == 0
    assert causal_fp32_too_wide_for_triton(True, torch.float32, 32, "cuda") == 0
    assert causal_fp32_too_wide_for_triton(True, torch.bfloat16, 128, "cuda") == 0
    assert causal_fp32_too_wide_for_triton(True, torch.float16, 128, "cuda") == 0
    assert causal_fp32_too_wide_for_triton(False, torch.float32, 128, "cuda") == 0
    assert causal_fp32_too_wide_for_triton(True, torch.float32, 128, "cpu") == 0  # interpreter: no limit
    assert CAUSAL_FP32_MAX_HEAD_DIM == 64


def test_causal_fp16_head_dim_limit_of_the_triton_kernels():
    """fp16 multiplies in tf32 (fp32 operand tiles): offline on sm_90 D = 128 fits up to E = 64 but D = E = 128 asks
    253-318 KB of shared memory (limit 232 KB), so such calls leave the Triton path (CUDA only); bf16 keeps it."""
    from lightnet.kernels.api import CAUSAL_FP16_MAX_HEAD_DIM, causal_too_wide_for_triton

    assert causal_too_wide_for_triton(True, torch.float16, 128, 128, "cuda") == 128
    assert causal_too_wide_for_triton(True, torch.float16, 128, 64, "cuda") == 0
    assert causal_too_wide_for_triton(True, torch.float16, 64, 128, "cuda") == 0
    assert causal_too_wide_for_triton(True, torch.bfloat16, 128, 128, "cuda") == 0
    assert causal_too_wide_for_triton(False, torch.float16, 128, 128, "cuda") == 0
    assert causal_too_wide_for_triton(True, torch.float16, 128, 128, "cpu") == 0  # interpreter: no limit
    assert causal_too_wide_for_triton(True, torch.float32, 128, 32, "cuda") == 128  # the fp32 rule still applies
    assert CAUSAL_FP16_MAX_HEAD_DIM == 64
