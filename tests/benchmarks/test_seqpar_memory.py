"""benchmarks/seqpar_memory.py --smoke: per-rank activations shrink with the split, communication does not grow with
the sequence length, and R = 1 communicates nothing."""
from __future__ import annotations

from pathlib import Path

from tests.benchmarks._run import run_script


def test_smoke_counts_bytes_and_memory(tmp_path: Path) -> None:
    rows = run_script("seqpar_memory", ["--smoke"], tmp_path, "seqpar_memory")["rows"]
    by = {(r["mode"], r["N"], r["world"]): r for r in rows}
    for mode in ("non-causal", "causal"):
        assert by[(mode, 128, 1)]["fwd_sent_bytes"] == 0 and by[(mode, 128, 1)]["collectives"] == 0
        split = [by[(mode, N, 2)] for N in (64, 128)]
        assert all(r["fwd_sent_bytes"] > 0 and r["bwd_sent_bytes"] > 0 for r in split)
        assert split[0]["fwd_sent_bytes"] == split[1]["fwd_sent_bytes"]  # independent of N
        assert by[(mode, 128, 2)]["activation_bytes"] < by[(mode, 128, 1)]["activation_bytes"]
