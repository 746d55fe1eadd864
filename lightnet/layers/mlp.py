"""Channel mixer: gated linear unit."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .activation import apply_activation

__all__ = ["GLU", "SiluGatedProduct"]

_ACTS = ("silu", "gelu", "relu", "sigmoid")


class SiluGatedProduct(torch.autograd.Function):
    """``silu(gate) * up`` that saves only its two inputs for the backward and recomputes ``silu(gate)`` there.

    Autograd's composite ``F.silu(gate) * up`` also keeps ``silu(gate)`` for the product's gradient: one more
    ``[..., hidden]`` tensor per GLU. The price is one elementwise kernel in the backward;
    the gradients are the composite's to the bit (the same ATen ops in the same order and dtype).
    Shapes: ``gate, up [..., hidden]`` (same shape and dtype) → ``[..., hidden]``.
    """

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        gate, up = ctx.saved_tensors
        d_gate = d_up = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():  # create_graph=True: a differentiable form (aten.silu_backward has no grad)
                sig = torch.sigmoid(gate)
                d_gate = grad * up * (sig * (1 + gate * (1 - sig)))
            else:
                d_gate = torch.ops.aten.silu_backward(grad * up, gate)
        if ctx.needs_input_grad[1]:
            d_up = grad * F.silu(gate)
        return d_gate, d_up


class GLU(nn.Module):
    """``fc2(act(gate(x)) * up(x))`` with one fused input projection.

    Shapes: ``[..., dim]`` → ``[..., dim]``; hidden width ``int(dim * mlp_ratio)``. With ``act='silu'`` the backward
    recomputes ``silu(gate)`` instead of keeping it (:class:`SiluGatedProduct`: one ``[..., hidden]`` tensor less
    saved, the same gradients as autograd's composite ``silu(gate) * up``).
    """

    def __init__(self, dim: int, mlp_ratio: float = 8 / 3, act: str = "silu", bias: bool = False,
                 drop: float = 0.0) -> None:
        super().__init__()
        if act not in _ACTS:
            raise ValueError(f"GLU: unknown activation {act!r}; choose one of {sorted(_ACTS)}")
        hidden = max(1, int(dim * mlp_ratio))
        self.hidden_features = hidden
        self.act_name = act
        self.fc1 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and x.shape[-1] != self.fc1.in_features:
            raise ValueError(f"GLU: expected [..., {self.fc1.in_features}], got {tuple(x.shape)}")
        up, gate = self.fc1(x).chunk(2, dim=-1)
        if not torch.jit.is_scripting() and self.act_name == "silu" and torch.is_grad_enabled():
            hidden = SiluGatedProduct.apply(gate, up)  # (TorchScript: autograd's composite below)
        else:
            hidden = apply_activation(self.act_name, gate) * up
        return self.drop(self.fc2(self.drop(hidden)))
