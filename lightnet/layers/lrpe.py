"""MD-LRPE: multi-dimensional linearised relative positional encoding (cosine form).

Each head's ``D`` key channels are split into one group per grid axis. Channel ``c`` of group ``a`` rotates with
angle ``θ_{n,c} = p_a(n) · ω_c`` where ``p_a(n)`` is token ``n``'s coordinate along axis ``a`` and
``ω_c = base^(−j/g)`` (``j`` the channel's index inside its group of size ``g``). The cosine form maps a vector ``x``
to ``[x ⊙ cos θ_n, x ⊙ sin θ_n]`` (width ``2D``), so that

    q̄_mᵀ k̄_n = Σ_c q_{m,c} k_{n,c} cos(θ_{m,c} − θ_{n,c})

depends only on the relative offset of the two tokens on every axis (translation invariant). Leading prefix tokens
(class or condition tokens) get ``θ = 0``; channels left over when ``D`` is not divisible by the axis count also get
``θ = 0`` (they carry no position).

Angle-table cache. With fixed (non-learnable) frequencies the table depends only on the settings, the grid, the
device and the buffer's dtype, so :meth:`MDLRPE.angles` with ``cache=True`` keeps it in a small process-wide LRU
(:data:`_TABLES`, shared by every block with the same settings; not a buffer, so never in a state dict) instead of
recomputing ``arange``/``meshgrid``/``matmul``/``cat`` for every block of every step. The cache is bypassed for
learnable frequencies, position offsets other than 0 (decoding), meta tensors, while ``torch.compile`` traces, and
when the ``freqs`` buffer no longer holds the fixed schedule (edited in place or replaced). Cached tables are fp32
tensors without autograd history; callers must not modify them in place.
"""
from __future__ import annotations

import collections
import weakref
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .grid import reference_grid_or_none, tracing

__all__ = ["MDLRPE", "clear_lrpe_cache", "grid_coordinates"]

_MAX_TABLES = 64  # LRU bound of the shared angle-table cache (entries: settings × grid × device × dtype)
_TABLES: "collections.OrderedDict[tuple, torch.Tensor]" = collections.OrderedDict()
# id(freqs buffer) → (weak reference to it, its ``_version``) once it was checked to hold the fixed schedule
_VERIFIED: Dict[int, Tuple["weakref.ref[torch.Tensor]", int]] = {}


def clear_lrpe_cache() -> None:
    """Drop every cached MD-LRPE angle table (frees their memory; they are rebuilt on the next call)."""
    _TABLES.clear()
    _VERIFIED.clear()


def _fixed_freqs(head_dim: int, num_axes: int, base: float) -> torch.Tensor:
    """The fixed frequency table ``[A, D]`` fp32 on the CPU: channel ``c`` uses axis ``a`` iff ``freqs[a, c] != 0``."""
    group = head_dim // num_axes
    j = torch.arange(group, dtype=torch.float32, device="cpu")
    omega = base ** (-j / group)  # [g]
    freqs = torch.zeros(num_axes, head_dim, device="cpu")
    for a in range(num_axes):
        freqs[a, a * group : (a + 1) * group] = omega
    return freqs


