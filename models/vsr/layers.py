"""Building blocks shared by the lip reader's encoder, decoder and language model.

Numerics follow the ESPnet conventions the published lip reader was trained with:
layer norms inside the transformer blocks use eps 1e-12, attention scores are
scaled after the product, masked positions get the dtype's minimum before the
softmax and exact zeros after it, and positional tables are computed in float32.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class LayerNorm(nn.LayerNorm):
    """Layer norm with eps 1e-12 (the transformer blocks' setting)."""

    def __init__(self, size: int):
        super().__init__(size, eps=1e-12)


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class FeedForward(nn.Module):
    """Position-wise two-layer MLP `w_2(act(w_1(x)))` (dropout is inactive at inference)."""

    def __init__(self, size: int, hidden: int, activation: nn.Module | None = None):
        super().__init__()
        self.w_1 = nn.Linear(size, hidden)
        self.w_2 = nn.Linear(hidden, size)
        self.activation = activation if activation is not None else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.activation(self.w_1(x)))


def sinusoid_table(positions: torch.Tensor, size: int) -> torch.Tensor:
    """Interleaved sin/cos table (len(positions), size) for float32 `positions`."""
    inv_freq = torch.exp(torch.arange(0, size, 2, dtype=torch.float32) * -(math.log(10000.0) / size))
    angles = positions.to(torch.float32).unsqueeze(1) * inv_freq
    table = torch.zeros(positions.numel(), size, dtype=torch.float32)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table


class _TableCache:
    """Small per-module cache of positional tables keyed by (length, device, dtype)."""

    def __init__(self):
        self._key = None
        self._table = None

    def get(self, key, make):
        if self._key != key:
            self._table = make()
            self._key = key
        return self._table


class PositionalEncoding(nn.Module):
    """Absolute positions: x * sqrt(d) + table[:len]. No parameters."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.xscale = math.sqrt(size)
        self._cache = _TableCache()

    def table(self, length: int, device, dtype) -> torch.Tensor:
        n = max(int(length), 1)
        return self._cache.get(
            (n, str(device), dtype),
            lambda: sinusoid_table(torch.arange(0, n), self.size).to(device=device, dtype=dtype),
        )[:length]

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x: (B, L, size); positions offset .. offset + L - 1."""
        pe = self.table(offset + x.size(1), x.device, x.dtype)[offset:]
        return x * self.xscale + pe


class RelPositionalEncoding(nn.Module):
    """Relative positions (Transformer-XL style, ESPnet 'latest' layout).

    Returns (x * sqrt(d), pos_emb) where pos_emb (1, 2L-1, d) holds the table for
    relative distances L-1, L-2, ..., 0, ..., -(L-1) in that order.
    """

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.xscale = math.sqrt(size)
        self._cache = _TableCache()

    def pos_table(self, length: int, device, dtype) -> torch.Tensor:
        def make():
            rel = torch.arange(length - 1, -length, -1)
            return sinusoid_table(rel, self.size).to(device=device, dtype=dtype).unsqueeze(0)

        return self._cache.get((int(length), str(device), dtype), make)

    def forward(self, x: torch.Tensor):
        return x * self.xscale, self.pos_table(x.size(1), x.device, x.dtype)


def _masked_softmax(scores: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    if keep is None:
        return torch.softmax(scores, dim=-1)
    drop = ~keep
    scores = scores.masked_fill(drop, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1).masked_fill(drop, 0.0)


class MultiHeadedAttention(nn.Module):
    """Multi-head scaled dot-product attention with separate q/k/v/out projections."""

    def __init__(self, n_head: int, n_feat: int):
        super().__init__()
        if n_feat % n_head:
            raise ValueError(f"attention width {n_feat} is not divisible by {n_head} heads")
        self.h = n_head
        self.d_k = n_feat // n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)

    def split(self, x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        """(B, L, n_feat) -> (B, h, L, d_k)."""
        b, n = x.shape[:2]
        return proj(x).view(b, n, self.h, self.d_k).transpose(1, 2)

    def attend(self, scores: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """scores (B, h, L1, L2) already scaled; v (B', h, L2, d_k); keep broadcastable to scores."""
        attn = _masked_softmax(scores, keep)
        out = torch.matmul(attn, v)  # (B, h, L1, d_k)
        b, _, n, _ = out.shape
        return self.linear_out(out.transpose(1, 2).reshape(b, n, self.h * self.d_k))

    def context(self, q, k, v, keep=None) -> torch.Tensor:
        """Attention on already projected heads (k, v may have batch 1 and broadcast)."""
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_k)
        return self.attend(scores, v, keep)

    def forward(self, query, key, value, keep: torch.Tensor | None = None) -> torch.Tensor:
        """keep: bool, True where attention is allowed, broadcastable to (B, h, L1, L2)."""
        return self.context(self.split(query, self.linear_q), self.split(key, self.linear_k),
                            self.split(value, self.linear_v), keep)


class RelPositionMultiHeadedAttention(MultiHeadedAttention):
    """Self-attention with relative positions and the two learned biases u, v."""

    def __init__(self, n_head: int, n_feat: int, zero_triu: bool = False):
        super().__init__(n_head, n_feat)
        self.zero_triu = zero_triu
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(self.h, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(self.h, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    def rel_shift(self, bd: torch.Tensor) -> torch.Tensor:
        """(B, h, L, 2L-1) scores per relative distance -> (B, h, L, L) with [i, j] = bd[i, L-1-i+j]."""
        n = bd.size(2)
        i = torch.arange(n, device=bd.device)
        idx = (n - 1 - i).unsqueeze(1) + i.unsqueeze(0)  # (L, L)
        out = torch.gather(bd, -1, idx.expand(*bd.shape[:2], n, n))
        if self.zero_triu:
            ones = torch.ones(n, n, device=bd.device, dtype=bd.dtype)
            out = out * torch.tril(ones, 0)[None, None]
        return out

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.linear_q(x).view(b, n, self.h, self.d_k)  # (B, L, h, d_k)
        k = self.split(x, self.linear_k)
        v = self.split(x, self.linear_v)
        p = self.linear_pos(pos_emb).view(pos_emb.size(0), -1, self.h, self.d_k).transpose(1, 2)
        ac = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        bd = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
        scores = (ac + self.rel_shift(bd)) / math.sqrt(self.d_k)
        return self.attend(scores, v, keep)


def causal_keep(length: int, device) -> torch.Tensor:
    """(1, 1, L, L) bool, True on and below the diagonal."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril_().view(1, 1, length, length)
