"""The training loop: learning, bitwise kill-and-resume, non-finite handling, `lightnet train/eval` CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightnet.cli import main as cli_main
from lightnet.train.checkpoint import find_latest, load_safetensors
from lightnet.train.classify import ClassifyConfig, eval_main, train, train_main
from lightnet.train.config import build_config
from lightnet.train.engine import NonFiniteLossError, Trainer, make_accelerator
from lightnet.train.schema import OptimConfig, RunConfig, SchedConfig

REPO = Path(__file__).resolve().parents[2]

# A very small LightNet on 8x8 digits: 16 tokens, one block. Stochastic parts switched on on purpose
# (augmentation, drop-path, mixup, label smoothing) so that resume must restore every random stream.
TINY = [
    "model=lightnet_tiny",
    "model_kwargs={patch_size: 2, embed_dim: 32, depth: 1, num_heads: 2, mlp_ratio: 2.0}",
    "drop_path=0.1",
    "data.img_size=8",
    "data.batch_size=32",
    "aug.mixup=0.2",
    "aug.mixup_prob=0.5",
    "optim.lr=1e-2",
    "sched.warmup_epochs=0",
    "run.epochs=2",
    "run.progress=false",
    "run.tensorboard=false",
    "run.plot=false",
    "run.eval_every_epochs=1",
    "run.checkpoint_every_epochs=1",
    "run.log_every=4",
    "run.threads=1",
]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def tiny_cfg(run_dir: Path, *extra: str) -> ClassifyConfig:
    return build_config(ClassifyConfig, "digits", [*TINY, f"run.run_dir={run_dir}", *extra])


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_safetensors(run_dir / "model.safetensors")


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    worst = max((x - y).abs().max().item() for x, y in zip(a.values(), (b[k] for k in a)))
    assert worst == 0.0, f"weights differ by {worst} (CPU resume should be bitwise)"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """Two uninterrupted epochs (88 steps) with the tiny recipe."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    n = torch.get_num_threads()
    train(tiny_cfg(run_dir, "aug.mixup=0", "run.plot=true", "run.tensorboard=true"))
    torch.set_num_threads(n)
    return run_dir


