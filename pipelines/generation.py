"""The one generation core: every path that makes speech (one video, a test split, the recipe) runs it.

    files = generation_files(cfg)                       # checked before any heavy work
    core = GenerationCore.load(cfg, device)             # MelGen, HiFi-GAN, ASR + tokenizer, sampler; once
    mels, audio = core.generate(mouthroi, face, lengths, texts, generator=g)
    mels, audio = core.generate(..., generators=[clip_generator(seed, id, device) for id in ids])  # per clip

`generate` does, for a batch of clips: tokenise the guiding texts -> the ASR-gradient
guidance -> sample the normalised mel with the configured sampler -> denormalise ->
vocode. A single video is a batch of one.

Length buckets (`generate.bucket_frames`, `bucket_frames` here): the batch's video is padded
(zero frames) up to the next multiple of the bucket, each clip keeping its real length in the
sampler's masks, and the outputs are cut back. Every batch of a bucket then has one shape, so
the sampler's captured CUDA-graph steps (models/diffusion/graphs.py) are made once per bucket
and replayed for every later batch of it; the guiding texts are padded to a multiple of
TOKEN_BUCKET tokens for the same reason. "auto" pads only where steps are captured (CUDA with
cuda_graphs); 0 / None never pads.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from dataloaders.audio import denormalise_mel
from dataloaders.tokenizer import BPETokenizer
from models.asr.model import output_lengths
from models.builders import (asr_checkpoint_path, build_sampler, build_schedule, load_asr, load_melgen,
                             load_vocoder, melgen_checkpoint_path, vocoder_kind)
from models.diffusion.guidance import asr_guidance
from models.diffusion.samplers import Sampler
from models.hifigan.generator import vocode
from utils.assets import find_asset_for_path, missing_asset_error
from utils.errors import LipVoicerError
from models.model_sets import has_lip_reader, resolve_model_set

log = logging.getLogger(__name__)

AUTO_BUCKET_FRAMES = 25   # generate.bucket_frames=auto on CUDA with graphs: 1 s buckets (25 video frames)
GRIFFIN_LIM = "griffinlim"  # vocoder.kind without a checkpoint file
TOKEN_BUCKET = 32          # guiding texts padded to a multiple of this many tokens (ignored past each length)


def bucket_setting(value) -> int | str:
    """generate.bucket_frames as GenerationCore takes it: "auto", or video frames (0 = no padding)."""
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    return int(value)


def bucketed(frames: int, bucket: int) -> int:
    """`frames` rounded up to a multiple of `bucket` (unchanged for bucket <= 0)."""
    return -(-int(frames) // bucket) * bucket if bucket > 0 else int(frames)


def require_file(cfg, path, what: str, alternative: str = "") -> Path:
    """A file the run needs: missing -> one line naming it and, for a published asset, the command
    that fetches it (plus `alternative`, another way round, when given)."""
    path = Path(str(path))
    if path.is_file():
        return path
    tail = f" ({alternative})" if alternative else ""
    if find_asset_for_path(cfg, path) is not None:
        raise LipVoicerError(f"{missing_asset_error(cfg, path)}{tail}")
    raise LipVoicerError(f"{path}: {what} not found{tail}")


def tokenizer_path(cfg) -> Path:
    return Path(str(cfg["paths"]["checkpoints_dir"])) / str(cfg["asr"]["tokenizer"])


def generation_files(cfg, lip_reading: bool = False) -> dict[str, str]:
    """The files a generation run needs, checked before any heavy work (missing -> LipVoicerError
    naming the file and the command that fetches it)."""
    resolve_model_set(cfg)   # a shipped model set (models=synthetic): its files checked, its folder made absolute
    gen = cfg["generate"]
    files = {"melgen": str(require_file(cfg, melgen_checkpoint_path(cfg), "MelGen checkpoint (generate.ckpt_path)")),
             "vocoder": (GRIFFIN_LIM if vocoder_kind(cfg) == GRIFFIN_LIM else
                         str(require_file(cfg, cfg["vocoder"]["checkpoint"], "HiFi-GAN checkpoint")))}
    if float(gen["w_asr"]) > 0:
        files["asr"] = str(require_file(cfg, asr_checkpoint_path(cfg), "ASR checkpoint (generate.asr_ckpt)"))
        files["tokenizer"] = str(require_file(cfg, tokenizer_path(cfg), "ASR tokenizer"))
    if lip_reading and has_lip_reader(cfg):
        v = cfg["vsr"]
        keys = ["model_path", "model_conf", "units_path"] + (["lm_path", "lm_conf"] if float(v["lm_weight"]) else [])
        for key in keys:
            require_file(cfg, v[key], f"lip-reader file (vsr.{key})",
                         "or skip lip reading by giving the spoken text: generate.text='...'")
    return files


def warn_if_text_too_long(asr_cfg, n_tokens: int, mel_frames: int, clip: str = "clip") -> None:
    """CTC cannot align more tokens than the ASR has output frames: the loss is then infinite,
    zeroed, and the guidance has no effect. Say so instead of failing silently."""
    frames = int(output_lengths(torch.tensor([mel_frames]), asr_cfg)[0])
    if n_tokens > frames:
        log.warning("%s: the text has %d tokens but the ASR sees only %d frames; ASR guidance has no effect "
                    "(the text is too long for the clip)", clip, n_tokens, frames)


def clip_seed(seed: int, clip_id: str) -> int:
    """A clip's own noise seed: a stable hash (SHA-256) of the run seed and the clip id, the same in
    every process, run and Python version (unlike hash())."""
    digest = hashlib.sha256(f"{int(seed)}:{clip_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def clip_generator(seed: int, clip_id: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` seeded with clip_seed(seed, clip_id)."""
    return torch.Generator(device=device).manual_seed(clip_seed(seed, clip_id))


