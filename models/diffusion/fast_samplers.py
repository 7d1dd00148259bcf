"""Few-step samplers for MelGen (DDIM, DPM-Solver++(2M)) and bf16 autocast for every sampler.

All of them run the trained MelGen unchanged and guide the noise prediction exactly as
models.diffusion.sampler.GuidedSampler does (SPEC.md, "Guided sampling"):

  eps = (1 + w_video) eps(x, video, face, t) - w_video eps(x, null, null, t)       (GuidedSampler.guided_eps)
  if t <= asr_start and w_asr > 0:  g = d CTC(ASR(x, t), text) / dx
      eps += sqrt(1 - abar_t) * w_asr * (||eps / sqrt(1 - abar_t)|| / ||g||) * g     (norms per clip, masked)

They only visit a sub-sequence of `steps` integer timesteps evenly spaced over
[0, T - 1] (T - 1 and 0 always included) and use the discrete schedule's abar there:

* DDIMSampler: x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z, with
  x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) and
  sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s).
  eta = 0 is deterministic given x_T; eta = 1 with steps = T is the ancestral sampler.
* DPMSolverSampler: DPM-Solver++(2M) (multistep, second order, data prediction), with
  lambda = log(sqrt(abar) / sqrt(1 - abar)), h = lambda_s - lambda_t, r = h_prev / h:
  D = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev (D = x0_t on the first step),
  x_s = sqrt((1 - abar_s) / (1 - abar_t)) x_t - sqrt(abar_s) (exp(-h) - 1) D.
  Deterministic given x_T. The guided prediction jumps where the ASR term switches on
  (t <= asr_start), so the multistep history restarts there (one first-order step).

After the model call at t = 0 both samplers return that call's x0 (the clean mel; this is
also what the ancestral sampler's last step computes). The number of MelGen calls (and
of ASR gradients, for the visited t <= asr_start) equals the number of steps.

bf16: with `bf16=True` the condition projections and MelGen's denoiser run under
torch.autocast(bfloat16) and return float32 noise predictions; the ASR forward/backward
runs under autocast too (its CTC loss stays float32); the sampling state x, the guidance
arithmetic and the schedule coefficients stay float32. AncestralSampler is GuidedSampler
with this option. Autocast is used on whatever device the inputs are on (on CPU it is
usually slower than float32 and is mainly for testing).
"""
from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
from tqdm import tqdm

from models.diffusion.schedule import DiffusionSchedule
from models.diffusion.sampler import GradFn, GuidedSampler
from utils.errors import LipVoicerError

__all__ = ["SAMPLERS", "AncestralSampler", "DDIMSampler", "DPMSolverSampler", "bf16_autocast", "build_sampler",
           "timestep_subsequence"]

SAMPLERS = ("ancestral", "ddim", "dpm_solver")


