"""Data-parallel training without GPUs: the three trainers under ``accelerate launch`` with 2 CPU processes (gloo).

Each trainer runs once as a plain single process with global batch ``2b`` and once as 2 processes of batch ``b``
(``accelerate launch --multi_gpu --num_processes 2`` on a CPU-only host: accelerate starts the processes with
torch.distributed.run and the engine picks gloo; note that ``accelerate launch --cpu --num_processes 2`` starts a
*single* process unless an MPI hostfile is given). No trainer code knows about the launch.

* classification (``lightnet train``) and causal LM (``lightnet train-lm``): the data order is a function of the seed
  and of the *global* batch, augmentation is seeded per sample and the models have no dropout here, so the two runs
  see the same samples per update and the DDP gradient (mean over ranks of per-rank means) equals the single-process
  mean up to float summation order: the final weights and evaluation agree to float precision.
* diffusion (``lightnet train-dit``): noise and timesteps are drawn from each process' own random stream, so the
  runs agree only statistically: both finite, and the fixed held-out denoising loss close.

Slow (several launches of ~30-60 s each on 2 shared cores): ``pytest -m slow tests/train/test_multiprocess.py``.
"""
from __future__ import annotations

import csv
import math
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from tests._subprocess_env import free_port, subprocess_env

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None
                       and shutil.which("accelerate") is None, reason="accelerate CLI not installed"),
]


def _accelerate() -> str:
    local = Path(sys.executable).parent / "accelerate"
    return str(local) if local.exists() else "accelerate"


