"""Few-step samplers (DDIM, DPM-Solver++(2M)), bf16 autocast and build_sampler on a tiny random MelGen."""
import pytest
import torch

from models.diffusion.schedule import DiffusionSchedule
from models.builders import build_sampler
from models.diffusion.guidance import asr_guidance
from models.diffusion.samplers import Sampler, timestep_subsequence
from models.melgen.checkpoint import build_melgen
from tests.helpers import TINY_MELGEN, compose_cfg
from tests.parity_utils import rel_err
from utils.errors import LipVoicerError

TINY_ASR = ["asr.vocab_size=20", "asr.stem_filters=8", "asr.dims=[16,24,32]", "asr.num_blocks=[1,1,1]",
            "asr.num_heads=2", "asr.conv_kernel=5", "asr.ff_ratio=2", "asr.step_embed_dim_in=16",
            "asr.step_embed_dim_mid=32", "asr.step_embed_dim_out=32"]
T = 50


@pytest.fixture(scope="module")
def tiny():
    cfg = compose_cfg(TINY_MELGEN + TINY_ASR + [f"diffusion.T={T}"])
    torch.manual_seed(0)
    model = build_melgen(cfg).eval()
    # the zero-initialised output layer would predict eps = 0; give it unit-ish outputs
    torch.nn.init.normal_(model.net_diffwave.final_conv[2].conv.weight, std=0.3)
    return cfg, model, DiffusionSchedule.from_config(cfg.diffusion)


def _clip(cfg, frames, seed):
    g = torch.Generator().manual_seed(seed)
    s, f = cfg.video.mouth_crop, cfg.video.face_size
    return torch.randn(1, 1, frames, s, s, generator=g), torch.randn(1, 3, f, f, generator=g)


def _noise(shape, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), [torch.randn(shape, generator=g) for _ in range(n)]


def test_timestep_subsequence():
    assert timestep_subsequence(5, 49) == [49, 37, 24, 12, 0]
    assert timestep_subsequence(50, 49) == list(range(49, -1, -1))
    assert timestep_subsequence(80, 9) == list(range(9, -1, -1))  # capped at every step
    assert timestep_subsequence(1, 49) == [49]
    assert timestep_subsequence(2, 49) == [49, 0]


def test_ddim_eta1_all_steps_is_the_ancestral_sampler(tiny):
    cfg, model, sch = tiny
    m, f = _clip(cfg, 6, 1)
    x_T, noise = _noise((1, 80, 24), T - 1, 2)
    target = torch.randn(1, 80, 24, generator=torch.Generator().manual_seed(3))

    def grad_fn(x, lengths, steps):  # gradient of 0.5 ||x - target||^2, a stand-in for the ASR
        return x - target

    anc = Sampler(sch, "ancestral", 2.0, 1.5, 30).sample(model, m, f, grad_fn=grad_fn, x_T=x_T, step_noise=noise)
    ddim = Sampler(sch, "ddim", 2.0, 1.5, 30, steps=T, eta=1.0).sample(model, m, f, grad_fn=grad_fn, x_T=x_T,
                                                                         step_noise=noise)
    assert rel_err(ddim, anc) < 1e-5


def test_deterministic_given_x_T(tiny):
    cfg, model, sch = tiny
    m, f = _clip(cfg, 4, 1)
    x_T = torch.randn(1, 80, 16, generator=torch.Generator().manual_seed(0))
    for name in ("ddim", "dpm_solver"):
        s = Sampler(sch, name, 2.0, 0.0, 30, steps=8)
        a = s.sample(model, m, f, x_T=x_T, generator=torch.Generator().manual_seed(1))
        b = s.sample(model, m, f, x_T=x_T, generator=torch.Generator().manual_seed(2))
        c = s.sample(model, m, f, generator=torch.Generator().manual_seed(1))
        assert torch.equal(a, b) and not torch.equal(a, c) and torch.isfinite(a).all(), name
    # eta > 0 draws fresh noise at every step with t > 0
    s = Sampler(sch, "ddim", 2.0, 0.0, 30, steps=8, eta=1.0)
    a = s.sample(model, m, f, x_T=x_T, generator=torch.Generator().manual_seed(1))
    b = s.sample(model, m, f, x_T=x_T, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)


