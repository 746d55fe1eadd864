"""The end-to-end benchmark scripts (bench_models.py, profile_step.py, evidence/bench_scan_baselines.py) run on
the CPU at a tiny size and write their JSON: a GPU run must not be the first place a changed signature shows up.
No timing is asserted, only that every row ran and the tables were printed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `benchmarks.*`

from benchmarks import bench_dit_latency, bench_models, profile_step  # noqa: E402
from benchmarks.evidence import bench_scan_baselines  # noqa: E402

TINY = ["--device", "cpu", "--sizes", "32", "--batches", "2", "--iters", "1", "--warmup", "1"]


def test_bench_scan_baselines_runs_every_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert bench_scan_baselines.main(TINY + ["--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench_scan_baselines.json").read_text())
    models = {row["model"] for row in result["train"]}
    assert models == {"lightnet_small", "evidence_small_scan2", "evidence_small_scan4"}
    assert all(row["status"] == "ok" and row["img_per_s"] > 0 and row["mode"] == "eager" for row in result["train"])
    assert "| 32 | 2 |" in capsys.readouterr().out


def test_bench_scan_baselines_rejects_unknown_compile_mode() -> None:
    with pytest.raises(SystemExit):
        bench_scan_baselines.main(TINY + ["--compile-mode", "fastest"])


def test_bench_models_runs_both_models(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench_models.main(TINY + ["--latency-batches", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "bench_models.json").read_text())
    assert {row["model"] for row in result["train"]} == {"lightnet_small", "vit_small_patch16_224"}
    assert all(row["status"] == "ok" and row["step_ms"] > 0 for row in result["train"])
    assert result["env"]["dynamo_graph_breaks"] == 0, result["env"]["dynamo_break_reasons"]
    assert "speed ratio" in capsys.readouterr().out


@pytest.mark.parametrize("name, category", [
    ("_nc_fwd_kernel", "LightNet recurrence"),
    ("_c_seg_bwd_dkdv_kernel", "LightNet recurrence"),
    ("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NTN", "GEMM"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "GEMM"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4> >", "softmax attention"),
    ("triton_red_fused__fused_rms_norm_backward_mul_12", "normalisation"),
    ("triton_poi_fused_add_mul_sigmoid_3", "fused elementwise (inductor)"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor>", "optimizer"),
    ("void regular_fft<64u, 8u, 1u, 4u>", "FFT"),
    ("void at::native::elementwise_kernel<128, 2, ...>", "elementwise (aten)"),
    ("some_unknown_kernel", "other"),
])
def test_profile_step_categorizes_kernel_names(name: str, category: str) -> None:
    assert profile_step.categorize(name) == category


@pytest.mark.parametrize("family, size", [("vision", "32"), ("dit", "8")])
def test_profile_step_runs_both_models(family: str, size: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--device", "cpu", "--family", family, "--sizes", size, "--batches", "2", "--steps", "1", "--warmup", "1",
            "--out", str(tmp_path)]
    assert profile_step.main(argv) == 0
    rows = json.loads((tmp_path / f"profile_step_{family}_eager.json").read_text())["rows"]
    assert len(rows) == 2 and all(r["gpu_ms"] > 0 and r["wall_ms"] > 0 for r in rows)
    assert all(abs(sum(r["categories"].values()) - r["gpu_ms"]) < 1e-6 * r["gpu_ms"] + 1e-9 for r in rows)
    assert all(r["categories"].get("GEMM", 0) > 0 for r in rows)
    assert "busy per step" in capsys.readouterr().out
    # redraw from the JSON without running anything: tables, tags and the stacked-bar plot
    js = str(tmp_path / f"profile_step_{family}_eager.json")
    png = tmp_path / "steps.png"
    assert profile_step.main(["--from-json", js, js, "--tags", "a", "b", "--plot", str(png)]) == 0
    assert png.stat().st_size > 1000
    with pytest.raises(SystemExit):
        profile_step.main(["--from-json", js, "--tags", "a", "b"])


def test_profile_step_op_tables_name_the_shapes(tmp_path: Path) -> None:
    argv = ["--device", "cpu", "--sizes", "32", "--batches", "2", "--steps", "1", "--warmup", "1", "--op-tables",
            "--models", "lightnet_small", "--out", str(tmp_path)]
    assert profile_step.main(argv) == 0
    table = (tmp_path / "ops_lightnet_small_32.txt").read_text()
    assert "Input Shapes" in table and "aten::mm" in table and "[2048, 384]" in table  # GLU fc1 weight: shapes named
    rows = json.loads((tmp_path / "profile_step_vision_eager.json").read_text())["rows"]
    assert rows and all("op_tables" not in r for r in rows)  # the tables go to their own file, not the JSON


def test_bench_dit_latency_runs_both_models(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--device", "cpu", "--model-size", "S", "--sizes", "64", "--batches", "1", "2", "--iters", "1",
            "--warmup", "1", "--out", str(tmp_path)]
    assert bench_dit_latency.main(argv) == 0
    rows = json.loads((tmp_path / "bench_dit_latency.json").read_text())["rows"]
    assert {(r["arch"], r["batch"]) for r in rows} == {(a, b) for a in ("lightnet", "dit") for b in (1, 2)}
    assert all(r["status"] == "ok" and r["ms"] > 0 and r["latent"] == 8 for r in rows)
    assert "LightNet / DiT time" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not divisible"):
        bench_dit_latency.main(["--device", "cpu", "--model-size", "S", "--sizes", "60", "--batches", "1"])


def test_bench_tpe_checks_both_paths_on_the_cpu(tmp_path: Path) -> None:
    from benchmarks import bench_tpe

    assert bench_tpe.main(["--device", "cpu", "--grids", "2x5", "--dim", "8", "--no-time", "--backend", "aot_eager",
                           "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bench_tpe.json").read_text())
    assert [r["path"] for r in rows] == ["fft", "direct"]
    assert all(r["status"] == "ok" and r["err_params"] < 2e-2 for r in rows)
    with pytest.raises(ValueError, match="BxS"):
        bench_tpe.parse_grid("14")


def test_two_path_table_ratios_extra_columns_and_failures() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from _report import two_path_table

    rows = [dict(path="a", B=1, status="ok", err_o=1e-3, fwd_bwd_ms=2.0, mib=3.0),
            dict(path="b", B=1, status="ok", err_o=2e-3, fwd_bwd_ms=0.5, mib=4.0),
            dict(path="a", B=2, status="ok", err_o=1e-3),
            dict(path="b", B=2, status="FAILED", err_o=0.5)]
    md = two_path_table(rows, ("B",), ("a", "b"), ("A", "B"), lambda r: f"B={r['B']}", extra=(("mib", "MiB", ".1f"),))
    lines = md.splitlines()
    assert lines[0] == "| problem | A ms | B ms | A / B | A MiB | B MiB | max err (A, B) |"
    assert lines[2] == "| B=1 | 2.000 | 0.500 | **4.00×** | 3.0 | 4.0 | 1.0e-03, 2.0e-03 |"
    assert lines[3] == "| B=2 | ok | FAILED | — | — | — | 1.0e-03, 5.0e-01 |"


def test_saved_activations_counts_what_each_module_keeps(tmp_path: Path) -> None:
    """benchmarks/saved_activations.py (a subprocess: it sets TRITON_INTERPRET=1 for LightNet's Triton path on the
    CPU): both models' tables, and the SiLU GLU's body keeps exactly its fc1 output ([N, 2 * hidden] bf16 = 4 096 B
    per token and block for lightnet_small), no silu(gate) copy."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    cmd = [sys.executable, str(root / "benchmarks" / "saved_activations.py"), "--device", "cpu", "--img-size", "64",
           "--batch", "1", "--out", str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "saved_activations.json").read_text())["rows"]
    by_model = {r["model"]: r for r in rows}
    assert set(by_model) == {"lightnet_small", "vit_small_patch16_224"}
    assert all(r["total_mib"] > 0 for r in rows)
    lightnet = by_model["lightnet_small"]["per_token_block"]
    assert lightnet["mlp"] == pytest.approx(2 * 1024 * 2)
    assert lightnet["mlp.fc2"] == pytest.approx(1024 * 2)  # fc2 keeps its bf16 input, silu(gate) * up
    assert "| `mlp.fc1` |" in (tmp_path / "saved_activations.md").read_text()
    # --compile: each block part is one compiled region, charged as a whole; inductor keeps no more than eager
    done = subprocess.run(cmd[:-1] + [str(tmp_path / "compiled"), "--compile", "--models", "lightnet_small"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads((tmp_path / "compiled" / "saved_activations.json").read_text())["rows"]
    assert row["compiled"] and set(row["per_token_block"]) <= {"norm1", "attn", "norm2", "mlp", "(outside blocks)"}
    assert sum(row["per_token_block"].values()) <= sum(lightnet.values())


def test_bench_glu_checks_both_paths_and_counts_saved_memory(tmp_path: Path) -> None:
    """benchmarks/bench_glu.py: both GLU paths agree (its exit status) and, eager, recomputing keeps less."""
    from benchmarks import bench_glu

    argv = ["--device", "cpu", "--tokens", "512", "--dim", "32", "--iters", "1", "--out", str(tmp_path)]
    assert bench_glu.main(argv) == 0
    rows = json.loads((tmp_path / "bench_glu.json").read_text())
    assert {(r["mode"], r["path"]) for r in rows} == {(m, p) for m in ("eager", "compiled") for p in ("keep", "recompute")}
    eager = {r["path"]: r for r in rows if r["mode"] == "eager"}
    hidden_bytes = 512 * int(32 * 8 / 3) * 2  # one bf16 [N, hidden] tensor
    assert (eager["keep"]["saved_mib"] - eager["recompute"]["saved_mib"]) * 2**20 == pytest.approx(hidden_bytes)
    assert all(r["fwd_bwd_ms"] > 0 for r in rows)


def test_bench_memory_switches_trains_every_variant_with_its_switches(tmp_path: Path) -> None:
    """benchmarks/bench_memory_switches.py: ViT-S and the four cumulative LightNet variants train (CPU, eager), each
    with its own switches; eager runs recompute the output with 'always' (the 'compiled' default does nothing there)."""
    from benchmarks import bench_memory_switches as bms

    argv = ["--device", "cpu", "--sizes", "32", "--batches", "2", "--iters", "1", "--warmup", "1",
            "--compile-mode", "eager", "--out", str(tmp_path)]
    assert bms.main(argv) == 0
    rows = json.loads((tmp_path / "bench_memory_switches.json").read_text())
    assert [r["variant"] for r in rows] == ["peer", *bms.VARIANTS]
    switches = {r["variant"]: (r.get("fuse_q_act"), r.get("recompute_output"), r.get("recompute_state")) for r in rows}
    assert switches["before"] == (False, "never", False)
    assert switches["+q_silu"] == (True, "never", False)
    assert switches["+out_recompute"] == (True, "always", False)
    assert switches["+state_recompute"] == (True, "always", True)
    assert bms._switches("+out_recompute", "default")["recompute_output"] == "compiled"
    assert all(r["img_per_s"] > 0 for r in rows)
    assert "| 32 | 2 | +state_recompute |" in (tmp_path / "bench_memory_switches.md").read_text()
