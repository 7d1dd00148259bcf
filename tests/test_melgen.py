"""MelGen model, checkpoint format and diffusion schedule."""
import pytest
import torch

from models.diffusion.schedule import DiffusionSchedule, melgen_training_loss
from models.melgen.model import count_parameters
from models.melgen.checkpoint import build_melgen, load_melgen, save_melgen
from tests.helpers import TINY_MELGEN, compose_cfg
from utils.errors import LipVoicerError


@pytest.fixture(scope="module")
def tiny_cfg():
    return compose_cfg(TINY_MELGEN)


def _inputs(cfg, b=2, frames=10):
    s = cfg.video.mouth_crop
    return (torch.randn(b, 80, 4 * frames), torch.randn(b, 1, frames, s, s),
            torch.randn(b, 3, cfg.video.face_size, cfg.video.face_size), torch.randint(0, 400, (b, 1)).float())


def test_full_model_has_published_size():
    model = build_melgen(compose_cfg())
    assert 56e6 < count_parameters(model) < 58e6  # about 57 M, as published


def test_shapes_and_feature_reuse(tiny_cfg):
    torch.manual_seed(0)
    model = build_melgen(tiny_cfg).eval()
    x, m, f, t = _inputs(tiny_cfg)
    with torch.no_grad():
        lip, face = model.visual_features(m, f)
        assert lip.shape == (2, tiny_cfg.melgen.tcn_channels, 1, 10)
        assert face.shape == (2, tiny_cfg.melgen.face_embed_dim, 1, 1)
        cond = model.condition(m, f)
        assert cond.shape == (2, tiny_cfg.melgen.face_embed_dim + tiny_cfg.melgen.tcn_channels, 10)
        eps = model(x, m, f, t)
        assert eps.shape == x.shape
        assert torch.allclose(model.denoise(x, cond, t), eps, atol=1e-6)


def test_lip_channels_last_is_the_same_function(tiny_cfg):
    """The CPU trainer's channels-last lip stream: same features and gradients, checkpoints load both ways."""
    torch.manual_seed(0)
    a = build_melgen(tiny_cfg).train()
    b = build_melgen(tiny_cfg)
    b.load_state_dict(a.state_dict())
    b.train().lip_channels_last()
    assert b.net_lipreading.trunk[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    x, m, f, t = _inputs(tiny_cfg)
    torch.manual_seed(1)     # the same dropout masks
    la = a.net_lipreading(m)
    torch.manual_seed(1)
    lb = b.net_lipreading(m)
    assert torch.allclose(la, lb, rtol=1e-4, atol=2e-4)     # float rounding only
    ga = torch.autograd.grad(la.square().sum(), a.net_lipreading.frontend3D[0].weight)[0]
    gb = torch.autograd.grad(lb.square().sum(), b.net_lipreading.frontend3D[0].weight)[0]
    assert (ga - gb).norm() < 1e-4 * ga.norm()
    c = build_melgen(tiny_cfg)
    c.load_state_dict(b.state_dict())
    assert all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items() if "running" not in k)


def test_fresh_model_predicts_zero_noise(tiny_cfg):
    """The last layer is zero-initialised (so training starts from eps = 0)."""
    model = build_melgen(tiny_cfg).eval()
    with torch.no_grad():
        assert model(*_inputs(tiny_cfg)).abs().max() == 0


def test_condition_dropping_uses_null_inputs(tiny_cfg):
    torch.manual_seed(0)
    model = build_melgen(tiny_cfg).eval()
    # make the output depend on the condition
    torch.nn.init.normal_(model.net_diffwave.final_conv[2].conv.weight)
    x, m, f, t = _inputs(tiny_cfg)
    with torch.no_grad():
        dropped = model(x, m, f, t, cond_drop_prob=1.0)
        null_m, null_f = model.null_inputs(2, m.shape[2])
        assert torch.allclose(dropped, model(x, null_m, null_f, t), atol=1e-6)
        assert not torch.allclose(dropped, model(x, m, f, t), atol=1e-3)
        assert torch.allclose(model(x, m, f, t, cond_drop_prob=0.0), model(x, m, f, t))


def test_checkpoint_round_trip_and_strict_errors(tiny_cfg, tmp_path):
    model = build_melgen(tiny_cfg)
    opt = torch.optim.Adam(model.parameters())
    path = save_melgen(tmp_path / "10.pkl", model, opt, 10)
    obj = torch.load(path, weights_only=False)
    assert set(obj) >= {"model_state_dict", "optimizer_state_dict"}
    assert any(k.endswith("weight_g") for k in obj["model_state_dict"])
    loaded = load_melgen(path, tiny_cfg)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k

    sd = dict(obj["model_state_dict"])
    sd.pop("face_null")
    sd["net_extra.weight"] = torch.zeros(1)
    with pytest.raises(LipVoicerError, match=r"missing keys: face_null.*unexpected keys: net_extra\.weight"):
        load_melgen({"model_state_dict": sd}, tiny_cfg)
    # a DDP-prefixed checkpoint loads too
    ddp = {"model_state_dict": {f"module.{k}": v for k, v in obj["model_state_dict"].items()}}
    load_melgen(ddp, tiny_cfg)
    with pytest.raises(LipVoicerError, match="no 'model_state_dict'"):
        load_melgen({"weights": {}}, tiny_cfg)
    with pytest.raises(LipVoicerError, match=r"nothere\.pkl: checkpoint not found; fetch it with: X"):
        load_melgen(tmp_path / "nothere.pkl", tiny_cfg, fetch_hint="X")
    # the full model does not accept a tiny checkpoint: shape mismatch named
    with pytest.raises(LipVoicerError, match="shape mismatch|missing keys"):
        load_melgen(path, compose_cfg())


def test_schedule_values():
    s = DiffusionSchedule(400, 1e-4, 0.02)
    assert s.betas.shape == (400,)
    assert torch.isclose(s.betas[0], torch.tensor(1e-4)) and torch.isclose(s.betas[-1], torch.tensor(0.02))
    assert torch.allclose(s.alpha_bars[1], (1 - s.betas[0]) * (1 - s.betas[1]))
    assert s.sigmas[0] == 0
    t = 200
    expect = s.betas[t] * (1 - s.alpha_bars[t - 1]) / (1 - s.alpha_bars[t])
    assert torch.isclose(s.sigmas[t] ** 2, expect, rtol=1e-5)
    assert float(s.alpha_bars[-1]) < 0.02  # nearly pure noise at T


def test_q_sample_statistics():
    s = DiffusionSchedule()
    x0 = torch.ones(4, 80, 1000)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 100, 250, 399])
    xt = s.q_sample(x0, t, noise)
    for i, ti in enumerate(t):
        ab = s.alpha_bars[ti]
        assert torch.allclose(xt[i], ab.sqrt() + (1 - ab).sqrt() * noise[i], atol=1e-6)


def test_training_lowers_loss_on_a_fixed_batch(tiny_cfg):
    torch.manual_seed(0)
    model = build_melgen(tiny_cfg)
    s = DiffusionSchedule()
    mel = torch.tanh(torch.randn(2, 80, 40))
    _, m, f, _ = _inputs(tiny_cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)

    def loss_at_fixed_noise():
        g.manual_seed(1)
        return melgen_training_loss(model, s, mel, m, f, cond_drop_prob=0.0, generator=g)

    with torch.no_grad():
        first = float(loss_at_fixed_noise())
    for _ in range(40):
        loss = loss_at_fixed_noise()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = float(loss_at_fixed_noise())
    assert last < 0.85 * first, (first, last)
