"""Both ways the non-causal Triton kernels combine partial states, against the fp64 reference, under
``TRITON_INTERPRET=1``.

With several token ranges per (batch, head), the output pass merges the per-range partial states itself when there
are few ranges, otherwise a separate merge launch does it; likewise the dk/dv pass sums the partial state gradients
itself or reads a separately reduced sum. The heuristic picks by the number of ranges
(``MAX_INLINE_PARTIALS``); this module forces each (``NonCausalLaunch(max_inline_partials=...)``), with padding
mask, MD-LRPE and an initial state, and compares the forward ``(o, S, z)`` and the gradients ``(dq, dk, dv)`` with
the fp64 reference. Like ``test_triton_interpret.py`` the kernels run in one subprocess that sets the interpreter
flag before importing triton (this module is that worker).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Dict

if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "1"

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# variant → ranges up to which the partials are merged / summed inline (fp32 inputs)
VARIANTS = {
    "separate_merge": 0,
    "inline_merge": 8,
}
TOL = 1e-4


def _load_compare():
    """``_compare`` of test_triton_interpret.py (fp64-reference comparison of one configuration)."""
    spec = importlib.util.spec_from_file_location("_interp_cases", os.path.join(HERE, "test_triton_interpret.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._compare


def _worker() -> None:
    from lightnet.kernels.noncausal import NonCausalLaunch

    compare = _load_compare()
    report: Dict[str, object] = {}
    for name, inline in VARIANTS.items():
        launch = NonCausalLaunch(max_inline_partials=inline)
        for case, kwargs in {
            "all_features": dict(B=2, N=100, H=1, D=16, E=32, mask=True, lrpe=True, init=True),
            "large_logits": dict(B=2, N=75, H=1, D=16, E=16, mask=True, k_scale=1e4),
        }.items():
            try:
                report[f"{name}/{case}"] = compare(causal=False, launch=launch, **kwargs)
            except Exception as exc:  # reported to the pytest side, which fails that case
                report[f"{name}/{case}"] = f"{type(exc).__name__}: {exc}"
    print("REPORT" + json.dumps(report))


@pytest.fixture(scope="module")
def report() -> Dict[str, object]:
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    root = os.path.dirname(os.path.dirname(HERE))
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)], capture_output=True, text=True, env=env,
                          timeout=1200)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT")]
    assert lines, f"worker failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("REPORT"):])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("case", ["all_features", "large_logits"])
def test_noncausal_variant_matches_fp64_reference(report: Dict[str, object], variant: str, case: str) -> None:
    errors = report[f"{variant}/{case}"]
    assert isinstance(errors, dict), errors
    tol = TOL if case == "all_features" else 3e-3
    assert set(errors) >= {"o", "S", "z", "dq", "dk", "dv"}
    bad = {key: val for key, val in errors.items() if not val < tol}
    assert not bad, f"{variant}/{case}: relative errors above {tol}: {bad}"


if __name__ == "__main__":
    _worker()
