"""Multi-scan multiplicative-decay baselines (experiments/multiscan.py): recurrence correctness and receptive field."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from experiments.multiscan import (
    MultiScanDecayAttention,
    decay_recurrence,
    decay_recurrence_chunked,
    decay_recurrence_naive,
    multiscan_decay,
    scan_orders,
)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _inputs(B=2, N=29, H=2, D=4, E=3, strength=1.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, N, H, D, generator=g, dtype=dtype)
    k = torch.randn(B, N, H, D, generator=g, dtype=dtype)
    v = torch.randn(B, N, H, E, generator=g, dtype=dtype)
    log_decay = F.logsigmoid(torch.randn(B, N, H, D, generator=g, dtype=dtype) * strength - 1.0)
    return q, k, v, log_decay


def _explicit_loop(q, k, v, log_decay, scale):
    """Scalar-loop definition of S_t = diag(λ_t) S_{t−1} + k_t v_tᵀ, o_t = scale q_tᵀ S_t (independent of the code)."""
    B, N, H, D = q.shape
    E = v.shape[-1]
    out = torch.zeros(B, N, H, E, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            S = torch.zeros(D, E, dtype=torch.float64)
            for t in range(N):
                S = torch.exp(log_decay[b, t, h])[:, None] * S + torch.outer(k[b, t, h], v[b, t, h])
                out[b, t, h] = scale * (q[b, t, h] @ S)
    return out


def test_naive_matches_explicit_definition():
    q, k, v, g = _inputs(B=1, N=9)
    o, _ = decay_recurrence_naive(q, k, v, g, scale=0.5)
    assert rel_err(o, _explicit_loop(q, k, v, g, 0.5)) < 1e-12


@pytest.mark.parametrize("chunk_size", [1, 4, 8, 64])
@pytest.mark.parametrize("strength", [0.5, 4.0, 80.0])  # 80: strong forgetting, exponents far below -600
def test_chunked_matches_naive_fp64(chunk_size, strength):
    q, k, v, g = _inputs(strength=strength)
    if strength == 80.0:
        g = g * 40.0  # strong forgetting: in-chunk cumulative log decay far below −600
    ref, S_ref = decay_recurrence_naive(q, k, v, g, scale=0.7)
    o, S = decay_recurrence_chunked(q, k, v, g, scale=0.7, chunk_size=chunk_size, output_final_state=True)
    assert rel_err(o, ref) < 1e-10
    assert rel_err(S, S_ref) < 1e-10


def test_chunked_fp32_close_to_fp64_oracle():
    q, k, v, g = _inputs(N=70)
    ref, _ = decay_recurrence_naive(q, k, v, g)
    o = decay_recurrence_chunked(q.float(), k.float(), v.float(), g.float(), chunk_size=16)
    assert o.dtype == torch.float32
    assert rel_err(o, ref) < 1e-5


def test_chunked_initial_state_continues_the_sequence():
    q, k, v, g = _inputs(N=20)
    full, _ = decay_recurrence_naive(q, k, v, g)
    _, S_half = decay_recurrence_chunked(q[:, :11], k[:, :11], v[:, :11], g[:, :11], chunk_size=4, output_final_state=True)
    second = decay_recurrence_chunked(q[:, 11:], k[:, 11:], v[:, 11:], g[:, 11:], chunk_size=4, initial_state=S_half)
    assert rel_err(second, full[:, 11:]) < 1e-10


def test_chunked_gradients_match_naive():
    q, k, v, g = [t.requires_grad_() for t in _inputs(N=13)]
    w = torch.randn(2, 13, 2, 3, dtype=torch.float64)
    (decay_recurrence_naive(q, k, v, g)[0] * w).sum().backward()
    ref = [t.grad.clone() for t in (q, k, v, g)]
    for t in (q, k, v, g):
        t.grad = None
    (decay_recurrence_chunked(q, k, v, g, chunk_size=4) * w).sum().backward()
    for name, t, r in zip("qkvg", (q, k, v, g), ref):
        assert rel_err(t.grad, r) < 1e-10, name


@pytest.mark.parametrize("strength", [0.5, 80.0])  # 80: the pairwise path
def test_torch_dispatch_saves_only_its_inputs_and_matches_naive_gradients(strength):
    """decay_recurrence(backend='torch') reruns the chunked form in the backward instead of saving its fp32
    intermediates (saved, they ran run H1's scan baselines out of GPU memory at batch 512)."""
    q, k, v, g = _inputs(N=16, D=4, strength=strength)
    g = g * 40.0 if strength == 80.0 else g
    q, k, v, g = [t.detach().requires_grad_() for t in (q, k, v, g)]
    w = torch.randn(2, 16, 2, 3, dtype=torch.float64)
    (decay_recurrence_naive(q, k, v, g)[0] * w).sum().backward()
    ref = [t.grad.clone() for t in (q, k, v, g)]
    for t in (q, k, v, g):
        t.grad = None
    saved_bytes = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved_bytes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        o = decay_recurrence(q, k, v, g, backend="torch", chunk_size=8)
    (o * w).sum().backward()
    for name, t, r in zip("qkvg", (q, k, v, g), ref):
        assert rel_err(t.grad, r) < 1e-10, name
    inputs = sum(t.numel() * t.element_size() for t in (q, k, v, g))
    assert 0 < sum(saved_bytes) <= inputs, (sum(saved_bytes), inputs)


def test_scan_orders_2d():
    rows = scan_orders((2, 3), 4)
    assert [o.tolist() for o in rows] == [
        [0, 1, 2, 3, 4, 5],
        [5, 4, 3, 2, 1, 0],
        [0, 3, 1, 4, 2, 5],  # column-major: down the first column, then the next
        [5, 2, 4, 1, 3, 0],
    ]
    with_prefix = scan_orders((2, 3), 2, num_prefix_tokens=1)
    assert with_prefix[1].tolist() == [0, 6, 5, 4, 3, 2, 1]
    for o in scan_orders((3, 4, 2), 4):
        assert sorted(o.tolist()) == list(range(24))
    with pytest.raises(ValueError, match="at least 2 axes"):
        scan_orders((6,), 4)
    with pytest.raises(ValueError, match="1, 2, 4 or 6"):
        scan_orders((2, 3), 3)


def test_scan_orders_3d_six_directions():
    """± along W (row-major), H and T: in each pair the named axis varies fastest."""
    orders = scan_orders((2, 2, 3), 6)  # (T, H, W), index = 6t + 3h + w
    assert len(orders) == 6
    assert orders[0].tolist() == list(range(12)) and orders[1].tolist() == list(range(11, -1, -1))
    assert orders[2].tolist()[:4] == [0, 3, 1, 4]  # H fastest: (t0 w0 h0), (t0 w0 h1), (t0 w1 h0), ...
    assert orders[4].tolist()[:4] == [0, 6, 1, 7]  # T fastest
    assert orders[3].tolist() == orders[2].flip(0).tolist() and orders[5].tolist() == orders[4].flip(0).tolist()
    for o in orders:
        assert sorted(o.tolist()) == list(range(12))
    with pytest.raises(ValueError, match="3-axis grid"):
        scan_orders((3, 4), 6)
    with pytest.raises(ValueError, match="num_axes == 3"):
        MultiScanDecayAttention(8, 2, num_directions=6, num_axes=2)


def test_multiscan_equals_sum_of_scans_in_each_order():
    grid = (3, 4)
    q, k, v, _ = _inputs(B=1, N=12)
    decays = [_inputs(B=1, N=12, seed=s)[3] for s in range(1, 5)]
    orders = scan_orders(grid, 4)
    out = multiscan_decay(q, k, v, decays, orders, scale=0.5, chunk_size=5)
    expected = torch.zeros_like(out)
    for g, order in zip(decays, orders):
        o = _explicit_loop(q[:, order], k[:, order], v[:, order], g[:, order], 0.5)
        expected[:, order] += o  # token order[i] received output o[:, i]
    assert rel_err(out, expected) < 1e-10


def _token_dependence(mixer: torch.nn.Module, grid, C: int) -> torch.Tensor:
    """``dep[i, j]`` = ‖∂ out_i / ∂ x_j‖ for one random input ``[1, N, C]`` (fp64)."""
    N = grid[0] * grid[1]
    x = torch.randn(1, N, C, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda inp: mixer(inp, grid), x)  # [1, N, C, 1, N, C]
    return jac[0, :, :, 0].pow(2).sum(dim=(1, 3)).sqrt()


@pytest.mark.parametrize("directions", [1, 2, 4])
def test_receptive_field_of_the_scans(directions):
    torch.manual_seed(0)
    grid, C = (3, 4), 8
    mixer = MultiScanDecayAttention(C, 2, num_directions=directions, chunk_size=4).double()
    dep = _token_dependence(mixer, grid, C)
    off_diag = dep[~torch.eye(12, dtype=torch.bool)]
    if directions == 1:  # one row-major scan is causal: nothing flows from later tokens
        assert float(dep.triu(diagonal=1).abs().max()) == 0.0
        assert float(dep.tril(diagonal=-1)[dep.tril(diagonal=-1) != 0].min()) > 0
    else:  # forward + backward (+ column) scans: every token sees every token
        assert float(off_diag.min()) > 1e-8


def test_four_directions_differ_from_two():
    """The column-major scans change the output (they are not a relabelling of the row-major ones)."""
    torch.manual_seed(0)
    m4 = MultiScanDecayAttention(8, 2, num_directions=4).double()
    m2 = MultiScanDecayAttention(8, 2, num_directions=2).double()
    m2.load_state_dict({k: v for k, v in m4.state_dict().items() if not k.startswith("decays.2") and not k.startswith("decays.3")})
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    assert rel_err(m4(x, (3, 4)), m2(x, (3, 4))) > 1e-3


@pytest.mark.parametrize("decay", ["gla", "mamba2"])
def test_padding_tokens_are_skipped(decay):
    torch.manual_seed(0)
    mixer = MultiScanDecayAttention(8, 2, num_directions=4, decay=decay, use_lrpe=True).double()
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[:, 5] = True
    pad[1, 9:] = True
    y1 = mixer(x, (3, 4), pad)
    x2 = x.clone()
    x2[pad] = torch.randn(int(pad.sum()), 8, dtype=torch.float64) * 10
    y2 = mixer(x2, (3, 4), pad)
    assert rel_err(y2[~pad], y1[~pad]) < 1e-12
    assert rel_err(mixer(x, (3, 4))[~pad], y1[~pad]) > 1e-4  # the mask did change something


@pytest.mark.parametrize("decay", ["gla", "mamba2"])
@pytest.mark.parametrize("use_lrpe", [False, True])
def test_mixer_forward_backward(decay, use_lrpe):
    torch.manual_seed(0)
    mixer = MultiScanDecayAttention(16, 2, num_directions=2, decay=decay, use_lrpe=use_lrpe)
    x = torch.randn(2, 20, 16, requires_grad=True)
    y = mixer(x, (4, 5))
    assert y.shape == x.shape
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in mixer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_errors_name_the_problem():
    mixer = MultiScanDecayAttention(16, 2)
    with pytest.raises(ValueError, match="describes 20 tokens"):
        mixer(torch.randn(1, 21, 16), (4, 5))
    with pytest.raises(ValueError, match="grid_shape is required"):
        mixer(torch.randn(1, 20, 16))
    with pytest.raises(ValueError, match="recurrent state"):
        mixer(torch.randn(1, 20, 16), (4, 5), return_state=True)
    with pytest.raises(ValueError, match="not divisible"):
        MultiScanDecayAttention(15, 2)
    with pytest.raises(ValueError, match="unknown decay"):
        MultiScanDecayAttention(16, 2, decay="exp")
    q, k, v, g = _inputs(N=4)
    with pytest.raises(ValueError, match="unknown backend"):
        decay_recurrence(q, k, v, g, backend="cuda")
    with pytest.raises(RuntimeError, match="fla"):
        decay_recurrence(q, k, v, g, backend="fla")  # CPU tensors (and, on CI, no fla): refused with the reason
    with pytest.raises(ValueError, match="must match"):
        decay_recurrence_naive(q, k[:, :3], v, g)


@pytest.mark.parametrize("strength", [0.5, 80.0])
def test_chunked_compiles_without_graph_break_and_matches_naive(strength):
    """Under torch.compile the chunked form takes the exact pairwise branch (no value-dependent host sync), in one
    graph, with the forward and gradients of the token-by-token oracle (fp32 here, 1e-4)."""
    q, k, v, g = _inputs(N=12, D=4, strength=strength)
    g = g * 40.0 if strength == 80.0 else g
    ref_inputs = [t.clone().requires_grad_() for t in (q, k, v, g)]
    w = torch.randn(2, 12, 2, 3, dtype=torch.float64)
    (decay_recurrence_naive(*ref_inputs)[0] * w).sum().backward()
    inputs = [t.float().requires_grad_() for t in (q, k, v, g)]
    torch._dynamo.reset()
    compiled = torch.compile(decay_recurrence_chunked, fullgraph=True, backend="aot_eager")
    o = compiled(*inputs, chunk_size=4)
    assert rel_err(o.double(), decay_recurrence_naive(q, k, v, g)[0]) < 1e-4
    (o * w.float()).sum().backward()
    for name, t, r in zip("qkvg", inputs, ref_inputs):
        assert rel_err(t.grad.double(), r.grad) < 1e-4, name


def test_chunked_gradients_match_naive():
    """The chunked form gives the oracle's output and gradients (fp64, weak decay)."""
    q, k, v, g = _inputs(N=13, strength=0.5)
    ref_inputs = [t.clone().requires_grad_() for t in (q, k, v, g)]
    w = torch.randn(2, 13, 2, 3, dtype=torch.float64)
    (decay_recurrence_naive(*ref_inputs)[0] * w).sum().backward()
    inputs = [t.clone().requires_grad_() for t in (q, k, v, g)]
    o = decay_recurrence_chunked(*inputs, chunk_size=4)
    (o * w).sum().backward()
    assert rel_err(o, decay_recurrence_naive(q, k, v, g)[0]) < 1e-10
    for name, t, r in zip("qkvg", inputs, ref_inputs):
        assert rel_err(t.grad, r.grad) < 1e-9, name


def test_chunked_stays_finite_under_strong_decay():
    q, k, v, g = (t.float() for t in _inputs(N=16))
    strong = torch.full_like(g, -5.0)  # a chunk of 16 tokens sums to −80: exp(80) would overflow a factorised form
    assert torch.isfinite(decay_recurrence_chunked(q, k, v, strong, chunk_size=16)).all()


def test_token_permutation_gathers_in_both_directions():
    """The scan orders' permutation: forward x[:, order]; its gradient is gathered with the inverse (gradcheck in
    fp64) and no index_add / scatter runs in the backward."""
    from experiments.multiscan import _TokenPermutation

    order = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    inverse = torch.argsort(order)
    x = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)
    assert torch.equal(_TokenPermutation.apply(x, order, inverse), x[:, order])
    assert torch.autograd.gradcheck(lambda t: _TokenPermutation.apply(t, order, inverse), (x,))
    with torch.profiler.profile() as prof:
        _TokenPermutation.apply(x, order, inverse).sum().backward()
    names = {e.name for e in prof.events()}
    assert "aten::index_select" in names and not any("index_add" in n or "scatter" in n for n in names)


