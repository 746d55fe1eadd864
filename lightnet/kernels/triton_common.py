"""Shared pieces of the Triton kernels: device-side helpers and launch heuristics.

Conventions used by every kernel in this package:
    * tensors are loaded in their storage dtype (bf16 / fp16 / fp32) and converted to fp32 right after the load;
    * every normalisation statistic (max, log-sum-exp, running state) lives in fp32;
    * matrix products go through :func:`mm`, whose operand precision is picked by ``DOT``
      (``DOT_BF16`` for bf16 inputs, ``DOT_TF32`` for fp16 inputs, ``DOT_IEEE`` for fp32 inputs);
    * padded / out-of-range keys get the finite logit ``NEG_BIG`` *and* a zero weight, so an empty set of keys
      never produces NaN (the same convention as :mod:`lightnet.kernels.reference`).
"""
from __future__ import annotations

import functools
import os

from typing import Dict, Optional, Tuple

import torch
import triton
import triton.language as tl

NEG_BIG = tl.constexpr(-1.0e30)

# Launch-parameter overrides for tuning sweeps (``benchmarks/sweep_kernels.py``); None = built-in heuristic.
TUNING = {
    "nc_block_n": None, "nc_warps": None, "nc_bwd_warps": None, "nc_splits_per_sm": None, "nc_stages": None,
    "nc_two_pass": None,
    # MD-LRPE launches read a precomputed [N, 2D] cos | sin table: None / 1 = yes (default, run J3), 0 = cos / sin of
    # the angles computed in every tile
    "nc_trig_table": None,
    "nc_split_out": None,  # 1: one-range problems run the output / dk-dv pass per token block (run J3: slower)
    # non-causal calls of at most this many tokens (no initial state) run as two fused-by-inductor GEMMs while
    # torch.compile traces (lightnet.kernels.gemm_noncausal); None / 0 = never (run J7: 0.48-0.91x the kernels' speed)
    "nc_gemm_max_tokens": None,
    # 1: the non-causal backward recomputes the final state S [B, H, D', E] (fp32) from k and v instead of keeping it
    # from the forward (no initial state): 4 · D' · E / N bytes per token and head less between forward and
    # backward (1 003 B per token and block for LightNet-S at 196 tokens) for one more pass over k and v in the
    # backward; None / 0 = keep S (default until timed on a GPU). Read while torch.compile traces and passed to the
    # op as an argument, so compiled graphs (and the compile caches) follow it
    "nc_recompute_state": None,
    "nc_min_blocks": None, "c_chunk": None, "c_warps": None, "c_segment": None,
    "c_scan_j": None, "c_scan_x": None,
    "c_bwd_warps": None,  # causal backward launches; None = c_warps if set, else 8 on the zpass path, else heuristic
    # causal: None = 1 (default, lightnet.kernels.triton_causal_zpass: in-chunk z once in F1, saved, 4·D B per token
    # and head more for the backward); 0 = the memory-lean path (z recomputed per chunk); no other value
    "c_zpass": None,
    # causal chunk-walk launches: Triton's num_stages (software pipelining of their loops); None = Triton's default
    "c_stages": None,
}
TUNING_ENV = "LIGHTNET_TRITON_TUNING"


def tuning_from_env(spec: Optional[str] = None) -> Dict[str, int]:
    """Apply ``LIGHTNET_TRITON_TUNING`` (or ``spec``): comma-separated ``key=int`` pairs of :data:`TUNING`, e.g.
    ``nc_warps=4,nc_block_n=64``, so that a benchmark process can run another launch configuration than the built-in
    heuristic. Read once at import; an unknown key or a non-integer value raises ``ValueError``. Returns the
    applied values."""
    spec = os.environ.get(TUNING_ENV, "") if spec is None else spec
    applied: Dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = (x.strip() for x in item.partition("="))
        if not sep or key not in TUNING:
            raise ValueError(f"{TUNING_ENV}: malformed or unknown entry {item!r}; expected key=int with key in "
                             f"{sorted(TUNING)}")
        try:
            applied[key] = int(value)
        except ValueError:
            raise ValueError(f"{TUNING_ENV}: {key} must be an integer, got {value!r}") from None
    TUNING.update(applied)
    return applied


