"""The reference-style sampling path, built from the project's own modules.

It does what the original release does at every step: float32, the visual
features recomputed inside every forward, separate conditional and unconditional
calls, one clip at a time. Benchmarks time it against models/diffusion/samplers.py,
and tests use it as the oracle the optimized sampler must agree with.
"""
from __future__ import annotations

import torch


def reference_sample(melgen, schedule, mouthroi, face_image, *, w_video=2.0, w_asr=0.0, asr_start=270,
                     grad_fn=None, x_T, step_noise, first_t=None):
    first_t = schedule.T - 1 if first_t is None else first_t
    x = x_T.clone()
    frames = mouthroi.shape[2]
    null_m, null_f = melgen.null_inputs(1, frames)
    k = 0
    for t in range(first_t, -1, -1):
        steps = torch.full((1, 1), float(t))
        with torch.no_grad():
            eps_c = melgen(x, mouthroi, face_image, steps)
            eps_u = melgen(x, null_m, null_f, steps)
        eps = (1 + w_video) * eps_c - w_video * eps_u
        if grad_fn is not None and w_asr > 0 and t <= asr_start:
            with torch.enable_grad():
                g = grad_fn(x.detach(), torch.tensor([x.shape[-1]]), steps)
            c = torch.sqrt(1 - schedule.alpha_bars[t])
            eps = eps + c * w_asr * (torch.linalg.vector_norm(eps / c) / torch.linalg.vector_norm(g)) * g
        x = (x - (1 - schedule.alphas[t]) / torch.sqrt(1 - schedule.alpha_bars[t]) * eps) / torch.sqrt(schedule.alphas[t])
        if t > 0:
            x = x + schedule.sigmas[t] * step_noise[k]
            k += 1
    return x