@pytest.mark.parametrize("recompute", [True, False])
def test_mixer_recompute_switch_keeps_values_and_gradients(recompute):
    torch.manual_seed(0)
    mixer = MultiScanDecayAttention(16, 2, num_directions=4, backend="torch", chunk_size=4).double()
    x = torch.randn(2, 12, 16, dtype=torch.float64, requires_grad=True)
    ref = mixer(x, (3, 4))
    gx_ref, = torch.autograd.grad(ref.square().sum(), x)
    mixer.recompute = recompute
    mixer.chunk_size = 8
    out = mixer(x, (3, 4))
    gx, = torch.autograd.grad(out.square().sum(), x)
    assert rel_err(out, ref) < 1e-10 and rel_err(gx, gx_ref) < 1e-10


def test_runner_scan_options_reach_the_mixer():
    from experiments.models import ModelSize, build_classifier
    from experiments.run_classification import backend_overrides, build_parser

    args = build_parser().parse_args(["--scan-chunk", "8", "--scan-no-recompute", "--scan-backend", "torch"])
    kwargs = backend_overrides("scan2", args.attn_backend, args.scan_backend, args.scan_chunk, args.scan_recompute)
    model = build_classifier("scan2", ModelSize(embed_dim=16, depth=1, num_heads=2), **kwargs)
    attn = model.blocks[0].attn
    assert (attn.chunk_size, attn.recompute, attn.scan_backend) == (8, False, "torch")
    assert backend_overrides("lightnet", "torch", "torch", 8, False) == {"attn_backend": "torch"}
    default = build_parser().parse_args([])
    assert default.scan_chunk is None and default.scan_recompute is True
