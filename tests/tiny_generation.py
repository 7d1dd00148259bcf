"""Tiny random-weight checkpoints for the generation scripts, written the way the published ones are.

make_tiny_assets(dir) writes, under dir/checkpoints: a HiFi-GAN `g_02400000`, an ASR
fine-tune `checkpoints_ft_lrs3.ckpt` (and `_lrs2`), a SentencePiece tokenizer and the mean
face (copied from the fixtures), plus dir/melgen.pkl; generation_overrides(dir) gives the
Hydra overrides that make the scripts use them with tiny model sizes.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from tests.helpers import TINY_MELGEN, compose_cfg
from tests.parity_utils import REPO_ROOT, parity_dir

TINY_ASR = ["asr.stem_filters=8", "asr.dims=[16,24,32]", "asr.num_blocks=[1,1,1]", "asr.num_heads=2",
            "asr.conv_kernel=5", "asr.ff_ratio=2", "asr.step_embed_dim_in=16", "asr.step_embed_dim_mid=32",
            "asr.step_embed_dim_out=32", "asr.max_pos_encoding=2000"]
TINY_VOCODER = ["vocoder.upsample_initial_channel=16"]
TOKENIZER_VOCAB = 40
WORDS = "the cat sat on a mat we know what it is about she sells sea shells by the shore".split()


def standin_mean_face() -> np.ndarray:
    """A 68-point face layout (iBUG order, 256 x 256 frame) drawn from simple shapes: jaw arc, brows,
    nose, eye and mouth ellipses. Close enough to a face for alignment in tests when the published
    20words_mean_face.npy is not available."""
    def arc(cx, cy, rx, ry, a0, a1, n):
        a = np.linspace(a0, a1, n)
        return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)

    jaw = arc(131, 100, 62, 100, np.pi, 0, 17)            # left ear -> chin -> right ear
    brows = np.concatenate([arc(97, 84, 17, 9, 1.15 * np.pi, 1.85 * np.pi, 5),
                            arc(161, 84, 17, 9, 1.15 * np.pi, 1.85 * np.pi, 5)])
    bridge = np.stack([np.full(4, 128.5), np.linspace(95, 128, 4)], axis=1)
    nostrils = arc(129, 128, 10, 8, 0.85 * np.pi, 0.15 * np.pi, 5)
    nose = np.concatenate([bridge, nostrils])
    eyes = np.concatenate([arc(103, 94, 10, 3.5, np.pi, 3 * np.pi, 7)[:-1], arc(157, 93, 10, 3.5, np.pi, 3 * np.pi, 7)[:-1]])
    outer = arc(129.5, 158, 22.5, 10, np.pi, 3 * np.pi, 13)[:-1]
    inner = arc(129.5, 157.5, 14, 3.5, np.pi, 3 * np.pi, 9)[:-1]
    face = np.concatenate([jaw, brows, nose, eyes, outer, inner])
    assert face.shape == (68, 2)
    return face


def mean_face_source() -> Path:
    """The published mean face when the fixtures or a download have it, else a stand-in written once."""
    for src in (parity_dir() / "20words_mean_face.npy", REPO_ROOT / "checkpoints" / "20words_mean_face.npy"):
        if src.is_file():
            return src
    path = Path(tempfile.gettempdir()) / f"lipvoicer_standin_mean_face_{os.getpid()}.npy"
    if not path.is_file():
        np.save(path, standin_mean_face())
    return path


def generation_overrides(assets: Path, extra: list[str] | None = None) -> list[str]:
    return [f"paths.checkpoints_dir={assets / 'checkpoints'}", f"generate.ckpt_path={assets / 'melgen.pkl'}",
            f"asr.vocab_size={TOKENIZER_VOCAB}", "generate.device=cpu", "generate.progress=false",
            "diffusion.T=40", "generate.asr_start=25", "prep.progress=false",
            *TINY_MELGEN, *TINY_ASR, *TINY_VOCODER, *(extra or [])]


def make_tiny_assets(assets: Path) -> Path:
    from models.asr import build_asr, save_asr_checkpoint
    from models.hifigan.generator import HiFiGANGenerator, save_hifigan
    from models.melgen.checkpoint import build_melgen, save_melgen
    from dataloaders.tokenizer import train_bpe

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
    from dataloaders.synthetic.corpus import build_corpus, synthetic_settings

    syn = synthetic_settings(compose_cfg([f"prep.synthetic.n_clips={n_clips}", "prep.synthetic.workers=1"]))
    written, present, failed = build_corpus(root, syn, progress=False)
    assert failed == 0
    return root
