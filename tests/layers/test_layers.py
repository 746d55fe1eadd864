"""Positional encodings, token mixer and block."""
from __future__ import annotations

import math

import pytest
import torch
from tests._saved_bytes import saved_bytes

from lightnet.layers import MDLRPE, MDTPE, GLU, LightNetAttention, LightNetBlock, RMSNorm, grid_coordinates, toeplitz_fft


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ----------------------------------------------------------------------------------------------- MD-LRPE


@pytest.mark.parametrize("grid", [(12,), (5, 6), (3, 4, 5)])
def test_mdlrpe_translation_invariance(grid):
    """Shifting both tokens by the same offset on every axis leaves q̄ᵀk̄ unchanged."""
    D = 12
    lrpe = MDLRPE(D, num_axes=len(grid))
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(D, generator=g), torch.randn(D, generator=g)
    big = tuple(s + 3 for s in grid)
    theta = lrpe.angles(big).reshape(*big, D)

    def score(pos_q, pos_k):
        tq, tk = theta[pos_q], theta[pos_k]
        qbar = torch.cat([q * torch.cos(tq), q * torch.sin(tq)])
        kbar = torch.cat([k * torch.cos(tk), k * torch.sin(tk)])
        return qbar @ kbar

    for _ in range(10):
        pq = tuple(int(torch.randint(0, s, (1,), generator=g)) for s in grid)
        pk = tuple(int(torch.randint(0, s, (1,), generator=g)) for s in grid)
        shift = tuple(int(torch.randint(0, 4, (1,), generator=g)) for _ in grid)
        shifted_q = tuple(a + b for a, b in zip(pq, shift))
        shifted_k = tuple(a + b for a, b in zip(pk, shift))
        assert torch.allclose(score(pq, pk), score(shifted_q, shifted_k), atol=1e-4)
    # and it is not trivially constant: a different offset changes the score
    far = tuple(s - 1 for s in grid)
    assert not torch.allclose(score((0,) * len(grid), (0,) * len(grid)), score((0,) * len(grid), far), atol=1e-3)


def test_mdlrpe_matches_cosine_of_relative_angle():
    lrpe = MDLRPE(8, num_axes=2, num_prefix_tokens=1)
    x = torch.randn(1, 1 + 12, 2, 8)
    y = torch.randn(1, 1 + 12, 2, 8)
    xb, yb = lrpe(x, (3, 4)), lrpe(y, (3, 4))
    theta = lrpe.angles((3, 4))
    assert theta.shape == (13, 8) and (theta[0] == 0).all()  # prefix token unencoded
    direct = torch.einsum("hd,hd,d->h", x[0, 2], y[0, 7], torch.cos(theta[2] - theta[7]))
    assert torch.allclose(torch.einsum("hd,hd->h", xb[0, 2], yb[0, 7]), direct, atol=1e-5)


def test_mdlrpe_channels_split_across_axes():
    lrpe = MDLRPE(8, num_axes=2)
    theta = lrpe.angles((3, 4)).reshape(3, 4, 8)
    # channels 0..3 follow the row axis only, 4..7 the column axis only
    assert torch.allclose(theta[1, 0, :4], theta[1, 3, :4]) and not torch.allclose(theta[0, 0, :4], theta[1, 0, :4])
    assert torch.allclose(theta[0, 2, 4:], theta[2, 2, 4:]) and not torch.allclose(theta[0, 0, 4:], theta[0, 1, 4:])


def test_grid_coordinates_row_major():
    c = grid_coordinates((2, 3))
    assert c.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]


def test_mdlrpe_errors():
    with pytest.raises(ValueError, match="axes"):
        MDLRPE(8, 2).angles((4,))
    with pytest.raises(ValueError, match="tokens"):
        MDLRPE(8, 2)(torch.randn(1, 10, 1, 8), (3, 4))


# ----------------------------------------------------------------------------------------------- MD-TPE


def dense_toeplitz(kernel, n):
    idx = torch.arange(n)
    return kernel[(idx[:, None] - idx[None, :]) + n - 1]  # [n, n, C]


@pytest.mark.parametrize("n", [1, 2, 7, 16])
def test_toeplitz_fft_matches_dense(n):
    x = torch.randn(3, n, 5)
    kernel = torch.randn(2 * n - 1, 5)
    dense = torch.einsum("ijc,bjc->bic", dense_toeplitz(kernel, n), x)
    assert rel_err(toeplitz_fft(x, kernel), dense) < 1e-5


