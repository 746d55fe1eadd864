"""benchmarks/seqpar_memory.py --smoke (a subprocess spawning 1 and 2 gloo ranks): the split models give the unsplit
loss, rank 1 communicates nothing, 2 ranks communicate the same bytes at every sequence length (states, not
tokens) and keep fewer activation bytes inside the blocks than one rank."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks._run import run_script


@pytest.mark.slow  # two spawned gloo ranks and a subprocess: ~15-20 s on 2 shared cores
def test_smoke_counts_bytes_and_memory_per_rank(tmp_path: Path) -> None:
    result = run_script("seqpar_memory", ["--smoke"], tmp_path, "seqpar_memory")
    rows = result["rows"]
    assert {(r["model"], r["ranks"]) for r in rows} == {(m, k) for m in ("vision", "lm") for k in (1, 2)}
    for model in ("vision", "lm"):
        sizes = sorted({r["size"] for r in rows if r["model"] == model})
        assert len(sizes) == 2
        one = {r["size"]: r for r in rows if r["model"] == model and r["ranks"] == 1}
        two = {r["size"]: r for r in rows if r["model"] == model and r["ranks"] == 2}
        for size in sizes:
            assert one[size]["comm_fwd_bytes"] == one[size]["comm_bwd_bytes"] == 0
            assert two[size]["comm_fwd_bytes"] > 0 and two[size]["comm_bwd_bytes"] > 0
            assert two[size]["loss"] == pytest.approx(one[size]["loss"], rel=1e-5)
            assert 0 < two[size]["saved_block_bytes"] < one[size]["saved_block_bytes"]
        # communication independent of the sequence length
        assert two[sizes[0]]["comm_fwd_bytes"] == two[sizes[1]]["comm_fwd_bytes"], model
        assert two[sizes[0]]["comm_bwd_bytes"] == two[sizes[1]]["comm_bwd_bytes"], model
    assert "| input | tokens | ranks |" in (tmp_path / "seqpar_memory.md").read_text()
