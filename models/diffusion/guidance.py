"""The guided noise prediction that every sampler calls: `eps = guidance(x, t)`.

For one batch of clips (mouth video, face image, lengths) it combines

  eps = (1 + w_video) eps(x, video, face, t) - w_video eps(x, null, null, t)      (classifier-free)
  if t <= asr_start and w_asr > 0 and there is a text:
      g = d CTC(ASR(x, t), text) / dx
      eps += c w_asr (||eps / c|| / ||g||) g,   c = sqrt(1 - abar_t)             (classifier guidance)

with the norms taken per clip over its own frames. The visual condition (and each
residual block's projection of it) is computed once, when the Guidance is made; the
conditional and unconditional predictions are one batched call. Clips of different
lengths share a batch through padding + lengths: eps, the ASR gradient and the norms
are masked to each clip's frames (MelGen's convolutions still see the zero padding near
a shorter clip's end, so batching clips of similar length keeps results closest to
one-by-one sampling).

bf16=True runs the condition projections, MelGen's denoiser and the ASR's forward and
backward under torch.autocast(bfloat16) and hands back float32; the guidance arithmetic
stays float32.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from models.asr.model import ctc_loss_grad

# grad_fn(x, lengths, steps (B, 1) float) -> d loss / d x, same shape as x
GradFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def bf16_autocast(device: torch.device | str, enabled: bool = True):
    """torch.autocast(bfloat16) on `device`'s type when enabled, otherwise a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def asr_guidance(asr, tokens: torch.Tensor, token_lengths: torch.Tensor) -> GradFn:
    """The ASR's CTC-loss gradient w.r.t. the noisy mel, against fixed target tokens (one text per clip)."""

    def grad_fn(x, lengths, steps):
        return ctc_loss_grad(asr, x, lengths, steps, tokens, token_lengths)[1]

    return grad_fn


def frame_mask(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """(B,) lengths -> (B, 1, total) float mask of valid frames."""
    return (torch.arange(total, device=lengths.device)[None, :] < lengths[:, None]).unsqueeze(1).float()


def _per_clip_norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v.flatten(1), dim=1).view(-1, 1, 1)


class Guidance:
    """eps(x, t) for one batch; `shape`, `mask` and `lengths` describe the state the samplers evolve."""

    def __init__(self, melgen, alpha_bars: torch.Tensor, mouthroi: torch.Tensor, face_image: torch.Tensor, *,
                 lengths: torch.Tensor | None = None, w_video: float = 2.0, w_asr: float = 0.0,
                 asr_start: int = 270, grad_fn: GradFn | None = None, bf16: bool = False):
        self.melgen = melgen
        self.w_video, self.w_asr, self.asr_start = float(w_video), float(w_asr), int(asr_start)
        self.grad_fn = grad_fn
        self.bf16 = bool(bf16)
        b, _, frames = mouthroi.shape[:3]
        self.device = mouthroi.device
        length = frames * melgen.upsample_factor
        self.shape = (b, melgen.net_diffwave.init_conv[0].conv.in_channels, length)
        self.lengths = (torch.full((b,), length, device=self.device, dtype=torch.long) if lengths is None
                        else lengths.to(self.device))
        self.mask = frame_mask(self.lengths, length)
        self._sqrt_1m_abar = torch.sqrt(1 - alpha_bars.to(self.device))
        with torch.no_grad(), bf16_autocast(self.device, self.bf16):
            cond = melgen.condition(mouthroi, face_image)
            if self.w_video != 0:
                cond = torch.cat((cond, melgen.null_condition(b, frames)), dim=0)
            self.projs = melgen.net_diffwave.cond_projections(cond, length)

    def asr_active(self, t: int) -> bool:
        """Whether the ASR term is part of eps at step t (the samplers' multistep history restarts where it switches)."""
        return self.grad_fn is not None and self.w_asr > 0 and t <= self.asr_start

    @torch.no_grad()
    def video_guided(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """The classifier-free part: (1 + w) eps_cond - w eps_uncond (eps_cond alone when w = 0)."""
        b = x.shape[0]
        xx = torch.cat((x, x), dim=0) if self.w_video != 0 else x
        steps = torch.full((xx.shape[0], 1), float(t), device=x.device)
        with bf16_autocast(x.device, self.bf16):
            eps = self.melgen.denoise(xx, None, steps, self.projs).float()
        if self.w_video == 0:
            return eps
        return (1 + self.w_video) * eps[:b] - self.w_video * eps[b:]

    def asr_gradient(self, x: torch.Tensor, t: int) -> torch.Tensor:
        steps = torch.full((x.shape[0], 1), float(t), device=x.device)
        with torch.enable_grad(), bf16_autocast(x.device, self.bf16):
            g = self.grad_fn(x.detach(), self.lengths, steps)
        return g.float() * self.mask

    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        eps = self.video_guided(x, t) * self.mask
        if self.asr_active(t):
            c = self._sqrt_1m_abar[t]
            g = self.asr_gradient(x, t)
            eps = eps + c * self.w_asr * _per_clip_norm(eps / c) / _per_clip_norm(g).clamp_min(1e-30) * g
        return eps
