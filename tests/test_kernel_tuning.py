"""Launch-configuration plumbing of the Triton kernels, checked without a GPU: the ``LIGHTNET_TRITON_TUNING``
override and the non-causal warp heuristic (MD-LRPE states: 4 warps forward, 16 backward — run I3's sweep)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

ROOT = Path(__file__).resolve().parents[1]


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


def test_wide_fp16_lrpe_backward_keeps_the_inline_partial_sum() -> None:
    """fp16 with MD-LRPE at D = E = 128 on a long sequence: the backward caps its ranges at MAX_INLINE_PARTIALS so
    that the dk / dv launch sums the partials itself (the separate-sum variant needs 278,528 B of shared memory on
    sm_90, over the 232,448 B limit; offline, benchmarks/smem_report.py); bf16 keeps the full split."""
    from lightnet.kernels import triton_noncausal as tn

    if tn.interpreting():
        pytest.skip("the interpreter uses one launch configuration")
    pytest.skip("recorded the launches with benchmarks/smem_report.py, deleted with the benchmark redesign (issue 23)")


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
