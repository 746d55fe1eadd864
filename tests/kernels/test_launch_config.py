"""Launch-configuration plumbing of the Triton kernels, checked without a GPU: the ``LIGHTNET_TRITON_TUNING``
override, the non-causal warp heuristic (MD-LRPE states: 4 warps forward, 16 backward — run I3's sweep), and the
argument parsing of ``benchmarks/sweep_lrpe.py``."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "LIGHTNET_TRITON_TUNING")}
    environ.update(env, PYTHONPATH=os.pathsep.join([str(ROOT), environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120)


def test_tuning_env_is_applied_at_import() -> None:
    code = ("from lightnet.kernels.triton_common import TUNING; "
            "from lightnet.kernels.triton_noncausal import _launch_config; import torch; "
            "print(TUNING['nc_warps'], TUNING['nc_block_n'], _launch_config(64, 64, True, torch.bfloat16))")
    proc = _python(code, LIGHTNET_TRITON_TUNING="nc_warps=4, nc_block_n=32")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "4 32 (32, {'num_warps': 4})"


@pytest.mark.parametrize("spec, message", [("nc_wraps=4", "unknown entry 'nc_wraps=4'"),
                                           ("nc_warps", "malformed or unknown entry"),
                                           ("nc_warps=four", "nc_warps must be an integer")])
def test_bad_tuning_env_names_the_problem(spec: str, message: str) -> None:
    proc = _python("import lightnet.kernels.triton_common", LIGHTNET_TRITON_TUNING=spec)
    assert proc.returncode != 0 and message in proc.stderr and "LIGHTNET_TRITON_TUNING" in proc.stderr


def test_noncausal_warps_follow_the_state_width() -> None:
    from lightnet.kernels import triton_noncausal as tn

    if tn.interpreting():
        pytest.skip("the interpreter uses one launch configuration")
    for backward in (False, True):  # 64·64 states (no LRPE): 4 warps both ways; LRPE at D = E = 32 too
        assert tn._launch_config(64, 64, False, torch.bfloat16, backward) == (64, {"num_warps": 4})
        assert tn._launch_config(32, 32, True, torch.bfloat16, backward) == (64, {"num_warps": 4})
        assert tn._launch_config(128, 128, True, torch.float32, backward) == (32, {"num_warps": 8, "num_stages": 1})
    # one pipeline stage for fp32 / fp16 LRPE states of 2·64·128 values and up (shared memory), not for bf16 / plain
    assert tn._launch_config(128, 64, True, torch.float32)[1].get("num_stages") == 1
    assert tn._launch_config(64, 128, True, torch.float16, True)[1].get("num_stages") == 1
    assert "num_stages" not in tn._launch_config(128, 64, True, torch.bfloat16)[1]
    assert "num_stages" not in tn._launch_config(128, 64, False, torch.float32)[1]
    # LRPE 2·64·64 states: 4 warps forward, 16 backward (run I3's sweep; 4-warp backward spills on sm_90)
    assert tn._launch_config(64, 64, True, torch.bfloat16) == (64, {"num_warps": 4})
    assert tn._launch_config(64, 64, True, torch.bfloat16, backward=True) == (64, {"num_warps": 16})


def test_warp_overrides_take_precedence() -> None:
    from lightnet.kernels import triton_noncausal as tn
    from lightnet.kernels.triton_common import TUNING

    if tn.interpreting():
        pytest.skip("the interpreter uses one launch configuration")
    saved = dict(TUNING)
    try:
        TUNING.update(nc_warps=8)
        assert tn._launch_config(64, 64, True, torch.bfloat16, backward=True)[1]["num_warps"] == 8
        TUNING.update(nc_bwd_warps=2)
        assert tn._launch_config(64, 64, True, torch.bfloat16, backward=True)[1]["num_warps"] == 2
        assert tn._launch_config(64, 64, True, torch.bfloat16)[1]["num_warps"] == 8
    finally:
        TUNING.clear()
        TUNING.update(saved)


def test_sweep_lrpe_parsers() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.sweep_lrpe import parse_config, parse_shape
    from lightnet.kernels.triton_common import TUNING

    before = dict(TUNING)
    assert parse_config("nc_warps=8,nc_block_n=32") == {"nc_warps": 8, "nc_block_n": 32}
    assert parse_config("-") == {} and TUNING == before  # parsing does not change the live configuration
    with pytest.raises(ValueError, match="unknown entry"):
        parse_config("warps=8")
    assert parse_shape("128x196") == (128, 196)
    with pytest.raises(ValueError, match="not a square grid"):
        parse_shape("2x200")


def test_sweep_lrpe_checks_every_config_under_the_interpreter(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "LIGHTNET_TRITON_TUNING"}
    environ.update(TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(ROOT), environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sweep_lrpe.py"), "--device", "cpu", "--no-time",
                           "--configs", "nc_warps=4;-", "--shapes", "1x16", "--out", str(tmp_path)],
                          env=environ, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    import json

    rows = json.loads((tmp_path / "sweep_lrpe.json").read_text())
    assert [r["config"] for r in rows] == ["nc_warps=4", "-"]
    assert all(r["status"] == "ok" and r["err_dk"] < 2e-2 for r in rows)


def test_wide_fp16_lrpe_backward_keeps_the_inline_partial_sum() -> None:
    """fp16 with MD-LRPE at D = E = 128 on a long sequence: the backward caps its ranges at MAX_INLINE_PARTIALS so
    that the dk / dv launch sums the partials itself (the separate-sum variant needs 278,528 B of shared memory on
    sm_90, over the 232,448 B limit; offline, benchmarks/smem_report.py); bf16 keeps the full split."""
    from lightnet.kernels import triton_noncausal as tn

    if tn.interpreting():
        pytest.skip("the interpreter uses one launch configuration")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import smem_report

    def dkdv(dtype: str) -> tuple:
        case = dict(dtype=dtype, B=2, N=20000, H=2, D=128, E=128, lrpe=True, mask=False, init=False)
        launches = [(meta, args) for name, args, meta in smem_report.record_noncausal(case, sms=132)
                    if name == "_nc_bwd_dkdv_kernel"]
        assert len(launches) == 1
        meta, args = launches[0]
        return meta["SUM_PARTIALS"], args[-2]  # (sums the partials itself, number of ranges)

    assert dkdv("fp16") == (True, tn.MAX_INLINE_PARTIALS)
    inline, splits = dkdv("bf16")
    assert not inline and splits > tn.MAX_INLINE_PARTIALS


def test_trig_table_is_the_default_for_narrow_lrpe_heads_only() -> None:
    """The precomputed cos / sin table (run J3: 1.8-2.3x faster MD-LRPE kernels) is on by default for D <= 64, off for
    D = 128 (offline, its fused backward asks 233-287 KB of shared memory on sm_90), off when TUNING says 0, and
    irrelevant without LRPE; the launches recorded for smem_report carry the TRIG flag accordingly."""
    from lightnet.kernels import triton_noncausal as tn
    from lightnet.kernels.triton_common import TUNING

    assert TUNING["nc_trig_table"] is None
    assert tn.use_trig_table(True, 64) and tn.use_trig_table(True, 32)
    assert not tn.use_trig_table(True, 128) and not tn.use_trig_table(False, 64)
    TUNING["nc_trig_table"] = 0
    try:
        assert not tn.use_trig_table(True, 64)
    finally:
        TUNING["nc_trig_table"] = None
    if tn.interpreting():
        return
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import smem_report

    def trig_flags(D: int) -> set:
        case = dict(dtype="bf16", B=8, N=196, H=2, D=D, E=64, lrpe=True, mask=False, init=False)
        return {meta.get("TRIG") for name, args, meta in smem_report.record_noncausal(case, sms=132)}

    assert trig_flags(64) == {True}
    assert trig_flags(128) == {False}


def test_bench_short_noncausal_checks_both_paths_under_the_interpreter(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "LIGHTNET_TRITON_TUNING"}
    environ.update(TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(ROOT), environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_short_noncausal.py"), "--device", "cpu",
                           "--mode", "none", "--no-time", "--shapes", "1x16", "--out", str(tmp_path)],
                          env=environ, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    import json

    rows = json.loads((tmp_path / "bench_short_noncausal.json").read_text())
    assert [r["path"] for r in rows] == ["triton", "gemm"]
    assert all(r["status"] == "ok" and r["err_dk"] < 2e-2 for r in rows)
