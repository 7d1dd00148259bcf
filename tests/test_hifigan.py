"""HiFi-GAN generator: layout and key names, published-format loading, weight-norm removal, vocode()."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from models.hifigan.generator import (HiFiGANGenerator, hifigan_params, load_hifigan, published_state_dict, save_hifigan,
                            vocode)
from utils.errors import LipVoicerError

TINY = dict(upsample_initial_channel=16)


def tiny_cfg(**kw):
    return OmegaConf.create({**TINY, **kw})


def tiny_generator(seed=0, **kw):
    torch.manual_seed(seed)
    g = HiFiGANGenerator(tiny_cfg(**kw))
    with torch.no_grad():  # non-trivial g so that folding is exercised
        for name, p in g.named_parameters():
            if name.endswith("weight_g"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.05)
    return g.eval()


def test_config_matches_published_settings():
    from tests.helpers import compose_cfg

    cfg = compose_cfg()
    p = hifigan_params(cfg.vocoder)
    assert p["upsample_rates"] == [2, 5, 4, 4]
    assert p["upsample_kernel_sizes"] == [16, 15, 4, 4]
    assert p["upsample_initial_channel"] == 512
    assert p["resblock"] == "1"
    assert p["resblock_kernel_sizes"] == [3, 7, 11]
    assert p["resblock_dilation_sizes"] == [[1, 3, 5]] * 3
    assert str(cfg.vocoder.checkpoint) == "checkpoints/g_02400000"
    assert cfg.vocoder.peak_scale == pytest.approx(1.1)


def test_published_key_names_and_shapes():
    g = HiFiGANGenerator()  # full size: 512 initial channels
    sd = g.state_dict()
    assert len(sd) == 3 * (1 + 4 + 12 * 6 + 1)
    assert list(sd)[:3] == ["conv_pre.bias", "conv_pre.weight_g", "conv_pre.weight_v"]
    expect = {
        "conv_pre.weight_g": (512, 1, 1), "conv_pre.weight_v": (512, 80, 7),
        "ups.0.weight_v": (512, 256, 16), "ups.1.weight_v": (256, 128, 15), "ups.3.weight_g": (64, 1, 1),
        "resblocks.2.convs1.1.weight_v": (256, 256, 11), "resblocks.11.convs2.2.weight_v": (32, 32, 11),
        "conv_post.weight_v": (1, 32, 7), "conv_post.bias": (1,),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.endswith(".weight") for k in sd)


def test_output_shape_and_range():
    g = tiny_generator()
    mel = torch.randn(2, 80, 7) - 5
    with torch.no_grad():
        audio = g(mel)
    assert audio.shape == (2, 1, 7 * 160)
    assert g.hop_length == 160
    assert audio.abs().max() <= 1.0


def test_forward_rejects_wrong_mel_shape():
    g = tiny_generator()
    with pytest.raises(ValueError, match=r"\(B, 80, frames\)"):
        g(torch.randn(2, 64, 7))


def test_remove_weight_norm_keeps_output():
    g = tiny_generator()
    mel = torch.randn(1, 80, 9) - 4
    with torch.no_grad():
        before = g(mel)
        g.remove_weight_norm()
        after = g(mel)
    assert not g.is_weight_normed
    assert not any("weight_g" in k or "weight_v" in k for k in g.state_dict())
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    g.remove_weight_norm()  # idempotent


def test_published_format_round_trip(tmp_path):
    g = tiny_generator(seed=3)
    mel = torch.randn(2, 80, 6) - 4
    with torch.no_grad():
        ref = g(mel)
    path = save_hifigan(tmp_path / "g_00000001", g)
    raw = torch.load(path, weights_only=False)
    assert set(raw) == {"generator"}
    assert list(raw["generator"]) == list(g.state_dict())  # weight_g / weight_v as published
    loaded = load_hifigan(path, tiny_cfg())
    assert not loaded.training and not loaded.is_weight_normed
    assert all(not p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded(mel), ref, rtol=1e-5, atol=1e-6)
    # a folded generator is written back in the published form too, and reloads to the same output
    path2 = save_hifigan(tmp_path / "g_00000002", loaded)
    assert list(torch.load(path2, weights_only=False)["generator"]) == list(g.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(load_hifigan(path2, tiny_cfg())(mel), ref, rtol=1e-5, atol=1e-6)


def test_loads_ddp_prefixed_state_dict():
    g = tiny_generator()
    sd = {f"module.{k}": v for k, v in published_state_dict(g).items()}
    loaded = load_hifigan({"generator": sd}, tiny_cfg())
    mel = torch.randn(1, 80, 4) - 4
    with torch.no_grad():
        torch.testing.assert_close(loaded(mel), g(mel), rtol=1e-5, atol=1e-6)


def test_strict_loading_names_missing_and_unexpected_keys():
    sd = published_state_dict(tiny_generator())
    del sd["ups.2.weight_g"]
    sd["ups.9.weight_v"] = torch.zeros(1)
    with pytest.raises(LipVoicerError, match=r"missing keys: ups\.2\.weight_g.*unexpected keys: ups\.9\.weight_v"):
        load_hifigan({"generator": sd}, tiny_cfg())


def test_strict_loading_names_shape_mismatch():
    sd = published_state_dict(tiny_generator())
    with pytest.raises(LipVoicerError, match=r"shape mismatch: conv_pre\.weight_v"):
        load_hifigan({"generator": sd}, tiny_cfg(num_mels=64))


def test_not_a_generator_checkpoint(tmp_path):
    path = tmp_path / "model.pkl"
    torch.save({"model_state_dict": {}}, path)
    with pytest.raises(LipVoicerError, match=r"model\.pkl: not a HiFi-GAN generator checkpoint \(no 'generator'"):
        load_hifigan(path, tiny_cfg())


def test_missing_file_names_the_fetch_command(tmp_path):
    with pytest.raises(LipVoicerError, match=r"g_02400000: checkpoint not found; fetch it with: "
                                             r"python download_checkpoints.py --only hifigan"):
        load_hifigan(tmp_path / "g_02400000", tiny_cfg())


@pytest.mark.parametrize("kw, msg", [
    (dict(resblock="3"), r"vocoder\.resblock: must be '1' or '2'"),
    (dict(hop_size=200), r"upsample rates multiply to 160, not to hop_size 200"),
    (dict(upsample_kernel_sizes=[16, 15, 4]), r"upsample_rates and upsample_kernel_sizes differ"),
])
def test_bad_vocoder_config(kw, msg):
    with pytest.raises(LipVoicerError, match=msg):
        HiFiGANGenerator(tiny_cfg(**kw))


def test_resblock_type_2_builds_and_runs():
    g = tiny_generator(resblock="2", resblock_dilation_sizes=[[1, 3], [1, 3], [1, 3]])
    assert "resblocks.0.convs.1.weight_v" in g.state_dict()
    with torch.no_grad():
        assert g(torch.randn(1, 80, 3)).shape == (1, 1, 480)


class _FixedAudio(torch.nn.Module):
    """Stands in for a generator: returns the given audio for any mel."""

    def __init__(self, audio):
        super().__init__()
        self.audio = audio
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, mel):
        return self.audio[: mel.shape[0]].unsqueeze(1)


def test_vocode_scales_to_peak_one_over_1_1():
    g = tiny_generator()
    mel = torch.randn(80, 5) - 4
    wav = vocode(g, mel)
    assert wav.shape == (5 * 160,) and wav.dtype == torch.float32
    assert float(wav.abs().max()) == pytest.approx(1 / 1.1, rel=1e-6)
    with torch.no_grad():
        raw = g(mel[None])[0, 0]
    torch.testing.assert_close(wav, raw / raw.abs().max() / 1.1)


def test_vocode_batch_lengths_and_silence():
    audio = torch.zeros(3, 4 * 160)
    audio[0, :] = torch.linspace(-0.5, 0.25, 640)
    audio[1, :320] = 0.2
    audio[1, 320:] = 0.9  # padding region of clip 1 (length 2 frames): ignored and zeroed
    fake = _FixedAudio(audio)
    wav = vocode(fake, torch.zeros(3, 80, 4), lengths=[4, 2, 4], peak_scale=1.1)
    assert wav.shape == (3, 640)
    assert float(wav[0].abs().max()) == pytest.approx(1 / 1.1)
    assert float(wav[1, :320].abs().max()) == pytest.approx(1 / 1.1)
    assert torch.all(wav[1, 320:] == 0)
    assert torch.all(wav[2] == 0)  # silence stays silence, no NaN
    with pytest.raises(ValueError, match="lengths has 2 entries for a batch of 3"):
        vocode(fake, torch.zeros(3, 80, 4), lengths=[4, 2])


def test_hop_is_product_of_rates():
    assert math.prod(hifigan_params()["upsample_rates"]) == 160
