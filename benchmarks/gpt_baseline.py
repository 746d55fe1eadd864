"""GPT-style softmax-attention baseline of the LM comparisons (``benchmarks/lm_decode.py``, ``experiments/lm_quality.py``).

Same width, depth, heads, GLU channel mixer, RMSNorm, tied byte embedding and tokenizer as
:class:`lightnet.lm.LightNetForCausalLM`; only the token mixer differs: causal softmax attention through
``torch.nn.functional.scaled_dot_product_attention`` with rotary position embeddings (RoPE, no length limit), and a
pre-allocated KV cache for decoding (memory grows linearly with the context).

Shapes: ``input_ids [B, N]`` → ``logits [B, N, V]``; KV cache per layer ``[B, H, L_max, D]`` × 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from lightnet.layers import GLU, RMSNorm

__all__ = ["GPTConfig", "GPTBaseline", "KVCache"]

_DECODE_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass
class GPTConfig:
    vocab_size: int = 260
    dim: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 8 / 3
    rope_base: float = 10000.0
    init_std: float = 0.02


def _rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate pairs (first half, second half) of ``x [B, H, N, D]`` by ``position · base^(−2i/D)``."""
    D = x.shape[-1]
    inv = base ** (-torch.arange(0, D // 2, device=x.device, dtype=torch.float32) * 2 / D)
    ang = positions.float()[:, None] * inv[None]  # [N, D/2]
    cos, sin = ang.cos()[None, None], ang.sin()[None, None]
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class KVCache:
    """Pre-allocated keys/values of every layer: ``[B, H, max_len, D]`` each, filled up to ``length`` (zeros after it:
    the static decode step attends over the whole buffer with a mask, and masked values must be finite)."""

    def __init__(self, depth: int, batch: int, heads: int, head_dim: int, max_len: int, device, dtype) -> None:
        shape = (batch, heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.length = 0
        self.max_len = max_len

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, rope_base: float) -> None:
        super().__init__()
        self.heads, self.head_dim, self.rope_base = heads, dim // heads, rope_base
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, layer: int = 0, cache: Optional[KVCache] = None,
                position: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [B, H, N, D] each
        if position is not None:
            return self.proj(self._static_step(q, k, v, layer, cache, position).transpose(1, 2).reshape(B, N, C))
        start = 0 if cache is None else cache.length
        pos = torch.arange(start, start + N, device=x.device)
        q, k = _rope(q, pos, self.rope_base), _rope(k, pos, self.rope_base)
        if cache is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            if start + N > cache.max_len:
                raise ValueError(f"KV cache full: {start + N} > {cache.max_len}")
            cache.k[layer][:, :, start:start + N] = k
            cache.v[layer][:, :, start:start + N] = v
            kk, vv = cache.k[layer][:, :, :start + N], cache.v[layer][:, :, :start + N]
            if N == 1:
                # KV length grows by one every step: keep cuDNN out (it rebuilds its execution graph for every new
                # length, ~14 ms per call on an H100); flash / memory-efficient kernels take any length as is.
                with sdpa_kernel(_DECODE_BACKENDS):
                    o = F.scaled_dot_product_attention(q, kk, vv)
            elif start == 0:
                o = F.scaled_dot_product_attention(q, kk, vv, is_causal=True)
            else:  # chunk after a prefix: query t sees keys ≤ start + t
                mask = torch.ones(N, start + N, dtype=torch.bool, device=x.device).tril(start)
                o = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
        return self.proj(o.transpose(1, 2).reshape(B, N, C))

    def _static_step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int, cache: KVCache,
                     position: torch.Tensor) -> torch.Tensor:
        """One token at ``position`` (0-dim long tensor on the device), the static-cache form a CUDA graph captures
        (as Hugging Face's static cache does): k, v written at ``position``, attention over the whole pre-allocated
        ``[B, H, max_len, D]`` buffer with the keys after ``position`` masked out; no host value changes per step."""
        pos = position.view(1)
        q, k = _rope(q, pos, self.rope_base), _rope(k, pos, self.rope_base)
        cache.k[layer].index_copy_(2, pos, k)
        cache.v[layer].index_copy_(2, pos, v)
        visible = (torch.arange(cache.max_len, device=q.device) <= position)[None, None, None]  # [1, 1, 1, max_len]
        return F.scaled_dot_product_attention(q, cache.k[layer], cache.v[layer], attn_mask=visible)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.num_heads, cfg.rope_base)
        self.norm2 = RMSNorm(cfg.dim)
        self.mlp = GLU(cfg.dim, cfg.mlp_ratio)

    def forward(self, x: torch.Tensor, layer: int = 0, cache: Optional[KVCache] = None,
                position: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), layer, cache, position)
        return x + self.mlp(self.norm2(x))


class GPTBaseline(nn.Module):
    """Pre-norm GPT with RoPE softmax attention (SDPA) and a tied LM head."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = RMSNorm(cfg.dim)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                std = cfg.init_std / math.sqrt(2 * cfg.depth) if name.endswith(("attn.proj", "mlp.fc2")) else cfg.init_std
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=cfg.init_std)
        self.lm_head.weight = self.embed.weight

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, input_ids: torch.Tensor, cache: Optional[KVCache] = None, last_only: bool = False) -> torch.Tensor:
        x = self.embed(input_ids)
        for i, blk in enumerate(self.blocks):
            x = blk(x, i, cache)
        if cache is not None:
            cache.length += input_ids.shape[1]
        x = self.norm(x)
        return self.lm_head(x[:, -1:] if last_only else x)

    def loss(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits = self(input_ids)
        return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1))

    def new_cache(self, batch: int, max_len: int, device, dtype) -> KVCache:
        c = self.cfg
        return KVCache(c.depth, batch, c.num_heads, c.dim // c.num_heads, max_len, device, dtype)

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, cache: KVCache, chunk_size: int = 8192) -> torch.Tensor:
        """Fill the cache chunk by chunk; returns last-position logits ``[B, V]``."""
        logits = None
        for s in range(0, input_ids.shape[1], chunk_size):
            logits = self(input_ids[:, s:s + chunk_size], cache, last_only=True)
        return logits[:, -1].float()

    @torch.no_grad()
    def decode_step(self, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        return self(token[:, None], cache, last_only=True)[:, -1].float()

    @torch.no_grad()
    def static_decode_step(self, token: torch.Tensor, cache: KVCache, position: torch.Tensor) -> torch.Tensor:
        """:meth:`decode_step` at a device ``position`` (0-dim long) over the whole static cache: capture-safe
        (``cache.length`` is not read or advanced; the caller advances ``position``). ``[B]`` → logits ``[B, V]``."""
        x = self.embed(token[:, None])
        for i, blk in enumerate(self.blocks):
            x = blk(x, i, cache, position)
        return self.lm_head(self.norm(x))[:, -1].float()

