"""Multi-scan multiplicative-decay token mixers: the Vim-style (2 directions) and VMamba-style (4 directions) peers.

Per head, a data-dependent multiplicative-decay recurrence (GLA / Mamba2 family) runs along a flattened token order:

    S_t = diag(λ_t) S_{t−1} + k_t v_tᵀ,      o_t = scale · q_tᵀ S_t,      λ_t = exp(g_t) ∈ (0, 1]

with ``q, k, g: [B, N, H, D]``, ``v: [B, N, H, E]`` and the state ``S: [B, H, D, E]``. One such scan only sees the
tokens before ``t`` in its order, so multiplicative-decay vision models scan several orders and sum the outputs:

* 1 direction: row-major forward (a causal scan; the "additive vs multiplicative" ablation uses it),
* 2 directions (Vim): row-major forward + row-major reversed,
* 4 directions (VMamba SS2D): row-major forward/reversed + column-major forward/reversed.

The queries, keys and values come from one shared projection (as VMamba's ``in_proj``); every direction has its own
decay parameters (as Vim/VMamba have per-direction SSM parameters). After the sum come exactly the per-head RMSNorm,
low-rank output gate and output projection of :class:`lightnet.layers.LightNetAttention`, so the two mixers differ
only in the recurrence.

Backends: a plain-PyTorch chunked form (O(N) memory: intra-chunk pairwise terms plus a scan over chunk states, the
GLA chunk decomposition) used everywhere, and fla's ``chunk_gla`` Triton kernel when fla is importable and the
tensors are on CUDA (``backend='auto'`` or ``'fla'``). :func:`decay_recurrence_naive` is the token-by-token oracle.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from lightnet.layers import LightNetAttention

__all__ = [
    "MultiScanDecayAttention",
    "decay_recurrence",
    "decay_recurrence_chunked",
    "decay_recurrence_naive",
    "fla_available",
    "multiscan_decay",
    "scan_orders",
]

_DECAY_FORMS = ("gla", "mamba2")
# the query and gate activations of LightNetAttention's options, by name (the mixer's own q_act / gate_act values)
Q_ACTS = {"silu": F.silu, "identity": None, "relu": F.relu, "elu1": lambda x: F.elu(x) + 1}
GATE_ACTS = {"sigmoid": torch.sigmoid, "silu": F.silu}
_BACKENDS = ("auto", "torch", "fla")


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_qkvg(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor) -> None:
    if q.dim() != 4:
        raise ValueError(f"decay recurrence: q must be [B, N, H, D], got {tuple(q.shape)}")
    if k.shape != q.shape or g.shape != q.shape:
        raise ValueError(
            f"decay recurrence: q {tuple(q.shape)}, k {tuple(k.shape)} and log_decay {tuple(g.shape)} must match"
        )
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"decay recurrence: v must be [B, N, H, E] with B, N, H of q {tuple(q.shape)}, got {tuple(v.shape)}")


# ------------------------------------------------------------------------------------------------ recurrences
def decay_recurrence_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    scale: float = 1.0,
    initial_state: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token oracle of ``S_t = diag(exp(g_t)) S_{t−1} + k_t v_tᵀ``, ``o_t = scale · q_tᵀ S_t``.

    Args:
        q, k, log_decay: ``[B, N, H, D]`` (``log_decay ≤ 0``).
        v: ``[B, N, H, E]``.
        initial_state: ``[B, H, D, E]`` or None (zeros).
    Returns:
        ``(o [B, N, H, E] in q's dtype, final state [B, H, D, E] in the compute dtype)``; fp64 inputs compute in fp64.
    """
    _check_qkvg(q, k, v, log_decay)
    dt = _compute_dtype(q)
    B, N, H, D = q.shape
    E = v.shape[-1]
    qf, kf, vf, lam = q.to(dt), k.to(dt), v.to(dt), torch.exp(log_decay.to(dt))
    S = q.new_zeros(B, H, D, E, dtype=dt) if initial_state is None else initial_state.to(dt)
    outs = []
    for t in range(N):
        S = lam[:, t, :, :, None] * S + kf[:, t, :, :, None] * vf[:, t, :, None, :]
        outs.append(torch.einsum("bhd,bhde->bhe", qf[:, t], S))
    o = torch.stack(outs, dim=1) * scale if N else vf.new_zeros(B, 0, H, E)
    return o.to(q.dtype), S


