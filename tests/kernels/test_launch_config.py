"""Launch parameters of the Triton kernels, checked without a GPU: the heuristics as a GPU gets them (non-causal
warps by state width, pipeline stages, cos / sin table, inline partial sums) and the launch dataclasses
(:class:`~lightnet.kernels.noncausal.NonCausalLaunch`, :class:`~lightnet.kernels.causal.CausalLaunch`) reaching the
kernels. Launches are recorded by swapping each op's ``Launcher`` table for a recorder: nothing runs."""
from __future__ import annotations

import dataclasses
import importlib.util
from typing import List, Tuple

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


class _Recorder:
    """Stands in for a ``Launcher``: ``rec[grid](*args, **meta)`` appends ``(name, grid, args, meta)``."""

    def __init__(self, name: str, log: List[tuple]) -> None:
        self.name, self.log = name, log

    def __getitem__(self, grid):
        return lambda *args, **meta: self.log.append((self.name, tuple(grid), args, meta))


@pytest.fixture()
def recorded(monkeypatch) -> List[Tuple[str, tuple, tuple, dict]]:
    """Every launch of the non-causal and causal ops recorded (not run), on a device of 132 SMs."""
    from lightnet.kernels.causal import kernels as ck
    from lightnet.kernels.causal import scan as cs
    from lightnet.kernels.noncausal import kernels as nk

    log: List[tuple] = []
    for module in (nk, ck, cs):
        for name in list(module._LAUNCH):
            monkeypatch.setitem(module._LAUNCH, name, _Recorder(name, log))
        monkeypatch.setattr(module, "num_sms", lambda device: 132)
    return log


def _gpu_heuristics():
    from lightnet.kernels.noncausal import kernels as nk

    if nk.interpreting():
        pytest.skip("the interpreter uses one launch configuration")
    return nk


def _inputs(B: int, N: int, H: int, D: int, E: int, dtype: torch.dtype = torch.bfloat16, lrpe: bool = False):
    """Zero ``q, k [B, N, H, D]``, ``v [B, N, H, E]`` and the angle table (nothing is computed)."""
    q, k, v = (torch.zeros(B, N, H, X, dtype=dtype) for X in (D, D, E))
    return q, k, v, (torch.zeros(N, D) if lrpe else None)


def test_noncausal_warps_follow_the_state_width() -> None:
    tn = _gpu_heuristics()
    for backward in (False, True):  # 64·64 states (no LRPE): 4 warps both ways; LRPE at D = E = 32 too
        assert tn._launch_config(64, 64, False, torch.bfloat16, backward) == (64, {"num_warps": 4})
        assert tn._launch_config(32, 32, True, torch.bfloat16, backward) == (64, {"num_warps": 4})
        assert tn._launch_config(128, 128, True, torch.float32, backward) == (32, {"num_warps": 8, "num_stages": 1})
    # one pipeline stage for fp32 / fp16 LRPE states of 2·64·128 values and up (shared memory), not for bf16 / plain
    assert tn._launch_config(128, 64, True, torch.float32)[1].get("num_stages") == 1
    assert tn._launch_config(64, 128, True, torch.float16, True)[1].get("num_stages") == 1
    assert "num_stages" not in tn._launch_config(128, 64, True, torch.bfloat16)[1]
    assert "num_stages" not in tn._launch_config(128, 64, False, torch.float32)[1]
    # LRPE 2·64·64 states: 4 warps forward, 16 backward (4-warp backward spills on sm_90)
    assert tn._launch_config(64, 64, True, torch.bfloat16) == (64, {"num_warps": 4})
    assert tn._launch_config(64, 64, True, torch.bfloat16, backward=True) == (64, {"num_warps": 16})


