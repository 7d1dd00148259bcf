"""HiFi-GAN discriminators and training losses (used by train_vocoder.py).

Architecture (HiFi-GAN V1, Kong et al. 2020):

- **Multi-period discriminator** (MPD): one sub-discriminator per period p (2, 3, 5, 7,
  11). The waveform (B, 1, T) is reflect-padded to a multiple of p and folded to
  (B, 1, T/p, p); then 2-D convolutions with (5, 1) kernels, i.e. along time only:
  four with stride 3 and one with stride 1 (channels 32, 128, 512, 1024, 1024 by
  default), each followed by leaky ReLU 0.1, and a (3, 1) output convolution to one
  channel. Weight norm on every layer.
- **Multi-scale discriminator** (MSD): three sub-discriminators on the raw waveform,
  the waveform average-pooled once (kernel 4, stride 2, padding 2) and twice. Each is a
  stack of 1-D grouped convolutions (kernels 15, 41, 41, 41, 41, 41, 5; strides 1, 2,
  2, 4, 4, 1, 1; groups 1, 4, 16, 16, 16, 16, 1; channels 128, 128, 256, 512, 1024,
  1024, 1024 by default) with leaky ReLU 0.1 and a 3-tap output convolution to one
  channel. Spectral norm on the first (raw-waveform) sub-discriminator, weight norm on
  the others. With other channel counts a layer's groups are reduced to the largest
  divisor of the published value that divides both of its channel counts.

Every sub-discriminator returns its flattened output (the real/fake score map) and the
list of its layer activations (for feature matching).

Losses (least-squares GAN): discriminator sum_d E[(1 - D(y))^2] + E[D(G(s))^2];
generator adversarial sum_d E[(1 - D(G(s)))^2]; feature matching sum over layers of the
mean |D_l(y) - D_l(G(s))| (the published recipe weights it 2); mel L1 between the log-mel
of the generated waveform (computed with the project's `log_mel`) and the target log-mel
(the published recipe weights it 45).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from dataloaders.audio import log_mel
from utils.errors import LipVoicerError

LRELU_SLOPE = 0.1

# Published sizes.
MPD_PERIODS = (2, 3, 5, 7, 11)
MPD_CHANNELS = (32, 128, 512, 1024, 1024)
MSD_SCALES = 3
MSD_CHANNELS = (128, 128, 256, 512, 1024, 1024, 1024)
MSD_KERNELS = (15, 41, 41, 41, 41, 41, 5)
MSD_STRIDES = (1, 2, 2, 4, 4, 1, 1)
MSD_GROUPS = (1, 4, 16, 16, 16, 16, 1)


def _groups(published: int, c_in: int, c_out: int) -> int:
    """The published group count, reduced until it divides both channel counts."""
    return math.gcd(published, math.gcd(c_in, c_out))



def _conv_stack(convs, conv_post, x: torch.Tensor):
    """Leaky-ReLU convolutions then the output convolution: (flattened scores, every activation)."""
    fmap = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        fmap.append(x)
    x = conv_post(x)
    fmap.append(x)
    return torch.flatten(x, 1), fmap

class PeriodDiscriminator(nn.Module):
    """MPD sub-discriminator for one period: (B, 1, T) -> (scores (B, N), activations)."""

    def __init__(self, period: int, channels: Sequence[int] = MPD_CHANNELS, kernel: int = 5, stride: int = 3,
                 use_spectral_norm: bool = False):
        super().__init__()
        if period < 1:
            raise LipVoicerError(f"MPD period must be >= 1, got {period}")
        if not channels:
            raise LipVoicerError("MPD needs at least one convolution channel count")
        self.period = int(period)
        norm = spectral_norm if use_spectral_norm else weight_norm
        pad = (kernel - 1) // 2
        layers, c_in = [], 1
        for i, c in enumerate(channels):
            s = stride if i < len(channels) - 1 else 1  # the last convolution keeps the resolution
            layers.append(norm(nn.Conv2d(c_in, int(c), (kernel, 1), (s, 1), padding=(pad, 0))))
            c_in = int(c)
        self.convs = nn.ModuleList(layers)
        self.conv_post = norm(nn.Conv2d(c_in, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor):
        b, c, t = x.shape
        p = self.period
        if t % p:
            n_pad = p - t % p
            x = F.pad(x, (0, n_pad), mode="reflect" if n_pad < t else "constant")
            t += n_pad
        return _conv_stack(self.convs, self.conv_post, x.view(b, c, t // p, p))


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods: Sequence[int] = MPD_PERIODS, channels: Sequence[int] = MPD_CHANNELS):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(int(p), channels) for p in periods)

    def forward(self, x: torch.Tensor):
        """(B, 1, T) -> ([scores per sub-discriminator], [activations per sub-discriminator])."""
        outs, fmaps = [], []
        for d in self.discriminators:
            o, f = d(x)
            outs.append(o)
            fmaps.append(f)
        return outs, fmaps


class ScaleDiscriminator(nn.Module):
    """MSD sub-discriminator: (B, 1, T) -> (scores (B, N), activations)."""

    def __init__(self, channels: Sequence[int] = MSD_CHANNELS, use_spectral_norm: bool = False):
        super().__init__()
        if len(channels) != len(MSD_KERNELS):
            raise LipVoicerError(f"MSD needs {len(MSD_KERNELS)} channel counts (one per convolution), "
                                 f"got {len(channels)}")
        norm = spectral_norm if use_spectral_norm else weight_norm
        layers, c_in = [], 1
        for c, k, s, g in zip(channels, MSD_KERNELS, MSD_STRIDES, MSD_GROUPS):
            c = int(c)
            layers.append(norm(nn.Conv1d(c_in, c, k, s, groups=_groups(g, c_in, c), padding=(k - 1) // 2)))
            c_in = c
        self.convs = nn.ModuleList(layers)
        self.conv_post = norm(nn.Conv1d(c_in, 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor):
        return _conv_stack(self.convs, self.conv_post, x)


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, n_scales: int = MSD_SCALES, channels: Sequence[int] = MSD_CHANNELS):
        super().__init__()
        if n_scales < 0:
            raise LipVoicerError(f"MSD scales must be >= 0, got {n_scales}")
        self.discriminators = nn.ModuleList(ScaleDiscriminator(channels, use_spectral_norm=(i == 0))
                                            for i in range(int(n_scales)))
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, x: torch.Tensor):
        outs, fmaps = [], []
        for i, d in enumerate(self.discriminators):
            if i > 0:
                x = self.pool(x)
            o, f = d(x)
            outs.append(o)
            fmaps.append(f)
        return outs, fmaps


class HiFiGANDiscriminators(nn.Module):
    """MPD and MSD together: (B, 1, T) -> (scores, activations) of every sub-discriminator,
    MPD's first (len(periods) entries), then MSD's."""

    def __init__(self, periods: Sequence[int] = MPD_PERIODS, mpd_channels: Sequence[int] = MPD_CHANNELS,
                 msd_scales: int = MSD_SCALES, msd_channels: Sequence[int] = MSD_CHANNELS):
        super().__init__()
        self.mpd = MultiPeriodDiscriminator(periods, mpd_channels)
        self.msd = MultiScaleDiscriminator(msd_scales, msd_channels)
        if not len(self.mpd.discriminators) + len(self.msd.discriminators):
            raise LipVoicerError("no discriminator: give at least one MPD period or one MSD scale")

    def forward(self, x: torch.Tensor):
        if x.dim() == 2:
            x = x.unsqueeze(1)
        o1, f1 = self.mpd(x)
        o2, f2 = self.msd(x)
        return o1 + o2, f1 + f2


def build_discriminators(cfg_train=None) -> HiFiGANDiscriminators:
    """Discriminators sized by cfg.vocoder_train (mpd_periods, mpd_channels, msd_scales,
    msd_channels); missing keys take the published sizes."""
    def get(key, default):
        if cfg_train is not None and key in cfg_train and cfg_train[key] is not None:
            return cfg_train[key]
        return default

    return HiFiGANDiscriminators([int(p) for p in get("mpd_periods", MPD_PERIODS)],
                                 [int(c) for c in get("mpd_channels", MPD_CHANNELS)],
                                 int(get("msd_scales", MSD_SCALES)),
                                 [int(c) for c in get("msd_channels", MSD_CHANNELS)])


# ------------------------------------------------------------------ losses
def discriminator_loss(real_outs, fake_outs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Least-squares loss of the discriminators: sum over d of E[(1 - D(y))^2] + E[D(y_hat)^2].
    Returns (total, per-sub-discriminator losses)."""
    parts = [torch.mean((1 - dr.float()) ** 2) + torch.mean(dg.float() ** 2) for dr, dg in zip(real_outs, fake_outs)]
    return torch.stack(parts).sum(), parts


