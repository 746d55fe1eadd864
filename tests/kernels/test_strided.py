"""The non-causal Triton kernels read strided q, k, v (slices of a fused qkv projection) in place.

Checked under ``TRITON_INTERPRET=1`` in one worker subprocess (this module is that worker, like
``test_triton_interpret.py``):
    * forward ``(o, S, z)`` and gradients ``(dq, dk, dv)`` with q, k, v as slices of one ``[B, N, 3, H, D]`` tensor,
      or with k / v of strides different from q's (padding mask, MD-LRPE, initial state, several token ranges),
      are bit-identical to the results with contiguous copies (same kernels, same reduction order) and match the
      fp64 reference;
    * no ``clone`` / ``copy_`` runs in the non-causal wrapper or backward for such slices, and the kernels get the
      slices' own data pointers; a head-strided layout (``[B, H, N, D]`` transposed) still falls back to a copy
      (also the positive control of the op counter);
    * ``torch.library.opcheck`` of ``lightnet::noncausal_fwd`` / ``noncausal_bwd`` with strided inputs.
"""
from __future__ import annotations

import collections
import importlib.util
import json
import os
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Tuple

if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

COPY_OPS = ("clone", "copy_", "_to_copy", "contiguous")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# ---------------------------------------------------------------------------------------------- interpreter worker
def _layouts(name: str, B: int, N: int, H: int, D: int, E: int, g: torch.Generator) -> List[torch.Tensor]:
    """``[q, k, v]`` leaf-derived views of one layout; ``.grad`` is taken on the returned tensors' bases.

    ``fused``: q, k, v slices of one ``[B, N, 3, H, D]`` tensor (token stride 3·H·D); ``mixed``: q contiguous,
    k a slice of a ``[B, N, 2, H, D]`` tensor, v a column slice of a ``[B, N, H·E + 7]`` tensor (odd token
    stride), each of a different layout; ``head_major``: k, v transposed from ``[B, H, N, X]`` (head stride N·X, not
    usable in place: copied).
    """
    if name == "fused":
        assert D == E
        qkv = torch.randn(B, N, 3, H, D, generator=g)
        return [qkv[:, :, i] for i in range(3)]
    if name == "mixed":
        q = torch.randn(B, N, H, D, generator=g)
        k = torch.randn(B, N, 2, H, D, generator=g)[:, :, 1]
        v = torch.randn(B, N, H * E + 7, generator=g)[:, :, 3:3 + H * E].view(B, N, H, E)
        return [q, k, v]
    if name == "head_major":
        return [torch.randn(B, H, N, X, generator=g).transpose(1, 2) for X in (D, D, E)]
    raise ValueError(name)


def _run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kw: Dict, seed: int, triton: bool = True) -> Tuple:
    """``(o, S, z, dq, dk, dv)`` of one call (loss touching o, S and z); q, k, v are detached to leaves that keep
    their strides, and the gradients are taken with ``autograd.grad`` (as the op returns them, no re-layout)."""
    from lightnet.kernels.api import triton_attention
    from lightnet.kernels.reference import additive_attention_torch

    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    fn = triton_attention if triton else additive_attention_torch
    o, (S, z) = fn(*leaves, causal=False, scale=0.7, **kw)
    g = torch.Generator().manual_seed(seed + 1)
    w = [torch.randn(t.shape, generator=g) for t in (o, S, z)]
    loss = sum((a.double() * b.double()).sum() for a, b in zip((o, S, z), w))
    grads = torch.autograd.grad(loss, leaves)
    return (o.detach(), S.detach(), z.detach(), *grads)


