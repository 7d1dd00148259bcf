"""Tiny random-weight checkpoints for the generation scripts, written the way the published ones are.

make_tiny_assets(dir) writes, under dir/checkpoints: a HiFi-GAN `g_02400000`, an ASR
fine-tune `checkpoints_ft_lrs3.ckpt` (and `_lrs2`), a SentencePiece tokenizer and the mean
face (copied from the fixtures), plus dir/melgen.pkl; generation_overrides(dir) gives the
Hydra overrides that make the scripts use them with tiny model sizes.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_MELGEN, compose_cfg
from tests.parity_utils import REPO_ROOT, parity_dir

TINY_ASR = ["asr.stem_filters=8", "asr.dims=[16,24,32]", "asr.num_blocks=[1,1,1]", "asr.num_heads=2",
            "asr.conv_kernel=5", "asr.ff_ratio=2", "asr.step_embed_dim_in=16", "asr.step_embed_dim_mid=32",
            "asr.step_embed_dim_out=32", "asr.max_pos_encoding=2000"]
TINY_VOCODER = ["vocoder.upsample_initial_channel=16"]
TOKENIZER_VOCAB = 40
WORDS = "the cat sat on a mat we know what it is about she sells sea shells by the shore".split()


def mean_face_source() -> Path:
    for src in (parity_dir() / "20words_mean_face.npy", REPO_ROOT / "checkpoints" / "20words_mean_face.npy"):
        if src.is_file():
            return src
    pytest.skip("20words_mean_face.npy not found (set LIPVOICER_PARITY_DIR or run download_checkpoints.py)")


def generation_overrides(assets: Path, extra: list[str] | None = None) -> list[str]:
    return [f"paths.checkpoints_dir={assets / 'checkpoints'}", f"generate.ckpt_path={assets / 'melgen.pkl'}",
            f"asr.vocab_size={TOKENIZER_VOCAB}", "generate.device=cpu", "generate.progress=false",
            "diffusion.T=40", "generate.asr_start=25", "prep.progress=false",
            *TINY_MELGEN, *TINY_ASR, *TINY_VOCODER, *(extra or [])]


def make_tiny_assets(assets: Path) -> Path:
    from models.asr import build_asr, save_asr_checkpoint
    from models.hifigan import HiFiGANGenerator, save_hifigan
    from models.melgen_checkpoint import build_melgen, save_melgen
    from utils.bpe_tokenizer import train_bpe

    ck = assets / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    cfg = compose_cfg(generation_overrides(assets))
    shutil.copy(mean_face_source(), ck / "20words_mean_face.npy")
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(300)]
    train_bpe(texts, ck / str(cfg.asr.tokenizer), vocab_size=TOKENIZER_VOCAB)
    torch.manual_seed(0)
    save_melgen(assets / "melgen.pkl", build_melgen(cfg))
    asr = build_asr(cfg.asr).eval()
    for name in cfg.asr.checkpoints.values():
        save_asr_checkpoint(asr, None, 0, ck / str(name))
    save_hifigan(Path(str(cfg.vocoder.checkpoint)), HiFiGANGenerator(cfg.vocoder))
    return assets


def make_synthetic_clips(root: Path, n_clips: int = 4) -> Path:
    from dataloaders.synthetic_corpus import build_corpus, synthetic_settings

    syn = synthetic_settings(compose_cfg([f"prep.synthetic.n_clips={n_clips}", "prep.synthetic.workers=1"]))
    written, present, failed = build_corpus(root, syn, progress=False)
    assert failed == 0
    return root