def test_short_run_learns_and_logs(reference_run: Path):
    with open(reference_run / "epochs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"]) < math.log(10)
    final = json.loads((reference_run / "final_metrics.json").read_text())
    assert final["eval_samples"] == 360 and final["eval_top1"] > 40.0  # chance is 10%
    with open(reference_run / "steps.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(4, 89, 4))
    for name in ("config.yaml", "curves.png", "model.safetensors"):
        assert (reference_run / name).is_file(), name
    assert list((reference_run / "tb").glob("events.out.tfevents.*"))
    assert find_latest(reference_run).name == "step_00000088"


def test_eval_cli_matches_training_and_runs_at_other_resolution(reference_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "m.json"
    assert eval_main(["--checkpoint", str(reference_run), "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    final = json.loads((reference_run / "final_metrics.json").read_text())
    assert m["eval_top1"] == pytest.approx(final["eval_top1"]) and m["eval_samples"] == 360
    assert "top-1" in capsys.readouterr().out
    assert eval_main(["--checkpoint", str(reference_run), "--img-size", "16", "--json", str(out)]) == 0
    m16 = json.loads(out.read_text())
    assert m16["img_size"] == 16 and 0.0 <= m16["eval_top1"] <= 100.0 and m16["eval_top5"] >= m16["eval_top1"]
    # an image size not divisible by the patch (2) is refused, not cropped
    assert eval_main(["--checkpoint", str(reference_run), "--img-size", "9"]) == 2
    err = capsys.readouterr().err
    assert "(9, 9) is not divisible by the patch size (2, 2)" in err and "dynamic_img_pad" in err
    assert eval_main(["--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    # the same weights into another architecture size: refused with the mismatching keys named
    assert eval_main(["--checkpoint", str(reference_run), "model_kwargs.embed_dim=48"]) == 2
    err = capsys.readouterr().err
    assert "does not fit model" in err and "shape mismatches" in err


@pytest.mark.parametrize("accum, stop_at", [(1, 30), (2, 13)])
def test_stop_and_resume_is_bitwise(tmp_path: Path, accum: int, stop_at: int):
    """Stop mid-epoch at a checkpoint (max_steps), resume with --resume, compare with an uninterrupted run."""
    extra = [f"run.grad_accum_steps={accum}"]
    full = tmp_path / "full"
    train(tiny_cfg(full, *extra))
    part = tmp_path / "part"
    first = train(tiny_cfg(part, *extra, f"run.max_steps={stop_at}"))
    assert first.stopped_early and first.state.step == stop_at and first.state.batch_in_epoch == stop_at * accum
    assert train_main(["--resume", str(part), "run.max_steps=null"]) == 0
    assert_same_weights(weights(full), weights(part))
    with open(part / "steps.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == sorted(set(steps))  # no duplicated rows after the resume


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path: Path):
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "lightnet.cli", "train", *TINY, "run.epochs=40", "run.checkpoint_every=5",
           "run.eval_every_epochs=0", f"run.run_dir={killed}"]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 180
    try:
        while time.time() < deadline:
            ck = find_latest(killed)
            if ck is not None and int(ck.name.split("_")[1]) >= 50 or proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    ck = find_latest(killed)
    resumed_from = int(ck.name.split("_")[1])
    assert resumed_from >= 50 and resumed_from % 44 != 0  # a mid-epoch checkpoint
    target = resumed_from + 7
    assert train_main(["--resume", str(killed), f"run.max_steps={target}"]) == 0
    ref = tmp_path / "ref"
    train(tiny_cfg(ref, "run.epochs=40", "run.eval_every_epochs=0", f"run.max_steps={target}"))
    assert_same_weights(weights(ref), weights(killed))


# ----------------------------------------------------------------------------- non-finite loss
class _Points(torch.utils.data.Dataset):
    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def _nan_trainer(tmp_path: Path, on_nonfinite: str, bad_steps: set[int]) -> Trainer:
    run = RunConfig(epochs=2, threads=1, on_nonfinite=on_nonfinite, progress=False, tensorboard=False, plot=False,
                    run_dir=str(tmp_path), eval_every_epochs=0)
    acc = make_accelerator(run)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    calls = {"n": 0}

    def loss_fn(model, batch):
        x, y = batch
        calls["n"] += 1
        loss = ((model(x).squeeze(-1) - y) ** 2).mean()
        if calls["n"] in bad_steps:
            loss = loss * float("nan")
        return loss, {}

    return Trainer(run, acc, model, _Points(), batch_size=8, loss_fn=loss_fn,
                   optim=OptimConfig(opt="sgd", lr=0.05, weight_decay=0.0), sched=SchedConfig(sched="cosine"),
                   run_dir=tmp_path)


def test_nonfinite_loss_stops_naming_the_step(tmp_path: Path):
    trainer = _nan_trainer(tmp_path, "stop", {11})
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 11 \(epoch 2") as e:
        trainer.fit()
    assert e.value.step == 11
    assert trainer.state.step == 10  # the bad update was not applied
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_nonfinite_loss_skip_mode_continues(tmp_path: Path):
    trainer = _nan_trainer(tmp_path, "skip", {3, 5})
    result = trainer.fit()
    assert result.state.step == 16 and result.state.skipped_steps == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    first, last = trainer.model.weight.detach().flatten(), torch.tensor([1.0, -2.0, 0.5, 3.0])
    assert (first - last).abs().max() < 2.5  # still learned towards the target weights


# ----------------------------------------------------------------------------- CLI and bad input
def test_cli_lists_commands(capsys):
    assert cli_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "eval" in out
    assert cli_main(["trian"]) == 2
    assert "did you mean 'train'" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("model=no_such_model_xyz", "unknown model 'no_such_model_xyz'"),
    ("optim.lrr=1", "unknown config key 'optim.lrr'"),
    ("data.dataset=imagefolder", "needs data.root"),
])
def test_train_cli_bad_input(tmp_path: Path, capsys, override: str, message: str):
    assert train_main([*TINY, f"run.run_dir={tmp_path / 'r'}", override]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("data.batch_size=-4", "batch_size must be positive, got -4"),
    ("model=nonexistent_model", "unknown model 'nonexistent_model'"),
])
def test_bad_config_leaves_no_run_folder(tmp_path: Path, capsys, override: str, message: str):
    runs = tmp_path / "runs"
    assert train_main([*TINY, f"run.output_dir={runs}", override]) == 2
    assert message in capsys.readouterr().err
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())


def test_warmup_as_long_as_the_run_is_scaled_with_a_warning(caplog):
    from lightnet.train.engine import WARMUP_CAP, build_scheduler, effective_warmup_epochs

    with caplog.at_level("WARNING", logger="lightnet.train.engine"):
        assert effective_warmup_epochs(SchedConfig(warmup_epochs=1), epochs=1) == pytest.approx(WARMUP_CAP)
    assert "sched.warmup_epochs=1 is not shorter than run.epochs=1" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lightnet.train.engine"):
        assert effective_warmup_epochs(SchedConfig(warmup_epochs=2), epochs=10) == 2
    assert not caplog.records
    # the scheduler of a 1-epoch run with warmup_epochs=1 decays: the last update's LR is below the peak
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, SchedConfig(warmup_epochs=1, warmup_lr=1e-6, min_lr=1e-5), 1, 100)
    lrs = [sched._get_lr(t)[0] for t in range(100)]
    assert max(lrs) == pytest.approx(1.0, rel=0.05) and lrs[-1] < 0.01 and lrs.index(max(lrs)) <= 11


def test_progress_in_a_redirected_log_is_one_line_per_n_steps():
    import io

    from lightnet.train.progress import LineProgress, progress_bar

    log = io.StringIO()
    bar = progress_bar(total=10, desc="train", stream=log, every=4)
    assert isinstance(bar, LineProgress)
    for step in range(10):
        bar.update(1)
        bar.set_postfix(loss=f"{step:.1f}")
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [line.split()[1] for line in lines] == ["4/10", "8/10", "10/10"]
    assert lines[0].startswith("train: 4/10 (40%)") and lines[-1].endswith("loss=8.0")


def test_resume_without_checkpoint_is_clear(tmp_path: Path, capsys):
    (tmp_path / "empty_run").mkdir()
    assert train_main(["--resume", str(tmp_path / "empty_run")]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


def test_sigterm_saves_a_checkpoint_and_resumes(tmp_path: Path):
    """SIGTERM finishes the current update, writes a checkpoint (none are scheduled here) and exits 143."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "lightnet.cli", "train", *TINY, "run.epochs=40", "run.checkpoint_every=0",
           "run.checkpoint_every_epochs=0", "run.eval_every_epochs=0", f"run.run_dir={run_dir}"]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    steps_csv = run_dir / "steps.csv"
    while time.time() < deadline and proc.poll() is None:
        if steps_csv.is_file() and len(steps_csv.read_text().splitlines()) > 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    ck = find_latest(run_dir)
    assert ck is not None and "stopped by SIGTERM" in out
    step = int(ck.name.split("_")[1])
    assert step >= 12
    assert train_main(["--resume", str(run_dir), f"run.max_steps={step + 3}"]) == 0
    assert find_latest(run_dir).name == f"step_{step + 3:08d}"


@pytest.mark.slow
def test_two_process_ddp_stop_and_resume_is_bitwise(tmp_path: Path):
    """torchrun with 2 CPU processes (gloo): stop at step 30, resume, equal to an uninterrupted 2-process run."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
            "lightnet.cli", "train", *TINY, "data.batch_size=16"]
    for args in ([f"run.run_dir={tmp_path / 'full'}"], [f"run.run_dir={tmp_path / 'part'}", "run.max_steps=30"],
                 ["--resume", str(tmp_path / "part"), "run.max_steps=null"]):
        out = subprocess.run(base + args, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "2 process(es)" in out.stdout
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "part"))
    assert (find_latest(tmp_path / "part") / "rng_rank1.pt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_1000_mixed_precision_steps_without_nan(tmp_path: Path, precision: str):
    """Issue 8: >= 1,000 mixed-precision steps of lightnet_tiny (digits recipe) with no NaN (a NaN stops the run)."""
    cfg = build_config(ClassifyConfig, "digits", [f"run.mixed_precision={precision}", "run.epochs=46",
                                                  "run.progress=false", f"run.run_dir={tmp_path / 'run'}"])
    n = torch.get_num_threads()
    try:
        result = train(cfg)  # raises NonFiniteLossError on a NaN/inf loss (run.on_nonfinite=stop)
    finally:
        torch.set_num_threads(n)
    assert result.state.step >= 1000 and result.state.skipped_steps == 0
    assert result.metrics["eval_top1"] >= 95.0


def test_trained_weights_load_through_timm_pretrained_path(reference_run: Path):
    """A run's model.safetensors loads with timm.create_model(pretrained=True, pretrained_cfg_overlay=dict(file=...))."""
    import timm

    import lightnet  # noqa: F401

    saved = weights(reference_run)
    model = timm.create_model("lightnet_tiny", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(reference_run / "model.safetensors"),
                                                          num_classes=10),  # keep the trained head
                              num_classes=10, in_chans=1, img_size=8, patch_size=2, embed_dim=32, depth=1,
                              num_heads=2, mlp_ratio=2.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_compiled_run_matches_eager_and_saves_plain_weights(tmp_path: Path):
    """run.compile=true: the model trains through torch.compile (inductor on the CPU), the saved weights carry the
    plain module's keys (no ``_orig_mod.``) and follow the eager run's trajectory up to kernel rounding."""
    short = ["aug.mixup=0", "drop_path=0", "run.epochs=1", "run.max_steps=6", "run.checkpoint_every_epochs=0"]
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    train(tiny_cfg(eager, *short))
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    result = train(tiny_cfg(compiled, *short, "run.compile=true"))
    graphs = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert graphs >= 1, "run.compile=true did not compile anything"
    assert result.state.step == 6
    a, b = weights(eager), weights(compiled)
    assert a.keys() == b.keys() and not any("_orig_mod" in k for k in b)
    moved = max((weights_b - w0).abs().max().item() for w0, weights_b in zip(a.values(), b.values()))
    scale = max(w.abs().max().item() for w in a.values())
    assert moved < 1e-3 * scale, f"compiled run drifted from the eager one by {moved}"
    final = json.loads((compiled / "final_metrics.json").read_text())
    assert final["eval_samples"] == 360 and math.isfinite(final["eval_loss"])


def test_compile_mode_without_compile_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="run.compile is false"):
        train(tiny_cfg(tmp_path / "r", "run.compile_mode=max-autotune"))
