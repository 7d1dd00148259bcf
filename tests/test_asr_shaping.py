"""The guidance options of models/diffusion/guidance.py (AsrShaping: the ASR on the clean estimate, a
smoothed gradient, a weight fading with t): each does what it says on one step, the defaults are LipVoicer's
rule exactly, and each runs through the captured-step seam bit for bit."""
from __future__ import annotations

import pytest
import torch

from models.diffusion.guidance import AsrShaping, Guidance
from models.diffusion.samplers import Sampler
from models.diffusion.schedule import DiffusionSchedule
from models.melgen.checkpoint import build_melgen
from tests.helpers import TINY_MELGEN, compose_cfg

T = 30


@pytest.fixture(scope="module")
def tiny():
    cfg = compose_cfg(TINY_MELGEN + [f"diffusion.T={T}"])
    torch.manual_seed(0)
    melgen = build_melgen(cfg).eval().requires_grad_(False)
    torch.nn.init.normal_(melgen.net_diffwave.final_conv[2].conv.weight, std=0.2)
    g = torch.Generator().manual_seed(3)
    s, f = cfg.video.mouth_crop, cfg.video.face_size
    mouth, face = torch.randn(2, 1, 6, s, s, generator=g), torch.randn(2, 3, f, f, generator=g)
    return melgen, DiffusionSchedule.from_config(cfg.diffusion), mouth, face


class Recorder:
    """A stand-in ASR gradient: a fixed random pattern; keeps what it was called with."""

    def __init__(self, shape):
        self.g = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        self.calls = []

    def __call__(self, x, lengths, steps):
        self.calls.append((x.clone(), steps.clone()))
        return self.g.clone()


def _term(melgen, sch, mouth, face, shaping, t=10, asr_start=20):
    """(the ASR term of eps at step t, the recorder, x, the unguided eps)."""
    x = torch.randn(2, 80, 24, generator=torch.Generator().manual_seed(2))
    rec = Recorder(x.shape)
    eps = Guidance(melgen, sch.alpha_bars, mouth, face, w_video=2.0, w_asr=1.5, asr_start=asr_start, grad_fn=rec,
                   shaping=shaping)
    guided, plain = eps.eps_at(x, t, True), eps.eps_at(x, t, False)
    return guided - plain, rec, x, plain


def _norm(v):
    return torch.linalg.vector_norm(v.flatten(1), dim=1).view(-1, 1, 1)


def test_the_default_is_lipvoicers_rule(tiny):
    melgen, sch, mouth, face = tiny
    term, rec, x, plain = _term(melgen, sch, mouth, face, AsrShaping())
    c = torch.sqrt(1 - sch.alpha_bars[10])
    expect = c * 1.5 * _norm(plain / c) / _norm(rec.g) * rec.g
    assert torch.allclose(term, expect, atol=1e-6)
    assert torch.equal(rec.calls[0][0], x) and torch.equal(rec.calls[0][1], torch.full((2, 1), 10.0))
    same, *_ = _term(melgen, sch, mouth, face, AsrShaping(smooth=(1, 1), power=0.0))
    assert torch.equal(same, term)


def test_smoothing_box_averages_the_gradient(tiny):
    melgen, sch, mouth, face = tiny
    term, rec, _, _ = _term(melgen, sch, mouth, face, AsrShaping(smooth=(3, 5)))
    box = torch.nn.functional.avg_pool2d(rec.g.unsqueeze(1), (3, 5), 1, (1, 2), count_include_pad=False).squeeze(1)
    direction = term / _norm(term)
    assert torch.allclose(direction, box / _norm(box), atol=1e-5)
    # less fine structure than the raw gradient: neighbouring frames agree more
    assert (box.diff(dim=-1).abs().mean() < 0.5 * rec.g.diff(dim=-1).abs().mean())


def test_the_weight_fades_with_t(tiny):
    melgen, sch, mouth, face = tiny
    full, *_ = _term(melgen, sch, mouth, face, AsrShaping(), t=10)
    half, *_ = _term(melgen, sch, mouth, face, AsrShaping(power=1.0), t=10, asr_start=20)
    quarter, *_ = _term(melgen, sch, mouth, face, AsrShaping(power=2.0), t=10, asr_start=20)
    assert torch.allclose(half, 0.5 * full, atol=1e-6) and torch.allclose(quarter, 0.25 * full, atol=1e-6)


def test_the_asr_reads_the_clean_estimate_at_step_0(tiny):
    melgen, sch, mouth, face = tiny
    term, rec, x, plain = _term(melgen, sch, mouth, face, AsrShaping(clean=True), t=10)
    seen, steps = rec.calls[0]
    x0 = (x - torch.sqrt(1 - sch.alpha_bars[10]) * plain) / torch.sqrt(sch.alpha_bars[10])
    assert torch.allclose(seen, x0, atol=1e-5) and torch.equal(steps, torch.zeros(2, 1))


@pytest.mark.parametrize("shaping", [AsrShaping(clean=True), AsrShaping(smooth=(3, 3), power=1.0)])
def test_each_option_replays_through_static_steps_exactly(tiny, shaping):
    melgen, sch, mouth, face = tiny
    target = torch.randn(2, 80, 24, generator=torch.Generator().manual_seed(4))

    def grad(x, lengths, steps):   # depends on what the ASR reads (the clean estimate differs from x)
        return x - target

    sampler = Sampler(sch, "ddim", w_video=2.0, w_asr=1.5, asr_start=12, steps=8, asr_shaping=shaping)
    out = {}
    for mode in ("eager", "static"):
        out[mode] = sampler.sample(melgen, mouth, face, grad_fn=grad, generator=torch.Generator().manual_seed(7),
                                   mode=mode)
    assert torch.isfinite(out["eager"]).all() and torch.equal(out["static"], out["eager"])
    plain = Sampler(sch, "ddim", w_video=2.0, w_asr=1.5, asr_start=12, steps=8).sample(
        melgen, mouth, face, grad_fn=grad, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(plain, out["eager"])


def test_settings_reach_the_sampler():
    from models.builders import build_sampler

    cfg = compose_cfg(["generate.asr_clean=true", "generate.asr_smooth=[3,5]", "generate.asr_weight_power=2"])
    s = build_sampler(cfg, DiffusionSchedule())
    assert s.asr_shaping == AsrShaping(clean=True, smooth=(3, 5), power=2.0)
    assert build_sampler(compose_cfg([]), DiffusionSchedule()).asr_shaping == AsrShaping()
