"""experiments/dit_compare.py end to end at its tiny size (slow: ~3 minutes on two CPU cores)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightnet.train.datasets import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                    reason="Debian package dataset-fashion-mnist not installed (/usr/share/datasets/fashion-mnist)")
def test_tiny_comparison_writes_both_fids_and_skips_the_probe_and_applies_per_model_overrides(tmp_path: Path):
    """With --steps the speed probe is skipped; results.json holds both runs' held-out losses and one FID row per
    model (written model by model, so a cut run keeps what it finished)."""
    cmd = [sys.executable, str(ROOT / "experiments" / "dit_compare.py"), "--size", "tiny", "--steps", "2",
           "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--workers", "0",
           "--lightnet-set", "model.kwargs.gate_rank=0", "--dit-set", "model.init=dit_paper"]
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
    # each model's own overrides reached its run only (a variant of one model, the other as recorded)
    assert results["overrides"] == {"lightnet": ["model.kwargs.gate_rank=0"], "dit": ["model.init=dit_paper"]}
    logs = tmp_path / "out"
    assert "gate_rank: 0" in (logs / "logs_lightnet" / "config.yaml").read_text()
    assert "init: dit_paper" in (logs / "logs_dit" / "config.yaml").read_text()
    assert "dit_paper" not in (logs / "logs_lightnet" / "config.yaml").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                    reason="Debian package dataset-fashion-mnist not installed (/usr/share/datasets/fashion-mnist)")
def test_cpu16_study_script_trains_scores_and_tabulates_variants(tmp_path: Path):
    """experiments/dit_cpu16_study.sh at the tiny size: two seeds of LightNet-DiT, one of diffusers' DiT with the
    paper init; every pipeline scored once with one classifier; the table groups runs by model and overrides."""
    runs = "base lightnet 0\nbase lightnet 1\nditpaper dit 0 model.init=dit_paper\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ROOT": str(tmp_path / "study"), "DOCS": str(tmp_path / "docs"),
           "PY": sys.executable, "SIZE": "tiny", "STEPS": "2", "SAMPLES": "100", "CLF_EPOCHS": "1", "RUNS": runs,
           "DATA": str(FASHION_MNIST_DIR)}
    done = subprocess.run(["bash", str(ROOT / "experiments" / "dit_cpu16_study.sh")], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    table = (tmp_path / "docs" / "table.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert set(rows) == {"LightNet-DiT", "diffusers DiT (init=dit_paper)"}
    assert rows["LightNet-DiT"].rstrip().endswith("| 2 |") and " ± " in rows["LightNet-DiT"]
    assert (tmp_path / "docs" / "bars.png").stat().st_size > 1000
    scored = sorted(str(p.parent.relative_to(tmp_path / "study")) for p in (tmp_path / "study").rglob("fid.json"))
    assert scored == ["base/lightnet_s0", "base/lightnet_s1", "ditpaper/dit_s0"]
