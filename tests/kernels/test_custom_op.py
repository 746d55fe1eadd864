"""``torch.compile`` of LightNet: the ``lightnet::*`` custom ops and whole models, on the CPU.

Two halves:
    * Triton path (the ``lightnet::*`` custom ops of :mod:`lightnet.kernels.noncausal.op`,
      :mod:`lightnet.kernels.causal.op` and :mod:`lightnet.kernels.decode`): the kernels run under the CPU interpreter,
      which Triton decides at import, so those checks run in one subprocess that sets ``TRITON_INTERPRET=1`` before
      importing triton (this module is also that worker: ``python tests/kernels/test_custom_op.py`` prints a JSON report).
      ``torch.library.opcheck`` (schema, fake-tensor shapes against the real kernels, autograd registration, AOT
      dispatch with dynamic shapes) on every op, and a LightNet model with ``attn_backend='triton'`` compiled with
      ``fullgraph=True`` (``aot_eager``: the graph and autograd as inductor gets them, without codegen) against eager.
    * Reference path (pytest process, no triton): inductor ``fullgraph=True`` compiles of ``test_lightnet`` /
      ``lightnet_tiny`` against eager outputs and gradients (``slow``: 45 s / 60 s on two cores), ``check_finite``
      skipped while compiling, input validation still raising under compile.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Callable, Dict, List, Tuple

if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "1"

import pytest
import timm
import torch

import lightnet  # noqa: F401  (registers the timm models)
from lightnet.kernels import additive_attention

OPCHECK_OK = {"test_schema": "SUCCESS", "test_autograd_registration": "SUCCESS", "test_faketensor": "SUCCESS",
              "test_aot_dispatch_dynamic": "SUCCESS"}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _grads(model: torch.nn.Module, fn: Callable, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Output of ``fn(x)`` and the gradients of ``model``'s parameters under ``sum(y²)``."""
    for p in model.parameters():
        p.grad = None
    y = fn(x)
    (y.float() ** 2).sum().backward()
    return y.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


# ---------------------------------------------------------------------------------------------- interpreter worker
def _ops() -> Dict[str, Callable]:
    """The ``lightnet::*`` custom ops by name."""
    from lightnet.kernels import decode
    from lightnet.kernels.causal import op as causal
    from lightnet.kernels.noncausal import op as noncausal

    return {"noncausal_fwd": noncausal.noncausal_fwd, "noncausal_bwd": noncausal.noncausal_bwd,
            "causal_fwd": causal.causal_fwd, "causal_bwd": causal.causal_bwd, "causal_decode": decode.causal_decode_op}


def _op_inputs(N: int, *, extras: bool, seed: int = 0) -> Tuple:
    """``(q, k, v, scale, mask, theta, S0, z0)`` for one head of 16 (``extras``: padding, LRPE, initial state)."""
    g = torch.Generator().manual_seed(seed)
    B, H, D, E = 1, 1, 16, 16
    q, k, v = (torch.randn(B, N, H, D, generator=g).requires_grad_() for _ in range(3))
    if not extras:
        return q, k, v, 0.7, None, None, None, None
    mask = torch.rand(B, N, generator=g) < 0.3
    theta = torch.rand(N, D, generator=g) * 6.0
    S0, z0 = torch.randn(B, H, 2 * D, E, generator=g), torch.randn(B, H, D, generator=g)
    return q, k, v, 0.7, mask, theta, S0, z0


def _backward_args(op_name: str, fwd_args: Tuple, q_silu: bool = False, drop_state: bool = False) -> Tuple:
    """Arguments of a backward op: the forward op's saved outputs and random output gradients (``dS`` / ``dz`` too)."""
    ops = _ops()
    q, k, v, scale, mask, theta, S0, z0 = (t.detach() if isinstance(t, torch.Tensor) else t for t in fwd_args)
    g = torch.Generator().manual_seed(9)
    if op_name == "noncausal_bwd":
        o, S, z = ops["noncausal_fwd"](q, k, v, scale, mask, theta, S0, z0, q_silu)
        do, dS = torch.randn(o.shape, generator=g), torch.randn(S.shape, generator=g)
        return do, dS, None, q, k, v, None if drop_state else S, z, scale, mask, theta, q_silu
    o, S, z, saved = ops["causal_fwd"](q, k, v, scale, mask, theta, S0, z0)
    do, dz = torch.randn(o.shape, generator=g), torch.randn(z.shape, generator=g)
    return do, None, dz, q, k, v, S, saved, scale, mask, theta


