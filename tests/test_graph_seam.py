"""The captured-step path behind its seam: every sampler run through static buffers ("static", exactly
a CUDA-graph replay's data flow) equals the plain eager run bit for bit, with both guidances; a
"graph" runner on a machine without CUDA falls back to eager with one warning."""
from __future__ import annotations

import logging

import pytest
import torch

from models.asr.model import build_asr
from models.diffusion.graphs import StepRunner
from models.diffusion.guidance import asr_guidance
from models.diffusion.samplers import Sampler
from models.diffusion.schedule import DiffusionSchedule
from models.melgen.checkpoint import build_melgen
from tests.helpers import TINY_MELGEN, compose_cfg
from tests.tiny_generation import TINY_ASR

T = 30


@pytest.fixture(scope="module")
def tiny():
    cfg = compose_cfg(TINY_MELGEN + TINY_ASR + ["asr.vocab_size=20", f"diffusion.T={T}"])
    torch.manual_seed(0)
    melgen = build_melgen(cfg).eval().requires_grad_(False)
    torch.nn.init.normal_(melgen.net_diffwave.final_conv[2].conv.weight, std=0.2)
    asr = build_asr(cfg.asr).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(3)
    s, f = cfg.video.mouth_crop, cfg.video.face_size
    mouth = torch.zeros(2, 1, 8, s, s)
    mouth[0], mouth[1, :, :6] = torch.randn(1, 8, s, s, generator=g), torch.randn(1, 6, s, s, generator=g)
    face = torch.randn(2, 3, f, f, generator=g)
    grad_fn = asr_guidance(asr, torch.tensor([[3, 4, 5], [6, 6, 0]]), torch.tensor([3, 2]))
    return melgen, DiffusionSchedule.from_config(cfg.diffusion), mouth, face, grad_fn


@pytest.mark.parametrize("name, steps, eta", [("ancestral", None, 0.0), ("ddim", 8, 0.0), ("ddim", 8, 1.0),
                                              ("dpm_solver", 8, 0.0)])
def test_static_step_replay_equals_eager(tiny, name, steps, eta):
    melgen, sch, mouth, face, grad_fn = tiny
    sampler = Sampler(sch, name, w_video=2.0, w_asr=1.5, asr_start=12, steps=steps, eta=eta)
    out = {}
    for mode in ("eager", "static"):
        g = torch.Generator().manual_seed(7)
        out[mode] = sampler.sample(melgen, mouth, face, grad_fn=grad_fn, lengths=torch.tensor([32, 24]),
                                   generator=g, mode=mode)
    assert torch.isfinite(out["eager"]).all() and out["eager"][1, :, 24:].abs().max() == 0
    assert torch.equal(out["static"], out["eager"])


def test_a_graph_runner_without_cuda_warns_once_and_runs_eagerly(caplog):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the capture itself is tested in tests/test_cuda.py")
    calls = []

    def step(x, k):
        calls.append(1)
        return (x * 2 + k,)

    runner = StepRunner(step, "graph", name="demo")
    with caplog.at_level(logging.WARNING, logger="models.diffusion.graphs"):
        a = runner(torch.ones(3), torch.tensor(1.0))[0]
        b = runner(torch.full((3,), 2.0), torch.tensor(0.0))[0]
    assert torch.equal(a, torch.full((3,), 3.0)) and torch.equal(b, torch.full((3,), 4.0))
    assert runner.mode == "eager" and len(calls) == 2
    assert len([r for r in caplog.records if "CUDA graph capture failed" in r.message]) == 1


def test_static_buffers_are_reused_and_fed_back():
    runner = StepRunner(lambda x, k: (x + k,), "static")
    x = torch.zeros(2)
    for k in range(3):
        (x,) = runner(x, torch.tensor(float(k)))
    assert torch.equal(x, torch.full((2,), 3.0)) and runner.inputs is not None
