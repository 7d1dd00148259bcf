"""Conformer encoder of the lip reader (and the plain transformer blocks reused by the LM).

Block (pre-norm, macaron style): x += 1/2 FFN(x); x += MHSA(x) with relative
positions; x += Conv(x); x += 1/2 FFN(x); final layer norm. Without macaron and
convolution the same class is a plain transformer encoder block (FFN scale 1).
Key names follow the published checkpoint (`norm_ff`, `norm_mha`,
`feed_forward_macaron`, `conv_module.pointwise_cov1`, ...).
"""
from __future__ import annotations

import torch
from torch import nn

from models.vsr.frontend import Conv3dResNet
from models.vsr.layers import (FeedForward, LayerNorm, MultiHeadedAttention, PositionalEncoding,
                               RelPositionalEncoding, RelPositionMultiHeadedAttention, Swish)
from models.vsr.model_json import VSRConfig


class ConvolutionModule(nn.Module):
    """Pointwise conv (2C) + GLU, depthwise conv (kernel k), BN, swish, pointwise conv."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.pointwise_cov1 = nn.Conv1d(channels, 2 * channels, 1)
        self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2,
                                        groups=channels)
        self.norm = nn.BatchNorm1d(channels)
        self.pointwise_cov2 = nn.Conv1d(channels, channels, 1)
        self.activation = Swish()

    def forward(self, x: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C); frames (B, T) bool, True on real frames: padding is zeroed before the depthwise
        convolution (batched training), so that a clip's output does not depend on its padding there."""
        x = nn.functional.glu(self.pointwise_cov1(x.transpose(1, 2)), dim=1)
        if frames is not None:
            x = x.masked_fill(~frames.unsqueeze(1), 0.0)
        x = self.activation(self.norm(self.depthwise_conv(x)))
        return self.pointwise_cov2(x).transpose(1, 2)


class EncoderLayer(nn.Module):
    def __init__(self, size: int, self_attn: nn.Module, feed_forward: nn.Module,
                 conv_module: nn.Module | None = None, macaron: bool = False):
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.conv_module = conv_module
        self.norm_ff = LayerNorm(size)
        self.norm_mha = LayerNorm(size)
        self.ff_scale = 1.0
        if macaron:
            self.feed_forward_macaron = _clone_ffn(feed_forward)
            self.norm_ff_macaron = LayerNorm(size)
            self.ff_scale = 0.5
        else:
            self.feed_forward_macaron = None
        if conv_module is not None:
            self.norm_conv = LayerNorm(size)
            self.norm_final = LayerNorm(size)
        self.rel = isinstance(self_attn, RelPositionMultiHeadedAttention)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor | None = None,
                keep: torch.Tensor | None = None, frames: torch.Tensor | None = None) -> torch.Tensor:
        """keep: attention mask broadcastable to (B, h, L, L); frames (B, L) bool: real frames (conv module)."""
        if self.feed_forward_macaron is not None:
            x = x + self.ff_scale * self.feed_forward_macaron(self.norm_ff_macaron(x))
        h = self.norm_mha(x)
        x = x + (self.self_attn(h, pos_emb, keep) if self.rel else self.self_attn(h, h, h, keep))
        if self.conv_module is not None:
            x = x + self.conv_module(self.norm_conv(x), frames)
        x = x + self.ff_scale * self.feed_forward(self.norm_ff(x))
        if self.conv_module is not None:
            x = self.norm_final(x)
        return x

    def step(self, x: torch.Tensor, cache, keep: torch.Tensor | None = None):
        """Causal incremental step for the newest position only (plain attention, no conv).

        x (n, 1, D); cache = (K, V) of the earlier positions (n, h, L-1, d_k) or None;
        keep (n, 1, 1, L) key mask. Returns (y (n, 1, D), (K, V) including this position).
        """
        if self.rel or self.conv_module is not None:
            raise RuntimeError("incremental steps need a block without relative attention or convolution")
        if self.feed_forward_macaron is not None:
            x = x + self.ff_scale * self.feed_forward_macaron(self.norm_ff_macaron(x))
        att = self.self_attn
        h = self.norm_mha(x)
        k, v = att.split(h, att.linear_k), att.split(h, att.linear_v)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        x = x + att.context(att.split(h, att.linear_q), k, v, keep)
        x = x + self.ff_scale * self.feed_forward(self.norm_ff(x))
        return x, (k, v)


def _clone_ffn(ffn: FeedForward) -> FeedForward:
    out = FeedForward(ffn.w_1.in_features, ffn.w_1.out_features, ffn.activation)
    out.load_state_dict(ffn.state_dict())
    return out


class ConformerEncoder(nn.Module):
    """Video (B, 1, T, H, W) -> (B, T, adim)."""

    def __init__(self, cfg: VSRConfig):
        super().__init__()
        self.frontend = Conv3dResNet(cfg.relu_type, cfg.frontend_width)
        self.rel = cfg.encoder_attn == "rel_mha"
        pos = RelPositionalEncoding(cfg.adim) if self.rel else PositionalEncoding(cfg.adim)
        self.embed = nn.Sequential(nn.Linear(self.frontend.out_dim, cfg.adim), pos)

        def attn():
            if self.rel:
                return RelPositionMultiHeadedAttention(cfg.aheads, cfg.adim, cfg.zero_triu)
            return MultiHeadedAttention(cfg.aheads, cfg.adim)

        self.encoders = nn.ModuleList([
            EncoderLayer(cfg.adim, attn(), FeedForward(cfg.adim, cfg.eunits),
                         ConvolutionModule(cfg.adim, cfg.cnn_module_kernel) if cfg.use_cnn_module else None,
                         macaron=cfg.macaron_style)
            for _ in range(cfg.elayers)
        ])
        self.after_norm = LayerNorm(cfg.adim)

    def forward(self, video: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """lengths (B,) real frames per clip of a zero-padded batch (None: every frame is real); padded
        frames are left out of self-attention and the convolution modules."""
        x = self.embed[0](self.frontend(video))
        if self.rel:
            x, pos_emb = self.embed[1](x)
        else:
            x, pos_emb = self.embed[1](x), None
        keep = frames = None
        if lengths is not None:
            frames = frame_mask(lengths, x.size(1))
            keep = frames[:, None, None, :]
        for layer in self.encoders:
            x = layer(x, pos_emb, keep, frames)
        return self.after_norm(x)


def frame_mask(lengths: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) bool, True on the first lengths[b] positions of row b."""
    return torch.arange(n, device=lengths.device).unsqueeze(0) < lengths.to(torch.long).unsqueeze(1)
