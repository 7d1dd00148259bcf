"""Checks that need an NVIDIA GPU (marked `cuda`; skipped without one). benchmarks/gpu_check.sh runs them.

- every model on CUDA against the same model on CPU;
- a whole guided sampling step (MelGen + ASR gradient + update) with no host synchronisation;
- bf16 autocast against float32 over a 400-step guided sampling run;
- each sampler with its steps captured as CUDA graphs against the eager run.
"""
from __future__ import annotations

import pytest
import torch

from dataloaders.audio import denormalise_mel
from models.asr.model import build_asr, ctc_loss_grad
from models.diffusion.guidance import asr_guidance
from models.diffusion.samplers import Sampler
from models.diffusion.schedule import DiffusionSchedule
from models.hifigan.generator import HiFiGANGenerator, vocode
from models.melgen.checkpoint import build_melgen
from tests.helpers import TINY_MELGEN, compose_cfg
from tests.parity_utils import rel_err
from tests.tiny_generation import TINY_ASR, TINY_VOCODER

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")]
GPU = torch.device("cuda")


@pytest.fixture(scope="module")
def tiny():
    cfg = compose_cfg(TINY_MELGEN + TINY_ASR + TINY_VOCODER + ["asr.vocab_size=20"])
    torch.manual_seed(0)
    melgen = build_melgen(cfg).eval()
    torch.nn.init.normal_(melgen.net_diffwave.final_conv[2].conv.weight, std=0.1)
    asr = build_asr(cfg.asr).eval()
    vocoder = HiFiGANGenerator(cfg.vocoder).remove_weight_norm().eval()
    return cfg, melgen, asr, vocoder


def _inputs(cfg, frames=20, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, f = cfg.video.mouth_crop, cfg.video.face_size
    return (torch.randn(batch, 1, frames, s, s, generator=g), torch.randn(batch, 3, f, f, generator=g),
            torch.randn(batch, 80, 4 * frames, generator=g))


def test_models_on_cuda_match_cpu(tiny):
    cfg, melgen, asr, vocoder = tiny
    mouth, face, x = _inputs(cfg)
    steps = torch.tensor([[10.0], [200.0]])
    eps_cpu = melgen(x, mouth, face, steps)
    eps_gpu = melgen.to(GPU)(x.to(GPU), mouth.to(GPU), face.to(GPU), steps.to(GPU)).cpu()
    melgen.cpu()
    assert rel_err(eps_gpu, eps_cpu) < 1e-3
    lengths = torch.tensor([80, 60])
    tokens, tok_len = torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2])
    loss_cpu, grad_cpu = ctc_loss_grad(asr, x, lengths, steps, tokens, tok_len)
    loss_gpu, grad_gpu = ctc_loss_grad(asr.to(GPU), x.to(GPU), lengths.to(GPU), steps.to(GPU), tokens.to(GPU),
                                       tok_len.to(GPU))
    asr.cpu()
    assert rel_err(loss_gpu.cpu(), loss_cpu) < 1e-3 and rel_err(grad_gpu.cpu(), grad_cpu) < 1e-3
    mel = denormalise_mel(x.clamp(-1, 1))
    audio_cpu = vocode(vocoder, mel)
    audio_gpu = vocode(vocoder.to(GPU), mel.to(GPU)).cpu()
    vocoder.cpu()
    assert rel_err(audio_gpu, audio_cpu) < 1e-3


def test_guided_step_has_no_host_synchronisation(tiny):
    cfg, melgen, asr, _ = tiny
    mouth, face, x = (t.to(GPU) for t in _inputs(cfg))
    melgen.to(GPU), asr.to(GPU)
    try:
        sch = DiffusionSchedule(device=GPU)
        grad_fn = asr_guidance(asr, torch.tensor([[3, 4, 5], [6, 7, 0]], device=GPU), torch.tensor([3, 2], device=GPU))
        sampler = Sampler(sch, "ancestral", w_video=2.0, w_asr=1.5, asr_start=270)
        eps = sampler.guidance(melgen, mouth, face, grad_fn=grad_fn)
        eps(x, 100)                        # warm-up (lazy initialisation may synchronise once)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            e = eps(x, 100)
            x = (x - 0.1 * e) * eps.mask
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.isfinite(x).all()
    finally:
        melgen.cpu(), asr.cpu()


def test_bf16_close_to_fp32_over_400_steps(tiny):
    cfg, melgen, asr, _ = tiny
    mouth, face, _ = (t.to(GPU) for t in _inputs(cfg, frames=10, batch=1))
    melgen.to(GPU), asr.to(GPU)
    try:
        sch = DiffusionSchedule(device=GPU)
        grad_fn = asr_guidance(asr, torch.tensor([[3, 4]], device=GPU), torch.tensor([2], device=GPU))
        out = {}
        for bf16 in (False, True):
            g = torch.Generator(device=GPU).manual_seed(0)
            out[bf16] = Sampler(sch, "ancestral", bf16=bf16).sample(melgen, mouth, face, grad_fn=grad_fn, generator=g)
        assert torch.isfinite(out[True]).all() and rel_err(out[True], out[False]) < 0.1
    finally:
        melgen.cpu(), asr.cpu()


@pytest.mark.parametrize("name, steps", [("ancestral", None), ("ddim", 25), ("dpm_solver", 25)])
def test_cuda_graph_replay_equals_eager(tiny, name, steps):
    """Each step kind captured once and replayed for every t gives the eager result (fp32, within 1e-5)."""
    cfg, melgen, asr, _ = tiny
    mouth, face, _ = (t.to(GPU) for t in _inputs(cfg, frames=12))
    melgen.to(GPU), asr.to(GPU)
    try:
        sch = DiffusionSchedule(device=GPU)
        grad_fn = asr_guidance(asr, torch.tensor([[3, 4, 5], [6, 7, 0]], device=GPU), torch.tensor([3, 2], device=GPU))
        sampler = Sampler(sch, name, steps=steps)
        out = {}
        for mode in ("eager", "graph"):
            g = torch.Generator(device=GPU).manual_seed(0)
            out[mode] = sampler.sample(melgen, mouth, face, grad_fn=grad_fn, generator=g, mode=mode,
                                       lengths=torch.tensor([48, 40], device=GPU))
        assert rel_err(out["graph"], out["eager"]) < 1e-5
    finally:
        melgen.cpu(), asr.cpu()
