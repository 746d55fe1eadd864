"""MD-TPE's direct short-axis Toeplitz product (``toeplitz_direct``) against the FFT form and an fp64 loop: values,
gradients (input and kernel parameters), the compiled branch, the threshold ``direct_max_len`` of ``MDTPE`` and
``toeplitz_product`` (grid and causal streaming; default 32; no environment variable or global switch)."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightnet.layers import DIRECT_MAX_LEN, MDTPE, toeplitz_direct, toeplitz_fft, toeplitz_product

ROOT = Path(__file__).resolve().parents[2]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _loop(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """fp64 definition: ``y_i = Σ_j t(i − j) x_j`` with ``t(r) = kernel[r + n − 1]``."""
    n = x.shape[1]
    y = torch.zeros(x.shape, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            y[:, i] += kernel[i - j + n - 1].double() * x[:, j].double()
    return y


@pytest.mark.parametrize("n", [1, 2, 7, 14])
def test_direct_matches_fft_and_fp64_loop(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, n, 5, generator=g)
    kernel = torch.randn(2 * n - 1, 5, generator=g)
    ref = _loop(x, kernel)
    assert _rel(toeplitz_direct(x, kernel), ref) < 1e-6
    assert _rel(toeplitz_fft(x, kernel), ref) < 1e-5
    xs = [x.clone().requires_grad_() for _ in range(2)]
    ks = [kernel.clone().requires_grad_() for _ in range(2)]
    w = torch.randn(3, n, 5, generator=g)
    (toeplitz_direct(xs[0], ks[0]) * w).sum().backward()
    (toeplitz_fft(xs[1], ks[1]) * w).sum().backward()
    assert _rel(xs[0].grad, xs[1].grad) < 1e-5 and _rel(ks[0].grad, ks[1].grad) < 1e-5


def test_compiled_direct_branch_matches_eager():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 9, 6, generator=g, requires_grad=True)
    kernel = torch.randn(17, 6, generator=g, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(toeplitz_direct, backend="aot_eager", fullgraph=True)
    y = compiled(x, kernel)
    assert _rel(y, _loop(x.detach(), kernel.detach())) < 1e-6
    y.square().sum().backward()
    dx, dk = x.grad.clone(), kernel.grad.clone()
    x.grad = kernel.grad = None
    toeplitz_fft(x, kernel).square().sum().backward()
    assert _rel(dx, x.grad) < 1e-5 and _rel(dk, kernel.grad) < 1e-5


def _uses_fft(y: torch.Tensor) -> bool:
    """Whether the autograd graph of ``y`` holds the FFT product's custom op (else the direct product ran)."""
    seen, todo = set(), [y.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if "toeplitz_fft" in type(fn).__name__.lower():
            return True
        todo.extend(f for f, _ in fn.next_functions)
    return False


def test_toeplitz_product_threshold_picks_the_path():
    x = torch.randn(2, 9, 3, requires_grad=True)
    kernel = torch.randn(17, 3)
    assert DIRECT_MAX_LEN == 32 and inspect.signature(toeplitz_product).parameters["direct_max_len"].default == 32
    assert not _uses_fft(toeplitz_product(x, kernel)) and not _uses_fft(toeplitz_product(x, kernel, 9))
    assert _uses_fft(toeplitz_product(x, kernel, 8)) and _uses_fft(toeplitz_product(x, kernel, 0))
    assert torch.allclose(toeplitz_product(x, kernel, 0), toeplitz_product(x, kernel), atol=1e-5)
    for bad in (-1, 2.5, True, "32"):
        with pytest.raises(ValueError, match="direct_max_len"):
            toeplitz_product(x, kernel, bad)
        with pytest.raises(ValueError, match="direct_max_len"):
            MDTPE(3, num_axes=1, direct_max_len=bad)


def test_mdtpe_direct_switch_same_outputs_and_parameter_grads():
    torch.manual_seed(0)
    tpe = MDTPE(8, num_axes=2, causal=(False, True), num_decays=3, init_std=0.5)
    assert tpe.direct_max_len == 32  # the default
    x = torch.randn(2, 1 + 5 * 7, 8)
    tpe.num_prefix_tokens = 1
    runs = []
    for limit in (0, 64):
        tpe.direct_max_len = limit
        tpe.zero_grad()
        xi = x.clone().requires_grad_()
        y = tpe(xi, (5, 7))
        y.square().sum().backward()
        runs.append((y.detach(), xi.grad, [p.grad.clone() for p in tpe.parameters()]))
    (y0, dx0, dp0), (y1, dx1, dp1) = runs
    assert _rel(y1, y0) < 1e-5 and _rel(dx1, dx0) < 1e-5
    assert all(_rel(a, b) < 1e-4 for a, b in zip(dp1, dp0))
    assert toeplitz_product.__doc__ and tpe.direct_max_len == 64


def test_mdtpe_causal_streaming_with_direct_path():
    """The causal 1-axis chunked form (LM decoding) gives the full-sequence output with the direct product too."""
    torch.manual_seed(1)
    tpe = MDTPE(6, num_axes=1, causal=True, num_decays=2, init_std=0.5, direct_max_len=64)
    x = torch.randn(2, 11, 6)
    full = tpe(x, (11,))
    first, h = tpe(x[:, :4], (4,), return_state=True)
    second, _ = tpe(x[:, 4:], (7,), state=h, return_state=True)
    empty, h2 = tpe(x[:, :0], (0,), state=h, return_state=True)
    assert _rel(torch.cat([first, second], 1), full) < 1e-5
    assert empty.shape == (2, 0, 6) and torch.equal(h2, h)


def test_no_environment_variable_or_global_switch():
    """The old ``LIGHTNET_TPE_DIRECT_MAX_LEN`` variable changes nothing (the default is 32), and the layers hold no
    global switch dictionary."""
    env = dict(os.environ, LIGHTNET_TPE_DIRECT_MAX_LEN="0")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    code = ("import lightnet.layers as L, lightnet.layers.tpe as T; print(L.MDTPE(4).direct_max_len, "
            "hasattr(T, 'TPE_TUNING'), hasattr(L, 'TPE_TUNING'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["32", "False", "False"], out.stderr[-1000:]


def test_mass_normalised_kernel_has_the_learned_mass_at_every_length():
    """kernel_norm='mass': each axis kernel's total |mass| per channel equals |gain| whatever the grid length (the
    mixed signal does not grow with the grid); gain starts at 0, so the module starts as the identity."""
    torch.manual_seed(0)
    tpe = MDTPE(6, num_axes=2, kernel_norm="mass", init_std=0.5)
    x = torch.randn(2, 5 * 7, 6)
    assert torch.equal(tpe(x, (5, 7)), x)  # gain = 0: identity
    for axis in tpe.axes:
        with torch.no_grad():
            axis.gain.copy_(torch.linspace(-1.0, 2.0, 6))
        for n in (3, 8, 12, 40):
            mass = axis.kernel(n).abs().sum(0)
            assert torch.allclose(mass, axis.gain.abs(), atol=1e-5), n
    y = tpe(x, (5, 7))
    y.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tpe.parameters())
    assert "kernel_norm='mass'" in repr(tpe)


def test_mass_normalisation_refuses_causal_axes_and_unknown_modes():
    with pytest.raises(ValueError, match="bidirectional"):
        MDTPE(4, num_axes=1, causal=True, kernel_norm="mass")
    with pytest.raises(ValueError, match="kernel_norm must be"):
        MDTPE(4, num_axes=2, kernel_norm="l2")


def test_vision_model_takes_tpe_kernel_norm():
    import timm

    import lightnet  # noqa: F401  (registers the models)

    model = timm.create_model("test_lightnet", tpe_kernel_norm="mass", dynamic_img_size=True)
    assert model.tpe.kernel_norm == "mass" and any(k.endswith("gain") for k in model.state_dict())
    out = model(torch.randn(1, 3, 48, 64))
    assert out.shape[0] == 1 and torch.isfinite(out).all()


def test_toeplitz_product_names_shape_errors():
    with pytest.raises(ValueError, match=r"kernel \[2n - 1, C\]"):
        toeplitz_product(torch.randn(2, 5, 3), torch.randn(8, 3))
    with pytest.raises(ValueError, match="toeplitz_product"):
        toeplitz_product(torch.randn(2, 5, 3), torch.randn(9, 4))
    assert toeplitz_product(torch.randn(2, 0, 3), torch.randn(1, 3)).shape == (2, 0, 3)
    with pytest.raises(ValueError, match="toeplitz_direct"):
        toeplitz_direct(torch.randn(2, 5), torch.randn(9, 3))


@pytest.mark.slow
def test_model_with_direct_tpe_compiles_with_inductor_and_matches_eager():
    """A whole LightNet with the direct MD-TPE product under inductor (``fullgraph=True``, CPU codegen): the fused
    broadcast-sum branch gives the eager einsum branch's output and MD-TPE parameter gradients (~60 s on two cores)."""
    import timm

    import lightnet  # noqa: F401  (registers the models)

    torch.manual_seed(0)
    model = timm.create_model("test_lightnet", dynamic_img_size=True)
    model.tpe.direct_max_len = 64
    x = torch.randn(2, 3, 64, 64)
    ref = model(x)
    ref.sum().backward()
    g_ref = model.tpe.axes[0].fwd_weight.grad.clone()
    model.zero_grad()
    torch._dynamo.reset()
    y = torch.compile(model, fullgraph=True)(x)
    y.sum().backward()
    assert _rel(y.detach(), ref.detach()) < 1e-5
    assert _rel(model.tpe.axes[0].fwd_weight.grad, g_ref) < 1e-5
