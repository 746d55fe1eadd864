"""MD-TPE's FFT product under torch.compile: traced on the CPU, one opaque custom op on CUDA.

Inductor cannot generate Triton kernels for complex tensors (seen on an H200 with torch 2.11:
``KeyError: 'complex64'``), so on CUDA ``toeplitz_fft`` calls the custom op ``lightnet::toeplitz_fft`` (backward
``lightnet::toeplitz_fft_backward``) while compiling: no graph break, ``fullgraph=True`` holds. These tests run on the
CPU: the CPU path traces in one graph and gives the eager result; the op passes ``torch.library.opcheck`` (fake
tensors, autograd registration, AOT dispatch), its hand-written gradients equal autograd's through the FFT, and a
``fullgraph`` compile of it keeps the FFT out of the graph.
"""
from __future__ import annotations

import torch
from tests._saved_bytes import saved_bytes

from lightnet.layers import tpe


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 7, 3, generator=g), torch.randn(13, 3, generator=g)


def _naive(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    n = x.shape[1]
    t = torch.stack([torch.stack([kernel[i - j + n - 1] for j in range(n)]) for i in range(n)])  # [n, n, C]
    return torch.einsum("ijc,bjc->bic", t, x)


def test_cpu_path_traces_in_one_graph_and_matches_eager():
    x, k = _inputs()
    explanation = torch._dynamo.explain(tpe.toeplitz_fft)(x, k)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(tpe.toeplitz_fft, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, k), _naive(x, k), rtol=1e-5, atol=1e-5)


def test_custom_op_passes_opcheck_in_fp32_and_bf16():
    x, k = _inputs()
    torch.library.opcheck(tpe._toeplitz_fft_op, (x.requires_grad_(), k.requires_grad_()))
    torch.library.opcheck(tpe._toeplitz_fft_op, (x.detach().bfloat16().requires_grad_(), k))


def test_custom_op_gradients_match_autograd_through_the_fft():
    g = torch.Generator().manual_seed(1)
    for n in (1, 2, 9):
        x = torch.randn(3, n, 4, generator=g, dtype=torch.float64, requires_grad=True)
        k = torch.randn(2 * n - 1, 4, generator=g, dtype=torch.float64, requires_grad=True)
        grad = torch.randn(3, n, 4, generator=g, dtype=torch.float64)
        want_x, want_k = torch.autograd.grad(_naive(x, k), (x, k), grad)
        got_x, got_k = tpe._toeplitz_fft_grads(grad, x.detach(), k.detach())
        assert got_x.dtype == x.dtype and got_k.dtype == k.dtype
        for got, want in ((got_x, want_x), (got_k, want_k)):
            assert ((got - want).norm() / want.norm()).item() < 1e-5  # the FFT runs in fp32


def test_custom_op_is_opaque_under_fullgraph_compile_and_trains():
    x, k = _inputs()
    fn = lambda a, b: tpe._toeplitz_fft_op(a, b) * 2.0  # noqa: E731
    explanation = torch._dynamo.explain(fn)(x, k)
    traced = [str(node.target) for g in explanation.graphs for node in g.graph.nodes if node.op == "call_function"]
    assert explanation.graph_break_count == 0
    assert any("toeplitz_fft" in t for t in traced) and not any("fft_" in t for t in traced), traced
    xs, ks = x.clone().requires_grad_(), k.clone().requires_grad_()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    out = compiled(xs, ks)
    torch.testing.assert_close(out, 2.0 * _naive(x, k), rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    xe, ke = x.clone().requires_grad_(), k.clone().requires_grad_()
    (2.0 * _naive(xe, ke)).square().sum().backward()
    torch.testing.assert_close(xs.grad, xe.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ks.grad, ke.grad, rtol=1e-4, atol=1e-4)


def test_fft_product_with_gradients_keeps_only_its_inputs():
    """Eager, with a gradient needed, the product runs as the custom op: autograd keeps ``x`` and ``kernel`` (not the
    complex spectrum of ``x``), and the gradients still equal those through the FFT."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 64, 8, generator=g, requires_grad=True)
    k = torch.randn(127, 8, generator=g, requires_grad=True)
    y, nbytes = saved_bytes(lambda: tpe.toeplitz_fft(x, k))
    assert nbytes == x.nbytes + k.nbytes, nbytes
    w = torch.randn(y.shape, generator=g)
    got = torch.autograd.grad((y * w).sum(), (x, k))
    xd, kd = x.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    want = torch.autograd.grad((tpe._toeplitz_fft(xd, kd) * w.double()).sum(), (xd, kd))
    for a, b in zip(got, want):
        assert ((a.double() - b).norm() / b.norm()).item() < 1e-5
