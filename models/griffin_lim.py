"""A vocoder that needs no training: the linear magnitude recovered from the log-mel, then Griffin-Lim.

    voc = GriffinLimVocoder(cfg["audio"], n_iter=32)    # vocoder.kind=griffinlim (configs/vocoder/griffinlim.yaml)
    audio = vocode(voc, mel, lengths=lengths)            # as with HiFi-GAN (models/hifigan/generator.py)
    wav = griffin_lim(log_mel, cfg["audio"])             # one clip, as a NumPy waveform

The magnitude comes from the mel by non-negative least squares (multiplicative updates started at the
pseudo-inverse), the phase from torchaudio's Griffin-Lim. It sounds like what it is (phasey, metallic),
but it keeps what a recogniser needs, and it lets a model set trained in an hour on a CPU (the synthetic
recipe's `--size cpu`) speak without a trained HiFi-GAN. The phase starts from a fixed seed, drawn from
a forked RNG, so the output depends on the mel only and the caller's random state is left as it was.
"""
from __future__ import annotations

import librosa
import numpy as np
import torch
import torchaudio
from torch import nn

from dataloaders.audio import audio_params

NNLS_ITERS = 30


class GriffinLimVocoder(nn.Module):
    """Denormalised log-mel (B, n_mels, F) -> waveform (B, 1, F * hop), clip by clip (a clip of a padded
    batch is vocoded at the length given with `lengths` by `vocode`, its tail left silent)."""

    takes_lengths = True   # vocode() hands it each clip's valid frames

    def __init__(self, audio_cfg=None, n_iter: int = 32):
        super().__init__()
        p = audio_params(audio_cfg)
        self.hop = int(p["hop_length"])
        self.n_iter = int(n_iter)
        basis = torch.from_numpy(librosa.filters.mel(sr=p["sampling_rate"], n_fft=p["filter_length"],
                                                     n_mels=p["n_mels"], fmin=p["mel_fmin"], fmax=p["mel_fmax"]))
        self.register_buffer("basis", basis.float())
        self.register_buffer("pinv", torch.linalg.pinv(basis.float()))
        self.gl = torchaudio.transforms.GriffinLim(n_fft=p["filter_length"], win_length=p["win_length"],
                                                   hop_length=p["hop_length"], power=1.0, n_iter=self.n_iter,
                                                   window_fn=torch.hann_window)

    def magnitude(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(n_mels, F) log-mel -> (n_fft // 2 + 1, F) non-negative linear magnitude whose mel is closest."""
        mel = log_mel.float().exp()
        mag = (self.pinv @ mel).clamp_min(1e-8)
        gram, target = self.basis.T @ self.basis, self.basis.T @ mel
        for _ in range(NNLS_ITERS):
            mag = mag * target / (gram @ mag).clamp_min(1e-10)
        return mag

    @torch.no_grad()
    def one(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(n_mels, F) -> (F * hop,) waveform (not peak-normalised)."""
        frames = log_mel.shape[-1]
        device = self.basis.device   # the module's: a GPU when it was moved there
        # manual_seed seeds every device: the caller's random state is restored on each that is used
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            wav = self.gl(self.magnitude(log_mel.to(device))).to(log_mel.device)
        out = torch.zeros(frames * self.hop, device=log_mel.device)
        n = min(len(wav), len(out))
        out[:n] = wav[:n]
        return out

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        frames = mel.shape[-1]
        lengths = [frames] * mel.shape[0] if lengths is None else [int(n) for n in lengths]
        out = torch.zeros(mel.shape[0], 1, frames * self.hop, device=mel.device)
        for i, n in enumerate(lengths):
            if n > 0:
                out[i, 0, :n * self.hop] = self.one(mel[i, :, :n])
        return out


def griffin_lim(log_mel, audio_cfg=None, n_iter: int = 32) -> np.ndarray:
    """One denormalised log-mel (n_mels, frames) -> float32 waveform of peak 1 / audio.peak_scale."""
    voc = GriffinLimVocoder(audio_cfg, n_iter)
    wav = voc.one(torch.as_tensor(log_mel).float().cpu())
    peak = float(wav.abs().max())
    if peak > 0:
        wav = wav / (peak * float(audio_params(audio_cfg)["peak_scale"]))
    return wav.numpy().astype("float32")
