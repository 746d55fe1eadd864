"""``parallel.sequence=2``: a short classification run whose images are split over 2 gloo processes (torchrun) logs
the same losses and ends at the same weights as the unsplit single-process run (same global batch, no dropout)."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests._subprocess_env import ROOT, free_port, subprocess_env

ARGS = ["name=sp_cls", "drop_path=0.0", "data.batch_size=8", "data.num_workers=0", "model_kwargs.depth=2",
        "model_kwargs.embed_dim=32", "optim.lr=2e-3", "sched.warmup_epochs=0", "run.max_steps=3", "run.epochs=1",
        "run.log_every=1", "run.progress=false", "run.tensorboard=false", "run.plot=false", "run.threads=1",
        "run.checkpoint_every_epochs=0", "run.eval_every_epochs=0"]


def _run(cmd, tmp_path: Path) -> str:
    proc = subprocess.run(cmd, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout + proc.stderr


def _losses(run_dir: Path):
    with open(run_dir / "steps.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_rejects_a_sequence_size_that_does_not_divide_the_world():
    from lightnet.train.parallel import ParallelConfig, parallel_layout

    class _Acc:
        num_processes, process_index = 3, 0

    with pytest.raises(ValueError, match="parallel.sequence=2 does not divide the 3"):
        parallel_layout(_Acc(), ParallelConfig(sequence=2))


@pytest.mark.slow
def test_two_sequence_ranks_match_the_unsplit_run(tmp_path):
    _run([sys.executable, "-m", "lightnet.cli", "train", *ARGS, f"run.run_dir={tmp_path / 'one'}"], tmp_path)
    out = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(free_port()), "-m", "lightnet.cli", "train", *ARGS, "parallel.sequence=2",
                f"run.run_dir={tmp_path / 'two'}"], tmp_path)
    assert "data 1 x sequence 2" in out and "global batch 8" in out
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert abs(a - b) <= 1e-5 * abs(a), (one, two)
    w1, w2 = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in w1:
        diff = (w1[k].double() - w2[k].double()).norm() / max(w1[k].double().norm(), 1e-12)
        assert diff <= 1e-4, (k, float(diff))
