"""LightNet attention: the additive-recurrence token mixer (LNA)."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from ..distributed import is_sequence_parallel, sequence_parallel_attention, shard_bounds
from ..kernels import BACKENDS, State, additive_attention, additive_attention_torch
from .activation import apply_activation
from .lrpe import MDLRPE
from .norm import RMSNorm

__all__ = ["LightNetAttention", "check_choice", "resolve_scale", "set_sequence_parallel_group"]

_GATE_ACTS = ("sigmoid", "silu", "none")
_RECOMPUTE = ("compiled", "always", "never")
_Q_ACTS = ("silu", "identity", "relu", "elu1")
#: the choices of each named option (checked by :class:`LightNetAttention` and :class:`~lightnet.layers.MixerConfig`)
CHOICES = {"q_act": tuple(_Q_ACTS), "gate_act": tuple(_GATE_ACTS), "recompute_output": _RECOMPUTE, "backend": BACKENDS}


def check_choice(owner: str, name: str, value: object, choices: Sequence[object]) -> None:
    """Raise a ``ValueError`` naming ``owner``, the option and the choices when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"{owner}: unknown {name} {value!r}; choose one of {sorted(choices)}")


def resolve_scale(owner: str, scale: Union[str, float], head_dim: int) -> float:
    """The output scale: ``'none'`` → 1 (the paper's normalised form), ``'sqrt'`` → ``head_dim^-1/2``, a number → it."""
    if scale == "none":
        return 1.0
    if scale == "sqrt":
        return head_dim ** -0.5
    if isinstance(scale, (int, float)):
        return float(scale)
    raise ValueError(f"{owner}: scale must be 'none', 'sqrt' or a number, got {scale!r}")


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
        backend: kernel backend passed to :func:`lightnet.kernels.additive_attention` (``'auto'``, ``'torch'``,
            ``'triton'``; the models call it ``attn_backend``).
        recompute_output: when to run the output norm, the gate's second projection and their product under
            non-reentrant activation checkpointing while training, so that the backward recomputes them from the
            kernel output and the gate's rank-``r`` hidden state instead of keeping the normalised output, the gate
            logits and the projection's input (the models call it ``attn_recompute_output``): ``'compiled'``
            (default: only while ``torch.compile`` traces, where the recomputation fuses into the backward's kernels
            and costs no host time), ``'always'`` (eager too, where the eager norm's fp32 copies are not kept either,
            for some host time per step) or ``'never'``. Cost: the norm, one ``r × C`` projection and two products
            again in the backward.

    With ``q_act='silu'`` the kernels apply the activation as they load q (``q_activation='silu'``), so no activated
    copy of q is kept for the backward.

    Sequence parallelism: with ``sequence_parallel_group`` set (a ``torch.distributed`` process group of more than one
    rank; :func:`set_sequence_parallel_group` sets it on every mixer of a model), ``x`` holds this rank's contiguous
    slice of the tokens (the split of :func:`lightnet.distributed.shard_bounds`), ``grid_shape`` is the **global**
    grid, and the mixer runs :func:`lightnet.distributed.sequence_parallel_attention` with the MD-LRPE angles of the
    slice's global positions.
    """

    sequence_parallel_group = None  # a torch.distributed ProcessGroup while the sequence is split (not a parameter)

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
        recompute_output: str = "compiled",
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"LightNetAttention: dim {dim} is not divisible by num_heads {num_heads}")
        options = dict(q_act=q_act, gate_act=gate_act, recompute_output=recompute_output, backend=backend)
        for name, value in options.items():
            check_choice("LightNetAttention", name, value, CHOICES[name])
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.causal = causal
        self.num_axes = num_axes
        self.num_prefix_tokens = num_prefix_tokens
        self.q_act = q_act
        self.gate_act = gate_act
        self.backend = backend
        self.recompute_output = recompute_output
        self.scale = resolve_scale("LightNetAttention", scale, self.head_dim)
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

    @torch.jit.unused
    def _slice(self, n_local: int, grid_shape: Optional[List[int]]) -> Tuple[List[int], int, int]:
        """Under sequence parallelism: the global grid and this rank's token bounds ``(start, stop)``."""
        if grid_shape is None:
            raise ValueError("LightNetAttention: a sequence-parallel mixer needs the global grid_shape "
                             "(the local slice does not tell the sequence length)")
        total = self.num_prefix_tokens + math.prod(grid_shape)
        grid = self._grid(total, grid_shape)
        start, stop = shard_bounds(total, self.sequence_parallel_group)
        if n_local != stop - start:
            raise ValueError(f"LightNetAttention: this rank holds {n_local} tokens but its slice of the {total}-token "
                             f"sequence is [{start}, {stop}) (split with lightnet.distributed.shard_tokens)")
        return grid, start, stop

    @torch.jit.unused
    def _split_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         key_padding_mask: Optional[torch.Tensor], theta: Optional[torch.Tensor],
                         kernel_q_act: Optional[str], start: int, stop: int) -> torch.Tensor:
        """The recurrence over the whole sequence split across the group: this rank's ``[B, n, H, D]`` outputs."""
        return sequence_parallel_attention(
            q, k, v, group=self.sequence_parallel_group, causal=self.causal, scale=self.scale,
            key_padding_mask=key_padding_mask, lrpe_theta=None if theta is None else theta[start:stop],
            q_activation=kernel_q_act, backend=self.backend,
        )

    def _grid(self, N: int, grid_shape: Optional[List[int]]) -> List[int]:
        """The token grid (a list of axis lengths) for ``N`` tokens: ``grid_shape`` checked, or the 1-D default."""
        P = self.num_prefix_tokens
        if grid_shape is None:
            if self.num_axes != 1:
                raise ValueError(f"LightNetAttention: grid_shape is required for {self.num_axes}-D inputs")
            return [N - P]
        grid = list(grid_shape)  # (no int(): sizes stay symbolic under torch.export)
        if not torch.jit.is_scripting():
            if len(grid) != self.num_axes:
                raise ValueError(f"LightNetAttention: grid_shape {tuple(grid)} has {len(grid)} axes, expected "
                                 f"{self.num_axes}")
            if P + math.prod(grid) != N:
                raise ValueError(
                    f"LightNetAttention: grid_shape {tuple(grid)} (+{P} prefix tokens) describes "
                    f"{P + math.prod(grid)} tokens but the input has {N}"
                )
        return grid

    def forward(
        self,
        x: torch.Tensor,
        grid_shape: Optional[List[int]] = None,
        key_padding_mask: Optional[torch.Tensor] = None,
        state: Optional[State] = None,
        return_state: bool = False,
        position_offset: Union[int, torch.Tensor] = 0,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, State]]:
        """Mix tokens.

        Args:
            x: ``[B, N, C]``.
            grid_shape: token grid, a list or tuple (``N = P + prod(grid_shape)``); defaults to a 1-D sequence.
            key_padding_mask: ``[B, N]`` bool, True = padding.
            state: recurrent state ``(S, z)`` from a previous chunk (causal decoding / chunked prefill).
            return_state: also return the final state.
            position_offset: index of the first token along axis 0 (for LRPE during decoding): an int, or a 0-dim
                integer tensor on x's device (read on the device only: what a captured CUDA-graph decode step uses).

        Under TorchScript the PyTorch reference of the recurrence runs (no Triton, no angle-table cache, no input
        validation beyond the shapes the ops check themselves).
        """
        if not torch.jit.is_scripting() and (x.dim() != 3 or x.shape[-1] != self.dim):
            raise ValueError(f"LightNetAttention: expected [B, N, {self.dim}], got {tuple(x.shape)}")
        B, N, C = x.shape
        H, D = self.num_heads, self.head_dim
        split = False
        start, stop = 0, N
        if torch.jit.is_scripting():
            grid = self._grid(N, grid_shape)
        else:
            split = is_sequence_parallel(self.sequence_parallel_group)
            if split:
                if state is not None or return_state:
                    raise ValueError("LightNetAttention: state / return_state (decoding) are not supported with a "
                                     "sequence-parallel group; clear it with set_sequence_parallel_group(model, None)")
                grid, start, stop = self._slice(N, grid_shape)
            else:
                grid = self._grid(N, grid_shape)
        q, k, v = self.qkv(x).view(B, N, 3, H, D).unbind(dim=2)  # each [B, N, H, D]
        kernel_q_act: Optional[str] = "silu" if self.q_act == "silu" else None  # applied by the kernels as they load q
        if kernel_q_act is None:
            q = apply_activation(self.q_act, q)
        theta: Optional[torch.Tensor] = None
        if self.lrpe is not None:
            theta = self.lrpe.angles(grid, offset=position_offset, cache=True).to(x.device)
        new_state: Optional[State] = None
        if torch.jit.is_scripting():
            q_in = F.silu(q) if self.q_act == "silu" else q
            o, new_state = additive_attention_torch(
                q_in, k, v, causal=self.causal, scale=self.scale, key_padding_mask=key_padding_mask,
                lrpe_theta=theta, initial_state=state,
            )
            o = o.to(q.dtype)
        elif split:
            o = self._split_attention(q, k, v, key_padding_mask, theta, kernel_q_act, start, stop)
        else:
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
        gate_hidden: Optional[torch.Tensor] = None
        if self.gate is not None:
            gate_hidden = self.gate[0](x)  # [B, N, r]
        if torch.jit.is_scripting():
            o = self._normed_and_gated(o, gate_hidden)
        elif self._recompute_now(o, x):
            o = checkpoint(self._normed_and_gated, o, gate_hidden, use_reentrant=False)
        else:
            o = self._normed_and_gated(o, gate_hidden)
        o = self.proj_drop(self.proj(o))
        if return_state and new_state is not None:
            return o, new_state
        return o

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
        if self.gate is not None and gate_hidden is not None:
            o = o * apply_activation(self.gate_act, self.gate[1](gate_hidden))
        return o

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, heads={self.num_heads}, causal={self.causal}, scale={self.scale:g}, "
            f"q_act={self.q_act}, gate_act={self.gate_act}"
        )


def set_sequence_parallel_group(module: nn.Module, group: Optional[object]) -> None:
    """Set the sequence-parallel process group of every :class:`LightNetAttention` inside ``module`` (None: the whole
    sequence on every rank again). The models' ``set_sequence_parallel_group`` methods call this."""
    for m in module.modules():
        if isinstance(m, LightNetAttention):
            m.sequence_parallel_group = group
