"""The lean launch path (``lightnet.kernels.triton_utils.Launcher``) with a stand-in kernel: no GPU needed.

A real launch needs CUDA, so these tests give ``Launcher`` an object with the interface of a ``@triton.jit`` function
(``arg_names``, ``kernel[grid](*args, **meta)`` returning the compiled kernel) and stub the CUDA device / stream
queries. They check what the GPU runs rely on: the first launch of a specialisation goes through Triton, later
launches call the compiled kernel directly with the runtime arguments followed by the constexprs in parameter order,
anything Triton specialises on (dtype, 16-byte alignment, integer divisibility / 1 / 64-bit, constexprs, launch
options) gives a new specialisation, and an incompatible Triton falls back to its own path for good.
"""
from __future__ import annotations

from typing import List

import pytest
import torch

from lightnet.kernels import triton_utils
from lightnet.kernels.triton_utils import Launcher


class _Compiled:
    """Stands for Triton's CompiledKernel: records direct launches."""

    def __init__(self, fail: bool = False) -> None:
        self.function = object()
        self.packed_metadata = object()
        self.calls: List[tuple] = []
        self.fail = fail

    def launch_metadata(self, grid, stream, *args):
        return None

    def run(self, g0, g1, g2, stream, function, packed, launch_metadata, enter, exit_, *args):
        if self.fail:
            raise TypeError("launcher signature differs")
        self.calls.append(((g0, g1, g2), stream, args))


class _Kernel:
    """Stands for a ``@triton.jit`` function with runtime parameters X, n, scale and constexpr BLOCK."""

    arg_names = ["X", "n", "scale", "BLOCK"]

    def __init__(self, fail: bool = False) -> None:
        self.triton_launches: List[tuple] = []
        self.compiled: List[_Compiled] = []
        self.fail = fail

    def __getitem__(self, grid):
        def launch(*args, **meta):
            self.triton_launches.append((grid, args, meta))
            kernel = _Compiled(self.fail)
            self.compiled.append(kernel)
            return kernel

        return launch


class _Stream:
    cuda_stream = 1234


@pytest.fixture()
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: _Stream())
    monkeypatch.setattr(triton_utils, "_INTERPRETING", False)


def test_second_launch_calls_the_compiled_kernel_with_constexprs_last(fake_cuda) -> None:
    kernel = _Kernel()
    launch = Launcher(kernel)
    x = torch.zeros(64)
    launch[(3, 2)](x, 64, 0.5, BLOCK=16, num_warps=4)
    launch[(5,)](x, 64, 0.5, BLOCK=16, num_warps=4)
    assert len(kernel.triton_launches) == 1, "the second launch must not go through Triton again"
    (compiled,) = kernel.compiled
    (grid, stream, args), = compiled.calls
    assert grid == (5, 1, 1) and stream == 1234
    assert args[0] is x and args[1:] == (64, 0.5, 16)


@pytest.mark.parametrize(
    "change",
    ["dtype", "alignment", "int_div16", "int_one", "int_64bit", "constexpr", "warps"],
)
def test_anything_triton_specialises_on_gives_a_new_specialisation(fake_cuda, change: str) -> None:
    kernel = _Kernel()
    launch = Launcher(kernel)
    base = torch.zeros(64)
    launch[(1,)](base, 64, 0.5, BLOCK=16, num_warps=4)
    x, n, block, warps = base, 64, 16, 4
    if change == "dtype":
        x = torch.zeros(64, dtype=torch.float16)
    elif change == "alignment":
        x = base[1:]  # 4 bytes off a 16-byte boundary
    elif change == "int_div16":
        n = 65
    elif change == "int_one":
        n = 1
    elif change == "int_64bit":
        n = 2**31 + 16
    elif change == "constexpr":
        block = 32
    else:
        warps = 8
    launch[(1,)](x, n, 0.5, BLOCK=block, num_warps=warps)
    assert len(kernel.triton_launches) == 2, f"a change of {change} must compile a new specialisation"


def test_same_specialisation_other_values_reuse_the_kernel(fake_cuda) -> None:
    kernel = _Kernel()
    launch = Launcher(kernel)
    launch[(1,)](torch.zeros(64), 64, 0.5, BLOCK=16, num_warps=4)
    launch[(1,)](torch.zeros(128), 128, 2.0, BLOCK=16, num_warps=4)  # 128 is divisible by 16 as 64 is
    assert len(kernel.triton_launches) == 1
    assert kernel.compiled[0].calls[0][2][1:] == (128, 2.0, 16)


def test_incompatible_triton_falls_back_to_its_own_launch_path(fake_cuda) -> None:
    kernel = _Kernel(fail=True)
    launch = Launcher(kernel)
    x = torch.zeros(64)
    launch[(1,)](x, 64, 0.5, BLOCK=16, num_warps=4)
    launch[(1,)](x, 64, 0.5, BLOCK=16, num_warps=4)  # direct call raises TypeError → Triton's path
    launch[(1,)](x, 64, 0.5, BLOCK=16, num_warps=4)  # and stays there
    assert len(kernel.triton_launches) == 3
    assert launch.enabled is False


def test_interpreter_uses_tritons_own_path(monkeypatch) -> None:
    """Under the interpreter every launch goes through Triton (which interprets it)."""
    monkeypatch.setattr(triton_utils, "_INTERPRETING", True)
    kernel = _Kernel()
    launch = Launcher(kernel)
    for _ in range(3):
        launch[(1,)](torch.zeros(64), 64, 0.5, BLOCK=16, num_warps=4)
    assert len(kernel.triton_launches) == 3 and launch.enabled is False
