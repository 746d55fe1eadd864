"""benchmarks/kernels.py on the CPU (Triton interpreter): the correctness check against the fp64 reference passes
and every timed method of a tiny shape lands in the JSON, the tables and the plot; no timing is asserted."""
from __future__ import annotations

from pathlib import Path

from benchmarks import kernels
from tests.benchmarks._run import run_script


def test_smoke_checks_and_times_every_method(tmp_path: Path) -> None:
    result = run_script("kernels", ["--smoke"], tmp_path, "kernels")
    checks = [r for r in result["rows"] if r["part"] == "check"]
    assert len(checks) == len(kernels.SMOKE_CASES) and all(r["status"] == "ok" for r in checks)
    assert all(r["max_err"] < 1e-5 for r in checks)  # fp32 through the interpreter vs fp64
    (row,) = [r for r in result["rows"] if r["part"] == "time"]
    timed = {k[: -len("_ms")] for k in row if k.endswith("_ms") and k != "floor_ms"}
    assert timed == {"lightnet_noncausal", "eager_ref_noncausal", "sdpa_noncausal", "lightnet_causal",
                     "eager_ref_causal", "sdpa_causal"}
    assert result["env"]["torch"] and result["args"]["smoke"]
    md = (tmp_path / "kernels.md").read_text()
    assert "2 of 2 cases run pass" in md and "| 1 | 32 | 16 |" in md
    assert (tmp_path / "kernels.png").stat().st_size > 1000


def test_render_marks_failures_and_missing_peers() -> None:
    rows = [dict(part="check", case="a", tol=1e-3, max_err=2e-3, status="FAILED"),
            dict(part="time", B=1, N=8, H=1, D=4, floor_ms=0.5, lightnet_noncausal_ms=2.0, lightnet_noncausal_gpu_ms=1.0,
                 compiled_ref_noncausal_gpu_ms=4.0, lightnet_causal_gpu_ms=2.0)]
    md = kernels.render(rows)
    assert "0 of 1 cases run pass" in md and "| a | 2.0e-03 | 0.001 | FAILED |" in md
    assert "| 1 | 8 | 4 | 0.500 | 1.000 (2.000) | 2.0 | 4.000 | — | 4.0× | — |" in md  # no SDPA row: '—'
    assert "| 1 | 8 | 4 | 2.000 (—) | — | — | — | — |" in md  # fla not installed: '—'


def test_render_counts_cases_cut_by_the_budget_apart() -> None:
    rows = [dict(part="check", case="a", tol=1e-3, max_err=1e-4, status="ok"),
            dict(part="check", case="3 cases left out", cases=3, status="cut")]
    assert "1 of 1 cases run pass (3 cut by the time budget)" in kernels.render(rows)


def test_every_gpu_case_is_well_formed() -> None:
    """The GPU check's cases: 11 fields each, both kernels, every dtype, head dims 32 / 64 / 128 and E != D."""
    assert all(len(c) == 11 for c in kernels.CASES)
    assert {c[0] for c in kernels.CASES} == {False, True}
    assert {c[6] for c in kernels.CASES} == {kernels.BF16, kernels.FP16, kernels.FP32}
    assert {c[4] for c in kernels.CASES} == {32, 64, 128} and any(c[4] != c[5] for c in kernels.CASES)
