"""HiFi-GAN generator (V1, 16 kHz) that loads the published `g_02400000` vocoder.

Layout (the published HiFi-GAN V1): a 7-tap input convolution to 512 channels, four
transposed-convolution upsamplers (rates 2, 5, 4, 4; kernels 16, 15, 4, 4) that halve
the channel count each time, after each upsampler the mean of three type-1 residual
blocks (kernels 3, 7, 11; dilations 1, 3, 5), and a 7-tap output convolution to one
channel followed by tanh. 160 output samples per mel frame.

The published file is `{"generator": state_dict}` with every convolution stored in
weight-norm form (`<layer>.weight_g`, `<layer>.weight_v`, `<layer>.bias`). The model
is built in that form so that loading is strict on the official key names, then the
weight norm is removed: each layer gets a plain `weight` = g * v / ||v|| (norm over
every dim but the first), which is what runs at inference.

The generator returns the raw tanh output. LipVoicer's output waveform is scaled to
peak 1/1.1; `vocode()` does that after the network (the parity fixture `hifigan.pt`
holds the raw output, whose peak is not 1/1.1).
"""
from __future__ import annotations

import itertools

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.weight_norm import (WeightNormed, WNConv1d, WNConvTranspose1d, norm_except_first,
                                 weight_normed_layers)
from utils.checkpoint import atomic_torch_save, load_state_dict_strict, read_checkpoint, strip_ddp_prefix
from utils.errors import LipVoicerError

LRELU_SLOPE = 0.1          # between layers
FINAL_LRELU_SLOPE = 0.01   # before the output convolution (PyTorch's default slope)

# The published V1 16 kHz settings; a config may leave any of them out.
DEFAULTS = dict(
    num_mels=80,
    upsample_rates=[2, 5, 4, 4],
    upsample_kernel_sizes=[16, 15, 4, 4],
    upsample_initial_channel=512,
    resblock="1",
    resblock_kernel_sizes=[3, 7, 11],
    resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
)


def _same_padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) pairs, each a residual step: x += c2(lrelu(c1(lrelu(x))))."""

    def __init__(self, channels: int, kernel: int, dilations):
        super().__init__()
        self.convs1 = nn.ModuleList(
            WNConv1d(channels, channels, kernel, 1, dilation=d, padding=_same_padding(kernel, d), init_std=0.01)
            for d in dilations)
        self.convs2 = nn.ModuleList(
            WNConv1d(channels, channels, kernel, 1, dilation=1, padding=_same_padding(kernel), init_std=0.01)
            for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            y = c1(F.leaky_relu(x, LRELU_SLOPE))
            y = c2(F.leaky_relu(y, LRELU_SLOPE))
            x = x + y
        return x


class ResBlock2(nn.Module):
    """Lighter block (HiFi-GAN V3): one dilated conv per residual step."""

    def __init__(self, channels: int, kernel: int, dilations):
        super().__init__()
        self.convs = nn.ModuleList(
            WNConv1d(channels, channels, kernel, 1, dilation=d, padding=_same_padding(kernel, d), init_std=0.01)
            for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = x + c(F.leaky_relu(x, LRELU_SLOPE))
        return x


def _plain(v):
    """Lists (also OmegaConf ListConfig) -> nested Python lists; scalars unchanged."""
    if isinstance(v, Sequence) and not isinstance(v, str):
        return [_plain(x) for x in v]
    return v


def hifigan_params(cfg_vocoder=None) -> dict:
    """The generator's hyper-parameters from cfg.vocoder (missing keys take the published values)."""
    p = {k: _plain(v) for k, v in DEFAULTS.items()}
    if cfg_vocoder is not None:
        p.update({k: _plain(cfg_vocoder[k]) for k in DEFAULTS if k in cfg_vocoder})
    p["resblock"] = str(p["resblock"])
    if p["resblock"] not in ("1", "2"):
        raise LipVoicerError(f"vocoder.resblock: must be '1' or '2', got {p['resblock']!r}")
    if len(p["upsample_rates"]) != len(p["upsample_kernel_sizes"]):
        raise LipVoicerError("vocoder: upsample_rates and upsample_kernel_sizes differ in length")
    if len(p["resblock_kernel_sizes"]) != len(p["resblock_dilation_sizes"]):
        raise LipVoicerError("vocoder: resblock_kernel_sizes and resblock_dilation_sizes differ in length")
    hop = math.prod(p["upsample_rates"])
    if cfg_vocoder is not None and cfg_vocoder.get("hop_size") is not None and int(cfg_vocoder["hop_size"]) != hop:
        raise LipVoicerError(f"vocoder: the upsample rates multiply to {hop}, "
                             f"not to hop_size {cfg_vocoder['hop_size']}")
    return p


