"""The Triton kernels under the CPU interpreter: hypothesis over random shapes against the fp64 reference, and bad
input through ``additive_attention(..., backend="triton")``.

As in ``test_triton_interpret.py``, triton decides at import time whether to interpret, so everything runs in one
worker subprocess (``python tests/kernels/test_robustness_triton.py`` prints a JSON report) with ``TRITON_INTERPRET=1``; the
pytest side only reads the report. The interpreter is slow: the property test draws few, small examples
(``derandomize=True`` keeps CI reproducible; ``LIGHTNET_HYPOTHESIS_EXAMPLES`` raises the count for a longer hunt).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Callable, Dict

if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

EXAMPLES = int(os.environ.get("LIGHTNET_HYPOTHESIS_EXAMPLES", "6"))


def _property_run(causal: bool) -> Dict[str, object]:
    """Hypothesis over (B, N, H, D, E, mask, LRPE, initial state, logit scale): forward, state and gradients of the
    Triton path within a relative error of the fp64 reference. Returns {"examples": n} or {"failure": text}."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.kernels.test_triton_interpret import _compare  # the shared fp64 comparison (o, S, z, dq, dk, dv)

    seen = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(B=st.integers(1, 2), N=st.integers(1, 40), H=st.integers(1, 2), D=st.integers(1, 24), E=st.integers(1, 20),
           mask=st.booleans(), lrpe=st.booleans(), init=st.booleans(), k_scale=st.sampled_from([1.0, 30.0, 1e4]),
           seed=st.integers(0, 2**16))
    def prop(B, N, H, D, E, mask, lrpe, init, k_scale, seed):
        errs = _compare(B, N, H, D, E, causal=causal, mask=mask, lrpe=lrpe, init=init, k_scale=k_scale, seed=seed)
        tol = 3e-3 if k_scale > 100 else 1e-4
        seen.append(dict(B=B, N=N, H=H, D=D, E=E, mask=mask, lrpe=lrpe, init=init, k_scale=k_scale))
        bad = {n: e for n, e in errs.items() if not e <= tol}
        assert not bad, f"relative errors above {tol}: {bad} for {seen[-1]}"

    try:
        prop()
    except Exception as exc:  # the falsifying example is in the message
        return {"failure": f"{type(exc).__name__}: {exc}"[:3000], "examples": len(seen)}
    return {"examples": len(seen)}