def generator_adversarial_loss(fake_outs) -> torch.Tensor:
    """Least-squares adversarial loss of the generator: sum over d of E[(1 - D(y_hat))^2]."""
    return torch.stack([torch.mean((1 - dg.float()) ** 2) for dg in fake_outs]).sum()


def feature_matching_loss(real_fmaps, fake_fmaps) -> torch.Tensor:
    """Sum over sub-discriminators and layers of mean |D_l(y) - D_l(y_hat)| (real side detached).
    Unweighted: the published recipe multiplies it by 2 (vocoder_train.fm_loss_weight)."""
    terms = [torch.mean(torch.abs(r.detach().float() - g.float()))
             for rs, gs in zip(real_fmaps, fake_fmaps) for r, g in zip(rs, gs)]
    return torch.stack(terms).sum()


def mel_l1_loss(y_hat: torch.Tensor, mel_target: torch.Tensor, audio_cfg=None) -> torch.Tensor:
    """Mean |log_mel(y_hat) - mel_target|; y_hat (B, 1, T) or (B, T), mel_target (B, n_mels, T // hop + 1).
    Unweighted: the published recipe multiplies it by 45 (vocoder_train.mel_loss_weight)."""
    if y_hat.dim() == 3:
        y_hat = y_hat.squeeze(1)
    mel = log_mel(y_hat.float(), audio_cfg)
    if mel.shape != mel_target.shape:
        raise ValueError(f"mel of the generated audio {tuple(mel.shape)} != target {tuple(mel_target.shape)}")
    return F.l1_loss(mel, mel_target.float())
