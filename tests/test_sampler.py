"""The guided sampler against the reference-style path, batching, masks and seeding."""
import pytest
import torch

from models.diffusion.reference import reference_sample
from models.diffusion.schedule import DiffusionSchedule
from models.melgen.checkpoint import build_melgen
from models.diffusion.samplers import Sampler
from tests.helpers import TINY_MELGEN, compose_cfg
from tests.parity_utils import rel_err


@pytest.fixture(scope="module")
def tiny():
    cfg = compose_cfg(TINY_MELGEN)
    torch.manual_seed(0)
    model = build_melgen(cfg).eval()
    torch.nn.init.normal_(model.net_diffwave.final_conv[2].conv.weight, std=0.05)
    return cfg, model


def _clip(cfg, frames, seed):
    g = torch.Generator().manual_seed(seed)
    s, f = cfg.video.mouth_crop, cfg.video.face_size
    return torch.randn(1, 1, frames, s, s, generator=g), torch.randn(1, 3, f, f, generator=g)


def _quadratic_grad(target):
    """A stand-in for the ASR: the gradient of 0.5 ||x - target||^2 (per clip, masked by the sampler)."""
    def grad_fn(x, lengths, steps):
        return x - target[..., :x.shape[-1]]
    return grad_fn


def test_matches_reference_path(tiny):
    cfg, model = tiny
    sch = DiffusionSchedule()
    m, f = _clip(cfg, 6, 1)
    g = torch.Generator().manual_seed(5)
    x_T = torch.randn(1, 80, 24, generator=g)
    noise = [torch.randn(1, 80, 24, generator=g) for _ in range(9)]
    target = torch.randn(1, 80, 24, generator=g)
    for w_asr in (0.0, 1.5):
        ref = reference_sample(model, sch, m, f, w_video=2.0, w_asr=w_asr, asr_start=5,
                               grad_fn=_quadratic_grad(target), x_T=x_T, step_noise=noise, first_t=9)
        out = Sampler(sch, "ancestral", 2.0, w_asr, 5).sample(
            model,             m, f, grad_fn=_quadratic_grad(target), x_T=x_T, step_noise=noise, first_t=9)
        assert rel_err(out, ref) < 1e-5, w_asr
    # guidance changes the result
    plain = Sampler(sch, "ancestral", 2.0, 0.0, 5).sample(model, m, f, x_T=x_T, step_noise=noise, first_t=9)
    assert rel_err(plain, out) > 1e-3


def test_batch_of_different_lengths(tiny):
    cfg, model = tiny
    sch = DiffusionSchedule()
    (m1, f1), (m2, f2) = _clip(cfg, 8, 1), _clip(cfg, 5, 2)
    mouth = torch.zeros(2, 1, 8, *m1.shape[-2:])
    mouth[0], mouth[1, :, :5] = m1[0], m2[0]
    face = torch.cat((f1, f2))
    lengths = torch.tensor([32, 20])
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(2, 80, 32, generator=g)
    noise = [torch.randn(2, 80, 32, generator=g) for _ in range(4)]
    target = torch.randn(2, 80, 32, generator=g)
    s = Sampler(sch, "ancestral", 2.0, 1.5, 3)
    out = s.sample(model, mouth, face, grad_fn=_quadratic_grad(target), lengths=lengths, x_T=x_T, step_noise=noise,
                   first_t=4)
    assert out.shape == (2, 80, 32)
    assert out[1, :, 20:].abs().max() == 0  # padding stays zero
    # the longer clip alone gives the same result (its batch neighbour does not leak into it)
    alone = s.sample(model, m1, f1, grad_fn=_quadratic_grad(target[:1]), x_T=x_T[:1], step_noise=[z[:1] for z in noise],
                     first_t=4)
    assert rel_err(out[:1], alone) < 1e-5
    # the shorter clip alone agrees away from its padded end (convolutions see the padding there)
    alone2 = s.sample(model, m2, f2, grad_fn=_quadratic_grad(target[1:]), x_T=x_T[1:, :, :20],
                      step_noise=[z[1:, :, :20] for z in noise], first_t=4)
    assert rel_err(out[1:, :, :12], alone2[..., :12]) < 1e-3


def test_seeded_runs_are_reproducible(tiny):
    cfg, model = tiny
    m, f = _clip(cfg, 4, 3)
    s = Sampler(DiffusionSchedule(), "ancestral", 2.0, 0.0, 270)
    a = s.sample(model, m, f, generator=torch.Generator().manual_seed(7), first_t=5)
    b = s.sample(model, m, f, generator=torch.Generator().manual_seed(7), first_t=5)
    c = s.sample(model, m, f, generator=torch.Generator().manual_seed(8), first_t=5)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_per_clip_generators(tiny):
    """generators=[...]: each clip's x_T and step noise come from its own generator, drawn for its own
    length, so a clip's result depends neither on its batch neighbours nor on its position (issue 14, item 10)."""
    cfg, model = tiny
    s = Sampler(DiffusionSchedule(), "ancestral", 2.0, 0.0, 270)
    (m1, f1), (m2, f2), (m3, f3) = _clip(cfg, 6, 1), _clip(cfg, 6, 2), _clip(cfg, 4, 3)

    def gen(seed):
        return torch.Generator().manual_seed(seed)

    # a batch of one draws exactly what generator= draws: the single-video path is unchanged
    assert torch.equal(s.sample(model, m1, f1, generators=[gen(5)], first_t=3),
                       s.sample(model, m1, f1, generator=gen(5), first_t=3))
    a1 = s.sample(model, m1, f1, generators=[gen(10)], first_t=3)
    a2 = s.sample(model, m2, f2, generators=[gen(11)], first_t=3)
    pair = s.sample(model, torch.cat((m1, m2)), torch.cat((f1, f2)), generators=[gen(10), gen(11)], first_t=3)
    swapped = s.sample(model, torch.cat((m2, m1)), torch.cat((f2, f1)), generators=[gen(11), gen(10)], first_t=3)
    assert rel_err(pair[:1], a1) < 1e-5 and rel_err(pair[1:], a2) < 1e-5
    assert rel_err(swapped[1:], a1) < 1e-5 and rel_err(swapped[:1], a2) < 1e-5
    # the same batch composition gives identical results
    assert torch.equal(pair, s.sample(model, torch.cat((m1, m2)), torch.cat((f1, f2)), generators=[gen(10), gen(11)],
                                      first_t=3))
    # a shorter clip's noise is drawn for its own 16 mel frames: it agrees with the clip alone away from
    # its padded end (the convolutions see the padding there)
    mouth = torch.zeros(2, 1, 6, *m1.shape[-2:])
    mouth[0], mouth[1, :, :4] = m1[0], m3[0]
    out = s.sample(model, mouth, torch.cat((f1, f3)), lengths=torch.tensor([24, 16]), generators=[gen(10), gen(12)],
                   first_t=3)
    alone3 = s.sample(model, m3, f3, generators=[gen(12)], first_t=3)
    assert out[1, :, 16:].abs().max() == 0
    assert rel_err(out[:1], a1) < 1e-5 and rel_err(out[1:, :, :8], alone3[..., :8]) < 1e-3
    with pytest.raises(ValueError, match="2 generators for a batch of 1"):
        s.sample(model, m1, f1, generators=[gen(1), gen(2)], first_t=3)