def test_noncausal_launch_values_replace_the_heuristic_per_direction() -> None:
    tn = _gpu_heuristics()
    launch = tn.NonCausalLaunch(num_warps=8)
    assert tn._launch_config(64, 64, True, torch.bfloat16, launch=launch)[1]["num_warps"] == 8
    assert tn._launch_config(64, 64, True, torch.bfloat16, backward=True, launch=launch)[1]["num_warps"] == 16
    launch = tn.NonCausalLaunch(bwd_num_warps=2, block_n=32, num_stages=2)
    assert tn._launch_config(64, 64, True, torch.bfloat16, backward=True, launch=launch) == (
        32, {"num_warps": 2, "num_stages": 2})
    assert tn._launch_config(64, 64, True, torch.bfloat16, launch=launch) == (32, {"num_warps": 4, "num_stages": 2})


def test_wide_fp16_lrpe_backward_keeps_the_inline_partial_sum(recorded) -> None:
    """fp16 with MD-LRPE at D = E = 128 on a long sequence: the backward caps its ranges at MAX_INLINE_PARTIALS so
    that the dk / dv launch sums the partials itself (the separate-sum variant needs more shared memory than sm_90
    has); bf16 keeps the full split."""
    tn = _gpu_heuristics()

    def dkdv(dtype: torch.dtype) -> tuple:
        recorded.clear()
        q, k, v, theta = _inputs(2, 20000, 2, 128, 128, dtype, lrpe=True)
        o, S, z = tn.noncausal_forward(q, k, v, 1.0, None, theta, None)
        tn.noncausal_backward(torch.zeros_like(q[..., :128]), None, None, q, k, v, S, z, 1.0, None, theta)
        launches = [(meta, args) for name, grid, args, meta in recorded if name == "_nc_bwd_dkdv_kernel"]
        assert len(launches) == 1
        meta, args = launches[0]
        return meta["SUM_PARTIALS"], args[-2]  # (sums the partials itself, number of ranges)

    assert dkdv(torch.float16) == (True, tn.MAX_INLINE_PARTIALS)
    inline, splits = dkdv(torch.bfloat16)
    assert not inline and splits > tn.MAX_INLINE_PARTIALS


def test_trig_table_is_the_default_for_narrow_lrpe_heads_only(recorded) -> None:
    """The precomputed cos / sin table (the faster form) is the default for D <= 64, not for D = 128 (its fused
    backward would ask more shared memory than sm_90 has), irrelevant without LRPE, and a launch can ask for either;
    the recorded launches carry the TRIG flag accordingly."""
    from lightnet.kernels.noncausal import kernels as tn

    assert tn.use_trig_table(True, 64) and tn.use_trig_table(True, 32)
    assert not tn.use_trig_table(True, 128) and not tn.use_trig_table(False, 64)
    assert not tn.use_trig_table(True, 64, tn.NonCausalLaunch(trig_table=False))
    assert tn.use_trig_table(True, 128, tn.NonCausalLaunch(trig_table=True))
    assert not tn.use_trig_table(False, 64, tn.NonCausalLaunch(trig_table=True))

    def trig_flags(D: int) -> set:
        recorded.clear()
        q, k, v, theta = _inputs(8, 196, 2, D, 64, lrpe=True)
        tn.noncausal_forward(q, k, v, 1.0, None, theta, None)
        return {meta.get("TRIG") for name, grid, args, meta in recorded}

    assert trig_flags(64) == {True}
    assert trig_flags(128) == {False}