def _strided_vs_contiguous(layout: str, B: int, N: int, H: int, D: int, E: int, extras: bool,
                           seed: int = 0) -> Dict[str, float]:
    """Per output: ``exact`` (1.0 = strided inputs give bit-identical results to contiguous copies), the error of the
    strided run against the fp64 reference, and ``strided`` (1.0 = the inputs really were not contiguous)."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = _layouts(layout, B, N, H, D, E, g)
    kw: Dict = {}
    if extras:
        mask = torch.rand(B, N, generator=g) < 0.3
        mask[0] = False
        theta = torch.rand(N, D, generator=g) * 6.0
        state = (torch.randn(B, H, 2 * D, E, generator=g), torch.randn(B, H, D, generator=g))
        kw = dict(key_padding_mask=mask, lrpe_theta=theta, initial_state=state)
    strided = _run(q, k, v, kw, seed)
    contig = _run(q.contiguous(), k.contiguous(), v.contiguous(), kw, seed)
    ref_kw = dict(kw)
    if extras:
        ref_kw["initial_state"] = tuple(s.double() for s in kw["initial_state"])
        ref_kw["lrpe_theta"] = kw["lrpe_theta"].double()
    ref = _run(q.double(), k.double(), v.double(), ref_kw, seed, triton=False)
    out: Dict[str, float] = {"strided": float(not any(t.is_contiguous() for t in (k, v)))}
    for n, a, b, r in zip(("o", "S", "z", "dq", "dk", "dv"), strided, contig, ref):
        out[f"exact_{n}"] = float(torch.equal(a, b))
        out[f"ref_{n}"] = _rel(a, r)
    out["grads_contiguous"] = float(all(t.is_contiguous() for t in strided[3:]))
    return out


class _CopyCounter(TorchDispatchMode):
    """Counts aten ops by name outside kernel launches (the interpreter's own tensor traffic is not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()
        self.paused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        if not self.paused:
            self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


class _Recorder:
    """Stands in for a ``Launcher``: records the data pointers of the tensor arguments of each launch and runs the
    kernel with the op counter paused."""

    def __init__(self, name: str, launcher, log: List[Tuple[str, List[int]]], counter: List) -> None:
        self.name, self.launcher, self.log, self.counter = name, launcher, log, counter

    def __getitem__(self, grid):
        def launch(*args, **meta):
            self.log.append((self.name, [a.data_ptr() for a in args if isinstance(a, torch.Tensor)]))
            mode = self.counter[0]
            if mode is not None:
                mode.paused += 1
            try:
                return self.launcher[grid](*args, **meta)
            finally:
                if mode is not None:
                    mode.paused -= 1
        return launch


def _copies_in_call(layout: str, N: int = 40) -> Dict[str, object]:
    """Copy ops (outside the kernels) in one forward and one backward through the Triton backend of
    ``additive_attention``, and whether the non-causal kernels got the k / v slices' own pointers."""
    from lightnet.kernels.api import triton_attention
    from lightnet.kernels.noncausal import kernels as tn

    g = torch.Generator().manual_seed(5)
    B, H, D = 2, 2, 16
    q, k, v = (t.detach().requires_grad_() for t in _layouts(layout, B, N, H, D, D, g))
    log: List[Tuple[str, List[int]]] = []
    counter: List = [None]
    saved = dict(tn._LAUNCH)
    tn._LAUNCH.update({n: _Recorder(n, l, log, counter) for n, l in saved.items()})
    try:
        fwd, bwd = _CopyCounter(), _CopyCounter()
        counter[0] = fwd
        with fwd:
            o, _ = triton_attention(q, k, v, causal=False, scale=0.7)
        do = torch.randn(o.shape, generator=g)
        counter[0] = bwd
        with bwd:
            torch.autograd.grad(o, (q, k, v), do)
    finally:
        tn._LAUNCH.update(saved)
    ptrs = {n: p for n, p in log}
    out: Dict[str, object] = {
        "fwd_copies": sum(fwd.counts[n] for n in COPY_OPS),
        "bwd_copies": sum(bwd.counts[n] for n in COPY_OPS),
    }
    # argument order: fwd (Q, K, V, ...), bwd dq kernel (Q, K, V, DO, ...)
    out["fwd_ptrs_in_place"] = float(ptrs["_nc_fwd_kernel"][:3] == [t.data_ptr() for t in (q, k, v)])
    out["bwd_ptrs_in_place"] = float(ptrs["_nc_bwd_dq_kernel"][:3] == [t.data_ptr() for t in (q, k, v)])
    return out


def _layout_predicate() -> Dict[str, float]:
    """``in_kernel_layout`` on typical layouts (1.0 = usable in place) and its error for a non-4-D tensor."""
    from lightnet.kernels.noncausal import in_kernel_layout, kernel_layout

    B, N, H, D = 2, 5, 3, 4
    qkv = torch.randn(B, N, 3, H, D)
    x = torch.randn(B, N, H, D)
    out = {
        "contiguous": float(in_kernel_layout(x)),
        "fused_slice": float(in_kernel_layout(qkv[:, :, 1])),
        "token_major": float(in_kernel_layout(torch.randn(N, B, H, D).transpose(0, 1))),
        "head_major": float(in_kernel_layout(torch.randn(B, H, N, D).transpose(1, 2))),
        "last_dim_strided": float(in_kernel_layout(torch.randn(B, N, H, 2 * D)[..., ::2])),
        "one_head_any_head_stride": float(in_kernel_layout(torch.randn(B, 1, N, D).transpose(1, 2))),
        "slice_kept": float(kernel_layout(qkv[:, :, 2]).data_ptr() == qkv[:, :, 2].data_ptr()),
        "fallback_contiguous": float(kernel_layout(x.transpose(1, 2).contiguous().transpose(1, 2)).is_contiguous()),
    }
    try:
        in_kernel_layout(torch.randn(B, N, H * D))
        out["rejects_3d"] = 0.0
    except ValueError as exc:
        out["rejects_3d"] = float("[B, N, H, X]" in str(exc))
    return out


def _opcheck_strided(op_name: str) -> Dict[str, str]:
    """``torch.library.opcheck`` of a non-causal op with q, k, v slices of one fused tensor (with all options)."""
    from lightnet.kernels.noncausal import op as ops

    g = torch.Generator().manual_seed(0)
    B, N, H, D = 1, 37, 2, 16
    qkv = torch.randn(B, N, 3, H, D, generator=g).requires_grad_()
    q, k, v = qkv.unbind(2)
    mask = torch.rand(B, N, generator=g) < 0.3
    theta = torch.rand(N, D, generator=g) * 6.0
    S0, z0 = torch.randn(B, H, 2 * D, D, generator=g), torch.randn(B, H, D, generator=g)
    args: Tuple = (q, k, v, 0.7, mask, theta, S0, z0)
    if op_name == "noncausal_bwd":
        qd, kd, vd = qkv.detach().unbind(2)
        o, S, z = ops.noncausal_fwd(qd, kd, vd, 0.7, mask, theta, S0, z0)
        do = torch.randn(B, N, 2 * H, D, generator=g)[:, :, ::2]  # a strided dO as well
        args = (do, torch.randn(S.shape, generator=g), None, qd, kd, vd, S, z, 0.7, mask, theta)
    return dict(torch.library.opcheck(getattr(ops, op_name), args))


CASES: Dict[str, Dict] = {
    "fused_one_range": dict(layout="fused", B=2, N=21, H=2, D=16, E=16, extras=False),
    "fused_all_options_split": dict(layout="fused", B=2, N=100, H=2, D=16, E=16, extras=True),
    "mixed_all_options_split": dict(layout="mixed", B=2, N=100, H=2, D=16, E=32, extras=True),
    "mixed_one_range": dict(layout="mixed", B=1, N=30, H=3, D=16, E=24, extras=True),
    "head_major_fallback": dict(layout="head_major", B=2, N=50, H=2, D=16, E=16, extras=True),
}

JOBS: Dict[str, Callable[[], object]] = {
    **{f"equal/{name}": (lambda a=args: _strided_vs_contiguous(**a)) for name, args in CASES.items()},
    "copies/noncausal_fused": lambda: _copies_in_call("fused"),
    "copies/noncausal_fused_split": lambda: _copies_in_call("fused", N=100),
    "copies/noncausal_head_major": lambda: _copies_in_call("head_major"),
    "layout_predicate": _layout_predicate,
    "opcheck/noncausal_fwd": lambda: _opcheck_strided("noncausal_fwd"),
    "opcheck/noncausal_bwd": lambda: _opcheck_strided("noncausal_bwd"),
}


def _worker() -> None:
    report: Dict[str, object] = {}
    for name, job in JOBS.items():
        try:
            report[name] = job()
        except Exception as exc:  # reported to the pytest side, which fails that case
            report[name] = f"{type(exc).__name__}: {str(exc)[:2000]}"
    print("REPORT" + json.dumps(report))


# ---------------------------------------------------------------------------------------------- pytest side
pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


@pytest.fixture(scope="module")
def report() -> Dict[str, object]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=900, cwd=root)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT")]
    assert proc.returncode == 0 and lines, f"interpreter worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("REPORT"):])