def decay_recurrence_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    scale: float = 1.0,
    chunk_size: int = 32,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Chunked (GLA-decomposed) form of the same recurrence, in plain PyTorch; memory O(N · (D + chunk_size)).

    Per chunk of ``L`` tokens with in-chunk cumulative log decay ``b_t = Σ_{s≤t} g_s``:

    * intra-chunk: ``Σ_{s≤t} Σ_c q_{t,c} k_{s,c} exp(b_{t,c} − b_{s,c}) v_s`` with the exact pairwise ``[L, L, D]``
      weights (every exponent ≤ 0: no overflow for any decay; short chunks keep them small),
    * inter-chunk: ``(q_t ⊙ exp(b_t))ᵀ S_prev``,
    * chunk state: ``S = diag(exp(b_L)) S_prev + Σ_s (k_s ⊙ exp(b_L − b_s)) v_sᵀ`` (a short loop over chunks).

    Shapes as :func:`decay_recurrence_naive`; returns ``o`` (and the final state when ``output_final_state``).
    """
    _check_qkvg(q, k, v, log_decay)
    if chunk_size < 1:
        raise ValueError(f"decay_recurrence_chunked: chunk_size must be >= 1, got {chunk_size}")
    dt = _compute_dtype(q)
    B, N, H, D = q.shape
    E = v.shape[-1]
    L = max(1, min(chunk_size, N))
    nc = max(1, math.ceil(N / L))
    pad = nc * L - N

    def to_chunks(x: torch.Tensor) -> torch.Tensor:  # [B, N, H, X] → [B, H, nc, L, X]; padding: zeros (g = 0: identity)
        x = x.to(dt)
        if pad:
            x = F.pad(x, (0, 0, 0, 0, 0, pad))
        return x.permute(0, 2, 1, 3).reshape(B, H, nc, L, x.shape[-1])

    qc, kc, vc, gc = to_chunks(q), to_chunks(k), to_chunks(v), to_chunks(log_decay)
    b = gc.cumsum(dim=-2)  # [B, H, nc, L, D], non-increasing along L; b[..., -1, :] is each chunk's minimum
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    diff = (b[..., :, None, :] - b[..., None, :, :]).masked_fill(~causal[:, :, None], float("-inf"))
    # a broadcast product summed over channels: torch.compile fuses it into one reduction ([L, L, D] never stored)
    scores = (qc[..., :, None, :] * kc[..., None, :, :] * torch.exp(diff)).sum(-1)  # [B, H, nc, L, L]
    o = scores @ vc  # intra-chunk [B, H, nc, L, E]

    b_last = b[..., -1:, :]  # [B, H, nc, 1, D]
    local = (kc * torch.exp(b_last - b)).transpose(-1, -2) @ vc  # [B, H, nc, D, E]
    carry = torch.exp(b_last.squeeze(-2))[..., None]  # [B, H, nc, D, 1]
    S = q.new_zeros(B, H, D, E, dtype=dt) if initial_state is None else initial_state.to(dt)
    previous = []
    # unbind once: indexing chunk c in the loop would make every chunk's backward zero-fill a full [B, H, nc, D, E]
    for carry_c, local_c in zip(carry.unbind(2), local.unbind(2)):
        previous.append(S)
        S = carry_c * S + local_c
    o = o + (qc * torch.exp(b)) @ torch.stack(previous, dim=2)  # inter-chunk
    o = (o * scale).reshape(B, H, nc * L, E)[:, :, :N].permute(0, 2, 1, 3).to(q.dtype)
    return (o, S) if output_final_state else o


@functools.lru_cache(maxsize=1)
def _load_chunk_gla() -> Optional[Callable]:
    """fla's ``chunk_gla`` if fla is importable, else None (fla is optional; it is never installed on CPU CI)."""
    try:
        from fla.ops.gla import chunk_gla
    except Exception:  # ImportError, or fla failing to initialise without a GPU
        return None
    return chunk_gla


def fla_available() -> bool:
    """True when fla's ``chunk_gla`` can be imported."""
    return _load_chunk_gla() is not None


