"""Guided ancestral sampling of MelGen (SPEC.md, "Guided sampling").

For t = first_t ... 0, with x starting as Gaussian noise of shape (80, 4 * frames):
  eps = (1 + w_video) eps(x, video, face, t) - w_video eps(x, null, null, t)
  if t <= asr_start and w_asr > 0:  g = d CTC(ASR(x, t), text) / dx
      eps += sqrt(1 - abar_t) * w_asr * (||eps / sqrt(1 - abar_t)|| / ||g||) * g      (norms per clip)
  x = (x - (1 - alpha_t) / sqrt(1 - abar_t) * eps) / sqrt(alpha_t)  (+ sigma_t z for t > 0)

The visual condition (and each residual block's projection of it) is computed once
per clip; the conditional and unconditional predictions are one batched call.
Clips of different lengths share a batch through padding + lengths: norms, the ASR
and the state are masked to each clip's frames. (MelGen's convolutions still see
the zero padding near a shorter clip's end, so batching clips of similar length
keeps results closest to one-by-one sampling.)
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from tqdm import tqdm

from models.diffusion.schedule import DiffusionSchedule

# grad_fn(x, lengths, steps (B,1) float) -> d loss / d x (B, 80, L)
GradFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def asr_guidance(asr, tokens: torch.Tensor, token_lengths: torch.Tensor) -> GradFn:
    """The ASR's CTC-loss gradient w.r.t. the noisy mel, against fixed target tokens (one text per clip)."""
    from models.asr import ctc_loss_grad

    def grad_fn(x, lengths, steps):
        _, g = ctc_loss_grad(asr, x, lengths, steps, tokens, token_lengths)
        return g

    return grad_fn


def frame_mask(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """(B,) lengths -> (B, 1, total) float mask of valid frames."""
    return (torch.arange(total, device=lengths.device)[None, :] < lengths[:, None]).unsqueeze(1).float()


def _per_clip_norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v.flatten(1), dim=1).view(-1, 1, 1)


class GuidedSampler:
    def __init__(self, melgen, schedule: DiffusionSchedule, w_video: float = 2.0, w_asr: float = 1.5,
                 asr_start: int = 270):
        self.melgen = melgen
        self.schedule = schedule
        self.w_video = float(w_video)
        self.w_asr = float(w_asr)
        self.asr_start = int(asr_start)

    @torch.no_grad()
    def prepare_conditions(self, mouthroi: torch.Tensor, face_image: torch.Tensor, mel_frames: int):
        """Per-block condition projections for [conditional; unconditional] (2B rows), computed once."""
        b, _, frames = mouthroi.shape[:3]
        cond = self.melgen.condition(mouthroi, face_image)
        if self.w_video != 0:
            cond = torch.cat((cond, self.melgen.null_condition(b, frames)), dim=0)
        return self.melgen.net_diffwave.cond_projections(cond, mel_frames)

    @torch.no_grad()
    def guided_eps(self, x, projs, t: int) -> torch.Tensor:
        b = x.shape[0]
        xx = torch.cat((x, x), dim=0) if self.w_video != 0 else x
        steps = torch.full((xx.shape[0], 1), float(t), device=x.device)
        eps = self.melgen.denoise(xx, None, steps, projs)
        if self.w_video == 0:
            return eps
        return (1 + self.w_video) * eps[:b] - self.w_video * eps[b:]

    def _start(self, mouthroi, face_image, lengths, x_T, generator):
        """Initial state x (masked), frame mask, lengths and the condition projections of a batch."""
        b, _, frames = mouthroi.shape[:3]
        dev = mouthroi.device
        length = frames * self.melgen.upsample_factor
        n_mels = self.melgen.net_diffwave.init_conv[0].conv.in_channels
        lengths = torch.full((b,), length, device=dev, dtype=torch.long) if lengths is None else lengths.to(dev)
        mask = frame_mask(lengths, length)
        if x_T is None:
            x_T = torch.randn((b, n_mels, length), generator=generator, device=dev)
        x = x_T.to(dev).float() * mask
        return x, mask, lengths, self.prepare_conditions(mouthroi, face_image, length)

    def guided_eps_with_asr(self, x, projs, t: int, mask, lengths, grad_fn: GradFn | None, c) -> torch.Tensor:
        """Video-guided eps plus, for t <= asr_start, the ASR term with per-clip norms
        (c = sqrt(1 - abar_t), a tensor or a float)."""
        eps = self.guided_eps(x, projs, t) * mask
        if grad_fn is not None and self.w_asr > 0 and t <= self.asr_start:
            steps = torch.full((x.shape[0], 1), float(t), device=x.device)
            with torch.enable_grad():
                g = grad_fn(x.detach(), lengths, steps) * mask
            scale = c * self.w_asr * _per_clip_norm(eps / c) / _per_clip_norm(g).clamp_min(1e-30)
            eps = eps + scale * g
        return eps

    def sample(self, mouthroi: torch.Tensor, face_image: torch.Tensor, *, grad_fn: GradFn | None = None,
               lengths: torch.Tensor | None = None, x_T: torch.Tensor | None = None,
               step_noise: Sequence[torch.Tensor] | None = None, generator: torch.Generator | None = None,
               first_t: int | None = None, progress: bool = False) -> torch.Tensor:
        """Normalised mels (B, 80, 4 * frames); frames past a clip's length are zero.

        lengths: mel frames per clip (default: all full). x_T / step_noise inject the initial
        state and the noise of every step with t > 0 (in order); otherwise they are drawn from
        `generator` in that order.
        """
        sch = self.schedule
        dev = mouthroi.device
        x, mask, lengths, projs = self._start(mouthroi, face_image, lengths, x_T, generator)
        first_t = sch.T - 1 if first_t is None else int(first_t)
        alphas, abars, sigmas = sch.alphas.to(dev), sch.alpha_bars.to(dev), sch.sigmas.to(dev)
        noise_i = 0
        for t in tqdm(range(first_t, -1, -1), disable=not progress, desc="sampling", unit="step", leave=False):
            eps = self.guided_eps_with_asr(x, projs, t, mask, lengths, grad_fn, torch.sqrt(1 - abars[t]))
            x = (x - (1 - alphas[t]) / torch.sqrt(1 - abars[t]) * eps) / torch.sqrt(alphas[t])
            if t > 0:
                if step_noise is not None:
                    z = step_noise[noise_i].to(dev)
                else:
                    z = torch.randn(x.shape, generator=generator, device=dev)
                noise_i += 1
                x = x + sigmas[t] * z
            x = x * mask
        return x