def grid_coordinates(grid_shape: List[int], device: Optional[torch.device] = None,
                     offset: Union[int, torch.Tensor] = 0) -> torch.Tensor:
    """Row-major integer coordinates of every cell of ``grid_shape``: ``[prod(grid), len(grid)]`` (fp32).

    ``offset`` shifts the first axis (used by 1-D causal decoding, where token ``t`` sits at ``offset + t``): an int,
    or a 0-dim integer tensor on ``device`` (the CUDA-graph decoder's position, so no host value changes per step).
    ``grid_shape``: a list or tuple of axis lengths.
    """
    axes = [torch.arange(s, device=device, dtype=torch.float32) for s in grid_shape]
    if isinstance(offset, torch.Tensor):
        axes[0] = axes[0] + offset.to(torch.float32)
    else:
        axes[0] = axes[0] + offset
    mesh = torch.meshgrid(axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


class MDLRPE(nn.Module):
    """Multi-dimensional LRPE angles and their application.

    Args:
        head_dim: channels per head ``D``.
        num_axes: grid dimensionality (1 text, 2 images, 3 video).
        base: frequency base (``ω = base^(−j/g)``).
        num_prefix_tokens: leading tokens left unencoded.
        learnable: learn the per-channel frequencies (initialised to the fixed schedule).
        reference_grid: position interpolation for grids other than the one trained on: on a grid of another shape,
            the coordinates along axis ``a`` are scaled by ``reference_grid[a] / grid[a]``, so they span
            ``[0, reference_grid[a])`` as in training (as RoPE position interpolation does; ``docs/evidence.md`` has
            the resolution-transfer comparison). None (default): integer coordinates at every size;
            ``set_reference_grid`` changes it.
    """

    def __init__(
        self,
        head_dim: int,
        num_axes: int = 1,
        base: float = 10000.0,
        num_prefix_tokens: int = 0,
        learnable: bool = False,
        reference_grid: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        if num_axes < 1:
            raise ValueError(f"MDLRPE: num_axes must be >= 1, got {num_axes}")
        if head_dim < num_axes:
            raise ValueError(f"MDLRPE: head_dim {head_dim} is smaller than num_axes {num_axes}")
        self.head_dim = head_dim
        self.num_axes = num_axes
        self.base = base
        self.num_prefix_tokens = num_prefix_tokens
        freqs = _fixed_freqs(head_dim, num_axes, base)  # [A, D] (CPU; moved by a device context below)
        freqs = freqs.to(torch.empty(0).device)  # honour a ``with torch.device(...)`` factory context, as before
        if learnable:
            self.freqs = nn.Parameter(freqs)
        else:
            self.register_buffer("freqs", freqs, persistent=False)
        self.learnable = learnable
        self.reference_grid: Optional[Tuple[int, ...]] = None
        self.set_reference_grid(reference_grid)

    def set_reference_grid(self, grid_shape: Optional[Sequence[int]]) -> None:
        """Set (or clear, with None) the grid whose coordinate range every other grid is scaled into."""
        self.reference_grid = reference_grid_or_none("MDLRPE", grid_shape, self.num_axes)

    def _coordinate_scale(self, grid_shape: List[int]) -> Optional[List[float]]:
        """Per-axis factor ``reference / grid`` (None at the reference grid, without one, or for an empty axis)."""
        ref = self.reference_grid
        if ref is None:
            return None
        refs = [int(r) for r in ref]
        if not tracing() and (refs == grid_shape or 0 in grid_shape):  # (tracing: factor 1 at the reference)
            return None
        return [refs[a] / grid_shape[a] for a in range(len(refs))]

    def init_non_persistent_buffers(self) -> None:
        """Recreate the fixed frequency table (timm's meta-device init hook)."""
        if not self.learnable:
            self.freqs = _fixed_freqs(self.head_dim, self.num_axes, self.base).to(self.freqs.device)

    def angles(
        self,
        grid_shape: List[int],
        num_prefix_tokens: Optional[int] = None,
        offset: Union[int, torch.Tensor] = 0,
        cache: bool = False,
    ) -> torch.Tensor:
        """Angle table ``θ``: ``[P + prod(grid_shape), D]`` fp32 (prefix rows are zero); ``grid_shape`` a list or
        tuple.

        ``cache=True`` returns a shared cached table when that is safe (see the module docstring); the caller must
        not modify it in place. Without it (and under TorchScript) a fresh tensor is computed (differentiable for
        learnable frequencies).
        """
        grid = list(grid_shape)  # (no int(): sizes stay symbolic under torch.export)
        if not torch.jit.is_scripting():
            if len(grid) != self.num_axes:
                raise ValueError(f"MDLRPE: grid_shape {tuple(grid)} has {len(grid)} axes, expected {self.num_axes}")
            if any(s < 0 for s in grid):
                raise ValueError(f"MDLRPE: grid_shape {tuple(grid)} has a negative size")
        P = self.num_prefix_tokens if num_prefix_tokens is None else int(num_prefix_tokens)
        scale = self._coordinate_scale(grid)
        if not torch.jit.is_scripting():
            if cache and self._cacheable(offset):
                return self._cached_angles(grid, P, scale)
        return self._compute_angles(grid, P, offset, scale)

    def _cacheable(self, offset: Union[int, torch.Tensor]) -> bool:
        """Whether the table is a pure function of the settings (fixed schedule, eager, real device, offset 0)."""
        f = self.freqs
        if isinstance(offset, torch.Tensor):  # a position on the device: never read on the host (no sync)
            return False
        if self.learnable or offset != 0 or f.requires_grad or f.device.type == "meta":
            return False
        if torch.compiler.is_compiling():  # traced graphs compute the table (no Python-side state under tracing)
            return False
        entry = _VERIFIED.get(id(f))
        if entry is not None and entry[0]() is f and entry[1] == f._version:
            return True
        fixed = _fixed_freqs(self.head_dim, self.num_axes, self.base).to(device=f.device, dtype=f.dtype)
        if not torch.equal(f, fixed):  # the buffer was edited: compute from it, uncached
            return False
        if len(_VERIFIED) > 4 * _MAX_TABLES:  # drop entries of buffers that no longer exist
            for key in [k for k, (ref, _) in _VERIFIED.items() if ref() is None]:
                del _VERIFIED[key]
        _VERIFIED[id(f)] = (weakref.ref(f), f._version)
        return True

    def _cached_angles(self, grid_shape: List[int], P: int, scale: Optional[List[float]]) -> torch.Tensor:
        """The shared table for these settings (LRU of :data:`_MAX_TABLES` entries; eager only)."""
        f = self.freqs
        key = (self.head_dim, self.num_axes, float(self.base), P, tuple(grid_shape),
               None if scale is None else tuple(scale), f.device, f.dtype)
        theta = _TABLES.get(key)
        if theta is not None:
            _TABLES.move_to_end(key)
            return theta
        # a normal tensor even inside inference_mode (it may later be saved for backward in a training step)
        with torch.inference_mode(False), torch.no_grad():
            theta = self._compute_angles(grid_shape, P, 0, scale)
        _TABLES[key] = theta
        while len(_TABLES) > _MAX_TABLES:
            _TABLES.popitem(last=False)
        return theta

    def _compute_angles(self, grid_shape: List[int], P: int, offset: Union[int, torch.Tensor],
                        scale: Optional[List[float]] = None) -> torch.Tensor:
        """``[P + prod(grid_shape), D]`` fp32 from the current ``freqs`` (no cache); ``scale``: per-axis coordinate
        factors (position interpolation)."""
        coords = grid_coordinates(grid_shape, device=self.freqs.device, offset=offset)  # [M, A]
        if scale is not None:
            coords = torch.stack([coords[:, a] * scale[a] for a in range(len(scale))], dim=-1)
        theta = coords @ self.freqs.float()  # [M, D]
        if P:
            theta = torch.cat([theta.new_zeros(P, self.head_dim), theta], dim=0)
        return theta

    def forward(self, x: torch.Tensor, grid_shape: List[int], num_prefix_tokens: Optional[int] = None) -> torch.Tensor:
        """Apply the cosine map: ``[B, N, H, D]`` → ``[B, N, H, 2D]`` (``grid_shape``: a list or tuple)."""
        if not torch.jit.is_scripting() and (x.dim() != 4 or x.shape[-1] != self.head_dim):
            raise ValueError(f"MDLRPE: expected [B, N, H, {self.head_dim}], got {tuple(x.shape)}")
        theta = self.angles(grid_shape, num_prefix_tokens, cache=True)
        if not torch.jit.is_scripting() and theta.shape[0] != x.shape[1]:
            raise ValueError(f"MDLRPE: grid {tuple(grid_shape)} plus prefix gives {theta.shape[0]} tokens, input has {x.shape[1]}")
        t = theta[None, :, None, :]
        return torch.cat([x * torch.cos(t), x * torch.sin(t)], dim=-1)

    def extra_repr(self) -> str:
        ref = f", reference_grid={self.reference_grid}" if self.reference_grid is not None else ""
        return (f"head_dim={self.head_dim}, num_axes={self.num_axes}, base={self.base}, "
                f"prefix={self.num_prefix_tokens}{ref}")