def test_dpm_solver_and_ddim_converge_to_the_same_ode_solution(tiny):
    cfg, model, sch = tiny
    m, f = _clip(cfg, 6, 4)
    x_T = torch.randn(1, 80, 24, generator=torch.Generator().manual_seed(5))
    run = {(name, n): Sampler(sch, name, 2.0, 0.0, 30, steps=n).sample(model, m, f, x_T=x_T)
           for name in ("ddim", "dpm_solver") for n in (T, 25)}
    fine_ddim, fine_dpm = run["ddim", T], run["dpm_solver", T]
    # every step of the schedule: measured 1.6e-3 (DDIM's own first-order error at 50 steps)
    assert rel_err(fine_ddim, fine_dpm) < 5e-3
    # second order: at 25 steps DPM-Solver++ is far closer to the limit than DDIM (measured 5.5e-4 vs 3.3e-3)
    err_dpm, err_ddim = rel_err(run["dpm_solver", 25], fine_dpm), rel_err(run["ddim", 25], fine_dpm)
    assert err_dpm < 0.5 * err_ddim and err_dpm < 2e-3


@pytest.mark.parametrize("name", ["ddim", "dpm_solver"])
def test_batch_of_different_lengths(tiny, name):
    cfg, model, sch = tiny
    (m1, f1), (m2, f2) = _clip(cfg, 8, 1), _clip(cfg, 5, 2)
    mouth = torch.zeros(2, 1, 8, *m1.shape[-2:])
    mouth[0], mouth[1, :, :5] = m1[0], m2[0]
    face = torch.cat((f1, f2))
    lengths = torch.tensor([32, 20])
    x_T = torch.randn(2, 80, 32, generator=torch.Generator().manual_seed(0))
    target = torch.randn(2, 80, 32, generator=torch.Generator().manual_seed(1))
    s = Sampler(sch, name, 2.0, 1.5, 30, steps=6)
    out = s.sample(model, mouth, face, grad_fn=lambda x, lengths, steps: x - target, lengths=lengths, x_T=x_T)
    assert out.shape == (2, 80, 32) and torch.isfinite(out).all()
    assert out[1, :, 20:].abs().max() == 0
    alone = s.sample(model, m1, f1, grad_fn=lambda x, lengths, steps: x - target[:1], x_T=x_T[:1])
    assert rel_err(out[:1], alone) < 1e-5


@pytest.fixture(scope="module")
def tiny_asr(tiny):
    from models.asr import build_asr

    cfg = tiny[0]
    torch.manual_seed(1)
    return build_asr(cfg.asr).eval()


@pytest.mark.parametrize("name", ["ddim", "dpm_solver"])
def test_asr_guidance(tiny, tiny_asr, name):
    cfg, model, sch = tiny
    m, f = _clip(cfg, 8, 3)
    x_T = torch.randn(1, 80, 32, generator=torch.Generator().manual_seed(0))
    tokens = torch.tensor([[3, 7, 5]])
    inner = asr_guidance(tiny_asr, tokens, torch.tensor([3]))
    calls = []

    def grad_fn(x, lengths, steps):
        calls.append(int(steps[0, 0]))
        return inner(x, lengths, steps)

    asr_start = 30
    plain = Sampler(sch, name, 2.0, 0.0, asr_start, steps=10).sample(model, m, f, x_T=x_T)
    off = Sampler(sch, name, 2.0, 0.0, asr_start, steps=10).sample(model, m, f, grad_fn=grad_fn, x_T=x_T)
    assert calls == [] and torch.equal(off, plain)
    s = Sampler(sch, name, 2.0, 1.5, asr_start, steps=10)
    guided = s.sample(model, m, f, grad_fn=grad_fn, x_T=x_T)
    expected = [t for t in timestep_subsequence(s.steps, T - 1) if t <= asr_start]
    assert calls == expected and len(expected) == 6
    assert torch.isfinite(guided).all() and rel_err(guided, plain) > 1e-3


def test_bf16_close_to_fp32(tiny, tiny_asr):
    cfg, model, sch = tiny
    m, f = _clip(cfg, 6, 5)
    x_T, noise = _noise((1, 80, 24), T - 1, 6)
    grad_fn = asr_guidance(tiny_asr, torch.tensor([[2, 9]]), torch.tensor([2]))
    for make in (lambda bf16: Sampler(sch, "ancestral", 2.0, 1.5, 30, bf16=bf16),
                 lambda bf16: Sampler(sch, "ddim", 2.0, 1.5, 30, steps=10, bf16=bf16),
                 lambda bf16: Sampler(sch, "dpm_solver", 2.0, 1.5, 30, steps=10, bf16=bf16)):
        fp32, bf16 = make(False), make(True)
        a = fp32.sample(model, m, f, grad_fn=grad_fn, x_T=x_T, step_noise=noise)
        b = bf16.sample(model, m, f, grad_fn=grad_fn, x_T=x_T, step_noise=noise)
        assert b.dtype == torch.float32 and torch.isfinite(b).all()
        # measured about 3e-3 on CPU
        assert 0 < rel_err(b, a) < 5e-2, fp32.name
        assert bf16.bf16 and not fp32.bf16


