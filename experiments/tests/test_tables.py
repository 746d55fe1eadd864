"""Evidence tables and plots are regenerated from logs (experiments/make_tables.py), and the runner writes
logs that they read (experiments/run_classification.py, a seconds-long digits run)."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

from experiments import make_tables  # noqa: E402
from experiments.make_tables import aggregate, format_mean_std, load_runs, mean_std, render_tables  # noqa: E402


def _write_run(root: Path, variant: str, seed: int, top1: float, transfer: dict, curve: list) -> None:
    run = root / variant / f"seed{seed}"
    run.mkdir(parents=True)
    summary = {
        "variant": variant, "seed": seed, "dataset": "fake", "params": 123_000, "epochs": len(curve),
        "train_examples": 10, "test_examples": 5, "size": {"img_size": 32, "patch_size": 4, "embed_dim": 8,
                                                             "depth": 1, "num_heads": 2},
        "args": {"batch_size": 4, "lr": 0.001}, "device": "cpu", "torch": "x", "train_time_s": 10.0 + seed,
        "final_eval_top1": top1, "transfer": transfer,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    with open(run / "epochs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "step", "eval_top1"])
        w.writeheader()
        for i, acc in enumerate(curve, 1):
            w.writerow({"epoch": i, "step": 3 * i, "eval_top1": acc})


@pytest.fixture
def fake_logs(tmp_path: Path) -> Path:
    for seed, top1 in enumerate([0.80, 0.82, 0.84]):
        _write_run(tmp_path, "lightnet", seed, top1,
                   {"top1@32": top1, "top1@48_resize": top1 - 0.10, "top1@48_pad": top1 - 0.20}, [0.5, top1])
    for seed, top1 in enumerate([0.70, 0.75, 0.80]):
        _write_run(tmp_path, "vit", seed, top1, {"top1@32": top1, "top1@48_resize": 0.5}, [0.4, top1])
    _write_run(tmp_path, "pe_none", 0, 0.6, {"top1@32": 0.6}, [0.6])
    return tmp_path


def test_mean_std_and_format():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert format_mean_std([0.80, 0.82, 0.84]) == "82.00 ± 2.00"
    assert format_mean_std([0.5]) == "50.00"
    assert format_mean_std([]) == "—"


def test_tables_from_fake_logs(fake_logs: Path):
    runs = load_runs(fake_logs)
    assert len(runs) == 7
    agg = aggregate(runs)
    assert sorted(agg["lightnet"]["seeds"]) == [0, 1, 2]
    text = render_tables(runs)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")}
    main_row = next(line for line in text.splitlines() if line.startswith("| `lightnet` | LightNet"))
    assert "82.00 ± 2.00" in main_row and "| 3 |" in main_row
    vit_row = next(line for line in text.splitlines() if line.startswith("| `vit` | ViT"))
    assert "75.00 ± 5.00" in vit_row
    transfer = text.split("Resolution transfer")[1]
    header = next(line for line in transfer.splitlines() if line.startswith("| variant"))
    assert header.split("|")[2:5] == [" @32 ", " @48_resize ", " @48_pad "]
    lightnet_transfer = next(line for line in transfer.splitlines() if line.startswith("| `lightnet`"))
    assert "72.00 ± 2.00" in lightnet_transfer and "62.00 ± 2.00" in lightnet_transfer
    vit_transfer = next(line for line in transfer.splitlines() if line.startswith("| `vit`"))
    assert vit_transfer.rstrip().endswith("| 50.00 ± 0.00 | — |")  # no pad evaluation logged for vit
    assert "`pe_none`" in rows and "Ablation: positional encoding" in text


def test_main_writes_tables_and_plots(fake_logs: Path, tmp_path: Path):
    out = tmp_path / "report"
    assert make_tables.main([str(fake_logs), "--out", str(out)]) == 0
    assert "82.00 ± 2.00" in (out / "tables.md").read_text()
    for name in ("curves.png", "variants.png", "transfer.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_no_runs_is_an_error(tmp_path: Path):
    with pytest.raises(SystemExit, match="no summary.json"):
        make_tables.main([str(tmp_path)])


def test_runner_logs_feed_the_tables(tmp_path: Path, capsys):
    """End to end on the built-in digits data: 2 tiny models × 2 seeds, one epoch each, then the tables; stderr
    reports each run's first-step time and its later steps' time (what a run cut by a time limit still leaves)."""
    from experiments import run_classification

    out = tmp_path / "runs"
    argv = ["--dataset", "digits", "--models", "lightnet", "scan2", "--seeds", "0", "1", "--epochs", "1",
            "--batch-size", "128", "--train-limit", "256", "--test-limit", "64", "--embed-dim", "16", "--depth", "1",
            "--heads", "2", "--patch", "8", "--train-size", "32", "--eval-sizes", "40", "--device", "cpu",
            "--out", str(out)]
    assert run_classification.main(argv) == 0
    err = capsys.readouterr().err
    assert "scan2 seed 1: first step done after" in err and "lightnet seed 0: 1 later steps in" in err
    summary = json.loads((out / "scan2" / "seed1" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["params"] > 0
    assert set(summary["transfer"]) == {"top1@32", "top1@40_resize", "top1@40_pad"}
    assert 0.0 <= summary["final_eval_top1"] <= 1.0
    rows = list(csv.DictReader(open(out / "lightnet" / "seed0" / "epochs.csv")))
    assert len(rows) == 1 and float(rows[0]["train_loss"]) > 0
    text = render_tables(load_runs(out))
    assert "`lightnet`" in text and "`scan2`" in text and "| 2 |" in text
    # a second invocation skips finished runs instead of overwriting them
    stamp = (out / "scan2" / "seed1" / "summary.json").stat().st_mtime_ns
    assert run_classification.main(argv) == 0
    assert (out / "scan2" / "seed1" / "summary.json").stat().st_mtime_ns == stamp


def test_aggregate_seeds_lm_and_dit(tmp_path: Path, capsys):
    from experiments import aggregate_seeds

    lm_files = []
    for seed, (a, b) in enumerate([(1.50, 1.40), (1.60, 1.50), (1.70, 1.60)]):
        doc = {"quality": {"lightnet": {"val_bpb": a, "train_seconds": 10.0, "steps": 100, "params": 2e6},
                           "gpt": {"val_bpb": b, "train_seconds": 8.0, "steps": 100, "params": 2e6}}}
        lm_files.append(tmp_path / f"lm{seed}.json")
        lm_files[-1].write_text(json.dumps(doc))
    assert aggregate_seeds.main(["lm", *map(str, lm_files)]) == 0
    out = capsys.readouterr().out
    assert "| lightnet | 2.00M | 1.600 ± 0.100 |" in out and "| gpt | 2.00M | 1.500 ± 0.100 |" in out

    dit = {"runs": {"lightnet": {"eval_loss": 0.05, "params": 3e6, "step": 10},
                    "dit": {"eval_loss": 0.07, "params": 3e6, "step": 10}},
           "fid": {"pipelines": [{"transformer": "LightNetDiTModel", "fid_proxy": 60.0, "label_acc": 0.2},
                                 {"transformer": "DiTTransformer2DModel", "fid_proxy": 90.0, "label_acc": 0.1}]}}
    docs = [dit, {**dit, "fid": {"pipelines": [{"transformer": "LightNetDiTModel", "fid_proxy": 70.0, "label_acc": 0.3},
                                                 {"transformer": "DiTTransformer2DModel", "fid_proxy": 80.0,
                                                  "label_acc": 0.1}]}}]
    table = aggregate_seeds.collect_dit(docs)
    assert table["lightnet"]["fid_proxy"] == [60.0, 70.0] and table["dit"]["fid_proxy"] == [90.0, 80.0]
    text = aggregate_seeds.render("dit", table)
    assert "| lightnet | 3.00M | 65.0 ± 7.1 |" in text and "25.0 ± 7.1" in text
    with pytest.raises(ValueError, match="not an lm_compare JSON"):
        aggregate_seeds.collect_lm([dit])


def test_runner_pauses_and_resumes_bitwise(tmp_path: Path):
    """A run paused after 1 of 3 epochs (--stop-after-epochs) and continued from its checkpoint.pt ends with the
    same log rows and final accuracy as an uninterrupted run (CPU: bitwise); the checkpoint is deleted at the end."""
    from experiments import run_classification

    def argv(out: Path, *extra: str) -> list:
        return ["--dataset", "digits", "--models", "lightnet", "--seeds", "0", "--epochs", "3", "--batch-size", "64",
                "--train-limit", "256", "--test-limit", "64", "--embed-dim", "16", "--depth", "1", "--heads", "2",
                "--patch", "8", "--train-size", "32", "--eval-sizes", "40", "--transfer-modes", "pad",
                "--device", "cpu", "--threads", "1", "--out", str(out), *extra]

    def rows(out: Path) -> list:
        with open(out / "lightnet" / "seed0" / "epochs.csv") as f:
            return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in csv.DictReader(f)]

    full, part = tmp_path / "full", tmp_path / "part"
    assert run_classification.main(argv(full, "--save-weights")) == 0
    from safetensors.torch import load_file

    saved = load_file(str(full / "lightnet" / "seed0" / "model_bf16.safetensors"))
    assert saved and all(t.dtype == torch.bfloat16 for t in saved.values())
    assert run_classification.main(argv(part, "--stop-after-epochs", "1")) == 0
    run_dir = part / "lightnet" / "seed0"
    assert not (run_dir / "summary.json").exists() and (run_dir / "checkpoint.pt").exists()
    assert len(rows(part)) == 1
    assert run_classification.main(argv(part)) == 0
    assert rows(part) == rows(full) and len(rows(full)) == 3
    a = json.loads((full / "lightnet" / "seed0" / "summary.json").read_text())
    b = json.loads((run_dir / "summary.json").read_text())
    assert a["transfer"] == b["transfer"] and a["steps"] == b["steps"] == 12
    assert not (run_dir / "checkpoint.pt").exists()
    # a time limit already spent starts nothing and leaves no half-written run
    late = tmp_path / "late"
    assert run_classification.main(argv(late, "--time-limit", "0")) == 0
    assert not (late / "lightnet" / "seed0" / "summary.json").exists()


def test_runner_warm_only_trains_nothing(tmp_path: Path, capsys):
    from experiments import run_classification

    argv = ["--dataset", "digits", "--models", "lightnet", "scan2", "--train-limit", "64", "--test-limit", "32",
            "--embed-dim", "16", "--depth", "1", "--heads", "2", "--patch", "8", "--eval-sizes", "40", "--device", "cpu",
            "--out", str(tmp_path), "--warm-only"]
    assert run_classification.main(argv) == 0
    out = capsys.readouterr().out
    assert "warmed lightnet" in out and "warmed scan2" in out
    assert not list(tmp_path.rglob("*.csv")) and not list(tmp_path.rglob("*.json"))


@pytest.mark.parametrize("scope", ["blocks", pytest.param("model", marks=pytest.mark.slow)])  # whole-model compile: ~30 s
def test_runner_compiled_step_trains(tmp_path: Path, scope: str):
    """--compile [blocks|model]: the training step goes through torch.compile (inductor on the CPU) and still learns
    and logs. Per block: the two blocks (different drop-path rates) share the graphs of their norm, mixer and MLP
    (3 graphs: both norms are one), and evaluation (three other sizes / modes) adds none."""
    from torch._dynamo.utils import counters

    from experiments import run_classification

    argv = ["--dataset", "digits", "--models", "lightnet", "--seeds", "0", "--epochs", "2", "--batch-size", "64",
            "--train-limit", "256", "--test-limit", "64", "--embed-dim", "16", "--depth", "2", "--heads", "2",
            "--patch", "8", "--train-size", "32", "--eval-sizes", "40", "--device", "cpu",
            "--threads", "1", "--drop-path", "0.1", "--compile", scope, "--out", str(tmp_path)]
    torch._dynamo.reset()
    counters.clear()
    assert run_classification.main(argv) == 0
    graphs = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert graphs == {"blocks": 3, "model": 1}[scope]
    with open(tmp_path / "lightnet" / "seed0" / "epochs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    summary = json.loads((tmp_path / "lightnet" / "seed0" / "summary.json").read_text())
    assert set(summary["transfer"]) >= {"top1@40_resize", "top1@40_pad"}


def test_runner_compile_blocks_needs_blocks():
    from experiments.run_classification import compile_for_training

    with pytest.raises(ValueError, match=r"has no 'blocks' \(nn.Sequential / nn.ModuleList\)"):
        compile_for_training(torch.nn.Linear(2, 2), "blocks")
    with pytest.raises(ValueError, match="compile scope"):
        compile_for_training(torch.nn.Linear(2, 2), "layers")


def test_transfer_probes_experiment_end_to_end(tmp_path: Path):
    """Tiny digits run through experiments/transfer_probes.py: the table has the probes' rows; each probe changes
    the model's output only inside its block (at a grid other than the training one) and is restored."""
    import torch

    from experiments import transfer_probes as pi
    from experiments.models import ModelSize, build_classifier
    from lightnet.layers import MDLRPE

    model = build_classifier("lightnet", ModelSize(img_size=16, patch_size=4, in_chans=1, embed_dim=16, depth=1,
                                                   num_heads=2), tpe_match_mass=False, lrpe_interpolate=False).eval()
    lrpes = [m for m in model.modules() if isinstance(m, MDLRPE)]
    x = torch.randn(2, 1, 24, 24)
    with torch.no_grad():
        plain = model(x)
        with pi.reference_grid(model, 4):
            assert model.tpe.reference_grid == (4, 4) and all(m.reference_grid is None for m in lrpes)
            massed = model(x)
        with pi.reference_grid(model, 4, lrpe=True):
            assert lrpes and all(m.reference_grid == (4, 4) for m in lrpes)
            both = model(x)
        with pi.reference_grid(model, 6, lrpe=True):  # the evaluation grid itself: nothing to rescale
            same = model(x)
        after = model(x)
    assert model.tpe.reference_grid is None and all(m.reference_grid is None for m in lrpes)
    assert torch.allclose(plain, same, atol=1e-6) and torch.equal(plain, after)
    assert not torch.allclose(plain, massed, atol=1e-4) and not torch.allclose(massed, both, atol=1e-6)
    out = tmp_path / "pi"
    assert pi.main(["--out", str(out), "--seeds", "0", "--threads", "1", "--dataset", "digits", "--epochs", "1",
                    "--train-limit", "256", "--test-limit", "64", "--embed-dim", "16", "--depth", "1",
                    "--patch", "8", "--train-size", "32", "--eval-sizes", "40"]) == 0
    res = json.loads((out / "transfer_probes.json").read_text())["0"]
    assert set(res) == {"@32_resize", "@40_resize", "@40_resize_tpe_mass", "@40_pad",
                        "@40_resize_tpe_mass_lrpe_interp", "tpe_ratio@32", "tpe_ratio@40", "tpe_mass@32",
                        "tpe_mass@40"}
    assert all(0.0 <= v <= 100.0 for k, v in res.items() if k.startswith("@"))
    assert all(v > 0 for k, v in res.items() if k.startswith("tpe_"))
    assert pi.main(["--out", str(out), "--seeds", "0", "--threads", "1", "--dataset", "digits", "--epochs", "1",
                    "--train-limit", "256", "--test-limit", "64", "--embed-dim", "16", "--depth", "1",
                    "--patch", "8", "--train-size", "32", "--eval-sizes", "40", "--probes", "mass_lrpe_interp",
                    "--stem", "defaults"]) == 0  # the finished run is reused; only the chosen probe runs
    only = json.loads((out / "defaults.json").read_text())["0"]
    assert set(only) == {"@32_resize", "tpe_ratio@32", "tpe_mass@32", "@40_resize_tpe_mass_lrpe_interp"}
    assert only["@40_resize_tpe_mass_lrpe_interp"] == res["@40_resize_tpe_mass_lrpe_interp"]