tuning_from_env()
DOT_BF16, DOT_IEEE, DOT_TF32 = 0, 1, 2


_INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"


def interpreting() -> bool:
    """True when Triton runs its CPU interpreter (``TRITON_INTERPRET=1``; like Triton, read once at import)."""
    return _INTERPRETING


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for non-negative integers (plain Python: cheaper on the launch path than ``triton.cdiv``)."""
    return -(-a // b)


def dot_mode(dtype: torch.dtype) -> int:
    """Operand precision of the in-kernel matrix products for inputs of ``dtype``.

    The interpreter has no bf16 arithmetic (numpy), so it always multiplies in fp32.
    """
    if interpreting():
        return DOT_IEEE
    if dtype == torch.bfloat16:
        return DOT_BF16
    if dtype == torch.float16:
        return DOT_TF32  # fp16 values are exact in tf32; the fp32 exponent range keeps the weights safe
    return DOT_IEEE


def block_size(n: int, minimum: int = 16) -> int:
    """Smallest power of two ``>= max(n, minimum)`` (``tl.dot`` needs every side ``>= 16``)."""
    n = int(n)
    return max(minimum, 1 << (n - 1).bit_length() if n > 1 else 1)


def problem_shape(
    q: torch.Tensor, v: torch.Tensor, key_padding_mask: Optional[torch.Tensor], lrpe_theta: Optional[torch.Tensor]
) -> Tuple[int, int, int, int, int, bool, int, int, int, torch.Tensor, torch.Tensor]:
    """``(B, N, H, D, E, lrpe, D', BLOCK_D, BLOCK_E, mask, theta)`` of a launch; ``q [B, N, H, D]``, ``v [..., E]``.

    ``mask`` is the padding mask viewed as uint8 and ``theta`` the angle table, each replaced by ``q`` (a valid,
    never-read pointer) when absent.
    """
    B, N, H, D = q.shape
    E = v.shape[-1]
    lrpe = lrpe_theta is not None
    mask = key_padding_mask.view(torch.uint8) if key_padding_mask is not None else q
    theta = lrpe_theta if lrpe else q
    return B, N, H, D, E, lrpe, 2 * D if lrpe else D, block_size(D), block_size(E), mask, theta


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (a small fixed number under the interpreter)."""
    if interpreting() or device.type != "cuda":
        return 2
    return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


class Launcher:
    """``Launcher(kernel)[grid](*runtime_args, **constexprs_and_options)``: a lean launch of a ``@triton.jit`` kernel.

    Triton binds and specialises every argument in Python at each launch; on a slow host that costs tens of µs per
    launch, as much as the GPU work of a small call. The first launch of each specialisation goes through Triton
    (which compiles it) and keeps the compiled kernel; later launches with the same key call it directly. The key
    holds everything Triton specialises on: the device, the constexprs and launch options, each tensor's dtype and
    16-byte alignment, and each integer's divisibility by 16, being 1, and needing 64 bits. The kernel's runtime
    parameters must come first and its constexpr parameters last (true of every kernel in this package). Falls back
    to Triton's own path under the interpreter, when ``LIGHTNET_TRITON_FAST_LAUNCH=0``, or if the compiled kernel
    cannot be called this way on the installed Triton version. Triton's launch hooks are called as Triton does.
    """

    def __init__(self, kernel) -> None:
        self.kernel = kernel
        self.names = list(kernel.arg_names)
        self.compiled: Dict[tuple, object] = {}
        self.enabled = os.environ.get("LIGHTNET_TRITON_FAST_LAUNCH", "1") != "0" and not _INTERPRETING

    def __getitem__(self, grid):
        if not self.enabled:
            return self.kernel[grid]
        return functools.partial(self._launch, grid)

    def _launch(self, grid, *args, **meta) -> None:
        key = [torch.cuda.current_device(), *meta.values()]
        for a in args:
            if isinstance(a, torch.Tensor):
                key.append(a.dtype)
                key.append(a.data_ptr() & 15)
            elif type(a) is int:
                key.append((a & 15, a == 1, a >= 2**31))
            else:
                key.append(type(a))
        key = tuple(key)
        compiled = self.compiled.get(key)
        if compiled is None:
            self.compiled[key] = self.kernel[grid](*args, **meta)
            return
        try:
            full = (*args, *[meta[name] for name in self.names[len(args):]])
            stream = torch.cuda.current_stream().cuda_stream
            runtime = triton.knobs.runtime
            enter = runtime.launch_enter_hook  # hooks (profilers) are honoured as Triton's own launch does
            launch_metadata = compiled.launch_metadata(grid, stream, *full) if enter is not None else None
            compiled.run(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1, stream,
                         compiled.function, compiled.packed_metadata, launch_metadata, enter,
                         runtime.launch_exit_hook, *full)
        except (AttributeError, TypeError, KeyError):  # another Triton version: use its own path from now on
            self.enabled = False
            self.kernel[grid](*args, **meta)


@triton.jit
def mm(a, b, DOT: tl.constexpr):
    """``a @ b`` with fp32 accumulation; operands rounded to bf16 / tf32 / kept fp32 according to ``DOT``."""
    if DOT == 0:
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif DOT == 1:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="tf32")
    return out


