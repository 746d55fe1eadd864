"""benchmarks/launches.py on the CPU (Triton interpreter): every call and direction counted, the kernels it names."""
from __future__ import annotations

from pathlib import Path

from tests.benchmarks._run import run_script


def test_smoke_counts_launches_and_syncs(tmp_path: Path) -> None:
    rows = run_script("launches", ["--smoke"], tmp_path, "launches")["rows"]
    assert {(r["call"], r["shape"], r["direction"]) for r in rows} == {
        (c, s, d) for c in ("non-causal", "causal") for s in ("128x40", "2x300") for d in ("forward", "backward")}
    for r in rows:
        assert r["status"] == "ok" and r["host_syncs"] == 0
        assert r["triton_launches"] == sum(r["triton_kernels"].values()) >= 1
        assert r["total_launches"] == r["triton_launches"] + r["torch_launches"]
        prefix = "_nc_" if r["call"] == "non-causal" else "_c_"
        assert all(name.startswith(prefix) for name in r["triton_kernels"])
    fwd = {(r["call"], r["shape"]): r for r in rows if r["direction"] == "forward"}
    assert "_nc_fwd_kernel" in fwd["non-causal", "128x40"]["triton_kernels"]
    assert "_c_seg_state_kernel" in fwd["causal", "2x300"]["triton_kernels"]
