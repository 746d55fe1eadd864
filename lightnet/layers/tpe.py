"""MD-TPE: multi-dimensional Toeplitz positional encoding.

Per grid axis ``a`` and channel ``c``, a depthwise Toeplitz mixing ``y_i = Σ_j t_{a,c}(i − j) x_j`` along that axis,
with a kernel that is a function of the relative offset only — a sum of ``J`` exponentials (an SSM-parameterised
Toeplitz kernel, as in the first author's TPE and ETSC):

    t(0) = w0_c,     t(r) = Σ_j w⁺_{c,j} λ_{c,j}^r  (r ≥ 1),     t(−r) = Σ_j w⁻_{c,j} μ_{c,j}^r  (r ≥ 1)

with decays ``λ, μ = sigmoid(·) ∈ (0, 1)``. Bidirectional axes (image rows/columns) use both sides; causal axes (time
in an LM) set ``t(−r) = 0``. The kernel exists for any length, so any grid size works without interpolation.
Outputs of all axes are summed: ``y = x + Σ_a T_a(x)`` (``residual=True``) or ``Σ_a T_a(x)``.

Parallel evaluation is an FFT convolution (O(n log n) per axis line), or for axes of at most ``direct_max_len``
tokens (an argument of :class:`MDTPE` and :func:`toeplitz_product`, default :data:`DIRECT_MAX_LEN` = 32) the direct
``[n, n]`` Toeplitz product (:func:`toeplitz_direct`, O(n²) but no FFT, no complex tensors and, under
``torch.compile``, one fused reduction without the FFT path's layout copies; the faster of the two on short axes, the
slower on long ones). A causal 1-axis TPE also has an exact
recurrent form with state ``h ∈ [B, C, J]``: ``y_t = w0 x_t + Σ_j w⁺_j λ_j h_{t−1,j}``, ``h_t = λ ⊙ h_{t−1} + x_t``
(used for constant-memory decoding).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .grid import reference_grid_or_none, tracing

__all__ = ["DIRECT_MAX_LEN", "MDTPE", "toeplitz_direct", "toeplitz_fft", "toeplitz_product"]

#: default longest axis evaluated by the direct product instead of the FFT (see ``docs/benchmarks.md`` for the timing)
DIRECT_MAX_LEN = 32


def _check_direct_max_len(owner: str, direct_max_len: int) -> int:
    if isinstance(direct_max_len, bool) or not isinstance(direct_max_len, int) or direct_max_len < 0:
        raise ValueError(f"{owner}: direct_max_len must be an integer >= 0 (0 = always the FFT), "
                         f"got {direct_max_len!r}")
    return direct_max_len


def toeplitz_product(x: torch.Tensor, kernel: torch.Tensor, direct_max_len: int = DIRECT_MAX_LEN) -> torch.Tensor:
    """Depthwise Toeplitz product along dim 1 (``x [B, n, C]``, ``kernel [2n − 1, C]`` → ``[B, n, C]`` fp32): the
    direct form (:func:`toeplitz_direct`) for ``n <= direct_max_len``, else the FFT (:func:`toeplitz_fft`;
    ``direct_max_len=0``: always the FFT)."""
    if not torch.jit.is_scripting():
        _check_toeplitz_args("toeplitz_product", x, kernel)
        _check_direct_max_len("toeplitz_product", direct_max_len)
    if _exporting() or x.shape[1] <= direct_max_len:
        return _toeplitz_direct(x, kernel)
    return toeplitz_fft(x, kernel)


def _exporting() -> bool:
    """While ``torch.export`` traces, every axis takes the direct product (a choice by length would tie the exported
    program to one side of ``direct_max_len``; ONNX has no FFT of this form either)."""
    if torch.jit.is_scripting():
        return False
    else:
        return torch.compiler.is_exporting()


def _fft_size(n: int) -> int:
    """The FFT length for a Toeplitz product over ``n`` tokens: the smallest power of two above ``2n − 1`` (no
    circular wrap; ``1 << (2n − 1).bit_length()``)."""
    size = 1
    while size <= 2 * n - 1:
        size *= 2
    return size


def _check_toeplitz_args(name: str, x: torch.Tensor, kernel: torch.Tensor) -> None:
    """``x [B, n, C]`` and ``kernel [2n − 1, C]`` (``[1, C]`` for an empty sequence), else a ValueError naming both."""
    n = x.shape[1] if x.dim() == 3 else -1
    if n < 0 or kernel.dim() != 2 or kernel.shape[1] != x.shape[2] or kernel.shape[0] != max(2 * n - 1, 1):
        raise ValueError(f"{name}: expected x [B, n, C] and kernel [2n - 1, C], got x {tuple(x.shape)} and "
                         f"kernel {tuple(kernel.shape)}")


def toeplitz_direct(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise Toeplitz product along dim 1 as the explicit ``[n, n, C]`` matrix ``T[i, j] = t(i − j)``.

    Args / returns as :func:`toeplitz_fft` (``y_i = Σ_j t(i − j) x_j``, fp32). Eager: one ``einsum`` (batched GEMM
    over channels). While ``torch.compile`` traces: a broadcast product summed over ``j``, which inductor fuses into
    one reduction kernel that reads ``x`` in its own layout (the ``[B, n, n, C]`` product is never stored).
    """
    _check_toeplitz_args("toeplitz_direct", x, kernel)
    return _toeplitz_direct(x, kernel)