@triton.jit
def logaddexp(a, b):
    """Stable ``log(exp(a) + exp(b))`` for finite inputs (padding uses ``NEG_BIG``, never ``-inf``)."""
    m = tl.maximum(a, b)
    return m + tl.log(1.0 + tl.exp(tl.minimum(a, b) - m))


@triton.jit
def load_rows(ptr, rows, cols, stride_row, row_mask, col_lim, other):
    """Load a ``[len(rows), len(cols)]`` tile from a row-major view and convert it to fp32."""
    mask = row_mask[:, None] & (cols < col_lim)[None, :]
    x = tl.load(ptr + rows[:, None].to(tl.int64) * stride_row + cols[None, :], mask=mask, other=other)
    return x.to(tl.float32)


@triton.jit
def store_rows(ptr, x, rows, cols, stride_row, row_mask, col_lim):
    """Store a ``[len(rows), len(cols)]`` tile (cast to the pointer's dtype)."""
    mask = row_mask[:, None] & (cols < col_lim)[None, :]
    tl.store(ptr + rows[:, None].to(tl.int64) * stride_row + cols[None, :], x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def load_keep(MASK, mask_base, rows, valid, HAS_MASK: tl.constexpr):
    """Keep-flags of a block of tokens: in range and (with a padding mask) not padding."""
    if HAS_MASK:
        pad = tl.load(MASK + mask_base + rows, mask=valid, other=1)
        keep = valid & (pad == 0)
    else:
        keep = valid
    return keep


@triton.jit
def load_state(S, base, D, E, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, HAS_LRPE: tl.constexpr):
    """Load an fp32 state ``[D', E]`` at ``S + base`` as its cosine half and (with LRPE) sine half.

    Without LRPE the second value is the first again (callers only read it under ``HAS_LRPE``).
    """
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    rmask = offs_d < D
    Sc = load_rows(S + base, offs_d, offs_e, E, rmask, E, 0.0)
    if HAS_LRPE:
        Ss = load_rows(S + base + D * E, offs_d, offs_e, E, rmask, E, 0.0)
    else:
        Ss = Sc
    return Sc, Ss


@triton.jit
def store_state(S, base, Sc, Ss, D, E, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, HAS_LRPE: tl.constexpr):
    """Store the halves of an fp32 state ``[D', E]`` (the sine half only with LRPE)."""
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    rmask = offs_d < D
    store_rows(S + base, Sc, offs_d, offs_e, E, rmask, E)
    if HAS_LRPE:
        store_rows(S + base + D * E, Ss, offs_d, offs_e, E, rmask, E)
