"""Subword transformer language model used in the lip reader's beam search.

Token embedding (embed_unit) -> linear to att_unit, LayerNorm, ReLU, optional
sinusoidal positions -> causal pre-norm transformer blocks -> final norm -> linear
to the vocabulary. Key names follow the published `lm_en_subword/model.pth`
(`embed.weight`, `encoder.embed.{0,1}.*`, `encoder.encoders.N.{self_attn,feed_forward,
norm_ff,norm_mha}.*`, `encoder.after_norm.*`, `decoder.*`).
"""
from __future__ import annotations

import torch
from torch import nn

from models.vsr.conformer import EncoderLayer
from models.vsr.layers import FeedForward, LayerNorm, MultiHeadedAttention, PositionalEncoding, causal_keep
from models.vsr.model_json import LMConfig


class LMEncoder(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        pos = PositionalEncoding(cfg.att_unit) if cfg.pos_enc == "sinusoidal" else nn.Sequential()
        self.embed = nn.Sequential(nn.Linear(cfg.embed_unit, cfg.att_unit), nn.LayerNorm(cfg.att_unit),
                                   nn.Dropout(0.0), nn.ReLU(), pos)
        self.encoders = nn.ModuleList([
            EncoderLayer(cfg.att_unit, MultiHeadedAttention(cfg.head, cfg.att_unit),
                         FeedForward(cfg.att_unit, cfg.unit))
            for _ in range(cfg.layer)
        ])
        self.after_norm = LayerNorm(cfg.att_unit)

    def input_layer(self, emb: torch.Tensor, offset: int = 0) -> torch.Tensor:
        x = self.embed[3](self.embed[1](self.embed[0](emb)))
        pos = self.embed[4]
        return pos(x, offset=offset) if isinstance(pos, PositionalEncoding) else x


class TransformerLM(nn.Module):
    def __init__(self, n_vocab: int, cfg: LMConfig):
        super().__init__()
        self.embed = nn.Embedding(n_vocab, cfg.embed_unit)
        self.encoder = LMEncoder(cfg)
        self.decoder = nn.Linear(cfg.att_unit, n_vocab)
        if cfg.tie_weights:
            self.decoder.weight = self.embed.weight

    @staticmethod
    def _key_keep(ys: torch.Tensor) -> torch.Tensor:
        return (ys != 0)[:, None, None, :]  # id 0 (<blank>) is never attended to

    def forward(self, ys: torch.Tensor) -> torch.Tensor:
        """ys (B, L) -> next-token log-probs at every position (B, L, V)."""
        x = self.encoder.input_layer(self.embed(ys))
        keep = self._key_keep(ys) & causal_keep(ys.size(1), ys.device)
        for layer in self.encoder.encoders:
            x = layer(x, None, keep)
        return torch.log_softmax(self.decoder(self.encoder.after_norm(x)), dim=-1)

    def step(self, yseq: torch.Tensor, cache):
        """Next-token log-probs (n, V) for prefixes yseq (n, L), computing only position L-1."""
        x = self.encoder.input_layer(self.embed(yseq[:, -1:]), offset=yseq.size(1) - 1)
        keep = self._key_keep(yseq)
        cache = cache if cache is not None else [None] * len(self.encoder.encoders)
        new_cache = []
        for layer, c in zip(self.encoder.encoders, cache):
            x, c = layer.step(x, c, keep)
            new_cache.append(c)
        return torch.log_softmax(self.decoder(self.encoder.after_norm(x[:, -1])), dim=-1), new_cache
