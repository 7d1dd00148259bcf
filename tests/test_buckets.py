"""Length buckets and step runners kept across batches (CPU, through the "static" seam).

The static-shape step: runners cached on the Sampler and reused for a second batch of the same shape
(its constants copied into the cached ones) give exactly the plain eager sampler's output for each
batch; a batch of another shape gets its own runners; the cache is bounded. GenerationCore pads a
batch to its length bucket and cuts the outputs back."""
from __future__ import annotations

import copy

import pytest
import torch

from models.asr.model import build_asr
from models.diffusion.graphs import RunnerCache
from models.diffusion.guidance import asr_guidance
from models.diffusion.samplers import Sampler
from models.diffusion.schedule import DiffusionSchedule
from models.hifigan.generator import HiFiGANGenerator
from models.melgen.checkpoint import build_melgen
from pipelines.generation import GenerationCore, bucket_setting, bucketed, clip_generator
from tests.helpers import TINY_MELGEN, compose_cfg
from tests.tiny_generation import TINY_ASR, TINY_VOCODER

T = 12


@pytest.fixture(scope="module")
def tiny():
    cfg = compose_cfg(TINY_MELGEN + TINY_ASR + TINY_VOCODER + ["asr.vocab_size=20", f"diffusion.T={T}"])
    torch.manual_seed(0)
    melgen = build_melgen(cfg).eval().requires_grad_(False)
    torch.nn.init.normal_(melgen.net_diffwave.final_conv[2].conv.weight, std=0.2)
    asr = build_asr(cfg.asr).eval().requires_grad_(False)
    return cfg, melgen, asr, DiffusionSchedule.from_config(cfg.diffusion)