def _bad_input_checks() -> Dict[str, str]:
    """Each check returns 'ok' or a description of what went wrong."""
    from lightnet.kernels import additive_attention, additive_attention_torch

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 20, 2, 16, generator=g), torch.randn(2, 20, 2, 16, generator=g)
    v = torch.randn(2, 20, 2, 8, generator=g)

    def expect(exc: type, *words: str) -> Callable[[Callable[[], object]], str]:
        def run(fn: Callable[[], object]) -> str:
            try:
                fn()
            except exc as e:
                missing = [w for w in words if w.lower() not in str(e).lower()]
                return "ok" if not missing else f"message lacks {missing}: {e}"
            except Exception as e:  # noqa: BLE001
                return f"wrong exception {type(e).__name__}: {e}"
            return "no error raised"
        return run

    def close(fn: Callable[[], tuple]) -> str:
        try:
            out, ref = fn()
        except Exception as e:  # noqa: BLE001
            return f"raised {type(e).__name__}: {e}"
        if out.shape != ref.shape:
            return f"shape {tuple(out.shape)} != {tuple(ref.shape)}"
        if out.numel() == 0:
            return "ok"
        if not torch.isfinite(out).all():
            return "non-finite output"
        err = float((out.double() - ref.double()).abs().max())
        return "ok" if err < 1e-4 else f"max error {err}"

    T = dict(backend="triton")
    checks: Dict[str, str] = {}
    checks["wrong_rank"] = expect(ValueError, "rank 4")(lambda: additive_attention(q[0], k[0], v[0], **T))
    checks["head_mismatch"] = expect(ValueError, "heads")(lambda: additive_attention(q, k, v[:, :, :1], **T))
    checks["int_dtype"] = expect(TypeError, "floating")(lambda: additive_attention(q.long(), k.long(), v.long(), **T))
    checks["mask_shape"] = expect(ValueError, "key_padding_mask")(
        lambda: additive_attention(q, k, v, key_padding_mask=torch.zeros(2, 19, dtype=torch.bool), **T))
    checks["device_mix"] = expect(ValueError, "different devices")(lambda: additive_attention(q, k.to("meta"), v, **T))
    checks["nan_detected"] = expect(ValueError, "k", "nan")(
        lambda: additive_attention(q, k * float("nan"), v, check_finite=True, **T))
    state = (torch.zeros(2, 2, 16, 8, requires_grad=True), torch.zeros(2, 2, 16))
    checks["state_grad_refused"] = expect(RuntimeError, "initial_state", "backend='torch'")(
        lambda: additive_attention(q, k, v, causal=True, initial_state=state, **T))
    theta = torch.zeros(20, 16, requires_grad=True)
    checks["theta_grad_refused"] = expect(RuntimeError, "lrpe_theta")(
        lambda: additive_attention(q, k, v, lrpe_theta=theta, **T))
    for causal in (False, True):
        name = "causal" if causal else "noncausal"
        ref = lambda a, b, c, **kw: additive_attention_torch(a.double(), b.double(), c.double(), causal=causal, **kw)[0]
        checks[f"{name}_empty_sequence"] = close(
            lambda: (additive_attention(q[:, :0], k[:, :0], v[:, :0], causal=causal, **T), ref(q[:, :0], k[:, :0], v[:, :0])))
        checks[f"{name}_empty_batch"] = close(
            lambda: (additive_attention(q[:0], k[:0], v[:0], causal=causal, **T), ref(q[:0], k[:0], v[:0])))
        checks[f"{name}_fp64_falls_back_exactly"] = close(
            lambda: (additive_attention(q.double(), k.double(), v.double(), causal=causal, **T), ref(q, k, v)))
        pad = torch.zeros(2, 20, dtype=torch.bool)
        pad[1] = True
        checks[f"{name}_all_padding_row"] = close(
            lambda: (additive_attention(q, k, v, causal=causal, key_padding_mask=pad, **T),
                     ref(q, k, v, key_padding_mask=pad)))
        checks[f"{name}_huge_logits"] = close(
            lambda: (additive_attention(q, k * 1e29, v, causal=causal, **T), ref(q, k * 1e29, v)))
        checks[f"{name}_logits_at_neg_big"] = close(
            lambda: (additive_attention(q, k * 1e30, v, causal=causal, **T), ref(q, k * 1e30, v)))
    return checks


def _worker() -> None:
    report: Dict[str, object] = {}
    for causal in (False, True):
        report["property_causal" if causal else "property_noncausal"] = _property_run(causal)
    try:
        report["bad_input"] = _bad_input_checks()
    except Exception as exc:  # noqa: BLE001
        report["bad_input"] = {"worker": f"{type(exc).__name__}: {exc}"}
    print("REPORT" + json.dumps(report))


@pytest.fixture(scope="module")
def report() -> Dict[str, object]:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    path = os.pathsep.join(p for p in (root, here, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=900, cwd=root)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT")]
    assert proc.returncode == 0 and lines, f"interpreter worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("REPORT"):])


pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


@pytest.mark.parametrize("kind", ["noncausal", "causal"])
def test_triton_matches_reference_on_random_shapes(report, kind):
    res = report[f"property_{kind}"]
    assert "failure" not in res, res["failure"]
    assert res["examples"] >= min(EXAMPLES, 3)


BAD_INPUT_CHECKS = [
    "wrong_rank", "head_mismatch", "int_dtype", "mask_shape", "device_mix", "nan_detected", "state_grad_refused",
    "theta_grad_refused",
    *[f"{c}_{n}" for c in ("noncausal", "causal") for n in ("empty_sequence", "empty_batch", "fp64_falls_back_exactly",
                                                           "all_padding_row", "huge_logits")],
]


@pytest.mark.parametrize("name", BAD_INPUT_CHECKS)
def test_triton_bad_input(report, name):
    assert report["bad_input"].get(name) == "ok", report["bad_input"]


def test_triton_noncausal_logits_of_1e30(report):
    assert report["bad_input"].get("noncausal_logits_at_neg_big") == "ok", report["bad_input"]


@pytest.mark.xfail(strict=True, reason="causal Triton kernel: a key logit <= -1e30 equals the NEG_BIG padding sentinel "
                   "(triton_utils.NEG_BIG = -1e30) and is treated as padding, so |k| ~ 1e30 gives a wrong output "
                   "(max error ~7 vs the reference; fine up to 1e29); docs/robustness.md, known limitations")
def test_triton_causal_logits_of_1e30(report):
    assert report["bad_input"].get("causal_logits_at_neg_big") == "ok", report["bad_input"]


if __name__ == "__main__":
    _worker()