def _linear_map(tpe, grid, C):
    """The [N, N] matrix of channel 0 of a (linear) TPE, built from unit vectors."""
    N = math.prod(grid)
    eye = torch.zeros(N, N, C)
    eye[torch.arange(N), torch.arange(N), 0] = 1.0
    with torch.no_grad():
        return tpe(eye, grid)[..., 0].T  # column j = response to token j


def test_mdtpe_is_relative_along_each_axis():
    torch.manual_seed(0)
    tpe = MDTPE(4, num_axes=2, residual=False)
    grid = (4, 5)
    M = _linear_map(tpe, grid, 4).reshape(4, 5, 4, 5)  # [i1, i2, j1, j2]
    # depends only on (i1 − j1, i2 − j2)
    assert torch.allclose(M[1, 1, 0, 0], M[3, 4, 2, 3], atol=1e-6)
    assert torch.allclose(M[0, 3, 2, 1], M[1, 4, 3, 2], atol=1e-6)
    # additive over axes: tokens differing on both axes do not interact
    assert torch.allclose(M[0, 0, 1, 1], torch.tensor(0.0), atol=1e-6)
    # bidirectional: information flows both ways
    assert M[0, 0, 2, 0].abs() > 0 and M[2, 0, 0, 0].abs() > 0


def test_mdtpe_any_grid_size_and_causality():
    torch.manual_seed(1)
    tpe = MDTPE(6, num_axes=1, causal=True)
    x = torch.randn(2, 30, 6)
    y = tpe(x, (30,))
    x2 = x.clone()
    x2[:, 20:] += 1.0  # perturb the future
    y2 = tpe(x2, (30,))
    assert torch.allclose(y[:, :20], y2[:, :20], atol=1e-6) and not torch.allclose(y[:, 20:], y2[:, 20:])
    # the same module runs on a longer sequence and agrees on the shared prefix (kernel is relative, no interpolation)
    x_long = torch.cat([x, torch.randn(2, 50, 6)], dim=1)
    assert rel_err(tpe(x_long, (80,))[:, :30], y) < 1e-5


def test_mdtpe_streaming_equals_parallel():
    torch.manual_seed(2)
    tpe = MDTPE(8, num_axes=1, causal=True, num_decays=3)
    with torch.no_grad():
        tpe.axes[0].w0.normal_()
    x = torch.randn(2, 25, 8)
    full = tpe(x, (25,))
    outs, state = [], None
    for lo, hi in [(0, 10), (10, 11), (11, 25)]:
        y, state = tpe(x[:, lo:hi], (hi - lo,), state=state, return_state=True)
        outs.append(y)
    assert rel_err(torch.cat(outs, 1), full) < 1e-5


def test_mdtpe_prefix_tokens_and_errors():
    tpe = MDTPE(4, num_axes=2, num_prefix_tokens=1)
    x = torch.randn(2, 1 + 6, 4)
    assert torch.equal(tpe(x, (2, 3))[:, 0], x[:, 0])
    with pytest.raises(ValueError, match="prefix"):
        tpe(x, (3, 3))
    with pytest.raises(ValueError, match="causal axis"):
        tpe(x, (2, 3), return_state=True)
    with pytest.raises(ValueError, match="axes"):
        MDTPE(4, num_axes=2, causal=[True])


# ----------------------------------------------------------------------------------------------- mixer and block


def test_attention_permutation_equivariance_without_pe():
    torch.manual_seed(3)
    attn = LightNetAttention(32, 4, use_lrpe=False)
    x = torch.randn(2, 15, 32)
    perm = torch.randperm(15)
    assert rel_err(attn(x)[:, perm], attn(x[:, perm])) < 1e-5
    # with MD-LRPE the mixer is position aware
    attn_pe = LightNetAttention(32, 4, use_lrpe=True)
    attn_pe.load_state_dict(attn.state_dict(), strict=False)
    assert rel_err(attn_pe(x)[:, perm], attn_pe(x[:, perm])) > 1e-3


def test_attention_padding_isolated():
    torch.manual_seed(4)
    attn = LightNetAttention(16, 2, num_axes=1)
    x = torch.randn(1, 10, 16)
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[:, 7:] = True
    x2 = x.clone()
    x2[:, 7:] = torch.randn(1, 3, 16) * 100  # garbage in the padding
    a = attn(x, key_padding_mask=mask)
    b = attn(x2, key_padding_mask=mask)
    assert rel_err(a[:, :7], b[:, :7]) < 1e-6


