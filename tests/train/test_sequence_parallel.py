"""``parallel.sequence=2``: a short classification run whose images are split over 2 gloo processes (torchrun), and a
short causal LM run (``train-lm``) whose windows are split likewise, log the same losses and end at the same weights as
the unsplit single-process runs (same global batch, no dropout); bad ``parallel`` configs are refused."""
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


# ---------------------------------------------------------------------------- train-lm
LM_ARGS = ["name=sp_lm", "batch_size=4", "data.seq_len=33", "data.epoch_windows=12", "data.eval_max_bytes=256",
           "data.val_fraction=0.3", "model.dim=16", "model.depth=2", "model.num_heads=2", "model.attn_backend=torch",
           "optim.lr=3e-3", "sched.warmup_epochs=0", "run.epochs=1", "run.log_every=1", "run.progress=false",
           "run.tensorboard=false", "run.plot=false", "run.threads=1", "sample_tokens=4"]


def _corpus(tmp_path: Path) -> Path:
    root = tmp_path / "texts"
    root.mkdir()
    for i in range(6):
        (root / f"doc{i}.txt").write_text(f"Document {i}. " + "The quick brown fox jumps over the lazy dog. " * 8)
    return root


def test_lm_rejects_bad_parallel_configs(tmp_path):
    from lightnet.train.lm import LMTrainConfig, train_lm
    from lightnet.train.parallel import ParallelConfig

    cfg = LMTrainConfig(task="mlm", model={"dim": 16, "depth": 1, "num_heads": 2}, parallel=ParallelConfig(sequence=2))
    with pytest.raises(ValueError, match="parallel.sequence=2 needs task=causal"):
        train_lm(cfg, run_dir=tmp_path / "mlm")
    assert not (tmp_path / "mlm").exists()  # refused before any run folder is made
    cfg = LMTrainConfig(model={"dim": 16, "depth": 1, "num_heads": 2}, parallel=ParallelConfig(sequence=0))
    with pytest.raises(ValueError, match="integer >= 1"):
        train_lm(cfg, run_dir=tmp_path / "zero")
    cfg = LMTrainConfig(model={"dim": 16, "depth": 1, "num_heads": 2}, parallel=ParallelConfig(sequence=2))
    cfg.run.progress = cfg.run.tensorboard = cfg.run.plot = False
    with pytest.raises(ValueError, match="parallel.sequence=2 does not divide the 1"):
        train_lm(cfg, run_dir=tmp_path / "one")  # one process cannot form a group of 2


def _lm_run(tmp_path: Path, name: str, launcher):
    root = _corpus(tmp_path) if not (tmp_path / "texts").exists() else tmp_path / "texts"
    extra = ["parallel.sequence=2"] if launcher else []
    return _run([sys.executable, *(launcher or []), "-m", "lightnet.cli", "train-lm", *LM_ARGS, *extra,
                 f"data.paths=[{root}]", f"run.run_dir={tmp_path / name}"], tmp_path)


@pytest.mark.slow
def test_lm_two_sequence_ranks_match_the_unsplit_run(tmp_path):
    _lm_run(tmp_path, "one", None)
    out = _lm_run(tmp_path, "two", ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                                    str(free_port())])
    assert "data 1 x sequence 2" in out
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 3  # 12 windows / batch 4; 33 tokens a window: slices of 17 and 16
    for a, b in zip(one, two):
        assert abs(a - b) <= 1e-5 * abs(a), (one, two)
    with open(tmp_path / "one" / "epochs.csv", newline="") as f1, open(tmp_path / "two" / "epochs.csv", newline="") as f2:
        e1, e2 = float(next(csv.DictReader(f1))["eval_bpb"]), float(next(csv.DictReader(f2))["eval_bpb"])
    assert abs(e1 - e2) <= 1e-5 * e1, (e1, e2)  # validation split the same way
    w1 = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    for k in w1:
        diff = (w1[k].double() - w2[k].double()).norm() / max(w1[k].double().norm(), 1e-12)
        assert diff <= 1e-4, (k, float(diff))
    assert "--- greedy ---" in (tmp_path / "two" / "samples.txt").read_text()  # sampled unsplit after training
