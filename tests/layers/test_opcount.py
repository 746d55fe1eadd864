"""Issue 7 (host-side op count): RMSNorm via ``F.rms_norm`` and the cached MD-LRPE angle table give the numbers of the
explicit formulas; the cache follows device/dtype moves, stays out of state dicts, and cuts the per-step op count."""
from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lightnet.layers import LightNetAttention, LightNetBlock, MDLRPE, RMSNorm, grid_coordinates
from lightnet.layers import lrpe as lrpe_mod


def _rmsnorm_formula(x: torch.Tensor, weight, eps: float) -> torch.Tensor:
    """The previous implementation: fp32 compute, fp32 weight, output in the input dtype."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()
    return y.to(x.dtype)


def _angles_formula(lrpe: MDLRPE, grid, P: int) -> torch.Tensor:
    """θ = coords @ freqs with zero prefix rows, built from scratch."""
    theta = grid_coordinates(grid, device=lrpe.freqs.device) @ lrpe.freqs.float()
    return torch.cat([theta.new_zeros(P, lrpe.head_dim), theta], dim=0)


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(autouse=True)
def _fresh_cache():
    lrpe_mod.clear_lrpe_cache()
    yield
    lrpe_mod.clear_lrpe_cache()


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("w_dtype", [torch.float32, torch.bfloat16, None])
def test_rmsnorm_matches_explicit_formula(x_dtype, w_dtype):
    torch.manual_seed(0)
    norm = RMSNorm(96, eps=1e-5, elementwise_affine=w_dtype is not None)
    if w_dtype is not None:
        with torch.no_grad():
            norm.weight.copy_(torch.rand(96) + 0.5)
        norm.to(w_dtype)
    x = (torch.randn(3, 17, 96) * 4 + 0.5).to(x_dtype)
    y = norm(x)
    ref = _rmsnorm_formula(x, norm.weight, norm.eps)
    assert y.dtype == x_dtype and y.shape == x.shape
    # same formula in fp32: at most fp32 round-off before the cast (bitwise equal on the CPU composite path)
    tol = {torch.float32: 1e-6, torch.float64: 1e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}[x_dtype]
    torch.testing.assert_close(y.double(), ref.double(), rtol=tol, atol=tol)
    if x_dtype in (torch.bfloat16, torch.float16):  # half outputs differ from the formula in at most a few elements
        assert (y != ref).float().mean() < 0.01


def test_rmsnorm_gradients_match_explicit_formula():
    torch.manual_seed(1)
    norm = RMSNorm(64)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(64) + 0.5)
    x = torch.randn(4, 9, 64, requires_grad=True)
    g = torch.randn(4, 9, 64)
    gx, gw = torch.autograd.grad((norm(x) * g).sum(), (x, norm.weight))
    rx, rw = torch.autograd.grad((_rmsnorm_formula(x, norm.weight, norm.eps) * g).sum(), (x, norm.weight))
    torch.testing.assert_close(gx, rx, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, rw, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grid,P", [((4, 6), 0), ((3, 5), 2), ((7,), 1), ((2, 3, 4), 0)])
def test_cached_angles_equal_fresh_table(grid, P):
    lrpe = MDLRPE(24, len(grid), num_prefix_tokens=P)
    cached = lrpe.angles(grid, cache=True)
    assert torch.equal(cached, lrpe.angles(grid))
    assert torch.equal(cached, _angles_formula(lrpe, grid, P))
    assert lrpe.angles(grid, cache=True) is cached  # served from the cache the second time
    assert not cached.requires_grad


def test_angle_table_shared_across_blocks_and_not_in_state_dict():
    a, b = MDLRPE(32, 2), MDLRPE(32, 2)
    assert a.angles((4, 4), cache=True) is b.angles((4, 4), cache=True)
    assert MDLRPE(32, 2, base=500.0).angles((4, 4), cache=True) is not a.angles((4, 4), cache=True)
    block = LightNetBlock(64, 2, num_axes=2, backend="torch")
    block(torch.randn(1, 16, 64), (4, 4))
    assert not any("freqs" in k or "cache" in k or "table" in k for k in block.state_dict())
    pickle.loads(pickle.dumps(block))  # the cache holds nothing unpicklable on the module
    copy.deepcopy(block)


def test_cached_mixer_output_and_gradients_equal_uncached():
    torch.manual_seed(2)
    attn = LightNetAttention(64, 2, num_axes=2, num_prefix_tokens=1, backend="torch")
    x = torch.randn(2, 1 + 12, 64, requires_grad=True)

    def run():
        out = attn(x, (3, 4))
        grads = torch.autograd.grad(out.square().sum(), [x, *attn.parameters()])
        return out.detach(), grads

    out_c, grads_c = run()
    assert len(lrpe_mod._TABLES) == 1
    lrpe_mod.clear_lrpe_cache()
    original = MDLRPE._cacheable
    MDLRPE._cacheable = lambda self, offset: False  # force the uncached path
    try:
        out_u, grads_u = run()
    finally:
        MDLRPE._cacheable = original
    assert len(lrpe_mod._TABLES) == 0
    assert torch.equal(out_c, out_u)
    for gc, gu in zip(grads_c, grads_u):
        assert torch.equal(gc, gu)


def test_cache_follows_dtype_and_device_moves():
    lrpe = MDLRPE(32, 2)
    t32 = lrpe.angles((4, 4), cache=True)
    lrpe.half()  # the fp16 buffer gives fp16-rounded frequencies: a different table
    t16 = lrpe.angles((4, 4), cache=True)
    assert t16.dtype == torch.float32
    assert torch.equal(t16, _angles_formula(lrpe, (4, 4), 0))
    assert not torch.equal(t16, t32)
    lrpe.float()  # fp16-rounded values in fp32: not the fixed schedule any more, so computed from the buffer
    assert torch.equal(lrpe.angles((4, 4), cache=True), t16)
    lrpe.init_non_persistent_buffers()  # fresh fixed schedule: the cached fp32 table again
    assert lrpe.angles((4, 4), cache=True) is t32
    lrpe.to("meta")  # meta tensors are never cached and the table follows the device
    tm = lrpe.angles((4, 4), cache=True)
    assert tm.device.type == "meta" and tm.shape == (16, 32)


def test_cache_bypassed_for_edited_or_learnable_frequencies():
    lrpe = MDLRPE(16, 1)
    fixed = lrpe.angles((8,), cache=True)
    with torch.no_grad():
        lrpe.freqs.mul_(2.0)  # in-place edit: the cache must not serve the fixed-schedule table
    edited = lrpe.angles((8,), cache=True)
    assert torch.equal(edited, 2 * fixed)
    learn = MDLRPE(16, 1, learnable=True)
    theta = learn.angles((8,), cache=True)
    assert theta.requires_grad  # differentiable, not a cached constant
    theta.sum().backward()
    assert learn.freqs.grad is not None
    assert len(lrpe_mod._TABLES) == 1  # only the first, fixed-schedule table was stored
    assert torch.equal(MDLRPE(16, 1).angles((8,), cache=True, offset=3), MDLRPE(16, 1).angles((8,), offset=3))


def test_cached_table_created_in_inference_mode_is_usable_for_training():
    attn = LightNetAttention(32, 1, num_axes=2, backend="torch")
    with torch.inference_mode():
        attn(torch.randn(1, 9, 32), (3, 3))
    x = torch.randn(1, 9, 32, requires_grad=True)
    attn(x, (3, 3)).sum().backward()  # would raise if the cached table were an inference tensor
    assert x.grad is not None


def test_block_forward_op_count_drops_with_cache():
    block = LightNetBlock(64, 2, num_axes=2, backend="torch")
    x = torch.randn(1, 16, 64)
    block(x, (4, 4))  # fills the cache
    with _Count() as warm:
        block(x, (4, 4))
    lrpe_mod.clear_lrpe_cache()
    original = MDLRPE._cacheable
    MDLRPE._cacheable = lambda self, offset: False
    try:
        with _Count() as cold:
            block(x, (4, 4))
    finally:
        MDLRPE._cacheable = original
    assert cold.n - warm.n >= 10  # arange/meshgrid/stack/matmul/cat of the angle table