@pytest.mark.parametrize("grid", [(9,), (3, 4), (2, 2, 3)])
def test_block_nd_grids_and_gradients(grid):
    torch.manual_seed(5)
    blk = LightNetBlock(24, 3, num_axes=len(grid), num_prefix_tokens=1, drop_path=0.1)
    x = torch.randn(2, 1 + math.prod(grid), 24, requires_grad=True)
    y = blk(x, grid_shape=grid)
    assert y.shape == x.shape
    y.square().mean().backward()
    missing = [n for n, p in blk.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_causal_block_chunked_decoding_equals_full():
    torch.manual_seed(6)
    blk = LightNetBlock(32, 2, causal=True).eval()
    x = torch.randn(2, 21, 32)
    full = blk(x)
    state, outs, pos = None, [], 0
    for n in (8, 1, 1, 11):
        y, state = blk(x[:, pos : pos + n], state=state, return_state=True, position_offset=pos)
        outs.append(y)
        pos += n
    assert rel_err(torch.cat(outs, 1), full) < 1e-5


def test_causal_mixer_does_not_look_ahead():
    torch.manual_seed(7)
    attn = LightNetAttention(16, 2, causal=True)
    x = torch.randn(1, 12, 16)
    x2 = x.clone()
    x2[:, 8:] += 5
    assert torch.allclose(attn(x)[:, :8], attn(x2)[:, :8], atol=1e-6)


@pytest.mark.parametrize("option", [dict(scale="sqrt"), dict(gate_act="silu"), dict(gate_rank=0), dict(q_act="identity"), dict(out_norm=False)])
def test_attention_design_switches_run(option):
    attn = LightNetAttention(16, 2, **option)
    assert attn(torch.randn(2, 5, 16)).shape == (2, 5, 16)


@pytest.mark.parametrize(
    "build, call, match",
    [
        (lambda: LightNetAttention(16, 3), None, "divisible"),
        (lambda: LightNetAttention(16, 2, scale="bad"), None, "scale"),
        (lambda: LightNetAttention(16, 2, q_act="tanh"), None, "q_act"),
        (lambda: LightNetAttention(16, 2, recompute_output=True), None, "recompute_output"),
        (lambda: LightNetAttention(16, 2, num_axes=2), lambda m: m(torch.randn(1, 6, 16)), "grid_shape is required"),
        (lambda: LightNetAttention(16, 2, num_axes=2), lambda m: m(torch.randn(1, 6, 16), (2, 2)), "describes"),
        (lambda: LightNetAttention(16, 2), lambda m: m(torch.randn(6, 16)), r"\[B, N, 16\]"),
        (lambda: LightNetAttention(16, 2), lambda m: m(torch.randn(1, 6, 16), key_padding_mask=torch.zeros(1, 5, dtype=torch.bool)), "key_padding_mask"),
        (lambda: GLU(8, act="swish2"), None, "activation"),
        (lambda: LightNetBlock(8, 2, norm="batch"), None, "norm"),
    ],
)
def test_layer_errors(build, call, match):
    with pytest.raises(ValueError, match=match):
        m = build()
        call(m)


def test_rmsnorm_keeps_dtype_and_normalises():
    n = RMSNorm(8)
    x = torch.randn(3, 8, dtype=torch.bfloat16) * 10
    y = n(x)
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float().pow(2).mean(-1), torch.ones(3), atol=3e-2)