def _get(report: Dict[str, object], name: str) -> Dict:
    got = report[name]
    assert isinstance(got, dict), got
    return got


@pytest.mark.parametrize("name", list(CASES))
def test_strided_inputs_equal_contiguous_copies_and_reference(report, name):
    got = _get(report, f"equal/{name}")
    assert got["strided"] == 1.0, got
    assert got["grads_contiguous"] == 1.0, got
    not_exact = [n for n in ("o", "S", "z", "dq", "dk", "dv") if got[f"exact_{n}"] != 1.0]
    assert not not_exact, f"strided results differ from contiguous copies in {not_exact}: {got}"
    bad = {n: got[f"ref_{n}"] for n in ("o", "S", "z", "dq", "dk", "dv") if not got[f"ref_{n}"] <= 1e-4}
    assert not bad, f"relative errors against the fp64 reference above 1e-4: {bad}"


@pytest.mark.parametrize("name", ["copies/noncausal_fused", "copies/noncausal_fused_split"])
def test_noncausal_wrapper_reads_fused_qkv_slices_in_place(report, name):
    got = _get(report, name)
    assert got == {"fwd_copies": 0, "bwd_copies": 0, "fwd_ptrs_in_place": 1.0, "bwd_ptrs_in_place": 1.0}, got


def test_unusable_layout_is_still_copied(report):
    """Head-major q, k, v are copied once each (also the positive control: the counter sees the wrapper's copies)."""
    got = _get(report, "copies/noncausal_head_major")
    assert got["fwd_copies"] == 3 and got["fwd_ptrs_in_place"] == 0.0, got


def test_layout_predicate(report):
    assert _get(report, "layout_predicate") == {
        "contiguous": 1.0, "fused_slice": 1.0, "token_major": 1.0, "head_major": 0.0, "last_dim_strided": 0.0,
        "one_head_any_head_stride": 1.0, "slice_kept": 1.0, "fallback_contiguous": 1.0, "rejects_3d": 1.0,
    }


@pytest.mark.parametrize("op", ["noncausal_fwd", "noncausal_bwd"])
def test_opcheck_with_strided_inputs(report, op):
    got = _get(report, f"opcheck/{op}")
    assert all(v == "SUCCESS" for v in got.values()) and len(got) >= 4, got


if __name__ == "__main__":
    _worker()