def test_build_sampler(tiny):
    cfg, model, sch = tiny
    gen = cfg.generate
    s = build_sampler({**gen, "sampler": "ancestral"}, sch)
    assert s.name == "ancestral" and not s.bf16
    s = build_sampler({**gen, "sampler": "ancestral", "bf16": True}, sch)
    assert s.name == "ancestral" and s.bf16
    s = build_sampler({**gen, "sampler": "ddim", "steps": 10}, sch)
    assert s.name == "ddim" and s.steps == 10 and s.eta == 0 and not s.bf16
    assert (s.w_video, s.w_asr, s.asr_start) == (gen.w_video, gen.w_asr, gen.asr_start)
    s = build_sampler({**gen, "sampler": "dpm_solver", "steps": T, "bf16": True}, sch)
    assert s.name == "dpm_solver" and s.steps == T and s.bf16
    # ancestral ignores generate.steps (400 by default, more than this T)
    s = build_sampler({**gen, "steps": 400}, sch)
    assert s.name == "ancestral" and s.steps == 400  # ignored: the ancestral sampler visits every timestep
    for bad, word in (({"sampler": "euler"}, "euler"), ({"sampler": "ddim", "steps": 0}, "0"),
                      ({"sampler": "dpm_solver", "steps": T + 1}, str(T + 1)),
                      ({"sampler": "ddim", "steps": "many"}, "many")):
        with pytest.raises(LipVoicerError) as e:
            build_sampler({**gen, **bad}, sch)
        msg = str(e.value)
        assert "\n" not in msg and word in msg and "generate." in msg


def test_ddim_noise_per_clip(tiny):
    """ddim with eta > 0 draws its step noise per clip from `generators` (issue 14, item 10)."""
    cfg, model, sch = tiny
    m, f = _clip(cfg, 4, 6)
    s = Sampler(sch, "ddim", 2.0, 0.0, 20, steps=6, eta=1.0)
    a = s.sample(model, m, f, generators=[torch.Generator().manual_seed(3)])
    b = s.sample(model, m, f, generator=torch.Generator().manual_seed(3))
    c = s.sample(model, m, f, generators=[torch.Generator().manual_seed(4)])
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", ["ancestral", "ddim", "dpm_solver"])
def test_clip_x0(tiny, name):
    """generate.clip_x0: a range wide enough never to clamp reproduces the unclamped sampler; a narrow
    one keeps the clean mel inside it; static replay equals eager (the CUDA-graph seam)."""
    cfg, model, sch = tiny
    m, f = _clip(cfg, 6, 7)
    x_T, noise = _noise((1, 80, 24), T - 1, 8)
    kw = dict(steps=10, eta=0.5) if name == "ddim" else dict(steps=10) if name == "dpm_solver" else {}
    plain = Sampler(sch, name, 2.0, 0.0, 20, **kw).sample(model, m, f, x_T=x_T, step_noise=noise)
    wide = Sampler(sch, name, 2.0, 0.0, 20, clip_x0=(-1e6, 1e6), **kw).sample(model, m, f, x_T=x_T, step_noise=noise)
    assert rel_err(wide, plain) < 1e-4
    assert plain.abs().max() > 1.5          # this random model's samples leave [-1, 1.2] unclamped
    narrow = Sampler(sch, name, 2.0, 0.0, 20, clip_x0=(-1.0, 1.2), **kw)
    eager = narrow.sample(model, m, f, x_T=x_T, step_noise=noise)
    assert eager.min() >= -1.0 - 1e-5 and eager.max() <= 1.2 + 1e-5
    static = narrow.sample(model, m, f, x_T=x_T, step_noise=noise, mode="static")
    assert torch.allclose(static, eager, atol=1e-5)


def test_clip_x0_from_config(tiny):
    cfg, model, sch = tiny
    assert build_sampler(cfg, sch).clip_x0 is None      # the published default: no clamp
    s = build_sampler({**cfg.generate, "clip_x0": [-1, 1.2]}, sch)
    assert s.clip_x0 == (-1.0, 1.2)
    for bad, shown in (([1, -1], "[1, -1]"), ([0, 1, 2], "[0, 1, 2]"), ("loud", "'loud'"), (["a", 1], "['a', 1]")):
        with pytest.raises(LipVoicerError) as e:
            build_sampler({**cfg.generate, "clip_x0": bad}, sch)
        assert str(e.value) == f"generate.clip_x0={shown}: needs [low, high] with low < high, or null"
