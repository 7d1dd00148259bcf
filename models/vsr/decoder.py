"""Attention decoder of the lip reader: token embedding + absolute positions, pre-norm
transformer blocks (masked self-attention, attention over the encoder output, FFN),
final norm and output projection to log-probabilities.

Two ways to run it: `forward` on whole prefixes (training-style, used by tests and
parity) and `step` for beam search, which only computes the newest position and
keeps each block's self-attention keys/values in a cache; the encoder-side
keys/values are projected once per utterance (`memory_kv`) and shared by all beams.
"""
from __future__ import annotations

import torch
from torch import nn

from models.vsr.layers import FeedForward, LayerNorm, MultiHeadedAttention, PositionalEncoding, causal_keep


class DecoderLayer(nn.Module):
    def __init__(self, size: int, heads: int, units: int):
        super().__init__()
        self.self_attn = MultiHeadedAttention(heads, size)
        self.src_attn = MultiHeadedAttention(heads, size)
        self.feed_forward = FeedForward(size, units)
        self.norm1 = LayerNorm(size)
        self.norm2 = LayerNorm(size)
        self.norm3 = LayerNorm(size)

    def forward(self, x, keep, memory, memory_keep=None):
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, keep)
        x = x + self.src_attn(self.norm2(x), memory, memory, memory_keep)
        return x + self.feed_forward(self.norm3(x))

    def step(self, x, cache, mem_kv):
        sa = self.self_attn
        h = self.norm1(x)
        k, v = sa.split(h, sa.linear_k), sa.split(h, sa.linear_v)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        x = x + sa.context(sa.split(h, sa.linear_q), k, v)
        ca = self.src_attn
        x = x + ca.context(ca.split(self.norm2(x), ca.linear_q), mem_kv[0], mem_kv[1])
        return x + self.feed_forward(self.norm3(x)), (k, v)


class TransformerDecoder(nn.Module):
    def __init__(self, odim: int, size: int, heads: int, units: int, layers: int):
        super().__init__()
        self.embed = nn.Sequential(nn.Embedding(odim, size), PositionalEncoding(size))
        self.decoders = nn.ModuleList([DecoderLayer(size, heads, units) for _ in range(layers)])
        self.after_norm = LayerNorm(size)
        self.output_layer = nn.Linear(size, odim)

    def forward(self, ys: torch.Tensor, memory: torch.Tensor, memory_keep: torch.Tensor | None = None) -> torch.Tensor:
        """ys (B, L) token ids starting with sos, memory (B, T, D) -> log-probs (B, L, odim).
        memory_keep (B, 1, 1, T) bool: the real encoder frames of a padded batch (None: all)."""
        x = self.embed(ys)
        keep = causal_keep(ys.size(1), ys.device)
        for layer in self.decoders:
            x = layer(x, keep, memory, memory_keep)
        return torch.log_softmax(self.output_layer(self.after_norm(x)), dim=-1)

    def memory_kv(self, memory: torch.Tensor):
        """Per block, the encoder output projected to keys/values (1, h, T, d_k)."""
        return [(l.src_attn.split(memory, l.src_attn.linear_k), l.src_attn.split(memory, l.src_attn.linear_v))
                for l in self.decoders]

    def step(self, yseq: torch.Tensor, cache, mem_kv):
        """Next-token log-probs for each prefix in yseq (n, L); only position L-1 is computed.

        cache: None (first step) or the list returned by the previous call for the same
        prefixes without their last token. Returns (log-probs (n, odim), new cache).
        """
        pos = yseq.size(1) - 1
        x = self.embed[1](self.embed[0](yseq[:, -1:]), offset=pos)
        cache = cache if cache is not None else [None] * len(self.decoders)
        new_cache = []
        for layer, c, kv in zip(self.decoders, cache, mem_kv):
            x, c = layer.step(x, c, kv)
            new_cache.append(c)
        return torch.log_softmax(self.output_layer(self.after_norm(x[:, -1])), dim=-1), new_cache
