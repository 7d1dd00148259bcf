"""The guided noise prediction that every sampler calls: `eps = guidance(x, t)`.

For one batch of clips (mouth video, face image, lengths) it combines

  eps = (1 + w_video) eps(x, video, face, t) - w_video eps(x, null, null, t)      (classifier-free)
  if t <= asr_start and w_asr > 0 and there is a text:
      g = d CTC(ASR(x, t), text) / dx
      eps += c w_asr (||eps / c|| / ||g||) g,   c = sqrt(1 - abar_t)             (classifier guidance)

with the norms taken per clip over its own frames (LipVoicer's rule). `AsrShaping` offers other ways
to turn the gradient into that term (all off by default; the synthetic model set uses what measured
best with an independent listener):

  clean=True:    g = d CTC(ASR(x0_hat, 0), text) / d x0_hat, x0_hat = (x - c eps) / sqrt(abar_t): the
                 ASR reads the one-step clean estimate, as a clean-speech recogniser would;
  smooth=(b, f): g box-averaged over b mel bins and f frames (a gradient's fine-grained pattern is
                 what a network of the ASR's kind answers to, not what a listener hears);
  power=p:       the weight w_asr (t / asr_start)^p, fading to 0 at the last step.

The visual condition (and each
residual block's projection of it) is computed once, when the Guidance is made; the
conditional and unconditional predictions are one batched call. Clips of different
lengths share a batch through padding + lengths: eps, the ASR gradient and the norms
are masked to each clip's frames (MelGen's convolutions still see the zero padding near
a shorter clip's end, so batching clips of similar length keeps results closest to
one-by-one sampling).

bf16=True runs the condition projections, MelGen's denoiser and the ASR's forward and
backward under torch.autocast(bfloat16) and hands back float32; the guidance arithmetic
stays float32. MelGen then runs as a bfloat16 copy of its weights, made once
(`bf16_weights`), so autocast has no weight to re-cast in each call; `asr_guidance(...,
bf16=True)` does the same for the ASR.
"""
from __future__ import annotations

import contextlib
import copy
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from models.asr.ctc_tensor import ctc_labels
from models.asr.model import ctc_loss_grad

