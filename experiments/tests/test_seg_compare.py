"""experiments/seg_compare.py end to end at a tiny budget: both encoders, tables and the side-by-side picture."""
from __future__ import annotations

import csv

import pytest

pytest.importorskip("segmentation_models_pytorch")

from experiments.seg_compare import main  # noqa: E402


def test_seg_compare_tiny(tmp_path):
    out = tmp_path / "out"
    rc = main(["--out", str(out), "--seeds", "0", "--set", "data.canvas_size=64", "data.train_size=16",
               "data.eval_size=4", "data.batch_size=8", "run.epochs=1", "grid.samples=2"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["encoder"] for r in rows] == ["lightnet", "vit"]
    md = (out / "results.md").read_text()
    assert "lightnet" in md and "vit" in md and "mIoU" in md
    from PIL import Image

    img = Image.open(out / "overlays.png")
    one = Image.open(out / "runs" / "lightnet_s0" / "overlays.png")
    assert img.width > one.width  # four columns: input, truth, LightNet, ViT
