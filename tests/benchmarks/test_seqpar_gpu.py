"""benchmarks/seqpar_gpu.py --smoke on the CPU (1 and 2 gloo ranks): the plumbing of the multi-GPU script — one row
per rank count, the split loss equal to the unsplit one, the table written."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks._run import run_script


@pytest.mark.slow  # spawned gloo ranks in a subprocess: ~15-20 s on 2 shared cores
def test_smoke_splits_one_image_over_two_ranks(tmp_path: Path) -> None:
    rows = run_script("seqpar_gpu", ["--smoke"], tmp_path, "seqpar_gpu")["rows"]
    assert [(r["ranks"], r["status"], r["backend"]) for r in rows] == [(1, "ok", "gloo"), (2, "ok", "gloo")]
    assert rows[1]["loss"] == pytest.approx(rows[0]["loss"], rel=1e-5)
    assert all(r["step_ms"] > 0 for r in rows)
    assert "| 32 px | 16 | 2 | gloo |" in (tmp_path / "seqpar_gpu.md").read_text()
