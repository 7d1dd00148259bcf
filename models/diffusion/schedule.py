"""Gaussian diffusion: the linear beta schedule, q(x_t | x_0) and MelGen's training loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class DiffusionSchedule:
    """Linear betas (T steps, beta_0 .. beta_T) and the quantities derived from them.

    betas, alphas = 1 - betas, alpha_bars = cumprod(alphas), and the ancestral
    sampler's sigmas: sigma_t^2 = beta_t (1 - abar_{t-1}) / (1 - abar_t), sigma_0 = 0.
    Computed in float64, stored in float32.
    """

    def __init__(self, T: int = 400, beta_0: float = 1e-4, beta_T: float = 0.02, device=None):
        self.T = int(T)
        betas = torch.linspace(beta_0, beta_T, self.T, dtype=torch.float64)
        alphas = 1.0 - betas
        alpha_bars = torch.cumprod(alphas, dim=0)
        prev = torch.cat((torch.ones(1, dtype=torch.float64), alpha_bars[:-1]))
        sigmas = torch.sqrt(betas * (1.0 - prev) / (1.0 - alpha_bars))
        sigmas[0] = 0.0
        self.betas, self.alphas, self.alpha_bars, self.sigmas = (
            t.float().to(device) for t in (betas, alphas, alpha_bars, sigmas))

    @classmethod
    def from_config(cls, diffusion_cfg, device=None) -> "DiffusionSchedule":
        return cls(diffusion_cfg["T"], diffusion_cfg["beta_0"], diffusion_cfg["beta_T"], device)

    def to(self, device) -> "DiffusionSchedule":
        for name in ("betas", "alphas", "alpha_bars", "sigmas"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, t: (B,) integer steps."""
        ab = self.alpha_bars.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise


def melgen_training_loss(model, schedule: DiffusionSchedule, mel: torch.Tensor, mouthroi: torch.Tensor,
                         face_image: torch.Tensor, cond_drop_prob: float, generator: torch.Generator | None = None):
    """L1 between the true and the predicted noise at a uniformly drawn step.

    mel: normalised clean mel (B, 80, L). Both visual conditions are dropped together
    per sample with probability cond_drop_prob (classifier-free guidance training).
    """
    b = mel.shape[0]
    t = torch.randint(schedule.T, (b,), device=mel.device, generator=generator)
    noise = torch.randn(mel.shape, device=mel.device, dtype=mel.dtype, generator=generator)
    x_t = schedule.q_sample(mel, t, noise)
    eps = model(x_t, mouthroi, face_image, t.view(b, 1).float(), cond_drop_prob=cond_drop_prob)
    return F.l1_loss(eps.float(), noise.float())
