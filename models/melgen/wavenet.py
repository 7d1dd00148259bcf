"""The MelGen denoiser: a DiffWave-style non-causal WaveNet over the 80-band mel.

It predicts the diffusion noise from the noisy mel x_t (B, 80, L), the visual
condition (B, 640, L/4) at video rate, and the diffusion step. The condition is
upsampled x4 in time inside every residual block. Names follow the published
checkpoint (`net_diffwave.init_conv`, `.residual_layer.residual_blocks.N`, `.final_conv`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.weight_norm import WNConv1d, WNConvTranspose2d


def step_embedding(steps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of diffusion steps (B, 1) -> (B, dim): [sin(t*f_k), cos(t*f_k)],
    f_k = 10000^(-k/(dim/2 - 1))."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=steps.device, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    arg = steps.float().reshape(-1, 1) * freqs
    return torch.cat((torch.sin(arg), torch.cos(arg)), dim=1)


class Conv(nn.Module):
    """Weight-normalised 1-D convolution with 'same' padding (checkpoint name: `.conv`)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = WNConv1d(cin, cout, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)

    def forward(self, x):
        return self.conv(x)


class ZeroConv1d(nn.Module):
    """1x1 convolution initialised to zero, so that a fresh model predicts zero noise."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        return self.conv(x)


class ResidualBlock(nn.Module):
    def __init__(self, res_channels: int, skip_channels: int, dilation: int, step_dim: int,
                 cond_channels: int, upsample: list[int]):
        super().__init__()
        self.res_channels = res_channels
        self.fc_t = nn.Linear(step_dim, res_channels)
        self.dilated_conv_layer = Conv(res_channels, 2 * res_channels, kernel=3, dilation=dilation)
        # Upsample the condition in time: ConvTranspose2d over (1, C, T) with kernel 3 x 2s, stride 1 x s.
        self.upsample_conv2d = nn.ModuleList(
            WNConvTranspose2d(1, 1, (3, 2 * s), stride=(1, s), padding=(1, s // 2)) for s in upsample)
        self.mel_conv = Conv(cond_channels, 2 * res_channels, kernel=1)
        self.res_conv = WNConv1d(res_channels, res_channels, 1)
        self.skip_conv = WNConv1d(res_channels, skip_channels, 1)

    def upsample(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, T * prod(upsample))."""
        c = cond.unsqueeze(1)
        for up in self.upsample_conv2d:
            c = F.leaky_relu(up(c), 0.4)
        return c.squeeze(1)

    def cond_projection(self, cond: torch.Tensor, length: int) -> torch.Tensor:
        """The block's conditioning input (B, 2*res, length): independent of x_t and of the step."""
        c = self.upsample(cond)
        if c.shape[-1] < length:
            raise ValueError(f"condition covers {c.shape[-1]} mel frames, the mel has {length}")
        return self.mel_conv(c[..., :length])

    def forward(self, x, cond_proj, step_embed):
        h = self.dilated_conv_layer(x + self.fc_t(step_embed).unsqueeze(-1)) + cond_proj
        out = torch.tanh(h[:, :self.res_channels]) * torch.sigmoid(h[:, self.res_channels:])
        return (x + self.res_conv(out)) * math.sqrt(0.5), self.skip_conv(out)


class ResidualGroup(nn.Module):
    def __init__(self, res_channels, skip_channels, num_res_layers, dilation_cycle, step_dim_in, step_dim_mid,
                 step_dim_out, cond_channels, upsample):
        super().__init__()
        self.num_res_layers = num_res_layers
        self.step_dim_in = step_dim_in
        self.fc_t1 = nn.Linear(step_dim_in, step_dim_mid)
        self.fc_t2 = nn.Linear(step_dim_mid, step_dim_out)
        self.residual_blocks = nn.ModuleList(
            ResidualBlock(res_channels, skip_channels, 2 ** (n % dilation_cycle), step_dim_out, cond_channels, upsample)
            for n in range(num_res_layers))
        # Only the skip outputs are summed, so the last block's residual output is never used:
        # freeze its res_conv (it stays in checkpoints) so that DDP sees no parameter without a gradient.
        self.residual_blocks[-1].res_conv.requires_grad_(False)

    def embed_steps(self, steps: torch.Tensor) -> torch.Tensor:
        e = step_embedding(steps, self.step_dim_in)
        e = F.silu(self.fc_t1(e))
        return F.silu(self.fc_t2(e))

    def forward(self, h, cond_projs, steps):
        e = self.embed_steps(steps)
        skip = 0
        for block, cp in zip(self.residual_blocks, cond_projs):
            h, s = block(h, cp, e)
            skip = skip + s
        return skip * math.sqrt(1.0 / self.num_res_layers)


class WaveNet(nn.Module):
    def __init__(self, in_channels=80, out_channels=80, res_channels=512, skip_channels=512, num_res_layers=12,
                 dilation_cycle=1, diffusion_step_embed_dim_in=128, diffusion_step_embed_dim_mid=512,
                 diffusion_step_embed_dim_out=512, cond_channels=640, mel_upsample=(2, 2)):
        super().__init__()
        self.init_conv = nn.Sequential(Conv(in_channels, res_channels, 1), nn.ReLU())
        self.residual_layer = ResidualGroup(res_channels, skip_channels, num_res_layers, dilation_cycle,
                                            diffusion_step_embed_dim_in, diffusion_step_embed_dim_mid,
                                            diffusion_step_embed_dim_out, cond_channels, list(mel_upsample))
        self.final_conv = nn.Sequential(Conv(skip_channels, skip_channels, 1), nn.ReLU(),
                                        ZeroConv1d(skip_channels, out_channels))

    def cond_projections(self, cond: torch.Tensor, length: int) -> list[torch.Tensor]:
        """Per-block conditioning for a mel of `length` frames; compute once per clip, reuse every step."""
        return [b.cond_projection(cond, length) for b in self.residual_layer.residual_blocks]

    def forward(self, x, cond, steps, cond_projs=None):
        if cond_projs is None:
            cond_projs = self.cond_projections(cond, x.shape[-1])
        h = self.init_conv(x)
        return self.final_conv(self.residual_layer(h, cond_projs, steps))
