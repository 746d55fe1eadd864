"""benchmarks/memory.py: the saved-bytes count per module (a subprocess: LightNet's Triton path under the
interpreter) and the peak-memory part's variants, on the CPU."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import memory
from tests.benchmarks._run import run_script


def test_saved_counts_what_each_module_keeps(tmp_path: Path) -> None:
    """Both models' tables; the SiLU GLU's body keeps exactly its fc1 output ([N, 2 * hidden] bf16 = 4 096 B per
    token and block for lightnet_small), no silu(gate) copy, and fc2 its bf16 input."""
    rows = run_script("memory", ["saved", "--smoke"], tmp_path, "memory_saved")["rows"]
    by_model = {r["model"]: r for r in rows}
    assert set(by_model) == set(memory.MODELS) and all(r["total_mib"] > 0 for r in rows)
    lightnet = by_model["lightnet_small"]["per_token_block"]
    assert lightnet["mlp"] == pytest.approx(2 * 1024 * 2)
    assert lightnet["mlp.fc2"] == pytest.approx(1024 * 2)
    assert "| `mlp.fc1` |" in (tmp_path / "memory_saved.md").read_text()


@pytest.mark.slow
def test_saved_compiled_parts_keep_no_more_than_eager(tmp_path: Path) -> None:
    """--compile: each block part is one compiled region, charged as a whole; inductor keeps no more than eager."""
    eager = run_script("memory", ["saved", "--smoke", "--models", "lightnet_small"], tmp_path / "e", "memory_saved")
    compiled = run_script("memory", ["saved", "--smoke", "--models", "lightnet_small", "--compile"], tmp_path / "c",
                          "memory_saved", timeout=900)
    (row,) = compiled["rows"]
    assert row["compiled"] and set(row["per_token_block"]) <= {"norm1", "attn", "norm2", "mlp", "(outside blocks)"}
    assert sum(row["per_token_block"].values()) <= sum(eager["rows"][0]["per_token_block"].values())


@pytest.mark.slow  # ~11 s on 2 cores
def test_peak_trains_the_peer_and_every_lightnet_variant(tmp_path: Path) -> None:
    assert memory.main(["peak", "--smoke", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "memory_peak.json").read_text())["rows"]
    assert [(r["model"], r["variant"]) for r in rows] == [
        ("vit_small_patch16_224", "default"), ("lightnet_small", "default"),
        ("lightnet_small", "attn_recompute_output=never"), ("lightnet_small", "attn_recompute_output=always")]
    assert all(r["status"] == "ok" and r["img_per_s"] > 0 for r in rows)