@dataclass
class GenerationCore:
    """Every model of generation, loaded once, and the batch computation."""

    melgen: torch.nn.Module
    vocoder: torch.nn.Module
    sampler: Sampler
    asr: torch.nn.Module | None
    tokenizer: BPETokenizer | None
    asr_cfg: object
    clamp_min: float
    peak_scale: float
    files: dict = field(default_factory=dict)
    bucket_frames: int | str = 0   # "auto" or video frames per length bucket (0: no padding); see module doc

    @classmethod
    def load(cls, cfg, device: torch.device) -> "GenerationCore":
        """MelGen, HiFi-GAN and (when generate.w_asr > 0) the ASR fine-tune and its tokenizer."""
        files = generation_files(cfg)
        asr = tokenizer = None
        if "asr" in files:
            tokenizer = BPETokenizer(files["tokenizer"]).check_vocab_size(cfg["asr"]["vocab_size"])
            asr = load_asr(files["asr"], cfg, device)
        return cls(melgen=load_melgen(files["melgen"], cfg, device), vocoder=load_vocoder(files["vocoder"], cfg, device),
                   sampler=build_sampler(cfg, build_schedule(cfg, device)), asr=asr, tokenizer=tokenizer,
                   asr_cfg=cfg["asr"], clamp_min=float(cfg["audio"]["clamp_min"]),
                   peak_scale=float(cfg["vocoder"]["peak_scale"]), files=files,
                   bucket_frames=bucket_setting(cfg["generate"].get("bucket_frames", 0)))

    def bucket(self, device) -> int:
        """Video frames per length bucket on `device` (0: no padding); "auto" pads where steps are
        captured as CUDA graphs (CUDA with cuda_graphs) and not elsewhere (eager steps gain nothing)."""
        if self.bucket_frames == "auto":
            captured = torch.device(device).type == "cuda" and self.sampler.cuda_graphs
            return AUTO_BUCKET_FRAMES if captured else 0
        return max(int(self.bucket_frames or 0), 0)

    def guidance_gradient(self, texts: Sequence[str | None], lengths: torch.Tensor, ids: Sequence[str], device):
        """The ASR guidance of a batch (None when there is no ASR, or no clip has a text to guide with)."""
        if self.asr is None:
            return None
        tok = [self.tokenizer.encode(t or "") for t in texts]
        for clip, t, n in zip(ids, tok, lengths.tolist()):
            warn_if_text_too_long(self.asr_cfg, len(t), n, clip)
        if not any(tok):
            log.warning("no text to guide with: sampling without ASR guidance")
            return None
        # padded to a multiple of TOKEN_BUCKET (the padding is ignored): batches of a length bucket then
        # share one shape, and with it the sampler's captured steps
        tokens = torch.zeros(len(tok), bucketed(max(len(t) for t in tok), TOKEN_BUCKET), dtype=torch.long)
        for i, t in enumerate(tok):
            tokens[i, :len(t)] = torch.tensor(t, dtype=torch.long)
        # a clip without text gets no ASR term (its gradient is zero), as a single clip without text
        has_text = torch.tensor([1.0 if t else 0.0 for t in tok], device=device).view(-1, 1, 1)
        return asr_guidance(self.asr, tokens.to(device), torch.tensor([len(t) for t in tok], device=device),
                            bf16=self.sampler.bf16, keep=has_text)

    def generate(self, mouthroi: torch.Tensor, face_image: torch.Tensor, lengths: torch.Tensor | None,
                 texts: Sequence[str | None], ids: Sequence[str] | None = None,
                 generator: torch.Generator | None = None, progress: bool = False,
                 generators: Sequence[torch.Generator] | None = None,
                 callback=None) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch (mouth crops (B, 1, T, H, W), face images (B, 3, S, S), mel lengths or None = full, one text
        per clip) -> (log-mels (B, n_mels, 4T), audio (B, samples)); frames past a clip's length are silence.

        The noise comes from `generator` (one stream for the batch) or from `generators` (one per clip:
        each clip's noise then depends only on its own generator; see Sampler.sample). callback(i, t, x):
        called after each sampling step (Sampler.sample), with x padded to the length bucket.

        With length buckets (self.bucket(device) > 0) the video is padded with zero frames to the next
        bucket multiple for sampling; the outputs have the batch's own length. Per-clip generators (and
        `generator` for a batch of one) draw each clip's noise for its own frames, the same noise as
        without padding; `generator` for a larger batch draws for the padded shape (other noise)."""
        device = mouthroi.device
        b, _, frames = mouthroi.shape[:3]
        full = torch.full((b,), frames * self.melgen.upsample_factor, dtype=torch.long)
        lengths = full if lengths is None else lengths
        ids = list(ids) if ids is not None else [f"clip {i}" for i in range(b)]
        grad_fn = self.guidance_gradient(texts, lengths, ids, device)
        padded = bucketed(frames, self.bucket(device))
        if padded > frames:
            mouthroi = torch.nn.functional.pad(mouthroi, (0, 0, 0, 0, 0, padded - frames))
            if b == 1 and generator is not None and generators is None:
                # one clip's stream drawn for its own frames only: the noise of unpadded sampling
                generator, generators = None, [generator]
        x = self.sampler.sample(self.melgen, mouthroi, face_image, grad_fn=grad_fn, lengths=lengths.to(device),
                                generator=generator, generators=generators, progress=progress, callback=callback)
        x = x[..., :frames * self.melgen.upsample_factor]
        mels = denormalise_mel(x.float(), self.clamp_min)
        audio = vocode(self.vocoder, mels, lengths=lengths, peak_scale=self.peak_scale)
        return mels, audio