def launch(nproc: int, command: str, args: List[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m lightnet.cli COMMAND ARGS`` as one process, or under ``accelerate launch`` with ``nproc``."""
    if nproc == 1:
        cmd = [sys.executable, "-m", "lightnet.cli", command, *args]
    else:
        cmd = [_accelerate(), "launch", "--multi_gpu", "--num_processes", str(nproc), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "-m", "lightnet.cli", command, *args]
    proc = subprocess.run(cmd, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _weights(path: Path) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _flat(sd: Dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([sd[k].double().flatten() for k in sorted(sd) if sd[k].is_floating_point()])


def _compare_runs(name: str, one: Dict[str, torch.Tensor], two: Dict[str, torch.Tensor],
                  init: Dict[str, torch.Tensor]) -> None:
    """2-process weights equal the 1-process ones to float precision, and training moved them (not vacuous)."""
    moved = float((_flat(one) - _flat(init)).norm())
    diff = float((_flat(two) - _flat(one)).norm())
    print(f"{name}: |w2 - w1| = {diff:.2e}, |w1 - w0| = {moved:.2e} (ratio {diff / moved:.1e}), "
          f"max per-tensor relative difference {_max_rel_diff(two, one):.1e}")
    assert moved > 1e-3 * float(_flat(init).norm()), "training barely moved the weights; the comparison is vacuous"
    assert diff < 1e-4 * moved, "2-process weights differ from the 1-process run (same global batch)"
    assert _max_rel_diff(two, one) < 1e-4


def _max_rel_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for k in a:
        x, y = a[k].double(), b[k].double()
        worst = max(worst, float((x - y).norm() / y.norm().clamp_min(1e-12)))
    return worst


def _rows(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


COMMON = ["optim.lr=2e-3", "sched.warmup_epochs=0", "run.max_steps=6", "run.epochs=1", "run.log_every=1", "run.progress=false", "run.tensorboard=false",
          "run.plot=false", "run.threads=1", "run.checkpoint_every_epochs=0"]


def _classifier_init(overrides: List[str]) -> Dict[str, torch.Tensor]:
    """The initial weights of the classification runs (the trainer seeds with run.seed before building)."""
    from lightnet.train.classify import ClassifyConfig, build_classifier
    from lightnet.train.config import build_config
    from lightnet.train.rng import seed_everything

    cfg = build_config(ClassifyConfig, "digits", overrides)
    seed_everything(cfg.run.seed)
    return {k: v.detach().clone() for k, v in build_classifier(cfg, 10, 1).state_dict().items()}


def _lm_init(overrides: List[str]) -> Dict[str, torch.Tensor]:
    from lightnet.train.config import build_config
    from lightnet.train.lm import LMTrainConfig, build_lm_model
    from lightnet.train.rng import seed_everything

    cfg = build_config(LMTrainConfig, "lm_causal_pydoc", overrides)
    seed_everything(cfg.run.seed)
    return {k: v.detach().clone() for k, v in build_lm_model(cfg).state_dict().items()}


def test_classifier_two_processes_match_one(tmp_path):
    base = ["name=mp_cls", "drop_path=0.0", "run.eval_every_epochs=0", *COMMON]
    launch(1, "train", [*base, "data.batch_size=16", f"run.run_dir={tmp_path / 'one'}"])
    proc = launch(2, "train", [*base, "data.batch_size=8", f"run.run_dir={tmp_path / 'two'}"])
    assert "2 process(es)" in proc.stdout + proc.stderr and "global batch 16" in proc.stdout + proc.stderr
    one, two = _weights(tmp_path / "one" / "model.safetensors"), _weights(tmp_path / "two" / "model.safetensors")
    _compare_runs("classifier", one, two, _classifier_init(base))
    m1 = __import__("json").loads((tmp_path / "one" / "final_metrics.json").read_text())
    m2 = __import__("json").loads((tmp_path / "two" / "final_metrics.json").read_text())
    assert m1["step"] == m2["step"] == 6
    assert abs(m1["eval_loss"] - m2["eval_loss"]) < 1e-4 and m1["eval_top1"] == m2["eval_top1"]
    steps1 = _rows(tmp_path / "one" / "steps.csv")
    assert len(steps1) == 6 and all(math.isfinite(float(r["loss"])) for r in steps1)


def _text_corpus(tmp_path: Path) -> Path:
    src = Path(sys.modules["csv"].__file__).read_text() + Path(sys.modules["socket"].__file__).read_text()
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(4):  # several files so that one is held out for validation
        (folder / f"part{i}.txt").write_text(src[i * len(src) // 4:(i + 1) * len(src) // 4])
    return folder


def test_causal_lm_two_processes_match_one(tmp_path):
    corpus = _text_corpus(tmp_path)
    base = ["name=mp_lm", "task=causal", "model.dim=32", "model.depth=1", "model.num_heads=2", "data.seq_len=32",
            f"data.paths=[{corpus}]", "data.eval_max_bytes=2048", "sample_tokens=8", "run.eval_every_epochs=0",
            *COMMON]
    launch(1, "train-lm", [*base, "batch_size=8", f"run.run_dir={tmp_path / 'one'}"])
    launch(2, "train-lm", [*base, "batch_size=4", f"run.run_dir={tmp_path / 'two'}"])
    one = _weights(tmp_path / "one" / "model.safetensors")
    two = _weights(tmp_path / "two" / "model.safetensors")
    _compare_runs("causal LM", one, two, _lm_init(base))


def test_dit_two_processes_run_and_agree_statistically(tmp_path):
    base = ["name=mp_dit", "model.kwargs.num_layers=1", "model.kwargs.hidden_size=32", "model.kwargs.num_attention_heads=2",
            "data.img_size=16", "data.eval_samples=64", "sample.every=0", "sample.per_class=1", "sample.max_classes=2",
            "sample.steps=2", "run.eval_every_epochs=0", *COMMON]
    launch(1, "train-dit", [*base, "data.batch_size=16", f"run.run_dir={tmp_path / 'one'}"])
    launch(2, "train-dit", [*base, "data.batch_size=8", f"run.run_dir={tmp_path / 'two'}"])
    for run in ("one", "two"):
        rows = _rows(tmp_path / run / "steps.csv")
        losses = [float(r["loss"]) for r in rows if r.get("loss")]
        assert len(losses) == 6 and all(math.isfinite(x) for x in losses), (run, losses)
    import json

    m1, m2 = (json.loads((tmp_path / r / "final_metrics.json").read_text()) for r in ("one", "two"))
    # same initialisation and the same fixed held-out batch: identical starting point
    assert m1["initial_eval_loss"] == pytest.approx(m2["initial_eval_loss"], rel=1e-6)
    # different noise draws: not bitwise equal, but both runs learn alike from the same global batches
    for m in (m1, m2):
        assert m["step"] == 6 and m["eval_loss"] < m["initial_eval_loss"], m
    print(f"dit: held-out loss initial {m1['initial_eval_loss']:.4f}, after 6 steps 1 process {m1['eval_loss']:.4f}, "
          f"2 processes {m2['eval_loss']:.4f}")
    assert abs(m1["eval_loss"] - m2["eval_loss"]) < 0.1 * m1["eval_loss"], (m1, m2)
