"""experiments/video_compare.py end to end at a tiny size: every model trains through the shared trainer."""
from __future__ import annotations

import csv
from pathlib import Path

import torch

from experiments.video_compare import main

TINY = ["data.moving.canvas=16", "data.moving.item_size=8", "data.moving.num_frames=4", "data.moving.max_speed=2",
        "data.moving.train_clips=64", "data.moving.eval_clips=32", "data.batch_size=32", "run.epochs=1",
        "sched.warmup_epochs=0", "run.plot=false", "run.threads=1",
        "model_kwargs={patch_size: 4, tubelet_size: 2, embed_dim: 16, depth: 1, num_heads: 2, mlp_ratio: 2.0}"]


def test_compare_writes_rows_and_table(tmp_path: Path):
    n = torch.get_num_threads()
    try:
        assert main(["--out", str(tmp_path), "--labels", "direction", "--seeds", "0", "--", *TINY]) == 0
    finally:
        torch.set_num_threads(n)
    rows = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert [r["variant"] for r in rows] == ["lightnet", "vit", "scan6"]
    assert all(r["steps"] == "2" and 0 <= float(r["eval_top1"]) <= 100 for r in rows)
    table = (tmp_path / "table.md").read_text()
    assert table.count("\n") == 5 and "top-1 `direction`" in table
    assert (tmp_path / "direction" / "vit" / "seed0" / "model.safetensors").is_file()
    # a rerun reads the finished runs instead of training again
    before = (tmp_path / "direction" / "vit" / "seed0" / "final_metrics.json").stat().st_mtime
    assert main(["--out", str(tmp_path), "--labels", "direction", "--seeds", "0", "--models", "vit", "--", *TINY]) == 0
    assert (tmp_path / "direction" / "vit" / "seed0" / "final_metrics.json").stat().st_mtime == before