def batch(cfg, seed: int, frames: int, lengths: list[int]):
    g = torch.Generator().manual_seed(seed)
    s, f = cfg.video.mouth_crop, cfg.video.face_size
    mouth = torch.zeros(len(lengths), 1, frames, s, s)
    for i, n in enumerate(lengths):
        mouth[i, :, :n // 4] = torch.randn(1, n // 4, s, s, generator=g)
    face = torch.randn(len(lengths), 3, f, f, generator=g)
    tokens = torch.randint(1, 20, (len(lengths), 4), generator=g)
    return mouth, face, torch.tensor(lengths), tokens, torch.tensor([4, 3][:len(lengths)])


@pytest.mark.parametrize("name, steps, other_bucket", [("ancestral", None, True), ("dpm_solver", 4, False)])
def test_cached_static_steps_serve_two_batches_of_a_bucket_exactly(tiny, name, steps, other_bucket):
    cfg, melgen, asr, sch = tiny
    sampler = Sampler(sch, name, w_video=2.0, w_asr=1.5, asr_start=5, steps=steps)
    out, runners = [], []
    for seed, lengths in ((1, [32, 24]), (2, [28, 32])):          # two batches of one bucket: 8 video frames, B = 2
        mouth, face, lens, tokens, tok_len = batch(cfg, seed, 8, lengths)
        res = {}
        for mode in ("eager", "static"):
            res[mode] = sampler.sample(melgen, mouth, face, grad_fn=asr_guidance(asr, tokens, tok_len), lengths=lens,
                                       generators=[torch.Generator().manual_seed(seed * 10 + i) for i in range(2)],
                                       mode=mode)
        assert torch.equal(res["static"], res["eager"])
        out.append(res)
        (entry,) = sampler.runners.entries.values()
        runners.append(dict(entry.runners))
    assert len(sampler.runners) == 1 and entry.uses == 2
    assert runners[0].keys() == runners[1].keys() and len(runners[0]) >= 2      # unguided and guided (and last)
    assert all(runners[0][k] is runners[1][k] for k in runners[0])              # the same runners replayed
    assert not torch.equal(out[0]["static"], out[1]["static"])                  # batch 1 left batch 0's output alone
    if not other_bucket:
        return
    # another bucket (12 video frames): new runners, the first kept
    mouth, face, lens, tokens, tok_len = batch(cfg, 3, 12, [48, 40])
    res = {mode: sampler.sample(melgen, mouth, face, grad_fn=asr_guidance(asr, tokens, tok_len), lengths=lens,
                                generator=torch.Generator().manual_seed(5), mode=mode) for mode in ("static", "eager")}
    assert len(sampler.runners) == 2 and torch.equal(res["static"], res["eager"])


def test_a_plain_function_grad_fn_is_not_cached(tiny):
    """Its tensors are unknown, so its steps cannot serve another batch: fresh runners, same output."""
    cfg, melgen, asr, sch = tiny
    sampler = Sampler(sch, "ddim", w_asr=1.5, asr_start=5, steps=3)
    mouth, face, lens, tokens, tok_len = batch(cfg, 1, 8, [32, 24])
    inner = asr_guidance(asr, tokens, tok_len)
    res = {mode: sampler.sample(melgen, mouth, face, grad_fn=lambda x, n, s: inner(x, n, s), lengths=lens,
                                generator=torch.Generator().manual_seed(0), mode=mode) for mode in ("eager", "static")}
    assert torch.equal(res["static"], res["eager"]) and len(sampler.runners) == 0


def test_the_cache_is_bounded_least_recently_used_first_out():
    cache = RunnerCache(max_entries=2)
    a, hit = cache.get("a", object())
    assert not hit
    cache.get("b", object())
    assert cache.get("a", None)[1]                 # a used again: b is now the oldest
    cache.get("c", object())
    assert list(cache.entries) == ["a", "c"] and cache.get("a", None)[0] is a


def test_bucket_settings():
    assert [bucketed(n, 25) for n in (1, 25, 26, 57)] == [25, 25, 50, 75] and bucketed(57, 0) == 57
    assert bucket_setting(None) == 0 and bucket_setting("auto") == "auto" and bucket_setting(25) == 25


def make_core(tiny, bucket_frames):
    cfg, melgen, _, sch = tiny
    torch.manual_seed(1)
    vocoder = HiFiGANGenerator(cfg.vocoder).eval().requires_grad_(False)
    return GenerationCore(melgen=melgen, vocoder=vocoder, sampler=Sampler(sch, "ddim", steps=4, w_asr=0.0), asr=None,
                          tokenizer=None, asr_cfg=cfg.asr, clamp_min=1e-5, peak_scale=1.1,
                          bucket_frames=bucket_frames)


def test_generate_pads_to_the_bucket_and_cuts_back(tiny):
    cfg = tiny[0]
    mouth, face, _, _, _ = batch(cfg, 4, 7, [28])
    seen = []
    out = {}
    for bucket in (0, 5, 7):
        core = make_core(tiny, bucket)
        out[bucket] = core.generate(mouth, face, None, [None], generators=[clip_generator(0, "a")],
                                    callback=lambda i, t, x: seen.append(x.shape[-1]))
        assert out[bucket][0].shape == (1, 80, 28) and out[bucket][1].shape[-1] == 28 * core.vocoder.hop_length
    assert sorted(set(seen)) == [28, 40]                      # 7 frames sampled as 7 (bucket 0 and 7) and as 10
    assert torch.equal(out[7][0], out[0][0]) and torch.equal(out[7][1], out[0][1])   # already a multiple: unchanged
    # padded: the convolutions see the zero frames past the clip's end instead of their own zero padding,
    # so the clip's last frames differ (measured in docs/sampling.md); the start is the same noise and stays close
    diff = (out[5][0] - out[0][0]).abs()
    assert torch.isfinite(out[5][0]).all() and diff[..., :8].max() < 1e-3
    # one generator for a batch of one: drawn for the clip's own frames too, the same noise as unpadded
    single = make_core(tiny, 5).generate(mouth, face, None, [None], generator=clip_generator(0, "a"))
    assert torch.equal(single[0], out[5][0])
    assert make_core(tiny, "auto").bucket("cpu") == 0 and make_core(tiny, 25).bucket("cpu") == 25


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_captured_graphs_serve_two_batches_of_a_bucket(tiny):
    """On CUDA: the graphs captured for the first batch are replayed for the second (no new capture) and
    agree with eager sampling for both."""
    cfg, melgen, asr, sch = tiny
    dev = torch.device("cuda")
    melgen, asr = copy.deepcopy(melgen).to(dev), copy.deepcopy(asr).to(dev)    # the CPU fixture stays on the CPU
    sampler = Sampler(DiffusionSchedule.from_config(cfg.diffusion, dev), "dpm_solver", w_asr=1.5, asr_start=5, steps=4)
    for seed, lengths in ((1, [32, 24]), (2, [28, 32])):
        mouth, face, lens, tokens, tok_len = (t.to(dev) for t in batch(cfg, seed, 8, lengths))
        res = {mode: sampler.sample(melgen, mouth, face, grad_fn=asr_guidance(asr, tokens, tok_len), lengths=lens,
                                    generator=torch.Generator(device=dev).manual_seed(seed), mode=mode)
               for mode in ("eager", "graph")}
        torch.testing.assert_close(res["graph"], res["eager"], rtol=1e-4, atol=1e-4)
    (entry,) = sampler.runners.entries.values()
    assert entry.uses == 2 and all(r.mode == "graph" and r.graph is not None for r in entry.runners.values())