def test_partial_epochs_table_counts_only_seeds_that_reached_the_epoch(tmp_path: Path):
    from experiments import partial_epochs

    def write(variant: str, seed: int, top1: list) -> None:
        d = tmp_path / variant / f"seed{seed}"
        d.mkdir(parents=True)
        with open(d / "epochs.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epoch", "step", "lr", "train_loss", "train_top1", "eval_loss", "eval_top1", "epoch_time_s"])
            for e, acc in enumerate(top1, 1):
                w.writerow([e, e * 10, 1e-3, 1.0, 0.5, 1.0, acc, 1.0])

    write("a", 0, [0.5, 0.7])
    write("a", 1, [0.6])
    write("b", 0, [0.4, 0.8])
    out = tmp_path / "t.md"
    png = tmp_path / "curves.png"
    assert partial_epochs.main([f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}", "--epochs", "1", "2", "3",
                                "--out", str(out), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = out.read_text().splitlines()
    assert rows[2] == "| `a` | 55.00 ± 7.07 (2) | 70.00 (1) | — |"  # one seed: no spread
    assert rows[3] == "| `b` | 40.00 (1) | 80.00 (1) | — |"
    with pytest.raises(ValueError, match="no seed"):
        partial_epochs.load_epoch_top1(tmp_path / "missing")
    with pytest.raises(SystemExit):
        partial_epochs.main(["no-equals-sign"])


def test_scan_speed_cpu_smoke(tmp_path: Path, capsys):
    """experiments/scan_speed.py on the CPU at a tiny size: a row per spec (the scan spec with its chunk
    length and without recomputation), the profile table of the last spec, and the report files."""
    from experiments import scan_speed as tss

    argv = ["--device", "cpu", "--specs", "lightnet", "scan2:16", "--batch-size", "2", "--embed-dim", "16",
            "--depth", "1", "--heads", "2", "--steps", "1", "--warmup", "2", "--no-recompute", "--out", str(tmp_path)]
    assert tss.main(argv) == 0
    rows = json.loads((tmp_path / "scan_speed.json").read_text())
    assert [r["spec"] for r in rows] == ["lightnet", "scan2:16"] and all(r["step_ms"] > 0 for r in rows)
    assert "top_kernels" in rows[1] and "top_kernels" not in rows[0]
    assert "recompute False" in (tmp_path / "scan_speed.md").read_text()
    assert tss.parse_spec("scan4:8") == ("scan4", 8) and tss.parse_spec("vit") == ("vit", None)
    with pytest.raises(ValueError, match="only applies to the scan baselines"):
        tss.parse_spec("lightnet:8")
    with pytest.raises(ValueError, match="unknown variant"):
        tss.parse_spec("mamba:8")


def test_next_epoch_estimate_discounts_the_first_step():
    """Run L1: a 273 s first epoch, 254 s of it fla's autotuning in the first step, paused two runs whose next epoch
    would have taken 16 s. The first epoch of a process is projected with its steady step time."""
    from experiments.run_classification import next_epoch_estimate

    assert next_epoch_estimate(273.0, 254.0, 0.136) == pytest.approx(19.136)
    assert next_epoch_estimate(20.0, None, None) == 20.0  # a later epoch: as long as the last one
    assert next_epoch_estimate(5.0, 4.0, None) == 5.0  # one step per epoch: no steady time measured


def test_dit_study_joins_runs_and_fid_rows_by_pipeline(tmp_path: Path, capsys):
    """experiments/dit_study.py: runs grouped by model and overrides, FID rows joined by pipeline folder
    (written relative or absolute), unscored runs still counted, an FID row without its run an error."""
    from experiments import dit_study

    def run(name: str, arch: str, seed: int, loss: float, overrides: list) -> str:
        folder = tmp_path / name / f"{arch}_s{seed}"
        folder.mkdir(parents=True)
        pipe = str(folder / "work" / arch / "pipeline")
        doc = {"runs": {arch: {"eval_loss": loss, "params": 1.3e6, "step": 1200, "pipeline": pipe}},
               "overrides": {"lightnet": overrides if arch == "lightnet" else [],
                             "dit": overrides if arch == "dit" else []}}
        (folder / f"runs_{arch}.json").write_text(json.dumps(doc))
        return pipe

    p0 = run("base", "lightnet", 0, 0.05, [])
    p1 = run("base", "lightnet", 1, 0.06, [])
    q0 = run("base", "dit", 0, 0.04, [])
    run("nogate", "lightnet", 0, 0.07, ["model.kwargs.gate_rank=0"])  # trained, not scored yet
    fid = {"pipelines": [{"pipeline": p0, "fid_proxy": 40.0, "label_acc": 0.3},
                         {"pipeline": q0, "fid_proxy": 15.0, "label_acc": 0.85}]}
    (tmp_path / "base" / "fid_s0.json").write_text(json.dumps(fid))
    rel = Path(p1).relative_to(Path.cwd()) if Path(p1).is_relative_to(Path.cwd()) else Path(p1)
    (tmp_path / "base" / "fid_s1.json").write_text(json.dumps(
        {"pipelines": [{"pipeline": str(rel), "fid_proxy": 50.0, "label_acc": 0.2}]}))
    table = dit_study.collect(tmp_path)
    assert table[("lightnet", ())]["fid_proxy"] == [40.0, 50.0]
    assert table[("lightnet", ("model.kwargs.gate_rank=0",))] == {"eval_loss": [0.07], "params": [1.3e6],
                                                                  "step": [1200.0]}
    assert dit_study.main([str(tmp_path), "--out", str(tmp_path / "docs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| LightNet-DiT | 1.30M | 45.0 ± 7.1 | 0.0550 ± 0.0071 | 25.0 ± 7.1 |")
    assert lines[3].startswith("| LightNet-DiT (gate_rank=0) | 1.30M | — | 0.0700 | — |")
    assert lines[4].startswith("| diffusers DiT | 1.30M | 15.0 | 0.0400 | 85.0 |")
    assert (tmp_path / "docs" / "bars.png").stat().st_size > 1000
    (tmp_path / "base" / "fid_s2.json").write_text(json.dumps(
        {"pipelines": [{"pipeline": str(tmp_path / "elsewhere"), "fid_proxy": 1.0, "label_acc": 1.0}]}))
    with pytest.raises(ValueError, match="without a training run"):
        dit_study.collect(tmp_path)
