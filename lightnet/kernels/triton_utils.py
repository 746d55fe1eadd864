"""Pieces shared by the Triton ops (non-causal, causal, decode): device helpers, launch helpers, host helpers.

Conventions used by every kernel of :mod:`lightnet.kernels`:
    * tensors are loaded in their storage dtype (bf16 / fp16 / fp32) and converted to fp32 right after the load;
    * every normalisation statistic (max, log-sum-exp, running state) lives in fp32;
    * matrix products go through :func:`mm`, whose operand precision is picked by ``DOT``
      (``DOT_BF16`` for bf16 inputs, ``DOT_TF32`` for fp16 inputs, ``DOT_IEEE`` for fp32 inputs);
    * padded / out-of-range keys get the finite logit ``NEG_BIG`` *and* a zero weight, so an empty set of keys
      never produces NaN (the same convention as :mod:`lightnet.kernels.reference`).

Shapes: ``B`` batch, ``N`` tokens, ``H`` heads, ``D`` key width, ``E`` value width, ``D' = 2D`` with MD-LRPE (cosine
and sine halves of the state) else ``D``. A state is ``(S [B, H, D', E], z [B, H, D])`` fp32.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import os
from typing import Counter, Dict, Iterator, Optional, Tuple

import torch
import triton
import triton.language as tl

NEG_BIG = tl.constexpr(-1.0e30)
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


_LAUNCH_COUNTS: Optional[Counter] = None  # set while count_launches() is active
_IN_LAUNCH = False


@contextlib.contextmanager
def count_launches() -> Iterator[Counter]:
    """Count the Triton kernel launches made through :class:`Launcher` inside the block: yields a
    ``Counter`` {kernel name: launches} filled as they happen (``benchmarks/launches.py`` reads it)."""
    global _LAUNCH_COUNTS
    outer, _LAUNCH_COUNTS = _LAUNCH_COUNTS, collections.Counter()
    try:
        yield _LAUNCH_COUNTS
    finally:
        _LAUNCH_COUNTS = outer


def in_launch() -> bool:
    """True while a counted launch runs (so an op counter can skip what the Triton interpreter does on the host)."""
    return _IN_LAUNCH


def _counted(name: str, fn):
    def run(*args, **kwargs):
        global _IN_LAUNCH
        _LAUNCH_COUNTS[name] += 1
        _IN_LAUNCH = True
        try:
            return fn(*args, **kwargs)
        finally:
            _IN_LAUNCH = False
    return run


class Launcher:
    """``Launcher(kernel)[grid](*runtime_args, **constexprs_and_options)``: a lean launch of a ``@triton.jit`` kernel.

    Triton binds and specialises every argument in Python at each launch; on a slow host that costs tens of µs per
    launch, as much as the GPU work of a small call. The first launch of each specialisation goes through Triton
    (which compiles it) and keeps the compiled kernel; later launches with the same key call it directly. The key
    holds everything Triton specialises on: the device, the constexprs and launch options, each tensor's dtype and
    16-byte alignment, and each integer's divisibility by 16, being 1, and needing 64 bits. The kernel's runtime
    parameters must come first and its constexpr parameters last (true of every kernel in this package). Falls back
    to Triton's own path under the interpreter, or for good once the compiled kernel cannot be called this way on
    the installed Triton version. Triton's launch hooks are called as Triton does.
    """

    def __init__(self, kernel) -> None:
        self.kernel = kernel
        self.names = list(kernel.arg_names)
        self.compiled: Dict[tuple, object] = {}
        self.enabled = not _INTERPRETING

    def __getitem__(self, grid):
        fn = self.kernel[grid] if not self.enabled else functools.partial(self._launch, grid)
        return fn if _LAUNCH_COUNTS is None else _counted(self.kernel.__name__, fn)

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


# ----------------------------------------------------------------------------------------------------------------
# host helpers of the custom ops (each op takes ``S0`` / ``z0`` as two optional tensors)


def contiguous_all(*ts: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], ...]:
    """Each tensor contiguous (None stays None). The entry points already pass contiguous tensors; this covers a
    compiled graph whose layout pass hands an op other strides (free when already contiguous)."""
    return tuple(None if t is None else t.contiguous() for t in ts)


def initial_state_arg(
    S0: Optional[torch.Tensor], z0: Optional[torch.Tensor]
) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """The kernels' ``initial_state`` argument from an op's two optional tensors (given together or not at all)."""
    if (S0 is None) != (z0 is None):
        raise ValueError("lightnet custom op: S0 and z0 must be given together")
    return None if S0 is None else (S0, z0)


def empty_output_and_state(
    q: torch.Tensor, v: torch.Tensor, theta: Optional[torch.Tensor]
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uninitialised ``(o [B, N, H, E] in q's dtype, S [B, H, D', E] fp32, z [B, H, D] fp32)`` for ``q [B, N, H, D]``,
    ``v [B, N, H, E]`` (the shapes the ops return; their fake functions use it)."""
    B, N, H, D = q.shape
    E = v.shape[-1]
    DP = 2 * D if theta is not None else D
    o = q.new_empty((B, N, H, E))
    return o, q.new_empty((B, H, DP, E), dtype=torch.float32), q.new_empty((B, H, D), dtype=torch.float32)


def zeros_output_grad(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``dO`` when only the final state was used: ``[B, N, H, E]`` zeros in q's dtype."""
    return q.new_zeros((*q.shape[:3], v.shape[-1]))


# ----------------------------------------------------------------------------------------------------------------
# device helpers


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