def _opcheck(op_name: str, N: int, extras: bool, q_silu: bool = False, drop_state: bool = False) -> Dict[str, str]:
    """``torch.library.opcheck`` of one op. Causal ``N`` fills every segment (2 chunks of 16 per segment under the
    interpreter): the kernels leave the unused flag slots of a partial last segment unwritten, which opcheck would
    report as eager/AOT output mismatches although no kernel reads them. ``q_silu``: the non-causal ops with the
    query's SiLU in the kernels (their optional last argument); ``drop_state``: the backward op recomputes ``S``."""
    args = _op_inputs(N, extras=extras)
    if op_name in ("noncausal_bwd", "causal_bwd"):
        args = _backward_args(op_name, args, q_silu, drop_state)
    elif q_silu:
        args = (*args, True)
    elif op_name == "causal_decode":
        q, k, v, scale, mask, theta, S0, z0 = args
        one = [t[:, :1].detach() for t in (q, k, v)]
        args = (*one, scale, None if mask is None else mask[:, :1], None if theta is None else theta[:1], S0, z0)
    return dict(torch.library.opcheck(_ops()[op_name], args))


def _compiled_model_matches_eager() -> Dict[str, float]:
    """test_lightnet (Triton attention): graph breaks, custom-op nodes, and aot_eager fullgraph vs eager errors."""
    torch.manual_seed(0)
    model = timm.create_model("test_lightnet", img_size=32, attn_backend="triton")
    x = torch.randn(2, 3, 32, 32)
    explained = torch._dynamo.explain(model)(x)
    graph_code = "".join(g.code for g in explained.graphs)
    y_e, g_e = _grads(model, model, x)
    torch._dynamo.reset()
    y_c, g_c = _grads(model, torch.compile(model, backend="aot_eager", fullgraph=True), x)
    return {
        "graph_breaks": float(explained.graph_break_count),
        "graphs": float(explained.graph_count),
        "op_calls": float(graph_code.count("lightnet.noncausal_fwd")),
        "out": _rel(y_c, y_e),
        "grad": max(_rel(a, b) for a, b in zip(g_c, g_e)),
        "n_grads": float(len(g_c) == len(g_e) and len(g_c) > 0),
    }


def _compiled_causal_call_matches_eager() -> Dict[str, float]:
    """One causal call with padding, fixed LRPE angles and an initial state, through ``additive_attention``:
    aot_eager fullgraph vs eager, loss (incl. the final state), output and gradients of q, k, v."""
    q, k, v, _, mask, theta, S0, z0 = _op_inputs(64, extras=True, seed=1)
    wS = torch.randn(S0.shape, generator=torch.Generator().manual_seed(2))

    def f(q, k, v):
        o, (S, z) = additive_attention(torch.nn.functional.silu(q), k, v, causal=True, scale=0.5,
                                       key_padding_mask=mask, lrpe_theta=theta, initial_state=(S0, z0),
                                       output_final_state=True, backend="triton")
        return (o ** 2).sum() + (S * wS).sum() + z.sum(), o

    results = []
    for fn in (f, torch.compile(f, backend="aot_eager", fullgraph=True)):
        inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        loss, o = fn(*inputs)
        loss.backward()
        results.append((loss.detach(), o.detach(), *(t.grad for t in inputs)))
    names = ("loss", "o", "dq", "dk", "dv")
    return {n: _rel(c, e) for n, e, c in zip(names, *results)}