# grad_fn(x, lengths, steps (B, 1) float) -> d loss / d x, same shape as x
GradFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def bf16_autocast(device: torch.device | str, enabled: bool = True):
    """torch.autocast(bfloat16) on `device`'s type when enabled, otherwise a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


_BF16_COPIES: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


def bf16_weights(module: nn.Module) -> nn.Module:
    """A bfloat16 copy of an inference module, made once and kept while the module lives.

    Under autocast, float32 weights are cast to bfloat16 in every call (weights without
    gradients never hit autocast's cast cache): hundreds of extra kernels per MelGen or ASR
    pass. With bf16 weights there is nothing left to cast. A copy on another device than the
    module is remade; changing the module's weights makes it stale (inference only)."""
    copy_ = _BF16_COPIES.get(module)
    device = next(module.parameters()).device
    if copy_ is None or next(copy_.parameters()).device != device:
        copy_ = copy.deepcopy(module).to(torch.bfloat16).requires_grad_(False)
        _BF16_COPIES[module] = copy_
    return copy_


class AsrGradient:
    """grad_fn(x, lengths, steps): the ASR's CTC-loss gradient against one batch's texts.

    Its batch tensors (`constants()`: the tokens, their lengths, the blank-extended labels and,
    when given, a per-clip `keep` factor) are fixed for the batch; a cached captured step made
    for an earlier batch of the same shapes is fed this batch's texts by copying them into its
    own (`Guidance.load_`). `signature()` is what must match for that copy to be valid."""

    def __init__(self, asr, tokens: torch.Tensor, token_lengths: torch.Tensor, keep: torch.Tensor | None = None):
        self.asr, self.tokens = asr, tokens
        self.token_lengths = token_lengths.to(tokens.device)
        self.labels = ctc_labels(tokens, self.token_lengths)       # the texts' part of CTC, once per batch
        self.keep = keep

    def constants(self) -> list[torch.Tensor]:
        return [self.tokens, self.token_lengths, *self.labels] + ([self.keep] if self.keep is not None else [])

    def signature(self) -> tuple:
        return (id(self.asr),) + tuple((tuple(c.shape), c.dtype, str(c.device)) for c in self.constants())

    def __call__(self, x: torch.Tensor, lengths: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        g = ctc_loss_grad(self.asr, x, lengths, steps, self.tokens, self.token_lengths, labels=self.labels)[1]
        return g if self.keep is None else g * self.keep


def asr_guidance(asr, tokens: torch.Tensor, token_lengths: torch.Tensor, bf16: bool = False,
                 keep: torch.Tensor | None = None) -> AsrGradient:
    """The ASR's CTC-loss gradient w.r.t. the noisy mel, against fixed target tokens (one text per clip).
    bf16=True runs a bfloat16 copy of the ASR (call it under autocast; the loss stays float32).
    keep: optional (B, 1, 1) factor on each clip's gradient (0 for a clip without text)."""
    return AsrGradient(bf16_weights(asr) if bf16 else asr, tokens, token_lengths, keep)


def frame_mask(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """(B,) lengths -> (B, 1, total) float mask of valid frames."""
    return (torch.arange(total, device=lengths.device)[None, :] < lengths[:, None]).unsqueeze(1).float()


def _per_clip_norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v.flatten(1), dim=1).view(-1, 1, 1)


@dataclass(frozen=True)
class AsrShaping:
    """How the ASR gradient becomes eps's ASR term (the module text); the defaults are LipVoicer's rule."""
    clean: bool = False                        # generate.asr_clean
    smooth: tuple[int, int] | None = None      # generate.asr_smooth: (mel bins, frames), odd sizes
    power: float = 0.0                         # generate.asr_weight_power

    def smoothed(self, g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.smooth is None or tuple(self.smooth) == (1, 1):
            return g
        kb, kf = (int(k) for k in self.smooth)
        out = torch.nn.functional.avg_pool2d(g.unsqueeze(1), (kb, kf), stride=1, padding=(kb // 2, kf // 2),
                                             count_include_pad=False).squeeze(1)
        return out * mask

    def weight(self, t: int | torch.Tensor, asr_start: int):
        return 1.0 if self.power == 0 else (t / max(asr_start, 1)) ** self.power


class Guidance:
    """eps(x, t) for one batch; `shape`, `mask` and `lengths` describe the state the samplers evolve."""

    def __init__(self, melgen, alpha_bars: torch.Tensor, mouthroi: torch.Tensor, face_image: torch.Tensor, *,
                 lengths: torch.Tensor | None = None, w_video: float = 2.0, w_asr: float = 0.0,
                 asr_start: int = 270, grad_fn: GradFn | None = None, bf16: bool = False,
                 shaping: AsrShaping = AsrShaping()):
        self.melgen = bf16_weights(melgen) if bf16 else melgen
        melgen = self.melgen
        self.w_video, self.w_asr, self.asr_start = float(w_video), float(w_asr), int(asr_start)
        self.grad_fn = grad_fn
        self.bf16 = bool(bf16)
        self.shaping = shaping
        b, _, frames = mouthroi.shape[:3]
        self.device = mouthroi.device
        length = frames * melgen.upsample_factor
        self.shape = (b, melgen.net_diffwave.init_conv[0].conv.in_channels, length)
        self.lengths = (torch.full((b,), length, device=self.device, dtype=torch.long) if lengths is None
                        else lengths.to(self.device))
        self.mask = frame_mask(self.lengths, length)
        self._sqrt_1m_abar = torch.sqrt(1 - alpha_bars.to(self.device))
        self._sqrt_abar = torch.sqrt(alpha_bars.to(self.device))
        with torch.no_grad(), bf16_autocast(self.device, self.bf16):
            cond = melgen.condition(mouthroi, face_image)
            if self.w_video != 0:
                cond = torch.cat((cond, melgen.null_condition(b, frames)), dim=0)
            self.projs = melgen.net_diffwave.cond_projections(cond, length)

    def constants(self) -> list[torch.Tensor] | None:
        """The batch's tensors a step reads besides its inputs (lengths, mask, the condition projections,
        the ASR texts); None when the ASR gradient is a plain function whose tensors are unknown (its
        captured step then cannot be reused for another batch)."""
        own = [self.lengths, self.mask, *self.projs]
        if self.grad_fn is None:
            return own
        extra = getattr(self.grad_fn, "constants", None)
        return None if extra is None else own + list(extra())

    def signature(self) -> tuple | None:
        """What two batches must share for one's captured steps to serve the other after `load_`: the
        models, the settings, and every constant's shape, dtype and device (None: not reusable)."""
        consts = self.constants()
        if consts is None:
            return None
        asr = self.grad_fn.signature() if self.grad_fn is not None else None
        return ((id(self.melgen), self.w_video, self.w_asr, self.asr_start, self.bf16, self.shaping, self.shape, asr)
                + tuple((tuple(c.shape), c.dtype, str(c.device)) for c in consts))

    def load_(self, other: "Guidance") -> "Guidance":
        """Copy another batch's constants into this one's tensors, in place (same signature): the steps
        made (or captured) over this Guidance then compute other's eps."""
        if other is self:
            return self
        if other.signature() != self.signature() or self.signature() is None:
            raise ValueError("Guidance.load_: the two batches differ in shape or settings")
        for mine, theirs in zip(self.constants(), other.constants()):
            mine.copy_(theirs)
        return self

    def asr_active(self, t: int) -> bool:
        """Whether the ASR term is part of eps at step t (the samplers' multistep history restarts where it switches)."""
        return self.grad_fn is not None and self.w_asr > 0 and t <= self.asr_start

    @staticmethod
    def _steps(t: int | torch.Tensor, n: int, device) -> torch.Tensor:
        """(n, 1) float diffusion steps; t a Python int or a 0-dim device tensor (no host read)."""
        if isinstance(t, torch.Tensor):
            return t.to(device=device, dtype=torch.float32).reshape(1, 1).repeat(n, 1)
        return torch.full((n, 1), float(t), device=device)

    @torch.no_grad()
    def video_guided(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """The classifier-free part: (1 + w) eps_cond - w eps_uncond (eps_cond alone when w = 0)."""
        b = x.shape[0]
        xx = torch.cat((x, x), dim=0) if self.w_video != 0 else x
        steps = self._steps(t, xx.shape[0], x.device)
        with bf16_autocast(x.device, self.bf16):
            eps = self.melgen.denoise(xx, None, steps, self.projs).float()
        if self.w_video == 0:
            return eps
        return (1 + self.w_video) * eps[:b] - self.w_video * eps[b:]

    def asr_gradient(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        steps = self._steps(t, x.shape[0], x.device)
        with torch.enable_grad(), bf16_autocast(x.device, self.bf16):
            g = self.grad_fn(x.detach(), self.lengths, steps)
        return g.float() * self.mask

    def eps_at(self, x: torch.Tensor, t: int | torch.Tensor, guided: bool) -> torch.Tensor:
        """eps at step t (an int, or a 0-dim device tensor inside a captured step), with the ASR term
        when `guided` (which the caller decides: asr_active(t) for the int)."""
        eps = self.video_guided(x, t) * self.mask
        if guided:
            c = self._sqrt_1m_abar[t]
            sh = self.shaping
            g = self.asr_gradient((x - c * eps) / self._sqrt_abar[t], 0) if sh.clean else self.asr_gradient(x, t)
            g = sh.smoothed(g, self.mask)
            w = self.w_asr * sh.weight(t, self.asr_start)
            eps = eps + c * w * _per_clip_norm(eps / c) / _per_clip_norm(g).clamp_min(1e-30) * g
        return eps

    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        return self.eps_at(x, t, self.asr_active(t))