def decay_recurrence(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    scale: float = 1.0,
    backend: str = "auto",
    chunk_size: int = 32,
    recompute: bool = True,
) -> torch.Tensor:
    """Dispatch: fla's ``chunk_gla`` (``'fla'``, or ``'auto'`` on CUDA with fla installed) or the PyTorch chunked form
    (with ``recompute``, activation-checkpointed under autograd: only the inputs are saved, the chunked form reruns in
    the backward; without, its intermediates are saved: faster, several GB more per model at batch 512).
    Shapes as :func:`decay_recurrence_naive`; returns ``o [B, N, H, E]`` in q's dtype.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"decay_recurrence: unknown backend {backend!r}; choose one of {_BACKENDS}")
    use_fla = backend == "fla" or (backend == "auto" and q.is_cuda and fla_available())
    if not use_fla:
        if recompute and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, log_decay)):
            # recomputed in the backward instead of saving the chunked form's fp32 intermediates (~20 tensors of
            # [B, H, N, D] per call): saved, they took 17-31 GB per 2- / 4-scan classifier at batch 512 (out of memory on one GPU)
            return checkpoint(decay_recurrence_chunked, q, k, v, log_decay, scale, chunk_size, None, False,
                              use_reentrant=False)
        return decay_recurrence_chunked(q, k, v, log_decay, scale=scale, chunk_size=chunk_size)
    chunk_gla = _load_chunk_gla()
    if chunk_gla is None:
        raise RuntimeError("decay_recurrence: backend='fla' needs the fla-core package (pip install fla-core)")
    if not q.is_cuda:
        raise RuntimeError("decay_recurrence: backend='fla' needs CUDA tensors")
    _check_qkvg(q, k, v, log_decay)
    o, _ = chunk_gla(q, k, v.to(q.dtype), log_decay.float(), scale=scale)
    return o.to(q.dtype)


# ------------------------------------------------------------------------------------------------ scan orders
def scan_orders(
    grid_shape: Sequence[int],
    num_directions: int,
    num_prefix_tokens: int = 0,
    device: Optional[torch.device] = None,
) -> List[torch.Tensor]:
    """Token orders of the scans: a list of ``num_directions`` permutations of ``range(P + prod(grid_shape))``.

    Order ``i`` lists the original token indices in the order scan ``i`` visits them. Grid tokens are flattened
    row-major (the layout of the model's ``[B, N, C]`` sequence); prefix tokens lead every scan.

    * 1: row-major forward;  2: + row-major reversed;
    * 4: + the transposed ("column-major": last axis slowest) order, forward and reversed (needs ≥ 2 grid axes);
    * 6 (3-D grids ``(T, H, W)``, the video baseline): ± along each axis — for each axis, the order in which it is
      the fastest (W: row-major; H: ``(T, W, H)``; T: ``(H, W, T)``), forward and reversed.
    """
    grid_shape = tuple(int(s) for s in grid_shape)
    if num_directions not in (1, 2, 4, 6):
        raise ValueError(f"scan_orders: num_directions must be 1, 2, 4 or 6, got {num_directions}")
    if num_directions == 4 and len(grid_shape) < 2:
        raise ValueError(f"scan_orders: 4 directions need a grid with at least 2 axes, got {grid_shape}")
    if num_directions == 6 and len(grid_shape) != 3:
        raise ValueError(f"scan_orders: 6 directions need a 3-axis grid (T, H, W), got {grid_shape}")
    M = math.prod(grid_shape)
    idx = torch.arange(M, device=device).reshape(grid_shape)
    row = idx.reshape(-1)
    orders = [row] if num_directions == 1 else [row, row.flip(0)]
    if num_directions == 4:
        col = idx.permute(*reversed(range(idx.dim()))).reshape(-1)
        orders += [col, col.flip(0)]
    if num_directions == 6:
        for fastest in (1, 0):  # H fastest, then T fastest (W fastest is row-major, above)
            others = [a for a in range(3) if a != fastest]
            order = idx.permute(*others, fastest).reshape(-1)
            orders += [order, order.flip(0)]
    P = num_prefix_tokens
    if P:
        prefix = torch.arange(P, device=device)
        orders = [torch.cat([prefix, o + P]) for o in orders]
    return orders


class _TokenPermutation(torch.autograd.Function):
    """``x [B, N, ...]`` → ``x[:, order]`` for a permutation ``order`` whose inverse is ``inverse``; the backward
    gathers with the inverse instead of scattering (``index_select``'s own backward is an atomic ``index_add``, which
    a profile showed at 7 % of a 2-scan training step)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[torch.Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


def multiscan_decay(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decays: Sequence[torch.Tensor],
    orders: Sequence[torch.Tensor],
    scale: float = 1.0,
    backend: str = "auto",
    chunk_size: int = 32,
    recompute: bool = True,
) -> torch.Tensor:
    """Sum over directions of the decay recurrence run in each token order.

    Args:
        q, k: ``[B, N, H, D]``; v: ``[B, N, H, E]`` (shared by the directions).
        log_decays: one ``[B, N, H, D]`` per direction (indexed by original token position).
        orders: one permutation ``[N]`` per direction (see :func:`scan_orders`).
    Returns:
        ``[B, N, H, E]``, in original token order.

    The directions are stacked along the batch axis, so all scans run in a single recurrence call.
    """
    if len(log_decays) != len(orders) or not orders:
        raise ValueError(f"multiscan_decay: {len(log_decays)} decay tensors for {len(orders)} scan orders")
    N = q.shape[1]
    for o in orders:
        if o.shape != (N,):
            raise ValueError(f"multiscan_decay: scan order of shape {tuple(o.shape)} for {N} tokens")
    B = q.shape[0]
    orders = [o.to(q.device) for o in orders]
    inverses = [torch.argsort(o) for o in orders]
    permute = _TokenPermutation.apply
    qs = torch.cat([permute(q, o, inv) for o, inv in zip(orders, inverses)], dim=0)
    ks = torch.cat([permute(k, o, inv) for o, inv in zip(orders, inverses)], dim=0)
    vs = torch.cat([permute(v, o, inv) for o, inv in zip(orders, inverses)], dim=0)
    gs = torch.cat([permute(g, o, inv) for g, o, inv in zip(log_decays, orders, inverses)], dim=0)
    out = decay_recurrence(qs, ks, vs, gs, scale=scale, backend=backend, chunk_size=chunk_size, recompute=recompute)
    total = None
    for d, (o, inv) in enumerate(zip(orders, inverses)):
        back = permute(out[d * B : (d + 1) * B], inv, o)
        total = back if total is None else total + back
    return total


# ------------------------------------------------------------------------------------------------ token mixer
class _DecayGate(nn.Module):
    """Data-dependent log decay ``g = log λ ≤ 0`` of one scan direction: ``x [B, N, C]`` → ``[B, N, H, D]``.

    * ``'gla'``: per key channel, low rank, ``g = logsigmoid(x W₁ W₂ + b) / normalizer`` (GLA).
    * ``'mamba2'``: per head scalar, ``g = −exp(A) · softplus(x w_dt + dt_bias)`` (Mamba2's ``Δ·A``); also returns
      ``Δ`` so the keys can be scaled by it (Mamba2's ``Δ · B x`` input).
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, form: str, rank: int, normalizer: float) -> None:
        super().__init__()
        self.form, self.num_heads, self.head_dim, self.normalizer = form, num_heads, head_dim, normalizer
        if form == "gla":
            self.proj = nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, num_heads * head_dim, bias=True))
        else:
            self.dt_proj = nn.Linear(dim, num_heads, bias=False)
            dt = torch.exp(torch.empty(num_heads).uniform_(math.log(1e-3), math.log(1e-1)))
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) = dt
            self.A_log = nn.Parameter(torch.log(torch.empty(num_heads).uniform_(1.0, 16.0)))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        B, N, _ = x.shape
        H, D = self.num_heads, self.head_dim
        if self.form == "gla":
            g = F.logsigmoid(self.proj(x).float()) / self.normalizer
            return g.view(B, N, H, D), None
        delta = F.softplus(self.dt_proj(x).float() + self.dt_bias.float())  # [B, N, H]
        g = -torch.exp(self.A_log.float()) * delta
        return g[..., None].expand(B, N, H, D), delta[..., None]


class MultiScanDecayAttention(LightNetAttention):
    """Multi-direction multiplicative-decay token mixer ``x [B, N, C] → [B, N, C]``; drop-in for ``LightNetAttention``.

    ``q = act(x W_q)``, ``k = x W_k``, ``v = x W_v`` (one fused projection, ``H`` heads of ``D = C / H``), per-direction
    data-dependent decays, the decay recurrence in each scan order, outputs summed over directions; then per-head
    RMSNorm, low-rank output gate ``act(x W_g1 W_g2)`` and ``W_o``. It subclasses
    :class:`lightnet.layers.LightNetAttention` and inherits all of those modules (and the scale / grid handling), so
    the two mixers differ only in the recurrence.

    Args:
        dim: width ``C``.
        num_heads: heads ``H``.
        num_directions: 1 (causal row-major scan), 2 (Vim), 4 (VMamba) or 6 (± along T, H, W of a video grid).
        num_axes: grid dimensionality (``grid_shape`` must have this many axes).
        decay: ``'gla'`` (per-channel, low-rank sigmoid gate) or ``'mamba2'`` (per-head ``exp(−softplus)``-style).
        decay_rank: rank of the GLA decay projection.
        decay_normalizer: GLA's gate-logit normaliser (larger → slower forgetting at init).
        use_lrpe: apply MD-LRPE (cosine form) to q and k (off by default: scan order gives these models position).
        q_act: query activation (``'identity'`` default, as GLA/Mamba2; ``'silu'``, ``'relu'``, ``'elu1'``).
        scale: ``'sqrt'`` (``D^-1/2``, GLA's default), ``'none'`` or a float.
        gate_rank, gate_act, out_norm, qkv_bias, proj_drop: as in LightNetAttention.
        chunk_size: chunk length of the PyTorch chunked recurrence (only its speed changes: 8 was the fastest at
            64 tokens).
        backend: ``'auto'`` (fla on CUDA when installed, else PyTorch), ``'torch'`` or ``'fla'``.
        recompute: rerun the PyTorch chunked recurrence in the backward instead of saving its intermediates.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        *,
        num_directions: int = 2,
        num_axes: int = 2,
        decay: str = "gla",
        decay_rank: int = 16,
        decay_normalizer: float = 16.0,
        use_lrpe: bool = False,
        lrpe_base: float = 10000.0,
        num_prefix_tokens: int = 0,
        q_act: str = "identity",
        scale: Union[str, float] = "sqrt",
        gate_rank: Optional[int] = None,
        gate_act: str = "sigmoid",
        out_norm: bool = True,
        qkv_bias: bool = False,
        proj_drop: float = 0.0,
        chunk_size: int = 32,
        backend: str = "auto",
        recompute: bool = True,
    ) -> None:
        if num_directions not in (1, 2, 4, 6):
            raise ValueError(f"MultiScanDecayAttention: num_directions must be 1, 2, 4 or 6, got {num_directions}")
        if num_directions == 4 and num_axes < 2:
            raise ValueError("MultiScanDecayAttention: 4 directions need num_axes >= 2")
        if num_directions == 6 and num_axes != 3:
            raise ValueError("MultiScanDecayAttention: 6 directions need num_axes == 3 (T, H, W)")
        if decay not in _DECAY_FORMS:
            raise ValueError(f"MultiScanDecayAttention: unknown decay {decay!r}; choose one of {_DECAY_FORMS}")
        if backend not in _BACKENDS:
            raise ValueError(f"MultiScanDecayAttention: unknown backend {backend!r}; choose one of {_BACKENDS}")
        # q/k/v projection, MD-LRPE, per-head output norm, output gate, W_o, scale and grid checks: LightNet's own
        super().__init__(
            dim, num_heads, causal=False, qkv_bias=qkv_bias, use_lrpe=use_lrpe, num_axes=num_axes,
            lrpe_base=lrpe_base, num_prefix_tokens=num_prefix_tokens, q_act=q_act, scale=scale, gate_rank=gate_rank,
            gate_act=gate_act, out_norm=out_norm, proj_drop=proj_drop,
        )
        self.num_directions, self.decay, self.chunk_size, self.scan_backend = num_directions, decay, chunk_size, backend
        self.recompute = recompute
        self.decays = nn.ModuleList(
            _DecayGate(dim, num_heads, self.head_dim, decay, decay_rank, decay_normalizer) for _ in range(num_directions)
        )

    def grid_of(self, N: int, grid_shape: Optional[Sequence[int]]) -> Tuple[int, ...]:
        """The token grid of ``N`` tokens (after the prefix tokens), checked against ``grid_shape``."""
        P = self.num_prefix_tokens
        if grid_shape is None:
            if self.num_axes != 1:
                raise ValueError(f"MultiScanDecayAttention: grid_shape is required for {self.num_axes}-D inputs")
            return (N - P,)
        grid = tuple(int(s) for s in grid_shape)
        if len(grid) != self.num_axes or P + math.prod(grid) != N:
            raise ValueError(f"MultiScanDecayAttention: grid_shape {grid} (+{P} prefix tokens) describes "
                             f"{P + math.prod(grid)} tokens on {len(grid)} axes, but the input has {N} ({self.num_axes} axes)")
        return grid

    def forward(
        self,
        x: torch.Tensor,
        grid_shape: Optional[Sequence[int]] = None,
        key_padding_mask: Optional[torch.Tensor] = None,
        state: Optional[object] = None,
        return_state: bool = False,
        position_offset: int = 0,
    ) -> torch.Tensor:
        """Mix tokens. ``x``: ``[B, N, C]``; ``grid_shape``: token grid; ``key_padding_mask``: ``[B, N]`` bool, True =
        padding (padded tokens are skipped by every scan). Recurrent state is not supported (vision baseline)."""
        if state is not None or return_state:
            raise ValueError("MultiScanDecayAttention: recurrent state is not supported (non-causal vision baseline)")
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"MultiScanDecayAttention: expected [B, N, {self.dim}], got {tuple(x.shape)}")
        B, N, C = x.shape
        H, D = self.num_heads, self.head_dim
        grid = self.grid_of(N, grid_shape)
        q, k, v = self.qkv(x).view(B, N, 3, H, D).unbind(dim=2)  # each [B, N, H, D]
        act = Q_ACTS[self.q_act]
        if act is not None:
            q = act(q)
        gates = [gate(x) for gate in self.decays]
        log_decays = [g for g, _ in gates]
        if self.decay == "mamba2":  # Mamba2 feeds Δ·x into the state; one Δ per direction → keys per direction
            keys = [k * delta.to(k.dtype) for _, delta in gates]
        else:
            keys = [k] * len(gates)
        if key_padding_mask is not None:
            if key_padding_mask.shape != (B, N):
                raise ValueError(f"MultiScanDecayAttention: key_padding_mask must be [{B}, {N}], got {tuple(key_padding_mask.shape)}")
            keep = (~key_padding_mask)[:, :, None, None]
            keys = [kk * keep.to(kk.dtype) for kk in keys]  # padded tokens add nothing ...
            log_decays = [g * keep.to(g.dtype) for g in log_decays]  # ... and do not decay the state
        if self.lrpe is not None:
            theta = self.lrpe.angles(grid, offset=position_offset).to(x.device)[None, :, None, :]
            rotate = lambda t: torch.cat([t * torch.cos(theta).to(t.dtype), t * torch.sin(theta).to(t.dtype)], -1)  # noqa: E731
            q = rotate(q)
            keys = [rotate(kk) for kk in keys]
            log_decays = [torch.cat([g, g], dim=-1) for g in log_decays]
        orders = scan_orders(grid, self.num_directions, self.num_prefix_tokens, device=x.device)
        if self.decay == "mamba2":  # distinct keys per direction: run the directions one by one
            o = sum(
                multiscan_decay(q, kk, v, [g], [order], self.scale, self.scan_backend, self.chunk_size, self.recompute)
                for kk, g, order in zip(keys, log_decays, orders)
            )
        else:
            o = multiscan_decay(q, keys[0], v, log_decays, orders, self.scale, self.scan_backend, self.chunk_size,
                                self.recompute)
        o = self.out_norm(o).reshape(B, N, C)
        if self.gate is not None:
            o = o * GATE_ACTS[self.gate_act](self.gate(x))
        return self.proj_drop(self.proj(o))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, heads={self.num_heads}, directions={self.num_directions}, decay={self.decay}, "
            f"scale={self.scale:g}, q_act={self.q_act}, gate_act={self.gate_act}"
        )