class HiFiGANGenerator(nn.Module):
    """mel (B, num_mels, F) denormalised natural-log mel -> audio (B, 1, F * hop), in [-1, 1]."""

    def __init__(self, cfg_vocoder=None):
        super().__init__()
        p = hifigan_params(cfg_vocoder)
        self.params = p
        self.hop_length = math.prod(p["upsample_rates"])
        self.num_kernels = len(p["resblock_kernel_sizes"])
        ch = p["upsample_initial_channel"]
        block = ResBlock1 if p["resblock"] == "1" else ResBlock2

        self.conv_pre = WNConv1d(p["num_mels"], ch, 7, 1, padding=3, init_std=0.01)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(p["upsample_rates"], p["upsample_kernel_sizes"])):
            c_in, c_out = ch // (2 ** i), ch // (2 ** (i + 1))
            self.ups.append(WNConvTranspose1d(c_in, c_out, kernel, rate, padding=(kernel - rate) // 2,
                                              init_std=0.01))
            for k, d in zip(p["resblock_kernel_sizes"], p["resblock_dilation_sizes"]):
                self.resblocks.append(block(c_out, k, d))
        self.conv_post = WNConv1d(ch // (2 ** len(self.ups)), 1, 7, 1, padding=3, init_std=0.01)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.dim() != 3 or mel.shape[1] != self.params["num_mels"]:
            raise ValueError(f"HiFi-GAN expects a mel of shape (B, {self.params['num_mels']}, frames), "
                             f"got {tuple(mel.shape)}")
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            acc = blocks[0](x)
            for b in blocks[1:]:
                acc = acc + b(x)
            x = acc / self.num_kernels
        x = self.conv_post(F.leaky_relu(x, FINAL_LRELU_SLOPE))
        return torch.tanh(x)

    def remove_weight_norm(self) -> "HiFiGANGenerator":
        """Fold every g * v / ||v|| into a plain weight (inference form). Idempotent."""
        for m in weight_normed_layers(self):
            m.remove()
        return self

    @property
    def is_weight_normed(self) -> bool:
        return any(m.is_weight_normed for m in weight_normed_layers(self))


# ------------------------------------------------------------------ published checkpoint format
def published_state_dict(generator: HiFiGANGenerator) -> dict:
    """The generator's state dict in the published form (weight norm as weight_g / weight_v).

    Works for a generator with or without weight norm; a folded layer is written as
    g = ||w||, v = w, which reproduces w exactly when loaded.
    """
    sd = generator.state_dict()
    out = {}
    folded = {name for name, m in generator.named_modules()
              if isinstance(m, WeightNormed) and not m.is_weight_normed}
    for key, value in sd.items():
        layer, _, leaf = key.rpartition(".")
        if leaf == "weight" and layer in folded:
            w = value.detach().clone()
            out[f"{layer}.weight_g"] = norm_except_first(w)
            out[f"{layer}.weight_v"] = w
        else:
            out[key] = value.detach().clone()
    return out


def generator_state_dict(obj, source: str = "checkpoint") -> dict:
    """The `generator` state dict of a published HiFi-GAN file (DDP 'module.' prefix removed)."""
    if not isinstance(obj, dict) or "generator" not in obj:
        raise LipVoicerError(f"{source}: not a HiFi-GAN generator checkpoint (no 'generator' entry)")
    sd = obj["generator"]
    if not isinstance(sd, dict):
        raise LipVoicerError(f"{source}: 'generator' is not a state dict")
    return strip_ddp_prefix(sd)


def load_hifigan(source, cfg_vocoder=None, map_location="cpu", fetch_hint: str | None = None) -> HiFiGANGenerator:
    """Build the generator from cfg.vocoder, load a published checkpoint strictly, remove weight norm.

    `source`: a path to a file like `g_02400000`, or an already-loaded dict `{"generator": ...}`.
    Returns the generator in eval mode with gradients disabled.
    """
    if isinstance(source, (str, Path)):
        name = str(source)
        if fetch_hint is None:
            fetch_hint = "python download_checkpoints.py --only hifigan"
        obj = read_checkpoint(source, fetch_hint)
    else:
        name, obj = "HiFi-GAN checkpoint", source
    generator = HiFiGANGenerator(cfg_vocoder)
    load_state_dict_strict(generator, generator_state_dict(obj, name), what=name)
    generator.remove_weight_norm()
    generator.requires_grad_(False)
    return generator.to(map_location).eval()


def save_hifigan(path, generator: HiFiGANGenerator, extra: dict | None = None) -> Path:
    """Write `{"generator": state dict with weight norm}` (the published format), atomically."""
    generator = getattr(generator, "module", generator)
    obj = {"generator": published_state_dict(generator)}
    if extra:
        obj.update(extra)
    return atomic_torch_save(obj, path)


# ------------------------------------------------------------------ mel -> waveform
@torch.inference_mode()
def vocode(generator: HiFiGANGenerator, mel: torch.Tensor, lengths=None, peak_scale: float = 1.1) -> torch.Tensor:
    """Denormalised log-mel -> waveform scaled to peak 1/peak_scale (audio.peak_scale, 1.1 as published).

    mel: (num_mels, F) or (B, num_mels, F). lengths: optional valid mel frames per clip of
    a padded batch; samples past a clip's length are zeroed and ignored for its peak.
    Returns float32 audio (F * hop,) or (B, F * hop) on the generator's device. A silent
    (all-zero) output stays zero.
    """
    single = mel.dim() == 2
    x = mel.unsqueeze(0) if single else mel
    param = next(itertools.chain(generator.parameters(), generator.buffers()))
    x = x.to(device=param.device, dtype=param.dtype)
    if getattr(generator, "takes_lengths", False) and lengths is not None:   # vocodes each clip at its length
        audio = generator(x, torch.as_tensor(lengths).reshape(-1)).squeeze(1).float()
    else:
        audio = generator(x).squeeze(1).float()
    hop = audio.shape[-1] // x.shape[-1]
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=audio.device).reshape(-1)
        if lengths.numel() != audio.shape[0]:
            raise ValueError(f"lengths has {lengths.numel()} entries for a batch of {audio.shape[0]}")
        valid = torch.arange(audio.shape[-1], device=audio.device)[None, :] < (lengths[:, None] * hop)
        audio = audio * valid
    peak = audio.abs().amax(dim=-1, keepdim=True)
    audio = torch.where(peak > 0, audio / (peak.clamp_min(1e-12) * peak_scale), audio)
    return audio[0] if single else audio