def test_noncausal_launch_dataclass_reaches_the_kernels(recorded) -> None:
    """Every field of NonCausalLaunch shows in the recorded launches (forward and backward)."""
    from lightnet.kernels.noncausal import NonCausalLaunch, noncausal_backward, noncausal_forward

    launch = NonCausalLaunch(block_n=32, num_warps=2, bwd_num_warps=8, num_stages=3, splits=3, trig_table=False,
                             max_inline_partials=0)
    q, k, v, theta = _inputs(2, 300, 2, 16, 16, torch.float32, lrpe=True)
    o, S, z = noncausal_forward(q, k, v, 1.0, None, theta, None, launch=launch)
    fwd = list(recorded)
    recorded.clear()
    noncausal_backward(torch.zeros_like(o), None, None, q, k, v, S, z, 1.0, None, theta, launch=launch)
    bwd = list(recorded)
    names = lambda log: [name for name, *_ in log]  # noqa: E731
    # max_inline_partials=0: a separate merge launch, and the output pass does not merge
    assert names(fwd) == ["_nc_fwd_kernel", "_nc_merge_kernel", "_nc_out_kernel"]
    assert names(bwd) == ["_nc_bwd_dq_kernel", "_nc_bwd_dkdv_kernel"]
    for name, grid, args, meta in fwd + bwd:
        if name == "_nc_merge_kernel":
            continue
        assert grid == (3, 4), (name, grid)  # 3 ranges, B · H = 4
        assert meta["BLOCK_N"] == 32 and meta["num_stages"] == 3 and meta["TRIG"] is False, (name, meta)
        assert meta["num_warps"] == (8 if name.startswith("_nc_bwd") else 2), (name, meta)
    assert fwd[2][3]["MERGE"] is False and bwd[1][3]["SUM_PARTIALS"] is False
    assert dataclasses.is_dataclass(launch) and dataclasses.fields(launch)
    with pytest.raises(dataclasses.FrozenInstanceError):
        launch.splits = 1  # type: ignore[misc]


def test_causal_launch_dataclass_reaches_the_kernels(recorded) -> None:
    """Every field of CausalLaunch shows in the recorded launches: chunk (BLOCK_C and the chunk count), segment
    (grid, FLAG's shape), warps per direction, stages, and the segment scans' tiles."""
    from lightnet.kernels.causal import CausalLaunch, causal_backward, causal_forward

    launch = CausalLaunch(chunk=32, segment=3, num_warps=2, bwd_num_warps=16, num_stages=3, scan_block_j=2,
                          scan_block_x=128)
    q, k, v, _ = _inputs(1, 600, 2, 16, 16, torch.float32)
    o, S, z, saved = causal_forward(q, k, v, 1.0, None, None, None, launch=launch)
    assert [t.shape for t in saved][2:] == [(2, 600, 16), (2, 19, 16), (2, 19, 16), (2, 7, 3)]  # 19 chunks, 7 segments
    causal_backward(torch.zeros_like(o), None, None, q, k, v, S, saved, 1.0, None, None, launch=launch)
    walks = {"_c_seg_state_kernel", "_c_seg_out_kernel", "_c_seg_bwd_dq_kernel", "_c_seg_bwd_dkdv_kernel"}
    seen = set()
    for name, grid, args, meta in recorded:
        seen.add(name)
        if name in walks:
            assert grid == (7, 2) and meta["BLOCK_C"] == 32 and meta["num_stages"] == 3, (name, grid, meta)
            assert meta["num_warps"] == (16 if "_bwd_" in name else 2), (name, meta)
        else:  # the segment scans
            assert meta["BLOCK_J"] == 2 and meta["BLOCK_X"] == 128, (name, meta)
    assert seen == walks | {"_c_scan_fwd_kernel", "_c_scan_bwd_kernel"}


def test_causal_heuristics_without_a_launch(recorded) -> None:
    """The defaults a GPU gets (132 SMs): chunks of 32, one segment for short sequences with many heads, 4 forward /
    8 backward warps at D = 64, no num_stages option."""
    _gpu_heuristics()
    from lightnet.kernels.causal import causal_backward, causal_forward

    q, k, v, _ = _inputs(64, 1024, 6, 64, 64)
    o, S, z, saved = causal_forward(q, k, v, 1.0, None, None, None)
    causal_backward(torch.zeros_like(o), None, None, q, k, v, S, saved, 1.0, None, None)
    assert saved[5].shape == (384, 1, 32)  # one segment of all 32 chunks: no scans
    assert {name for name, *_ in recorded} == {"_c_seg_state_kernel", "_c_seg_out_kernel", "_c_seg_bwd_dq_kernel",
                                               "_c_seg_bwd_dkdv_kernel"}
    for name, grid, args, meta in recorded:
        assert meta["BLOCK_C"] == 32 and "num_stages" not in meta, (name, meta)
        assert meta["num_warps"] == (8 if "_bwd_" in name else 4), (name, meta)