# ----------------------------------------------------------------------------------------------- GLU


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_glu_recomputes_the_activation_with_identical_gradients(dtype):
    """The SiLU GLU saves its two fc1 halves instead of also keeping silu(gate): same output and gradients to the bit
    as the composite ``silu(gate) * up``, one ``[..., hidden]`` tensor less saved for the backward."""
    from lightnet.layers.mlp import SiluGatedProduct

    torch.manual_seed(0)
    glu = GLU(16, mlp_ratio=4).to(dtype)
    x = torch.randn(3, 7, 16, dtype=dtype, requires_grad=True)
    go = torch.randn(3, 7, 16, dtype=dtype)

    def composite():
        up, gate = glu.fc1(x).chunk(2, dim=-1)
        return glu.fc2(torch.nn.functional.silu(gate) * up)

    y, y_ref = glu(x), composite()
    assert torch.equal(y, y_ref)
    grads = torch.autograd.grad(y, [x, *glu.parameters()], go)
    grads_ref = torch.autograd.grad(y_ref, [x, *glu.parameters()], go)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_ref))
    hidden_bytes = 3 * 7 * glu.hidden_features * x.element_size()
    assert saved_bytes(composite)[1] - saved_bytes(lambda: glu(x))[1] == hidden_bytes
    g, u = (torch.randn(4, 5, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(SiluGatedProduct.apply, (g, u))
    assert torch.autograd.gradgradcheck(SiluGatedProduct.apply, (g, u))


def _mixer_step(attn, x, grid, fn=None):
    """Output, input / parameter gradients of ``sum(y²)`` and the bytes autograd saved, for one mixer forward."""
    fn = attn if fn is None else fn
    for p in attn.parameters():
        p.grad = None
    xi = x.clone().requires_grad_()
    y, nbytes = saved_bytes(lambda: fn(xi, grid_shape=grid))
    y.square().sum().backward()
    return y.detach(), [xi.grad] + [p.grad for p in attn.parameters()], nbytes


def test_mixer_recomputed_output_norm_and_gate_are_identical_and_keep_less():
    """``recompute_output='always'`` checkpoints the output norm, the gate's second projection and their product:
    output and gradients equal the kept path to the bit, and at least the gate logits, the normalised output and the
    projection's input (three ``[B, N, C]`` tensors) are no longer saved."""
    torch.manual_seed(0)
    attn = LightNetAttention(32, 2, num_axes=2)
    x = torch.randn(2, 16, 32)
    attn.recompute_output = "never"
    y0, g0, kept = _mixer_step(attn, x, (4, 4))
    attn.recompute_output = "always"
    y1, g1, recomputed = _mixer_step(attn, x, (4, 4))
    assert torch.equal(y0, y1) and all(torch.equal(a, b) for a, b in zip(g0, g1))
    assert kept - recomputed >= 3 * x.numel() * x.element_size(), (kept, recomputed)
    attn.recompute_output = "compiled"  # the default: eager keeps them
    assert _mixer_step(attn, x, (4, 4))[2] == kept


def test_mixer_recomputes_output_norm_and_gate_when_compiled():
    """Compiled with inductor (the partitioner decides what is kept), the default ``'compiled'`` keeps at least two
    ``[B, N, C]`` tensors less than ``'never'`` (the gate logits and the projection's input) and matches eager."""
    torch.manual_seed(0)
    attn = LightNetAttention(32, 2, num_axes=2)
    x = torch.randn(2, 16, 32)
    y_eager, g_eager, _ = _mixer_step(attn, x, (4, 4))
    runs = {}
    for mode in ("never", "compiled"):
        attn.recompute_output = mode
        torch._dynamo.reset()
        runs[mode] = _mixer_step(attn, x, (4, 4), torch.compile(attn))
    for y, g, _ in runs.values():
        assert rel_err(y, y_eager) < 1e-5 and max(rel_err(a, b) for a, b in zip(g, g_eager)) < 1e-5
    saved_less = runs["never"][2] - runs["compiled"][2]
    assert saved_less >= 2 * x.numel() * x.element_size(), runs


def test_silu_glu_compiles_fullgraph_and_matches_eager():
    torch.manual_seed(0)
    glu = GLU(16)
    x = torch.randn(2, 5, 16, requires_grad=True)
    eager = glu(x)
    (g_eager,) = torch.autograd.grad(eager.square().sum(), x)
    compiled = torch.compile(glu, fullgraph=True, backend="aot_eager")(x)
    (g_compiled,) = torch.autograd.grad(compiled.square().sum(), x)
    assert rel_err(compiled, eager) < 1e-6 and rel_err(g_compiled, g_eager) < 1e-6
    with torch.no_grad():  # inference takes the plain composite (nothing to save)
        assert torch.equal(glu(x), eager.detach())


def test_named_activations_match_torch_and_unknown_names_raise():
    from torch.nn import functional as F

    from lightnet.layers.activation import ACTIVATIONS, apply_activation

    x = torch.randn(3, 5)
    want = {"silu": F.silu(x), "gelu": F.gelu(x), "relu": F.relu(x), "sigmoid": torch.sigmoid(x),
            "elu1": F.elu(x) + 1, "identity": x}
    assert set(want) == set(ACTIVATIONS)
    for name, ref in want.items():
        torch.testing.assert_close(apply_activation(name, x), ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        apply_activation("tanh", x)
