"""LightNet attention: the additive-recurrence token mixer (LNA)."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from ..kernels import State, additive_attention
from .lrpe import MDLRPE
from .norm import RMSNorm

__all__ = ["LightNetAttention"]

_GATE_ACTS = {"sigmoid": torch.sigmoid, "silu": F.silu, "none": None}
_RECOMPUTE = ("compiled", "always", "never")
_Q_ACTS = {"silu": F.silu, "identity": None, "relu": F.relu, "elu1": lambda x: F.elu(x) + 1}


class LightNetAttention(nn.Module):
    """Token mixer ``x [B, N, C] → [B, N, C]``.

    ``q = act(x W_q)``, ``k = x W_k`` (logits), ``v = x W_v``, split into ``H`` heads of ``D = C / H``;
    MD-LRPE (cosine form) on q and on the normalised keys; additive attention (single order-free scan, or the causal
    recurrence); per-head RMSNorm of the output; multiplied by a low-rank gate ``act(x W_g1 W_g2)``; projected by
    ``W_o``. See ``docs/design.md`` for each choice and its alternatives.

    Args:
        dim: model width ``C``.
        num_heads: heads ``H`` (``C`` must be divisible by ``H``).
        causal: causal (LM) recurrence instead of the single non-causal scan.
        qkv_bias: bias on the q/k/v projections.
        use_lrpe: apply MD-LRPE.
        num_axes: grid dimensionality for MD-LRPE (1 text, 2 images, 3 video).
        lrpe_base: MD-LRPE frequency base.
        num_prefix_tokens: leading tokens (class/condition) that MD-LRPE leaves unencoded.
        q_act: activation on queries (``'silu'`` default, ``'identity'``, ``'relu'``, ``'elu1'``).
        scale: ``'none'`` (1, the paper's normalised form), ``'sqrt'`` (``D^-1/2``) or a float.
        gate_rank: rank ``r`` of the output gate ``C → r → C``; ``0`` disables the gate.
        gate_act: ``'sigmoid'``, ``'silu'`` or ``'none'``.
        out_norm: per-head RMSNorm on the mixer output before gating.
        proj_drop: dropout after ``W_o``.
        backend: kernel backend passed to :func:`lightnet.kernels.additive_attention`.
        fuse_q_act: with ``q_act='silu'``, let the kernels apply the activation (the non-causal Triton kernels do it as
            they load q, so no activated copy of q is kept for the backward: −2 bytes · C per token and block);
            ``False`` applies it before the call (the same values; kept to compare the two).
        recompute_output: when to run the output norm, the gate's second projection and their product under
            non-reentrant activation checkpointing while training, so that the backward recomputes them from the
            kernel output and the gate's rank-``r`` hidden state instead of keeping the normalised output, the gate
            logits and the projection's input: ``'compiled'`` (default: only while ``torch.compile`` traces, where
            the recomputation fuses into the backward's kernels and costs no host time; −(4C + 24) bytes per token
            and block in bf16, 1 560 B for LightNet-S), ``'always'`` (eager too: −3.9 KB per token and block, as the
            eager norm keeps fp32 copies, for ~0.35 ms more host time per mixer step on a 2-core CPU) or
            ``'never'``. Cost: the norm, one ``r × C`` projection and two products again in the backward.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        *,
        causal: bool = False,
        qkv_bias: bool = False,
        use_lrpe: bool = True,
        num_axes: int = 1,
        lrpe_base: float = 10000.0,
        num_prefix_tokens: int = 0,
        q_act: str = "silu",
        scale: Union[str, float] = "none",
        gate_rank: Optional[int] = None,
        gate_act: str = "sigmoid",
        out_norm: bool = True,
        proj_drop: float = 0.0,
        backend: str = "auto",
        fuse_q_act: bool = True,
        recompute_output: str = "compiled",
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"LightNetAttention: dim {dim} is not divisible by num_heads {num_heads}")
        if q_act not in _Q_ACTS:
            raise ValueError(f"LightNetAttention: unknown q_act {q_act!r}; choose one of {sorted(_Q_ACTS)}")
        if recompute_output not in _RECOMPUTE:
            raise ValueError(
                f"LightNetAttention: unknown recompute_output {recompute_output!r}; choose one of {_RECOMPUTE}")
        if gate_act not in _GATE_ACTS:
            raise ValueError(f"LightNetAttention: unknown gate_act {gate_act!r}; choose one of {sorted(_GATE_ACTS)}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.causal = causal
        self.num_axes = num_axes
        self.num_prefix_tokens = num_prefix_tokens
        self.q_act = q_act
        self.gate_act = gate_act
        self.backend = backend
        self.fuse_q_act = fuse_q_act
        self.recompute_output = recompute_output
        if scale == "none":
            self.scale = 1.0
        elif scale == "sqrt":
            self.scale = self.head_dim ** -0.5
        elif isinstance(scale, (int, float)):
            self.scale = float(scale)
        else:
            raise ValueError(f"LightNetAttention: scale must be 'none', 'sqrt' or a number, got {scale!r}")
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.lrpe = MDLRPE(self.head_dim, num_axes, lrpe_base, num_prefix_tokens) if use_lrpe else None
        self.out_norm = RMSNorm(self.head_dim) if out_norm else nn.Identity()
        gate_rank = max(16, dim // 8) if gate_rank is None else gate_rank
        if gate_rank > 0 and gate_act != "none":
            self.gate = nn.Sequential(nn.Linear(dim, gate_rank, bias=False), nn.Linear(gate_rank, dim, bias=True))
        else:
            self.gate = None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _grid(self, N: int, grid_shape: Optional[Sequence[int]]) -> Tuple[int, ...]:
        P = self.num_prefix_tokens
        if grid_shape is None:
            if self.num_axes != 1:
                raise ValueError(f"LightNetAttention: grid_shape is required for {self.num_axes}-D inputs")
            return (N - P,)
        grid_shape = tuple(int(s) for s in grid_shape)
        if len(grid_shape) != self.num_axes:
            raise ValueError(f"LightNetAttention: grid_shape {grid_shape} has {len(grid_shape)} axes, expected {self.num_axes}")
        if P + math.prod(grid_shape) != N:
            raise ValueError(
                f"LightNetAttention: grid_shape {grid_shape} (+{P} prefix tokens) describes "
                f"{P + math.prod(grid_shape)} tokens but the input has {N}"
            )
        return grid_shape

    def forward(
        self,
        x: torch.Tensor,
        grid_shape: Optional[Sequence[int]] = None,
        key_padding_mask: Optional[torch.Tensor] = None,
        state: Optional[State] = None,
        return_state: bool = False,
        position_offset: int = 0,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, State]]:
        """Mix tokens.

        Args:
            x: ``[B, N, C]``.
            grid_shape: token grid (``N = P + prod(grid_shape)``); defaults to a 1-D sequence.
            key_padding_mask: ``[B, N]`` bool, True = padding.
            state: recurrent state ``(S, z)`` from a previous chunk (causal decoding / chunked prefill).
            return_state: also return the final state.
            position_offset: index of the first token along axis 0 (for LRPE during decoding).
        """
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"LightNetAttention: expected [B, N, {self.dim}], got {tuple(x.shape)}")
        B, N, C = x.shape
        H, D = self.num_heads, self.head_dim
        grid = self._grid(N, grid_shape)
        q, k, v = self.qkv(x).view(B, N, 3, H, D).unbind(dim=2)  # each [B, N, H, D]
        kernel_q_act = "silu" if self.q_act == "silu" and self.fuse_q_act else None
        q_act = _Q_ACTS[self.q_act]
        if q_act is not None and kernel_q_act is None:
            q = q_act(q)
        theta = None if self.lrpe is None else self.lrpe.angles(grid, offset=position_offset, cache=True).to(x.device)
        out = additive_attention(
            q, k, v,
            causal=self.causal,
            scale=self.scale,
            key_padding_mask=key_padding_mask,
            lrpe_theta=theta,
            initial_state=state,
            output_final_state=return_state,
            backend=self.backend,
            q_activation=kernel_q_act,
        )
        o, new_state = out if return_state else (out, None)
        gate_hidden = None if self.gate is None else self.gate[0](x)  # [B, N, r]
        if self._recompute_now(o, x):
            o = checkpoint(self._normed_and_gated, o, gate_hidden, use_reentrant=False)
        else:
            o = self._normed_and_gated(o, gate_hidden)
        o = self.proj_drop(self.proj(o))
        return (o, new_state) if return_state else o

    def _recompute_now(self, *inputs: torch.Tensor) -> bool:
        """Whether this forward checkpoints the output norm and gate (``recompute_output``; only when autograd will
        record them: grad mode on and one of ``inputs`` requiring a gradient)."""
        if self.recompute_output == "never" or not torch.is_grad_enabled():
            return False
        if not any(t.requires_grad for t in inputs):
            return False
        return self.recompute_output == "always" or torch.compiler.is_compiling()

    def _normed_and_gated(self, o: torch.Tensor, gate_hidden: Optional[torch.Tensor]) -> torch.Tensor:
        """``out_norm(o) · act(W_g2 gate_hidden)``: ``o [B, N, H, E]``, ``gate_hidden [B, N, r]`` → ``[B, N, C]``."""
        B, N = o.shape[:2]
        o = self.out_norm(o).reshape(B, N, self.dim)
        if gate_hidden is not None:
            o = o * _GATE_ACTS[self.gate_act](self.gate[1](gate_hidden))
        return o

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, heads={self.num_heads}, causal={self.causal}, scale={self.scale:g}, "
            f"q_act={self.q_act}, gate_act={self.gate_act}"
        )
