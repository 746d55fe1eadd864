"""Normalisation layers."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["RMSNorm"]


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension, computed in fp32, output in the input dtype.

    ``y = (x_32 · rsqrt(mean(x_32²) + eps) · w_32).to(x.dtype)`` with ``x_32 = x.float()``, ``w_32 = w.float()``.
    Evaluated by :func:`torch.nn.functional.rms_norm` (one fused ``aten::_fused_rms_norm`` kernel and one fused
    backward on CUDA; the same formula as a composite of pow/mean/rsqrt/mul elsewhere). Its upcast rule is the one
    above; when the weight's dtype differs from the input's (fp32 weights with a bf16/fp16 input, as under autocast),
    and for fp64 inputs, the input is cast to fp32 first so that the weight is never rounded to the input dtype. CUDA autocast runs ``rms_norm``
    in fp32; the result is cast back to the input dtype, as before.

    Shapes: ``[..., dim]`` → ``[..., dim]``.
    """

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if x.shape[-1] != self.dim:
                raise ValueError(f"RMSNorm: expected [..., {self.dim}], got {tuple(x.shape)}")
            if not x.is_floating_point():
                raise TypeError(f"RMSNorm: expected a floating tensor, got {x.dtype}")
        w = self.weight
        xin = x
        if x.dtype == torch.float64 or (w is not None and w.dtype != x.dtype):
            # fp64 input (computed in fp32, as documented) or mixed precision: fp32 copies, the weight is never rounded
            xin, w = x.float(), (None if w is None else w.float())
        y = F.rms_norm(xin, (self.dim,), w, self.eps)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"
