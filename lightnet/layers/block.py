"""LightNet block: pre-norm token mixer and GLU channel mixer, each with a residual and drop-path."""
from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

import torch
from torch import nn

from ..kernels import State
from .config import MixerConfig
from .drop import DropPath
from .mixer import LightNetAttention
from .mlp import GLU
from .norm import RMSNorm

__all__ = ["LightNetBlock", "make_norm", "split_state", "tensor_output"]


def split_state(
    out: Union[torch.Tensor, Tuple[torch.Tensor, State]], return_state: bool
) -> Tuple[torch.Tensor, Optional[State]]:
    """A layer's output ``out`` (a tensor, or ``(tensor, state)`` when it was called with ``return_state=True``) as
    ``(tensor, state or None)``. Decided by ``return_state`` in eager code and FX tracing (where ``out`` is a proxy),
    by the output's type under TorchScript (which needs the narrowing)."""
    if torch.jit.is_scripting():
        if isinstance(out, torch.Tensor):
            return out, None
        return out[0], out[1]
    if return_state:
        return out[0], out[1]
    return out, None


def tensor_output(out: Union[torch.Tensor, Tuple[torch.Tensor, Any]]) -> torch.Tensor:
    """The output of a layer called without ``return_state`` (a block, a mixer, :class:`~lightnet.layers.MDTPE`),
    typed as the tensor it is, for TorchScript (where the layers are annotated ``Tensor | (Tensor, state)``)."""
    if torch.jit.is_scripting():
        assert isinstance(out, torch.Tensor), "called with return_state=True"
        return out
    return out


def make_norm(kind: str, dim: int, eps: float = 1e-6) -> nn.Module:
    """``'rmsnorm'`` or ``'layernorm'`` over the last dimension."""
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r}; choose 'rmsnorm' or 'layernorm'")


class LightNetBlock(nn.Module):
    """``x + drop_path(mixer(norm1(x)))``, then ``x + drop_path(glu(norm2(x)))``. Shapes ``[B, N, C]``.

    Args:
        dim: width ``C``.
        num_heads: mixer heads.
        mlp_ratio: GLU hidden width over ``C``.
        drop_path: stochastic-depth rate.
        norm: ``'rmsnorm'`` or ``'layernorm'``.
        mlp_act: GLU activation.
        proj_drop: dropout inside the mixer output and the GLU.
        mixer: the token mixer's options (:class:`MixerConfig`, how the models pass them); ``attn_kwargs`` then only
            give its structure (``causal``, ``num_axes``, ``num_prefix_tokens``).
        **attn_kwargs: forwarded to :class:`LightNetAttention` (``causal``, ``num_axes``, ``use_lrpe``, ``scale``, ...).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        mlp_ratio: float = 8 / 3,
        drop_path: float = 0.0,
        norm: str = "rmsnorm",
        mlp_act: str = "silu",
        proj_drop: float = 0.0,
        *,
        mixer: Optional[MixerConfig] = None,
        **attn_kwargs: Any,
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, dim)
        if mixer is None:
            self.attn = LightNetAttention(dim, num_heads, proj_drop=proj_drop, **attn_kwargs)
        else:
            self.attn = mixer.build(dim, num_heads, proj_drop=proj_drop, **attn_kwargs)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = make_norm(norm, dim)
        self.mlp = GLU(dim, mlp_ratio, act=mlp_act, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(
        self,
        x: torch.Tensor,
        grid_shape: Optional[List[int]] = None,
        key_padding_mask: Optional[torch.Tensor] = None,
        state: Optional[State] = None,
        return_state: bool = False,
        position_offset: Union[int, torch.Tensor] = 0,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, State]]:
        """``x [B, N, C]`` → ``[B, N, C]`` (with ``return_state``: and the mixer's final state); ``grid_shape`` a
        list or tuple (see :class:`~lightnet.layers.LightNetAttention`)."""
        out = self.attn(
            self.norm1(x), grid_shape, key_padding_mask,
            state=state, return_state=return_state, position_offset=position_offset,
        )
        mixed, new_state = split_state(out, return_state)
        x = x + self.drop_path1(mixed)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        if return_state and new_state is not None:
            return x, new_state
        return x
