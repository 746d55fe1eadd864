"""benchmarks/dit_fashion_mnist_compare.py end to end at its tiny size (slow: ~3 minutes on two CPU cores)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightnet.train.datasets import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                    reason="Debian package dataset-fashion-mnist not installed (/usr/share/datasets/fashion-mnist)")
def test_tiny_comparison_writes_both_fids_and_skips_the_probe(tmp_path: Path):
    """With --steps the speed probe is skipped; results.json holds both runs' held-out losses and one FID row per
    model (written model by model, so a cut run keeps what it finished)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "dit_fashion_mnist_compare.py"), "--size", "tiny", "--steps", "2",
           "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--workers", "0"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["probe_s_per_step"] == {} and results["steps"] == 2
    assert results["fid_done"] == ["lightnet", "dit"]
    transformers = [p["transformer"] for p in results["fid"]["pipelines"]]
    assert transformers == ["LightNetDiTModel", "DiTTransformer2DModel"]
    assert all(p["fid_proxy"] > 0 for p in results["fid"]["pipelines"])
    assert all("eval_loss" in results["runs"][a] for a in ("lightnet", "dit"))
