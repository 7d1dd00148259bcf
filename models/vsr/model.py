"""The lip reader network: conformer encoder over mouth video, CTC head, attention decoder.

Built from a `VSRConfig` (read from the published `model.json`) and the size of the
token list; the state dict keys are those of the published plain `model.pth`
(`encoder.*`, `decoder.*`, `ctc.ctc_lo.*`).
"""
from __future__ import annotations

import torch
from torch import nn

from models.vsr.conformer import ConformerEncoder, frame_mask
from models.vsr.ctc import CTC
from models.vsr.decoder import TransformerDecoder
from models.vsr.model_json import VSRConfig


class VSRModel(nn.Module):
    def __init__(self, cfg: VSRConfig, odim: int):
        super().__init__()
        self.cfg = cfg
        self.odim = odim
        self.blank = 0
        self.sos = self.eos = odim - 1
        self.encoder = ConformerEncoder(cfg)
        self.decoder = (TransformerDecoder(odim, cfg.adim, cfg.aheads, cfg.dunits, cfg.dlayers)
                        if cfg.has_decoder else None)
        self.ctc = CTC(odim, cfg.adim) if cfg.has_ctc else None

    def forward(self, video: torch.Tensor, lengths: torch.Tensor | None = None, ys_in: torch.Tensor | None = None):
        """Training: a zero-padded batch video (B, 1, T, H, W) with lengths (B,) real frames, and the decoder
        input ys_in (B, L) (sos + units) -> (encoder output (B, T, D), CTC log-probs (B, T, odim) or None,
        decoder log-probs (B, L, odim) or None)."""
        enc = self.encoder(video, lengths)
        ctc = self.ctc.log_softmax(enc) if self.ctc is not None else None
        dec = None
        if self.decoder is not None and ys_in is not None:
            keep = frame_mask(lengths, enc.size(1))[:, None, None, :] if lengths is not None else None
            dec = self.decoder(ys_in, enc, keep)
        return enc, ctc, dec

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video (1, T, H, W) [one clip, channel first] or (B, 1, T, H, W) -> (T, D) or (B, T, D)."""
        if video.dim() == 4:
            return self.encoder(video.unsqueeze(0)).squeeze(0)
        return self.encoder(video)