def _compiled_state_recompute_follows_the_flag() -> Dict[str, float]:
    """``additive_attention(..., recompute_state=...)`` switched between calls of one inductor-compiled function
    (compile caches on, as by default): the graph with ``recompute_state=True`` keeps exactly one fp32 state less and
    gives the same gradients, and the cached ``False`` graph keeps it again. The flag reaches the graph as an op
    argument, so a cached backward cannot keep (or drop) ``S`` against it."""
    from tests._saved_bytes import saved_bytes

    g = torch.Generator().manual_seed(0)
    B, N, H, D = 2, 16, 1, 32
    q, k, v = (torch.randn(B, N, H, D, generator=g) for _ in range(3))
    theta = torch.rand(N, D, generator=g) * 6.0

    def f(q, k, v, recompute):
        return additive_attention(q, k, v, lrpe_theta=theta, q_activation="silu", backend="triton",
                                  recompute_state=recompute)

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    runs = []
    for flag in (False, True, False):
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        y, nbytes = saved_bytes(lambda: compiled(*inputs, flag))
        grads = torch.autograd.grad(y.square().sum(), inputs)
        runs.append((grads, nbytes))
    state_bytes = B * H * (2 * D) * D * 4  # [B, H, 2D, E] fp32 with MD-LRPE
    return {"dx": max(_rel(a, b) for a, b in zip(runs[1][0], runs[0][0])), "saved_less": float(runs[0][1] - runs[1][1]),
            "state_bytes": float(state_bytes), "cached_keeps_again": float(runs[2][1] == runs[0][1])}


# worker jobs: the default set (~15 s with the subprocess start on two cores) and the slow set (~20 s: opcheck of
# the causal ops across two segments, where the interpreter is slowest)
JOBS: Dict[str, Callable[[], object]] = {
    "opcheck_noncausal_fwd": lambda: _opcheck("noncausal_fwd", 37, extras=False),
    "opcheck_noncausal_fwd_all_options": lambda: _opcheck("noncausal_fwd", 37, extras=True),
    "opcheck_noncausal_bwd": lambda: _opcheck("noncausal_bwd", 37, extras=True),
    "opcheck_noncausal_fwd_q_silu": lambda: _opcheck("noncausal_fwd", 37, extras=True, q_silu=True),
    "opcheck_noncausal_bwd_q_silu": lambda: _opcheck("noncausal_bwd", 37, extras=True, q_silu=True),
    "opcheck_noncausal_bwd_recomputed_state": lambda: _opcheck("noncausal_bwd", 37, extras=False, drop_state=True),
    "opcheck_causal_fwd": lambda: _opcheck("causal_fwd", 32, extras=False),
    "opcheck_causal_decode": lambda: _opcheck("causal_decode", 1, extras=True),
    "compiled_model": _compiled_model_matches_eager,
    "compiled_causal_call": _compiled_causal_call_matches_eager,
    "compiled_state_recompute": _compiled_state_recompute_follows_the_flag,
}
SLOW_JOBS: Dict[str, Callable[[], object]] = {
    "opcheck_causal_fwd_all_options": lambda: _opcheck("causal_fwd", 64, extras=True),
    "opcheck_causal_bwd": lambda: _opcheck("causal_bwd", 64, extras=True),
}


def _worker(slow: bool) -> None:
    jobs = SLOW_JOBS if slow else JOBS
    report = {}
    for name, job in jobs.items():
        try:
            report[name] = job()
        except Exception as exc:  # reported to the pytest side, which fails that case
            report[name] = f"{type(exc).__name__}: {str(exc)[:2000]}"
    print("REPORT" + json.dumps(report))


def _run_worker(slow: bool) -> Dict[str, object]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path)
    cmd = [sys.executable, __file__] + (["--slow"] if slow else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=root)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT")]
    assert proc.returncode == 0 and lines, f"interpreter worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("REPORT"):])


@pytest.fixture(scope="module")
def report() -> Dict[str, object]:
    return _run_worker(slow=False)


@pytest.fixture(scope="module")
def slow_report() -> Dict[str, object]:
    return _run_worker(slow=True)


needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

@needs_triton
@pytest.mark.parametrize("name", [n for n in JOBS if n.startswith("opcheck")])
def test_custom_op_passes_opcheck(report, name):
    """Schema, fake shapes (incl. the causal ``saved`` list) = real shapes, autograd registration, AOT dispatch with
    dynamic shapes (the forward ops' checks also run their backward ops)."""
    assert report[name] == OPCHECK_OK, report[name]


