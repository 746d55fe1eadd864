"""The end-to-end benchmark scripts (benchmarks/bench_models.py, benchmarks/evidence/bench_scan_baselines.py) run on
the CPU at a tiny size and write their JSON: a GPU run must not be the first place a changed signature shows up.
No timing is asserted, only that every row ran and the tables were printed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `benchmarks.*`

from benchmarks import bench_models  # noqa: E402
from benchmarks.evidence import bench_scan_baselines  # noqa: E402

TINY = ["--device", "cpu", "--sizes", "32", "--batches", "2", "--iters", "1", "--warmup", "1"]


def test_bench_scan_baselines_runs_every_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert bench_scan_baselines.main(TINY + ["--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench_scan_baselines.json").read_text())
    models = {row["model"] for row in result["train"]}
    assert models == {"lightnet_small", "evidence_small_scan2", "evidence_small_scan4"}
    assert all(row["status"] == "ok" and row["img_per_s"] > 0 and row["mode"] == "eager" for row in result["train"])
    assert "| 32 | 2 |" in capsys.readouterr().out


def test_bench_scan_baselines_rejects_unknown_compile_mode() -> None:
    with pytest.raises(SystemExit):
        bench_scan_baselines.main(TINY + ["--compile-mode", "fastest"])


def test_bench_models_runs_both_models(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench_models.main(TINY + ["--latency-batches", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "bench_models.json").read_text())
    assert {row["model"] for row in result["train"]} == {"lightnet_small", "vit_small_patch16_224"}
    assert all(row["status"] == "ok" and row["step_ms"] > 0 for row in result["train"])
    assert result["env"]["dynamo_graph_breaks"] == 0, result["env"]["dynamo_break_reasons"]
    assert "speed ratio" in capsys.readouterr().out
