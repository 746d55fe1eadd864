"""The two-GEMM form of short non-causal calls (``lightnet.kernels.gemm_noncausal``) and when the dispatch takes it.

* numerics (this process, no triton): fp32 against the fp64 reference (output, state, log-normaliser, gradients),
  with MD-LRPE, padding and an all-padding row; bf16 within the kernels' tolerance;
* dispatch (a subprocess with ``TRITON_INTERPRET=1``, which Triton reads at import; this module is the worker):
  under ``torch.compile`` a call of N tokens becomes GEMMs exactly when ``N <= TUNING["nc_gemm_max_tokens"]``
  (no ``lightnet::noncausal_fwd`` node left in the graph), never in eager mode, never with an initial state, and
  both paths give the reference's output and gradients.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

from lightnet.kernels.gemm_noncausal import noncausal_attention_gemm
from lightnet.kernels.reference import noncausal_attention_torch
from lightnet.layers import MDLRPE


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _inputs(B: int = 2, side: int = 4, H: int = 3, D: int = 8, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    N = side * side
    q, k, v = (torch.randn(B, N, H, D, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))
    theta = MDLRPE(D, num_axes=2).angles((side, side)).float()
    return q, k, v, theta


@pytest.mark.parametrize("with_lrpe", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
def test_gemm_form_matches_fp64_reference_fp32(with_lrpe, with_mask):
    q, k, v, theta = _inputs()
    theta = theta if with_lrpe else None
    mask = None
    if with_mask:
        mask = torch.zeros(2, 16, dtype=torch.bool)
        mask[0, 9:] = True
        mask[1, :] = True  # every token padding: zero output, no NaN
    ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
    o_ref, (S_ref, z_ref) = noncausal_attention_torch(*ref_in, scale=0.5, key_padding_mask=mask, lrpe_theta=theta)
    w = torch.randn_like(o_ref)
    (o_ref * w).sum().backward()
    leaves = [t.float().requires_grad_() for t in (q, k, v)]
    o, (S, z) = noncausal_attention_gemm(*leaves, scale=0.5, key_padding_mask=mask, lrpe_theta=theta)
    assert o.dtype == torch.float32 and S.dtype == torch.float32 and S.shape == S_ref.shape
    assert _rel(o, o_ref) < 1e-5 and _rel(S, S_ref) < 1e-5 and _rel(z, z_ref) < 1e-5
    (o * w.float()).sum().backward()
    for name, t, r in zip("qkv", leaves, ref_in):
        assert torch.isfinite(t.grad).all(), name
        assert _rel(t.grad, r.grad) < 1e-5, name
    if with_mask:
        assert o[1].abs().max() == 0 and S[1].abs().max() == 0


def test_gemm_form_bf16_within_kernel_tolerance():
    q, k, v, theta = _inputs(B=3, side=6, D=16)
    o_ref = noncausal_attention_torch(q, k, v, lrpe_theta=theta)[0]
    o, _ = noncausal_attention_gemm(q.bfloat16(), k.bfloat16(), v.bfloat16(), lrpe_theta=theta)
    assert o.dtype == torch.bfloat16
    assert _rel(o, o_ref) < 2e-2


# ------------------------------------------------------------------------------------------ dispatch (subprocess)
def _worker() -> dict:
    """Run under TRITON_INTERPRET=1: which path each call takes, and its errors vs the fp32 reference."""
    from lightnet.kernels import additive_attention
    from lightnet.kernels.triton_common import TUNING

    q, k, v, theta = _inputs(dtype=torch.float32)
    report = {}

    def recorded(limit: int, **kw) -> dict:
        graphs = []

        def backend(gm, example_inputs):
            graphs.append(str(gm.graph))
            return gm.forward

        torch._dynamo.reset()
        TUNING["nc_gemm_max_tokens"] = limit
        fn = torch.compile(lambda a, b, c: additive_attention(a, b, c, lrpe_theta=theta, backend="triton", **kw),
                           backend=backend, fullgraph=True)
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        o = fn(*leaves)
        o = o[0] if isinstance(o, tuple) else o
        o.square().sum().backward()
        ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
        o_ref = noncausal_attention_torch(*ref_in, lrpe_theta=theta)[0]
        o_ref.square().sum().backward()
        err = max([_rel(o, o_ref)] + [_rel(t.grad, r.grad) for t, r in zip(leaves, ref_in)])
        return {"custom_op": any("lightnet.noncausal_fwd" in g for g in graphs), "err": err}

    report["limit_above_n"] = recorded(16)
    report["limit_below_n"] = recorded(15)
    report["default_off"] = recorded(0)
    S0 = torch.zeros(2, 3, 16, 8)
    z0 = torch.zeros(2, 3, 8)
    TUNING["nc_gemm_max_tokens"] = 16
    torch._dynamo.reset()
    graphs = []
    torch.compile(lambda a, b, c: additive_attention(a, b, c, lrpe_theta=theta, backend="triton",
                                                     initial_state=(S0, z0)),
                  backend=lambda gm, ex: graphs.append(str(gm.graph)) or gm.forward, fullgraph=True)(q, k, v)
    report["initial_state_custom_op"] = any("lightnet.noncausal_fwd" in g for g in graphs)
    leaf = q.clone().requires_grad_()
    eager = additive_attention(leaf, k, v, lrpe_theta=theta, backend="triton")
    report["eager_grad_fn"] = type(eager.grad_fn).__name__
    TUNING["nc_gemm_max_tokens"] = None
    return report


@pytest.fixture(scope="module")
def dispatch_report() -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                        os.environ.get("PYTHONPATH", "")])))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_compiled_call_takes_gemm_form_only_up_to_the_limit(dispatch_report):
    assert dispatch_report["limit_above_n"]["custom_op"] is False
    assert dispatch_report["limit_below_n"]["custom_op"] is True
    assert dispatch_report["default_off"]["custom_op"] is True
    for case in ("limit_above_n", "limit_below_n", "default_off"):
        assert dispatch_report[case]["err"] < 1e-4, case


def test_gemm_form_not_used_eagerly_or_with_initial_state(dispatch_report):
    assert dispatch_report["initial_state_custom_op"] is True
    assert "NonCausal" in dispatch_report["eager_grad_fn"]


if __name__ == "__main__":
    print(json.dumps(_worker()))