@needs_triton
@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLOW_JOBS))
def test_causal_custom_op_across_segments_passes_opcheck(slow_report, name):
    """As above with padding, LRPE and an initial state over two segments."""
    assert slow_report[name] == OPCHECK_OK, slow_report[name]


@needs_triton
def test_compiled_lightnet_with_triton_attention_has_no_graph_breaks_and_matches_eager(report):
    r = report["compiled_model"]
    assert isinstance(r, dict), r
    assert r["graph_breaks"] == 0 and r["graphs"] == 1, r
    assert r["op_calls"] == 4, r  # one custom op per block (test_lightnet has 4 blocks)
    assert r["n_grads"] == 1.0, r
    assert r["out"] < 1e-5 and r["grad"] < 1e-4, r


@needs_triton
def test_compiled_causal_call_with_every_option_matches_eager(report):
    r = report["compiled_causal_call"]
    assert isinstance(r, dict), r
    bad = {n: e for n, e in r.items() if not e < 1e-5}
    assert not bad, r


@needs_triton
def test_compiled_state_recompute_follows_the_flag_past_the_compile_caches(report):
    r = report["compiled_state_recompute"]
    assert isinstance(r, dict), r
    assert r["dx"] < 1e-6 and r["saved_less"] == r["state_bytes"] and r["cached_keeps_again"] == 1.0, r


# ---------------------------------------------------------------------------------------------- reference path
def _compile_and_compare(name: str, img_size: int) -> Tuple[float, float]:
    """Relative errors (output, worst parameter gradient) of an inductor ``fullgraph=True`` compile against eager."""
    torch.manual_seed(0)
    model = timm.create_model(name, img_size=img_size)
    x = torch.randn(2, 3, img_size, img_size)
    y_e, g_e = _grads(model, model, x)
    torch._dynamo.reset()
    y_c, g_c = _grads(model, torch.compile(model, fullgraph=True), x)
    assert len(g_c) == len(g_e) > 0
    return _rel(y_c, y_e), max(_rel(a, b) for a, b in zip(g_c, g_e))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["test_lightnet", "lightnet_tiny"])
def test_reference_model_compiles_fullgraph_and_matches_eager(name):
    out, grad = _compile_and_compare(name, 32)
    assert out < 1e-5 and grad < 1e-4, (out, grad)


def test_reference_model_traces_in_one_graph():
    torch.manual_seed(0)
    model = timm.create_model("test_lightnet", img_size=32)
    explained = torch._dynamo.explain(model)(torch.randn(2, 3, 32, 32))
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


def _qkv(N: int = 8) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, N, 2, 4, generator=g) for _ in range(3))
    return q, k, v


def test_check_finite_is_eager_only():
    q, k, v = _qkv()
    k[0, 1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        additive_attention(q, k, v, check_finite=True)
    torch._dynamo.reset()
    f = torch.compile(lambda q, k, v: additive_attention(q, k, v, check_finite=True), backend="aot_eager",
                      fullgraph=True)
    assert torch.isnan(f(q, k, v)).any()  # traced without the check (and without a graph break)


def test_validation_errors_still_raise_under_compile():
    """Validation runs in the traced Python, so bad input fails at trace time with the eager message: as the same
    ``ValueError`` without ``fullgraph`` (dynamo runs the raising frame eagerly), wrapped in dynamo's ``Unsupported``
    error (same text) with ``fullgraph=True``."""
    q, k, v = _qkv()
    for fullgraph, error in ((False, ValueError), (True, Exception)):
        torch._dynamo.reset()
        f = torch.compile(lambda q, k, v: additive_attention(q, k, v), backend="aot_eager", fullgraph=fullgraph)
        with pytest.raises(error, match="head-count mismatch"):
            f(q, k, v[:, :, :1])
        with pytest.raises(error, match=r"must have rank 4 \[B, N, H, D\]"):
            f(q[0], k[0], v[0])
        torch.testing.assert_close(f(q, k, v), additive_attention(q, k, v))


if __name__ == "__main__":
    _worker(slow="--slow" in sys.argv[1:])
