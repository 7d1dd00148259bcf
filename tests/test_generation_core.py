"""The one generation core: which checkpoints a setting picks, and the ASR guidance of a batch."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.builders import asr_checkpoint_path, melgen_checkpoint_path
from models.diffusion.samplers import Sampler
from models.diffusion.schedule import DiffusionSchedule
from pipelines.evaluation import asr_checkpoint
from tests.helpers import compose_cfg
from utils.errors import LipVoicerError


@pytest.mark.parametrize("dataset, name", [("lrs2", "LRS2"), ("lrs3", "LRS3")])
def test_dataset_picks_melgen_asr_and_recogniser_together(dataset, name):
    """dataset=lrs2 used to guide with the LRS3 ASR (the ASR followed a separate generate.dataset)."""
    cfg = compose_cfg([f"dataset={dataset}"])
    assert Path(f"exp/{name}") in melgen_checkpoint_path(cfg).parents
    assert asr_checkpoint_path(cfg).name == f"checkpoints_ft_{dataset}.ckpt"
    assert asr_checkpoint(cfg) == asr_checkpoint_path(cfg)            # evaluate.py's recogniser: the same fine-tune


def test_explicit_asr_checkpoints_win(tmp_path):
    cfg = compose_cfg(["dataset=lrs2", f"generate.asr_ckpt={tmp_path}/g.pkl", f"evaluate.asr_ckpt={tmp_path}/j.pkl"])
    assert asr_checkpoint_path(cfg) == tmp_path / "g.pkl"
    assert asr_checkpoint(cfg) == tmp_path / "j.pkl"


def test_no_published_asr_for_other_datasets_is_one_line():
    cfg = compose_cfg(["dataset=synthetic"])
    with pytest.raises(LipVoicerError) as e:
        asr_checkpoint_path(cfg)
    assert "synthetic" in str(e.value) and "generate.asr_ckpt" in str(e.value) and "\n" not in str(e.value)


def test_a_clip_without_text_gets_no_asr_term(monkeypatch):
    """In a batch, a clip whose guiding text is empty is sampled as if alone without text."""
    import pipelines.generation as generation

    class Tok:
        def encode(self, text):
            return [3, 4] if text else []

    seen = {}

    def fake_guidance(asr, tokens, token_lengths, bf16=False, keep=None):
        seen["tokens"], seen["lengths"] = tokens, token_lengths
        return lambda x, lengths, steps: torch.ones_like(x) * (1 if keep is None else keep)

    monkeypatch.setattr(generation, "asr_guidance", fake_guidance)
    monkeypatch.setattr(generation, "warn_if_text_too_long", lambda *a, **k: None)
    sampler = Sampler(DiffusionSchedule(T=10), "ancestral")
    core = generation.GenerationCore(melgen=None, vocoder=None, sampler=sampler, asr=torch.nn.Identity(),
                                     tokenizer=Tok(), asr_cfg=None, clamp_min=1e-5, peak_scale=1.1)
    assert core.guidance_gradient(["", None], torch.tensor([8, 8]), ["a", "b"], "cpu") is None
    g = core.guidance_gradient(["two words", ""], torch.tensor([8, 8]), ["a", "b"], "cpu")
    out = g(torch.zeros(2, 3, 8), torch.tensor([8, 8]), torch.zeros(2, 1))
    # texts padded to a multiple of TOKEN_BUCKET tokens (one shape per length bucket), real lengths kept
    assert seen["tokens"].tolist() == [[3, 4] + [0] * 30, [0] * 32] and seen["lengths"].tolist() == [2, 0]
    assert out[0].abs().sum() > 0 and out[1].abs().sum() == 0
