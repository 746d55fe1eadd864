"""benchmarks/models.py on the CPU at a tiny size: every part runs both models and writes its JSON / Markdown;
the vision models trace with fullgraph=True (no graph break). No timing is asserted."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import models


def _rows(tmp_path: Path, part: str, *args: str):
    assert models.main([part, "--smoke", "--out", str(tmp_path), *args]) == 0
    return json.loads((tmp_path / f"models_{part}.json").read_text())["rows"]


def test_vision_trains_and_infers_both_models_without_a_graph_break(tmp_path: Path) -> None:
    rows = _rows(tmp_path, "vision", "--compile-mode", "default", "--compile-backend", "eager", "--fullgraph")
    assert {(r["kind"], r["model"]) for r in rows} == {(k, m) for k in ("train", "latency") for m in models.VISION}
    assert all(r["status"] == "ok" and r["ms"] > 0 for r in rows)
    assert all(r["img_per_s"] > 0 for r in rows if r["kind"] == "train")
    assert "speed ratio" in (tmp_path / "models_vision.md").read_text()


def test_dit_trains_and_denoises_both_models(tmp_path: Path) -> None:
    rows = _rows(tmp_path, "dit")
    assert {(r["kind"], r["model"], r["batch"]) for r in rows} == {
        ("train", m, 2) for m in ("LightNet-DiT-S/2", "DiT-S/2")} | {("denoise", m, 2) for m in ("LightNet-DiT-S/2", "DiT-S/2")}
    assert all(r["status"] == "ok" and r["ms"] > 0 and r["latent"] == 8 for r in rows)
    with pytest.raises(SystemExit):
        models.main(["dit", "--device", "cpu", "--sizes", "60", "--batches", "1"])  # not a multiple of 8 × patch


def test_stats_count_parameters_and_flops(tmp_path: Path) -> None:
    rows = _rows(tmp_path, "stats")
    assert [r["model"] for r in rows] == ["lightnet_tiny", "vit_tiny_patch16_224"]
    assert all(5 < r["params_m"] < 7 and r["gmacs"] > 0 for r in rows)


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
def test_profile_categorizes_kernel_names(name: str, category: str) -> None:
    assert models.categorize(name) == category


@pytest.mark.slow  # ~15 s on 2 cores; the seg part of benchmarks/models.py
def test_seg_trains_both_encoders_with_the_same_decoder(tmp_path: Path) -> None:
    pytest.importorskip("segmentation_models_pytorch")
    rows = _rows(tmp_path, "seg")
    assert {(r["kind"], r["model"], r["size"]) for r in rows} == {("train", m, 64) for m in models.VISION}
    assert all(r["status"] == "ok" and r["ms"] > 0 and r["img_per_s"] > 0 for r in rows)
    assert "speed ratio" in (tmp_path / "models_seg.md").read_text()


def test_video_trains_every_variant_and_compares_lightnet_with_each_peer(tmp_path: Path) -> None:
    rows = _rows(tmp_path, "video")
    assert {(r["model"], r["size"], r["tokens"]) for r in rows} == {(m, 4, 32) for m in models.VIDEO}
    assert all(r["status"] == "ok" and r["ms"] > 0 and r["clips_per_s"] > 0 for r in rows)
    table = (tmp_path / "models_video.md").read_text()
    assert "lightnet / vit speed" in table and "lightnet / scan6 speed" in table
    with pytest.raises(SystemExit):  # LightNet first: the ratios are LightNet's over each peer's
        models.main(["video", "--smoke", "--models", "vit", "lightnet"])
    with pytest.raises(SystemExit):
        models.main(["vision", "--smoke", "--models", "lightnet_small"])  # vision compares exactly two models