def _toeplitz_direct(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    n = x.shape[1]
    idx = torch.arange(n, device=kernel.device)
    T = kernel.float()[idx[:, None] - idx[None, :] + n - 1]  # [n, n, C]: T[i, j] = t(i − j)
    xf = x.float()
    if not torch.jit.is_scripting():
        if torch.compiler.is_compiling():
            return (xf[:, None, :, :] * T[None]).sum(2)
    return torch.einsum("bjc,ijc->bic", xf, T)


def toeplitz_fft(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise Toeplitz product along dim 1 by FFT.

    Args:
        x: ``[B, n, C]``.
        kernel: ``[2n − 1, C]`` holding ``t(r)`` for ``r = −(n−1) … n−1`` (index ``r + n − 1``).
    Returns:
        ``[B, n, C]`` with ``y_i = Σ_j t(i − j) x_j`` (fp32).

    When a gradient is needed the product runs as the custom op ``lightnet::toeplitz_fft`` (backward
    ``lightnet::toeplitz_fft_backward``), eager or compiled: it keeps only ``x`` and ``kernel`` for the backward,
    where autograd through the FFT would keep the complex spectrum of ``x`` (``[B, 2^⌈log2(2n−1)⌉ / 2 + 1, C]``
    complex64, ≈ 8 B per element of ``x``, e.g. 6.2 KB per token for LightNet-S's two axes); the backward recomputes
    that spectrum. (Its hand-written backward is not itself differentiable: no double backward through MD-TPE.)
    Under ``torch.compile`` on CUDA the product is that opaque node in every case, so ``fullgraph=True`` holds:
    inductor cannot generate Triton kernels for the complex tensors of the FFT product (``KeyError: 'complex64'`` in
    its code generation). Without a gradient elsewhere the product is traced.
    """
    if torch.jit.is_scripting():  # TorchScript: autograd through the FFT (custom ops are not scripted)
        return _toeplitz_fft(x, kernel)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or kernel.requires_grad)
    if needs_grad or (x.is_cuda and torch.compiler.is_compiling()):
        return _toeplitz_fft_op(x, kernel)
    return _toeplitz_fft(x, kernel)


@torch.library.custom_op("lightnet::toeplitz_fft", mutates_args=())
def _toeplitz_fft_op(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """:func:`_toeplitz_fft` as an opaque op: ``x [B, n, C]``, ``kernel [2n − 1, C]`` → ``[B, n, C]`` fp32
    (contiguous)."""
    return _toeplitz_fft(x, kernel).contiguous()


@_toeplitz_fft_op.register_fake
def _(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape, dtype=torch.float32)


@torch.library.custom_op("lightnet::toeplitz_fft_backward", mutates_args=())
def _toeplitz_fft_backward_op(
    grad: torch.Tensor, x: torch.Tensor, kernel: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradients ``(dx [B, n, C], dkernel [2n − 1, C])`` of :func:`_toeplitz_fft` for the output gradient
    ``grad [B, n, C]`` (opaque to the compiler like the forward; see :func:`_toeplitz_fft_grads`)."""
    dx, dk = _toeplitz_fft_grads(grad, x, kernel)
    return dx.contiguous(), dk.contiguous()


def _toeplitz_fft_grads(
    grad: torch.Tensor, x: torch.Tensor, kernel: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``dx_j = Σ_i t(i − j) g_i`` (the product with the mirrored kernel) and ``dt(r) = Σ_b Σ_i g_i x_{i−r}`` (a
    cross-correlation by FFT, summed over the batch); in the dtypes of ``x`` and ``kernel``."""
    n = x.shape[1]
    dx = _toeplitz_fft(grad, kernel.flip(0)).to(x.dtype)
    if x.numel() == 0:
        return dx, torch.zeros_like(kernel)
    size = _fft_size(n)
    G = torch.fft.rfft(grad.float(), n=size, dim=1)
    X = torch.fft.rfft(x.float(), n=size, dim=1)
    corr = torch.fft.irfft((G * X.conj()).sum(0), n=size, dim=0)  # [size, C]: index r mod size holds dt(r)
    dk = torch.cat([corr[size - (n - 1):], corr[:n]]) if n > 1 else corr[:1]
    return dx, dk.to(kernel.dtype)


@_toeplitz_fft_backward_op.register_fake
def _(grad: torch.Tensor, x: torch.Tensor, kernel: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return x.new_empty(x.shape), kernel.new_empty(kernel.shape)


def _toeplitz_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _toeplitz_backward(ctx, grad: torch.Tensor):
    x, kernel = ctx.saved_tensors
    return _toeplitz_fft_backward_op(grad, x, kernel)


_toeplitz_fft_op.register_autograd(_toeplitz_backward, setup_context=_toeplitz_setup_context)


def _toeplitz_fft(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    n = x.shape[1]
    if x.numel() == 0:  # empty batch or sequence (FFT libraries reject zero-sized transforms)
        return torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    size = _fft_size(n)  # power of two ≥ 2n−1 (no circular wrap)
    # circular layout: t(r) at index r mod size
    k = torch.zeros(size, kernel.shape[1], dtype=torch.float32, device=x.device)
    k[:n] = kernel[n - 1 :]  # r = 0 … n−1
    if n > 1:
        k[size - (n - 1) :] = kernel[: n - 1]  # r = −(n−1) … −1
    X = torch.fft.rfft(x.float(), n=size, dim=1)
    K = torch.fft.rfft(k, n=size, dim=0)
    return torch.fft.irfft(X * K[None], n=size, dim=1)[:, :n]


class _AxisToeplitz(nn.Module):
    """Relative-position Toeplitz kernel of one axis (sum of ``J`` exponentials per channel)."""

    def __init__(self, dim: int, num_decays: int, causal: bool, init_std: float, kernel_norm: str = "none") -> None:
        super().__init__()
        self.causal = causal
        self.kernel_norm = kernel_norm
        # decays initialised on a spread of ranges: λ from ~0.5 to ~0.99
        # (built on the CPU, then moved to where the factory functions put w0: a ``torch.device`` context such as
        # timm's ``device='meta'`` — this does not depend on ``torch.linspace`` honouring that context)
        target = torch.linspace(0.5, 0.99, num_decays, device="cpu")
        logit = torch.log(target / (1 - target))
        self.w0 = nn.Parameter(torch.zeros(dim))
        logit = logit.to(self.w0.device)
        self.fwd_logit = nn.Parameter(logit.repeat(dim, 1))  # [C, J]
        self.fwd_weight = nn.Parameter(torch.randn(dim, num_decays) * init_std)
        # (absent parameters are registered as None, so that TorchScript sees every attribute)
        self.bwd_logit: Optional[nn.Parameter] = None
        self.bwd_weight: Optional[nn.Parameter] = None
        self.gain: Optional[nn.Parameter] = None
        if not causal:
            self.bwd_logit = nn.Parameter(logit.repeat(dim, 1))
            self.bwd_weight = nn.Parameter(torch.randn(dim, num_decays) * init_std)
        if kernel_norm == "mass":  # the kernel's total |mass| per channel, learned; 0 = identity at init
            self.gain = nn.Parameter(torch.zeros(dim))

    @staticmethod
    def _side(logit: torch.Tensor, weight: torch.Tensor, n: int) -> torch.Tensor:
        """``Σ_j w_j λ_j^r`` for r = 1 … n−1: ``[n − 1, C]``."""
        # [n−1, 1, 1] (an integer arange, cast: a float one makes torch.export guard on a symbolic n)
        r = torch.arange(1, n, device=logit.device).float()[:, None, None]
        log_lam = torch.nn.functional.logsigmoid(logit.float())[None]  # [1, C, J]
        return (torch.exp(r * log_lam) * weight.float()[None]).sum(-1)

    def kernel(self, n: int, reference: Optional[int] = None) -> torch.Tensor:
        """``[2n − 1, C]``: t(r) for r = −(n−1) … n−1 (with ``kernel_norm='mass'``: scaled to total |mass| ``gain``
        over the ``2n − 1`` offsets, whatever ``n``). With a ``reference`` length other than ``n``, the kernel is
        rescaled per channel to the total |mass| it has at that length (mass matching, see :class:`MDTPE`)."""
        t = self._kernel_at(n)
        # (while tracing, also at the reference length, where the factor is 1: no guard on a symbolic n)
        if reference is not None and (tracing() or reference != n):
            target = self._kernel_at(reference).abs().sum(0)
            t = t * (target / t.abs().sum(0).clamp_min(1e-12))[None]
        return t

    def _kernel_at(self, n: int) -> torch.Tensor:
        """``[2n − 1, C]``: the kernel at length ``n`` without mass matching."""
        pos = self._side(self.fwd_logit, self.fwd_weight, n)
        bwd_logit, bwd_weight, gain = self.bwd_logit, self.bwd_weight, self.gain
        neg = torch.zeros_like(pos)  # causal: t(−r) = 0
        if bwd_logit is not None and bwd_weight is not None:
            neg = self._side(bwd_logit, bwd_weight, n)
        t = torch.cat([neg.flip(0), self.w0.float()[None], pos], dim=0)
        if gain is not None:  # kernel_norm == 'mass'
            t = t * (gain.float() / (t.abs().sum(0) + 1e-6))[None]
        return t

    def step(self, x: torch.Tensor, h: Optional[torch.Tensor],
             direct_max_len: int = DIRECT_MAX_LEN) -> Tuple[torch.Tensor, torch.Tensor]:
        """Causal chunk continuation: ``x [B, n, C]`` and state ``h [B, C, J]`` → ``(y [B, n, C], h')``."""
        B, n, C = x.shape
        xf = x.float()
        y = toeplitz_product(xf, self.kernel(max(n, 1)), direct_max_len)  # n = 0: empty chunk, y is empty
        lam = torch.sigmoid(self.fwd_logit.float())  # [C, J]
        log_lam = torch.log(lam)
        t = torch.arange(n, device=x.device, dtype=torch.float32)
        if h is not None:  # contribution of the past: Σ_j w_j λ_j^(t+1) h_j
            decay = torch.exp((t[:, None, None] + 1) * log_lam[None])  # [n, C, J]
            y = y + torch.einsum("tcj,bcj,cj->btc", decay, h, self.fwd_weight.float())
        # new state: λ^n h + Σ_s λ^(n−1−s) x_s
        tail = torch.exp((n - 1 - t)[:, None, None] * log_lam[None])  # [n, C, J]
        h_new = torch.einsum("tcj,btc->bcj", tail, xf)
        if h is not None:
            h_new = h_new + torch.exp(n * log_lam)[None] * h
        return y, h_new


class MDTPE(nn.Module):
    """Multi-dimensional Toeplitz positional encoding applied once after the embedding.

    Args:
        dim: channels ``C``.
        num_axes: grid dimensionality.
        causal: one flag for all axes, or one per axis (True = information flows only from lower indices).
        num_decays: exponentials per side and channel (``J``).
        residual: return ``x + Σ_a T_a(x)`` (True) or ``Σ_a T_a(x)``.
        num_prefix_tokens: leading tokens passed through unchanged.
        init_std: std of the initial exponential weights (w0 starts at 0, so the module starts near identity).
        kernel_norm: ``'none'`` (the paper's kernel) or ``'mass'``: every axis kernel is rescaled to a learned total
            |mass| per channel (``gain``, starting at 0) over the offsets of the current grid, so the size of the
            mixed signal does not grow with the grid (bidirectional axes only; see ``docs/design.md``).
        reference_grid: mass matching for grids other than the one trained on: on an axis whose length differs
            from ``reference_grid[a]``, the kernel is rescaled per channel to the total |mass| it has at the reference
            length (nothing changes at the reference grid). Trained decays sit near 1, so the paper's kernel sums
            more offsets on a longer axis and MD-TPE's output grows with the grid; matching its mass keeps the mixed
            signal at its trained size (``docs/evidence.md`` has the resolution-transfer comparison).
            Bidirectional axes only; None (default) = the paper's kernel at every size. ``set_reference_grid`` changes
            it.
        direct_max_len: axes of at most this many tokens use the direct ``[n, n]`` product, longer ones the FFT
            (:func:`toeplitz_product`; 0 = always the FFT). The same values either way.

    Shapes: ``forward(x [B, N, C], grid_shape)`` with ``N = P + prod(grid_shape)`` → ``[B, N, C]``.
    """

    def __init__(
        self,
        dim: int,
        num_axes: int = 2,
        causal: Union[bool, Sequence[bool]] = False,
        num_decays: int = 4,
        residual: bool = True,
        num_prefix_tokens: int = 0,
        init_std: float = 0.02,
        kernel_norm: str = "none",
        reference_grid: Optional[Sequence[int]] = None,
        direct_max_len: int = DIRECT_MAX_LEN,
    ) -> None:
        super().__init__()
        self.direct_max_len = _check_direct_max_len("MDTPE", direct_max_len)
        flags = [bool(causal)] * num_axes if isinstance(causal, bool) else [bool(c) for c in causal]
        if len(flags) != num_axes:
            raise ValueError(f"MDTPE: {len(flags)} causal flags for {num_axes} axes")
        if kernel_norm not in ("none", "mass"):
            raise ValueError(f"MDTPE: kernel_norm must be 'none' or 'mass', got {kernel_norm!r}")
        if kernel_norm == "mass" and any(flags):
            raise ValueError("MDTPE: kernel_norm='mass' needs bidirectional axes (a causal kernel normalised over the "
                             "current length would differ between chunks of a stream)")
        self.kernel_norm = kernel_norm
        self.dim = dim
        self.num_axes = num_axes
        self.residual = residual
        self.num_prefix_tokens = num_prefix_tokens
        self.axes = nn.ModuleList(_AxisToeplitz(dim, num_decays, c, init_std, kernel_norm) for c in flags)
        self.reference_grid: Optional[Tuple[int, ...]] = None
        self.set_reference_grid(reference_grid)

    def set_reference_grid(self, grid_shape: Optional[Sequence[int]]) -> None:
        """Set (or clear, with None) the grid whose per-channel kernel mass every other grid is matched to."""
        ref = reference_grid_or_none("MDTPE", grid_shape, self.num_axes)
        if ref is not None and any(axis.causal for axis in self.axes):
            raise ValueError("MDTPE: reference_grid needs bidirectional axes (a causal stream's kernel must not depend "
                             "on the length of the chunk)")
        self.reference_grid = ref

    def axis_kernels(self, grid_shape: List[int]) -> List[torch.Tensor]:
        """The kernels ``[2 n_a − 1, C]`` applied along each axis of ``grid_shape`` (a list or tuple; mass-matched
        to the reference grid when one is set)."""
        refs: List[Optional[int]] = [None for _ in range(self.num_axes)]
        ref = self.reference_grid
        if ref is not None:
            refs = [int(r) for r in ref]
        kernels: List[torch.Tensor] = []
        for a, axis in enumerate(self.axes):
            kernels.append(axis.kernel(grid_shape[a], refs[a]))
        return kernels

    def forward(
        self,
        x: torch.Tensor,
        grid_shape: List[int],
        state: Optional[torch.Tensor] = None,
        return_state: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Mix ``x [B, N, C]`` along every grid axis (``grid_shape``: a list or tuple of axis lengths);
        ``state``/``return_state`` for a causal 1-axis TPE only."""
        grid_shape = list(grid_shape)  # (no int(): sizes stay symbolic under torch.export)
        streaming = state is not None or return_state
        if not torch.jit.is_scripting():
            self._check_forward_args(x, grid_shape, state, streaming)
        P = self.num_prefix_tokens
        prefix, grid = x[:, :P], x[:, P:]
        B, C = x.shape[0], self.dim
        new_state: Optional[torch.Tensor] = None
        if streaming:
            mixed, new_state = self.axes[0].step(grid, state, self.direct_max_len)
        else:
            g = grid.reshape([B] + grid_shape + [C])
            mixed = torch.zeros_like(g, dtype=torch.float32)
            if g.numel():  # nothing to mix in an empty batch/grid
                for a, kernel in enumerate(self.axis_kernels(grid_shape)):
                    moved = g.movedim(a + 1, -2)  # [B, ..., n_a, C]
                    flat = moved.reshape(-1, grid_shape[a], C)
                    y = toeplitz_product(flat, kernel, self.direct_max_len).reshape(moved.shape)
                    mixed = mixed + y.movedim(-2, a + 1)
            mixed = mixed.reshape(B, grid.shape[1], C)
        out = (grid.float() + mixed if self.residual else mixed).to(x.dtype)
        out = torch.cat([prefix, out], dim=1) if P else out
        if return_state and new_state is not None:
            return out, new_state
        return out

    @torch.jit.unused
    def _check_forward_args(
        self, x: torch.Tensor, grid_shape: List[int], state: Optional[torch.Tensor], streaming: bool
    ) -> None:
        """A ValueError naming the problem for a bad input, grid or state (eager only)."""
        grid_shape = tuple(grid_shape)
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"MDTPE: expected [B, N, {self.dim}], got {tuple(x.shape)}")
        if len(grid_shape) != self.num_axes:
            raise ValueError(f"MDTPE: grid_shape {grid_shape} has {len(grid_shape)} axes, expected {self.num_axes}")
        if any(s < 0 for s in grid_shape):
            raise ValueError(f"MDTPE: grid_shape {grid_shape} has a negative size")
        P = self.num_prefix_tokens
        if P + math.prod(grid_shape) != x.shape[1]:
            raise ValueError(f"MDTPE: grid {grid_shape} plus {P} prefix tokens != {x.shape[1]} tokens")
        if streaming and not (self.num_axes == 1 and self.axes[0].causal):
            raise ValueError("MDTPE: state/return_state need a single causal axis (the LM case)")
        if state is not None:
            want = (x.shape[0], self.dim, self.axes[0].fwd_logit.shape[1])
            if not isinstance(state, torch.Tensor) or tuple(state.shape) != want:
                got = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
                raise ValueError(f"MDTPE: state must have shape [B, C, J] = {want}, got {got}")

    def extra_repr(self) -> str:
        causal = [a.causal for a in self.axes]
        norm = f", kernel_norm={self.kernel_norm!r}" if self.kernel_norm != "none" else ""
        ref = f", reference_grid={self.reference_grid}" if self.reference_grid is not None else ""
        return f"dim={self.dim}, num_axes={self.num_axes}, causal={causal}, residual={self.residual}{norm}{ref}"
