"""bf16 sampling runs bfloat16 copies of the weights, made once: no weight is re-cast in each call."""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from models.diffusion.guidance import Guidance, bf16_autocast, bf16_weights
from models.diffusion.schedule import DiffusionSchedule
from models.melgen.checkpoint import build_melgen
from models.weight_norm import fold_weight_norm
from tests.helpers import TINY_MELGEN, compose_cfg
from tests.parity_utils import rel_err


class CountCasts(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.to.dtype):
            self.casts += 1
        return func(*args, **(kwargs or {}))


def _tiny():
    cfg = compose_cfg(TINY_MELGEN)
    torch.manual_seed(0)
    melgen = build_melgen(cfg).eval().requires_grad_(False)
    torch.nn.init.normal_(melgen.net_diffwave.final_conv[2].conv.weight, std=0.1)
    g = torch.Generator().manual_seed(1)
    mouth = torch.randn(1, 1, 6, cfg.video.mouth_crop, cfg.video.mouth_crop, generator=g)
    face = torch.randn(1, 3, cfg.video.face_size, cfg.video.face_size, generator=g)
    return fold_weight_norm(melgen), mouth, face, torch.randn(1, 80, 24, generator=g)


def test_bf16_copy_is_made_once_and_has_no_float32_weights():
    melgen, *_ = _tiny()
    a, b = bf16_weights(melgen), bf16_weights(melgen)
    assert a is b and a is not melgen
    assert all(p.dtype == torch.bfloat16 for p in a.parameters())
    folded = [m._folded for m in a.modules() if getattr(m, "_folded", None) is not None]
    assert folded and all(w.dtype == torch.bfloat16 for w in folded)       # .to() moved the folded weights too
    assert all(p.dtype == torch.float32 for p in melgen.parameters())      # the original is untouched


def test_bf16_denoiser_call_recasts_far_fewer_tensors():
    melgen, mouth, face, x = _tiny()
    projs = melgen.net_diffwave.cond_projections(melgen.condition(mouth, face), 24)
    steps = torch.full((1, 1), 5.0)
    counts = {}
    for name, model in (("autocast, float32 weights", melgen), ("bf16 copy", bf16_weights(melgen))):
        p = [t.to(torch.bfloat16) for t in projs] if name == "bf16 copy" else projs
        with torch.no_grad(), bf16_autocast("cpu"), CountCasts() as c:
            model.denoise(x, None, steps, p)
        counts[name] = c.casts
    # float32 weights: every convolution's weight is cast again in every call
    assert counts["bf16 copy"] * 3 < counts["autocast, float32 weights"], counts


def test_bf16_guidance_close_to_float32():
    melgen, mouth, face, x = _tiny()
    sch = DiffusionSchedule(T=50)
    e32 = Guidance(melgen, sch.alpha_bars, mouth, face)(x, 20)
    e16 = Guidance(melgen, sch.alpha_bars, mouth, face, bf16=True)(x, 20)
    assert e16.dtype == torch.float32 and 0 < rel_err(e16, e32) < 5e-2