def bf16_autocast(device: torch.device | str, enabled: bool = True):
    """torch.autocast(bfloat16) on `device`'s type when enabled, otherwise a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def timestep_subsequence(steps: int, last: int) -> list[int]:
    """`steps` integer timesteps evenly spaced over [0, last], descending; includes `last` and 0 (for steps >= 2).

    steps is capped at last + 1 (every timestep); steps = 1 gives [last].
    """
    steps = int(steps)
    if steps < 1:
        raise LipVoicerError(f"sampling steps must be >= 1, got {steps}")
    if steps == 1:
        return [int(last)]
    steps = min(steps, int(last) + 1)
    ts = {round(i * last / (steps - 1)) for i in range(steps)}
    return sorted(ts, reverse=True)


class _AutocastDenoiser:
    """MelGen seen through bf16 autocast: `denoise` runs under autocast and returns float32.

    Every other attribute is the wrapped model's, so GuidedSampler.guided_eps (which calls
    melgen.denoise and then combines the two predictions) does the guidance in float32.
    """

    def __init__(self, melgen):
        self.module = melgen

    def __getattr__(self, name):
        if name == "module":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.module, name)

    def denoise(self, x, cond, diffusion_steps, cond_projs=None):
        with bf16_autocast(x.device):
            return self.module.denoise(x, cond, diffusion_steps, cond_projs).float()


class _BF16Mixin:
    """bf16 autocast for a GuidedSampler subclass: condition projections, denoiser and ASR gradient."""

    bf16: bool = False

    def _init_bf16(self, bf16: bool) -> None:
        self.bf16 = bool(bf16)
        if self.bf16:
            self.melgen = _AutocastDenoiser(self.melgen)

    @property
    def model(self):
        """The MelGen module itself (self.melgen is its autocast view when bf16)."""
        m = self.melgen
        return m.module if isinstance(m, _AutocastDenoiser) else m

    def prepare_conditions(self, mouthroi: torch.Tensor, face_image: torch.Tensor, mel_frames: int):
        with bf16_autocast(mouthroi.device, self.bf16):
            return super().prepare_conditions(mouthroi, face_image, mel_frames)

    def _autocast_grad_fn(self, grad_fn: GradFn | None) -> GradFn | None:
        if grad_fn is None or not self.bf16:
            return grad_fn

        def wrapped(x, lengths, steps):
            with bf16_autocast(x.device):
                g = grad_fn(x, lengths, steps)
            return g.float()

        return wrapped


class AncestralSampler(_BF16Mixin, GuidedSampler):
    """The published ancestral sampler (GuidedSampler, all T steps) with an optional bf16 autocast."""

    def __init__(self, melgen, schedule: DiffusionSchedule, w_video: float = 2.0, w_asr: float = 1.5,
                 asr_start: int = 270, *, bf16: bool = False):
        super().__init__(melgen, schedule, w_video, w_asr, asr_start)
        self._init_bf16(bf16)

    def sample(self, mouthroi: torch.Tensor, face_image: torch.Tensor, *, grad_fn: GradFn | None = None,
               lengths: torch.Tensor | None = None, x_T: torch.Tensor | None = None,
               step_noise: Sequence[torch.Tensor] | None = None, generator: torch.Generator | None = None,
               first_t: int | None = None, progress: bool = False) -> torch.Tensor:
        """GuidedSampler.sample, with the ASR gradient under bf16 autocast when bf16."""
        return super().sample(mouthroi, face_image, grad_fn=self._autocast_grad_fn(grad_fn), lengths=lengths,
                              x_T=x_T, step_noise=step_noise, generator=generator, first_t=first_t,
                              progress=progress)


class _FewStepSampler(_BF16Mixin, GuidedSampler):
    """Shared parts of the few-step samplers: timesteps, initial state, guided eps with the ASR term."""

    name = "few-step"

    def __init__(self, melgen, schedule: DiffusionSchedule, w_video: float = 2.0, w_asr: float = 1.5,
                 asr_start: int = 270, *, steps: int = 50, bf16: bool = False):
        super().__init__(melgen, schedule, w_video, w_asr, asr_start)
        self.steps = _check_steps(steps, schedule.T, self.name)
        self._init_bf16(bf16)
        # abar per integer timestep as Python floats (float64 coefficient arithmetic, no device syncs)
        self._alpha_bars = [float(a) for a in schedule.alpha_bars.detach().double().cpu()]

    def timesteps(self, first_t: int | None = None) -> list[int]:
        """The visited timesteps, descending from first_t (default T - 1) to 0."""
        last = self.schedule.T - 1 if first_t is None else int(first_t)
        return timestep_subsequence(self.steps, last)

    def _abar(self, t: int) -> float:
        """abar at an integer timestep (float64 arithmetic from here on); t = -1 is the clean end, abar = 1."""
        return 1.0 if t < 0 else self._alpha_bars[t]

    def _eps(self, x, projs, t: int, mask, lengths, grad_fn: GradFn | None) -> torch.Tensor:
        """The guided noise prediction at t: video CFG, plus the ASR term for t <= asr_start."""
        return self.guided_eps_with_asr(x, projs, t, mask, lengths, grad_fn, math.sqrt(1 - self._abar(t)))

    def _x0(self, x, eps, t: int) -> torch.Tensor:
        ab = self._abar(t)
        return (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)

    def sample(self, mouthroi: torch.Tensor, face_image: torch.Tensor, *, grad_fn: GradFn | None = None,
               lengths: torch.Tensor | None = None, x_T: torch.Tensor | None = None,
               step_noise: Sequence[torch.Tensor] | None = None, generator: torch.Generator | None = None,
               first_t: int | None = None, progress: bool = False) -> torch.Tensor:
        """Normalised mels (B, 80, 4 * frames); frames past a clip's length are zero.

        Same arguments as GuidedSampler.sample. step_noise (one tensor per visited t > 0, in
        order) is used only by DDIM with eta > 0; otherwise noise comes from `generator`.
        """
        grad_fn = self._autocast_grad_fn(grad_fn)
        x, mask, lengths, projs = self._start(mouthroi, face_image, lengths, x_T, generator)
        ts = self.timesteps(first_t)
        state = {}
        with torch.no_grad():
            for i, t in enumerate(tqdm(ts, disable=not progress, desc=f"sampling ({self.name})", unit="step",
                                       leave=False)):
                s = ts[i + 1] if i + 1 < len(ts) else -1
                guided = grad_fn is not None and self.w_asr > 0 and t <= self.asr_start
                if state.get("guided", guided) != guided:
                    state.pop("x0", None)  # the ASR term switches on: restart multistep history (first order)
                state["guided"] = guided
                eps = self._eps(x, projs, t, mask, lengths, grad_fn)
                x = self._step(x, eps, t, s, i, state, step_noise, generator) * mask
        return x

    def _step(self, x, eps, t, s, i, state, step_noise, generator) -> torch.Tensor:
        raise NotImplementedError


class DDIMSampler(_FewStepSampler):
    """DDIM (Song et al.) on `steps` evenly spaced timesteps; eta = 0 deterministic, eta = 1 ancestral-like."""

    name = "ddim"

    def __init__(self, melgen, schedule: DiffusionSchedule, w_video: float = 2.0, w_asr: float = 1.5,
                 asr_start: int = 270, *, steps: int = 50, eta: float = 0.0, bf16: bool = False):
        super().__init__(melgen, schedule, w_video, w_asr, asr_start, steps=steps, bf16=bf16)
        self.eta = float(eta)
        if self.eta < 0:
            raise LipVoicerError(f"ddim eta must be >= 0, got {eta}")

    def _step(self, x, eps, t, s, i, state, step_noise, generator):
        ab_t, ab_s = self._abar(t), self._abar(s)
        sigma = 0.0
        if s >= 0 and self.eta > 0:
            sigma = self.eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
        # x_s = sqrt(ab_s) x0 + sqrt(1 - ab_s - sigma^2) eps, written as a x_t + b eps
        a = math.sqrt(ab_s / ab_t)
        b = math.sqrt(max(1 - ab_s - sigma ** 2, 0.0)) - math.sqrt(ab_s * (1 - ab_t) / ab_t)
        x = a * x + b * eps
        if sigma > 0:
            k = state.get("noise_i", 0)
            z = step_noise[k].to(x.device) if step_noise is not None else torch.randn(
                x.shape, generator=generator, device=x.device)
            state["noise_i"] = k + 1
            x = x + sigma * z
        return x


class DPMSolverSampler(_FewStepSampler):
    """DPM-Solver++(2M) (Lu et al.): multistep second order in data prediction; first and last steps first order."""

    name = "dpm_solver"

    def __init__(self, melgen, schedule: DiffusionSchedule, w_video: float = 2.0, w_asr: float = 1.5,
                 asr_start: int = 270, *, steps: int = 25, bf16: bool = False):
        super().__init__(melgen, schedule, w_video, w_asr, asr_start, steps=steps, bf16=bf16)

    def _lambda(self, t: int) -> float:
        ab = self._abar(t)
        return 0.5 * (math.log(ab) - math.log(1 - ab))

    def _step(self, x, eps, t, s, i, state, step_noise, generator):
        x0 = self._x0(x, eps, t)
        if s < 0:  # the clean end (sigma = 0): x = x0, the first-order update's limit
            return x0
        ab_t, ab_s = self._abar(t), self._abar(s)
        h = self._lambda(s) - self._lambda(t)
        d = x0
        if "x0" in state:
            r = state["h"] / h
            d = (1 + 0.5 / r) * x0 - (0.5 / r) * state["x0"]
        state["x0"], state["h"] = x0, h
        return math.sqrt((1 - ab_s) / (1 - ab_t)) * x - math.sqrt(ab_s) * math.expm1(-h) * d


def _check_steps(steps, T: int, sampler: str, key: str = "steps") -> int:
    try:
        n = int(steps)
        ok = n == float(steps)
    except (TypeError, ValueError):
        ok = False
    if not ok or not 1 <= n <= T:
        raise LipVoicerError(f"{key}={steps!r}: the {sampler} sampler needs an integer number of steps "
                             f"between 1 and diffusion.T={T}")
    return n


def _get(cfg, key, default=None):
    try:
        v = cfg[key]
    except (KeyError, AttributeError, TypeError):
        return default
    return default if v is None else v


def build_sampler(gen_cfg, melgen, schedule: DiffusionSchedule) -> GuidedSampler:
    """The sampler the `generate` config asks for: generate.sampler (ancestral | ddim | dpm_solver),
    generate.steps (ddim / dpm_solver only), generate.bf16, w_video, w_asr, asr_start (and an optional
    generate.eta for ddim, default 0).

    ancestral without bf16 gives models.diffusion.sampler.GuidedSampler itself (all diffusion.T steps).
    """
    name = str(_get(gen_cfg, "sampler", "ancestral"))
    w = dict(w_video=float(_get(gen_cfg, "w_video", 2.0)), w_asr=float(_get(gen_cfg, "w_asr", 1.5)),
             asr_start=int(_get(gen_cfg, "asr_start", 270)))
    bf16 = bool(_get(gen_cfg, "bf16", False))
    if name == "ancestral":
        return AncestralSampler(melgen, schedule, **w, bf16=True) if bf16 else GuidedSampler(melgen, schedule, **w)
    if name not in SAMPLERS:
        raise LipVoicerError(f"generate.sampler={name!r} is not a sampler; use one of {', '.join(SAMPLERS)}")
    steps = _check_steps(_get(gen_cfg, "steps", 50), schedule.T, name, "generate.steps")
    if name == "ddim":
        return DDIMSampler(melgen, schedule, **w, steps=steps, eta=float(_get(gen_cfg, "eta", 0.0)), bf16=bf16)
    return DPMSolverSampler(melgen, schedule, **w, steps=steps, bf16=bf16)
