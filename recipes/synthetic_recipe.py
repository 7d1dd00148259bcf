"""The synthetic-corpus recipe: build, prepare, train, generate three ways, score (recipes/synthetic.py).

It proves on the project's own data that the pieces learn and that ASR guidance from
(possibly wrong) text makes the generated speech more intelligible:

  corpus      synthetic talking-face clips (espeak-ng speech, animated face), LRS3 layout
  prep        16 kHz wavs, .wav.spec mels, mouth crops (the data-preparation scripts)
  tokenizer   SentencePiece BPE on the training transcripts
  melgen      train_melgen.py            (chunks of --chunk_minutes, each resuming the last)
  asr         train_asr.py               the guidance classifier (noisy mels, t < T)
  judge       train_asr.py               a separate recogniser on clean mels only (other seed and size),
                                         used only for scoring
  vocoder     train_vocoder.py           HiFi-GAN on the synthetic audio
  texts       guidance texts: true transcripts, and a corrupted copy (a fraction of words replaced; on
              the homophene grammar also copies whose replacements are all homophenes / all other words)
  generate    inference_full_test_split.py per condition (recipes/synthetic_conditions.py): no ASR
              guidance, true text, corrupted text(s); with --sweep_clips a w_asr sweep and fast samplers
  evaluate    evaluate.py with the judge per condition; results.md / results.json (the main table)
  sweep       asr_start earlier / later at the sweep's best weight (--sweep_clips)
  report      results_full.json (recipes/synthetic_publish.py); --publish: docs/results, samples, figures

Every stage runs the project's own scripts as subprocesses with Hydra overrides and
skips work already done, so the recipe can be re-run (or run stage by stage) until
everything is finished.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from utils.errors import LipVoicerError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# The recognisers train before MelGen: the judge's held-out WER on clean mels is the first sign that the corpus
# and the sizes work.
STAGES = ("corpus", "prep", "tokenizer", "judge", "asr", "melgen", "vocoder", "texts", "generate", "evaluate",
          "sweep", "report")
WAYS = ("no_guidance", "true_text", "corrupted_text")
GROUND_TRUTH = "ground_truth"   # the test clips' own mels, vocoded and scored like a generation
VOCODERS = ("auto", "hifigan", "griffinlim")

# Model sizes. "full" is the published configuration; "small" fits a short GPU budget;
# "cpu" is the 2-core CPU recipe (about an hour for every stage); "mini" a larger CPU model;
# "tiny" is for tests on CPU (seconds).
# MelGen sizes are the presets of configs/melgen/ (cpu, mini and tiny also set video.*: smaller crops / faces).
MELGEN_SIZES = {"full": ["melgen=published"], "small": ["melgen=small"], "cpu": ["melgen=cpu"],
                "mini": ["melgen=mini"], "tiny": ["melgen=tiny"]}
# Settings every script of a size gets (before the user's overrides): the cpu recipe uses a 50-step
# diffusion (beta up to 0.2: alpha_bar_T = 0.004) with guidance from t = 35 down, each step's clean-mel
# estimate clamped to the data range (a guard: early checkpoints' samples leave it; the final one's do not), and
# 128-pixel frames.
SIZE_EXTRA = {"cpu": ["diffusion.T=50", "diffusion.beta_T=0.2", "generate.asr_start=35", "generate.clip_x0=[-1,1.2]",
                      "prep.synthetic.frame_size=128"]}
ASR_SIZES = {
    "full": [],
    "cpu": ["asr.stem_filters=32", "asr.dims=[64,96,128]", "asr.num_blocks=[2,2,2]", "asr.step_embed_dim_mid=256",
            "asr.step_embed_dim_out=256"],
    "small": ["asr.dims=[120,168,240]", "asr.num_blocks=[3,3,3]"],
    "mini": ["asr.stem_filters=32", "asr.dims=[64,96,128]", "asr.num_blocks=[2,2,2]", "asr.step_embed_dim_mid=256",
             "asr.step_embed_dim_out=256"],
    "tiny": ["asr.stem_filters=8", "asr.dims=[16,24,32]", "asr.num_blocks=[1,1,1]", "asr.num_heads=2",
             "asr.conv_kernel=5", "asr.ff_ratio=2", "asr.step_embed_dim_in=16", "asr.step_embed_dim_mid=32",
             "asr.step_embed_dim_out=32", "asr.max_pos_encoding=2000"],
    # a wider guidance ASR for the homophene experiment (--asr_size cpu_wide): it trains on many more
    # utterances (--audio_clips) than the video corpus has, in the lane beside MelGen
    "cpu_wide": ["asr.stem_filters=32", "asr.dims=[96,144,192]", "asr.num_blocks=[2,2,2]",
                 "asr.step_embed_dim_mid=256", "asr.step_embed_dim_out=256"],
}
# The judge differs from the guidance ASR in size (and seed): it must not share its weaknesses.
JUDGE_SIZES = {
    "full": ["asr.dims=[144,196,256]", "asr.num_blocks=[4,4,4]"],
    "small": ["asr.dims=[96,144,192]", "asr.num_blocks=[2,3,2]"],
    "cpu": ["asr.stem_filters=24", "asr.dims=[48,80,112]", "asr.num_blocks=[2,2,1]", "asr.conv_kernel=9",
            "asr.step_embed_dim_mid=256", "asr.step_embed_dim_out=256"],
    "mini": ["asr.stem_filters=24", "asr.dims=[48,80,112]", "asr.num_blocks=[2,2,1]", "asr.conv_kernel=9",
             "asr.step_embed_dim_mid=256", "asr.step_embed_dim_out=256"],
    "tiny": ["asr.stem_filters=8", "asr.dims=[16,32,40]", "asr.num_blocks=[1,1,1]", "asr.num_heads=2",
             "asr.conv_kernel=3", "asr.ff_ratio=2", "asr.step_embed_dim_in=16", "asr.step_embed_dim_mid=32",
             "asr.step_embed_dim_out=32", "asr.max_pos_encoding=2000"],
}
VOCODER_SIZES = {"full": [], "small": ["vocoder.upsample_initial_channel=256"],
                 "cpu": ["vocoder.upsample_initial_channel=32"],
                 "mini": ["vocoder.upsample_initial_channel=32"], "tiny": ["vocoder.upsample_initial_channel=16"]}
# Training settings that go with a size (tiny: small batches so that CPU iterations take a second).
TRAIN_SETTINGS = {
    "full": {"melgen": [], "asr": [], "vocoder": []},
    "small": {"melgen": ["train.batch_size_per_gpu=32"], "asr": ["asr.train.accumulated_steps=1"], "vocoder": []},
    # cpu: every clip preloaded (no video decoding per item), higher learning rates for networks trained
    # from scratch in minutes (MelGen's noise L1 after 500 iterations: 0.29 at 1e-3, 0.39 at 4e-4)
    "cpu": {"melgen": ["train.batch_size_per_gpu=16", "train.preload=true", "train.learning_rate=1e-3",
                       "train.iters_per_logging=50"],
            "asr": ["asr.train.batch_size_per_gpu=16", "asr.train.accumulated_steps=1", "asr.train.eval_t=[0]",
                    "asr.train.eval_max_clips=40", "asr.train.learning_rate=1e-3", "asr.train.grad_clip=5.0"],
            "vocoder": ["vocoder_train.batch_size_per_gpu=4", "vocoder_train.mpd_channels=[8,16,32,32,32]",
                        "vocoder_train.msd_channels=[8,16,16,32,32,32,32]"]},
    "mini": {"melgen": [], "asr": ["asr.train.accumulated_steps=1", "asr.train.eval_t=[0]",
                                   "asr.train.eval_max_clips=20"],
             "vocoder": ["vocoder_train.batch_size_per_gpu=4", "vocoder_train.mpd_channels=[8,16,32,32,32]",
                         "vocoder_train.msd_channels=[8,16,16,32,32,32,32]"]},
    "tiny": {"melgen": ["train.batch_size_per_gpu=2"],
             "asr": ["asr.train.batch_size_per_gpu=2", "asr.train.accumulated_steps=1", "asr.train.eval_t=[0]",
                     "asr.train.eval_max_clips=4"],
             "vocoder": ["vocoder_train.batch_size_per_gpu=2", "vocoder_train.segment_samples=3200",
                         "vocoder_train.mpd_channels=[4,8,8,8,8]", "vocoder_train.msd_channels=[4,8,8,8,8,8,8]",
                         "vocoder_train.iters_per_audio=0"]},
}


@dataclass
class RecipeSettings:
    work_dir: Path
    size: str = "small"
    n_clips: int = 3200
    seed: int = 0
    workers: int = 4
    device: str = "auto"
    chunk_minutes: float = 10.0
    melgen_iters: int = 20000
    asr_iters: int = 8000
    judge_iters: int = 8000
    vocoder_iters: int = 20000
    batch_size: int = 16
    vocab_size: int = 128
    corrupt_fraction: float = 0.2
    mean_face: Path = Path("checkpoints/20words_mean_face.npy")
    judge_input: str = "auto"         # wav: the judge reads the vocoded wav; mel: the generated mel (before the
                                      # vocoder); auto: mel with Griffin-Lim, wav with HiFi-GAN
    n_test: int | None = None
    grammar: str = "grid"             # the corpus's sentences: grid (GRID's 51-word commands) or free
    test_speakers: int = 0            # speakers only in the test split (0: held-out sentences of seen speakers)
    vocoder: str = "auto"             # hifigan (trained), griffinlim (no training), auto: griffinlim for size cpu
    loader_workers: int | None = None  # data-loader workers of the training scripts (None: workers)
    threads: int | None = None        # CPU threads of every script (OMP_NUM_THREADS; None: torch's default)
    parallel: bool = False            # train the judge, the guidance ASR and MelGen (and HiFi-GAN) at once
    train_minutes: float | None = None  # wall-clock cap of training: of each lane with --parallel (the stages of a
                                        # lane share it), else of each stage (None: until its iterations)
    audio_clips: int = 0              # utterances without video for the recognisers (2/3 guidance ASR, 1/3 judge)
    sweep_clips: int = 0              # the w_asr / asr_start sweep and the fast samplers on this many test clips (0: none)
    publish: bool = False             # also write docs/results, docs/samples, docs/images (and the model set)
    asr_size: str | None = None       # the guidance ASR's size (a key of ASR_SIZES; None: --size)
    publish_root: Path | None = None  # where --publish writes docs/, model_sets/, configs/models/, examples/ (None: this repository)
    asr_max_t: int | None = None      # the guidance ASR trains on x_t with t < asr_max_t (None: every step, T)
    extra: list[str] = field(default_factory=list)   # Hydra overrides for every script
    python: str = sys.executable

    # ------------------------------------------------------------------ paths
    @property
    def data(self) -> Path:
        return self.work_dir / "data"

    @property
    def tokenizer(self) -> Path:
        return self.work_dir / "tokenizer" / f"bpe{self.vocab_size}.model"

    def melgen_dir(self) -> Path:
        return self.work_dir / "exp" / "synthetic"

    def asr_dir(self, name: str) -> Path:
        return self.work_dir / "exp" / "asr" / name / "checkpoint"

    def vocoder_dir(self) -> Path:
        return self.work_dir / "exp" / "vocoder" / "synthetic"

    def texts_dir(self, way: str) -> Path:
        return self.work_dir / "texts" / way

    def vocoder_kind(self) -> str:
        if self.vocoder == "auto":
            return "griffinlim" if self.size == "cpu" else "hifigan"
        return self.vocoder

    def judge_reads(self) -> str:
        if self.judge_input == "auto":
            return "mel" if self.vocoder_kind() == "griffinlim" else "wav"
        return self.judge_input

    def train_workers(self) -> int:
        return self.workers if self.loader_workers is None else self.loader_workers


# ----------------------------------------------------------------------------- helpers
def run_script(s: RecipeSettings, args: list[str], what: str, threads: int | None = None) -> None:
    """Run `python <args>` from the repository root; a failure stops the recipe naming the stage.
    threads: the process's CPU threads (default --threads; None: torch's default)."""
    cmd = [s.python, *args]
    threads = threads or s.threads
    log.info("[%s]%s %s", what, f" ({threads} threads)" if threads else "", " ".join(cmd))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:  # on a shared or small CPU, one thread per process avoids oversubscription (much faster)
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    r = subprocess.run(cmd, cwd=REPO_ROOT, env=env)
    if r.returncode != 0:
        raise LipVoicerError(f"recipe stage '{what}' failed (exit code {r.returncode}): {' '.join(cmd)}")


def newest(folder: Path, pattern: str = r"^(\d+)\.pkl$") -> tuple[int, Path] | None:
    """(iteration, path) of the newest checkpoint in `folder` matching `pattern` (group 1 = iteration)."""
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := re.match(pattern, p.name))]
    return max(found) if found else None


def common(s: RecipeSettings, seed: int | None = None) -> list[str]:
    return ["dataset=synthetic", f"dataset.root={s.data}", f"seed={s.seed if seed is None else seed}",
            f"hydra.run.dir={s.work_dir / 'hydra' / str(time.time_ns())}", *SIZE_EXTRA.get(s.size, []), *s.extra]


def corpus_overrides(s: RecipeSettings) -> list[str]:
    """Overrides of the corpus and data-preparation scripts (no dataset= there)."""
    return [f"prep.synthetic.grammar={s.grammar}", f"prep.synthetic.n_test_speakers={s.test_speakers}",
            *SIZE_EXTRA.get(s.size, []), *s.extra]


def asr_overrides(s: RecipeSettings, sizes: list[str]) -> list[str]:
    return [f"asr.vocab_size={s.vocab_size}", f"asr.train.tokenizer={s.tokenizer}", *sizes]


class CoreShare:
    """--parallel with --threads N: the lanes of training stages running at once share the CPU's cores. A
    chunk gets max(N, cores // lanes still running) threads, so that when one lane ends (the recognisers are
    trained), the next chunks of the other (MelGen) use the cores it leaves."""

    def __init__(self, cores: int | None = None):
        self.cores = cores or os.cpu_count() or 1
        self.lanes = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.lanes += 1

    def leave(self) -> None:
        with self._lock:
            self.lanes -= 1

    def threads(self, s: RecipeSettings) -> int | None:
        if not (s.parallel and s.threads):
            return s.threads
        with self._lock:
            return max(int(s.threads), self.cores // max(1, self.lanes))


CORES = CoreShare()
_LANE = threading.local()   # .start: when the current --parallel lane began (train_minutes counts from it)


def train_in_chunks(s: RecipeSettings, script: str, overrides: list[str], n_iters: int, ckpt_dir: Path | None,
                    what: str, pattern: str = r"^(\d+)\.pkl$", minutes_key: str = "train.max_minutes",
                    find_dir=None) -> Path:
    """Call a training script repeatedly (each call at most chunk_minutes, resuming) until n_iters, or until
    this stage has trained for train_minutes (then the newest checkpoint is used; results.json records the
    iterations reached). ckpt_dir None: found by `find_dir()` after the first chunk (a name that depends on
    the sizes)."""
    start = getattr(_LANE, "start", None) or time.time()   # --parallel: the lane's start (its stages share the cap)
    for _ in range(10_000):
        if ckpt_dir is None and find_dir is not None:
            ckpt_dir = find_dir()
        done = newest(ckpt_dir, pattern) if ckpt_dir is not None else None
        if done is not None and done[0] >= n_iters:
            return done[1]
        minutes = s.chunk_minutes
        if s.train_minutes:
            left = s.train_minutes - (time.time() - start) / 60.0
            if done is not None and left < 0.5:
                log.info("[%s] train_minutes (%g) reached at iteration %d of %d", what, s.train_minutes, done[0],
                         n_iters)
                return done[1]
            minutes = max(min(minutes, left), 0.5)
        run_script(s, [script, *overrides, f"{minutes_key}={minutes:.2f}"], what, threads=CORES.threads(s))
        if ckpt_dir is None and find_dir is not None:
            ckpt_dir = find_dir()
        after = newest(ckpt_dir, pattern) if ckpt_dir is not None else None
        if after is None or (done is not None and after[0] <= done[0]):
            where = ckpt_dir if ckpt_dir is not None else "no checkpoint folder was written"
            raise LipVoicerError(f"recipe stage '{what}': no progress (checkpoints in {where})")
    raise LipVoicerError(f"recipe stage '{what}': did not finish")


def corrupt_text(text: str, fraction: float, vocabulary: list[str], rng: random.Random) -> str:
    """Replace round(fraction * words) words (at least one when fraction > 0) by other vocabulary words."""
    words = text.split()
    if not words or fraction <= 0:
        return text
    n = max(1, round(fraction * len(words)))
    for i in rng.sample(range(len(words)), min(n, len(words))):
        choices = [w for w in vocabulary if w != words[i]]
        if choices:
            words[i] = rng.choice(choices)
    return " ".join(words)


# ----------------------------------------------------------------------------- stages
AUDIO_LISTS = {"guidance": "audio_guidance.list", "judge": "audio_judge.list"}   # under the corpus root


def stage_corpus(s: RecipeSettings) -> None:
    run_script(s, ["-m", "dataloaders.synthetic.corpus", "--out_dir", str(s.data), "--n_clips", str(s.n_clips),
                   "--seed", str(s.seed), "--workers", str(s.workers), "--no_progress",
                   *(["--audio_only", str(s.audio_clips)] if s.audio_clips else []), *corpus_overrides(s)],
               "corpus")
    if s.audio_clips:   # disjoint shares: the guidance ASR and the judge never hear the same extra utterance
        from dataloaders.synthetic.corpus import AUDIO_ONLY

        clips = [c for c in (s.data / f"{AUDIO_ONLY}.list").read_text().split() if c]
        cut = round(len(clips) * 2 / 3)
        for name, part in (("guidance", clips[:cut]), ("judge", clips[cut:])):
            (s.data / AUDIO_LISTS[name]).write_text("\n".join(part) + "\n")
        log.info("audio-only utterances: %d for the guidance ASR, %d for the judge", cut, len(clips) - cut)


def audio_split_overrides(s: RecipeSettings, name: str) -> list[str]:
    """The recogniser `name` trains on its share of the audio-only utterances beside the video corpus's
    training clips (nothing to add without --audio_clips)."""
    from dataloaders.synthetic.corpus import AUDIO_ONLY

    if not s.audio_clips or not (s.data / AUDIO_LISTS[name]).is_file():
        return []
    return [f"dataset.splits.train=[{{dir:{AUDIO_ONLY},list:'{AUDIO_LISTS[name]}'}},{{dir:pretrain}},{{dir:trainval}}]"]


MEAN_FACE_NAME = "20words_mean_face.npy"  # the published file's name (asset `mean_face`)


def ensure_mean_face(s: RecipeSettings) -> Path:
    """The mean face for mouth cropping: --mean_face when it exists; a missing file under the published
    name is fetched first (download_checkpoints.py --only mean_face, a small file from GitHub), so the
    recipe runs from a fresh clone; anything else is one line saying what to do."""
    if s.mean_face.is_file():
        return s.mean_face
    if s.mean_face.name != MEAN_FACE_NAME:
        raise LipVoicerError(f"{s.mean_face}: mean face not found (--mean_face <file>; or leave it out to fetch the "
                             f"published {MEAN_FACE_NAME})")
    log.info("mean face %s not found: fetching it", s.mean_face)
    try:
        run_script(s, ["download_checkpoints.py", "--only", "mean_face", "--dest", str(s.mean_face.parent)],
                   "fetch mean face")
    except LipVoicerError:
        pass
    if not s.mean_face.is_file():
        raise LipVoicerError(f"{s.mean_face}: mean face not found and could not be fetched (see the lines above; "
                             f"place the file from docs/checkpoints.md there, or give --mean_face <file>)")
    return s.mean_face


def mouth_crop_overrides(s: RecipeSettings) -> list[str]:
    """The mean face and warp size of mouth cropping. Sizes with stored crops smaller than the published
    96 pixels (video.mouth_size of the MelGen preset, e.g. 48 for cpu) crop the same mouth region at a lower
    resolution: the mean face is scaled by mouth_size / 96 (written to <work_dir>/mean_face_x<scale>.npy)
    and the warp size with it."""
    import numpy as np
    from utils.config import compose_config

    mouth = int(compose_config(MELGEN_SIZES[s.size])["video"]["mouth_size"])
    if mouth == 96:
        return [f"prep.mean_face_path={s.mean_face}"]
    scale = mouth / 96.0
    scaled = s.work_dir / f"mean_face_x{scale:g}.npy"
    if not scaled.is_file():
        np.save(scaled, np.load(s.mean_face) * scale)
    return [f"prep.mean_face_path={scaled}", f"prep.warp_size={int(round(256 * scale))}", *MELGEN_SIZES[s.size]]


def stage_prep(s: RecipeSettings) -> None:
    ensure_mean_face(s)
    videos = s.data / "videos"
    crops = mouth_crop_overrides(s)
    for split in ("pretrain", "trainval", "test"):
        run_script(s, ["dataloaders/extract_audio_from_video.py", "--ds_dir", str(videos), "--split", split,
                       "--out_dir", str(s.data / "audios"), f"prep.num_workers={s.workers}",
                       "prep.progress=false", *corpus_overrides(s)], f"prep audio {split}")
        run_script(s, ["dataloaders/extract_mouthcrops.py", "--ds_dir", str(videos), "--split", split,
                       "--out_dir", str(s.data / "mouth_rois"), *crops, f"prep.num_workers={s.workers}",
                       "prep.progress=false", *corpus_overrides(s)], f"prep mouth crops {split}")
    run_script(s, ["dataloaders/wav2mel.py", f"wav2mel.audios_dir={s.data / 'audios'}",
                   f"wav2mel.num_workers={s.workers}", *common(s)], "prep mels")


def stage_tokenizer(s: RecipeSettings) -> None:
    if s.tokenizer.is_file():
        return
    from dataloaders.tokenizer import collect_lrs_transcripts, train_bpe

    texts = []
    for split in ("pretrain", "trainval"):
        folder = s.data / "videos" / split
        if folder.is_dir():
            texts += collect_lrs_transcripts(folder)
    train_bpe(texts, s.tokenizer, vocab_size=s.vocab_size)


def stage_melgen(s: RecipeSettings) -> Path:
    over = ["train_melgen.py", *common(s), *MELGEN_SIZES[s.size], *TRAIN_SETTINGS[s.size]["melgen"],
            f"train.save_dir={s.work_dir}",
            f"train.n_iters={s.melgen_iters}", f"train.iters_per_ckpt={max(1, min(2000, s.melgen_iters))}",
            f"train.num_workers={s.train_workers()}", f"train.device={s.device}", "train.keep_last=2"]
    # the model_dir name depends on the sizes: found after the first chunk
    return train_in_chunks(s, over[0], over[1:], s.melgen_iters, None, "melgen",
                           find_dir=lambda: next(iter(s.melgen_dir().glob("*/checkpoint")), None))


def _stage_asr(s: RecipeSettings, name: str, sizes: list[str], n_iters: int, seed: int, max_t: str) -> Path:
    over = [*common(s, seed), *asr_overrides(s, sizes), *TRAIN_SETTINGS[s.size]["asr"], *audio_split_overrides(s, name),
            f"asr.train.name={name}",
            f"asr.train.save_dir={s.work_dir}", f"asr.train.n_iters={n_iters}",
            f"asr.train.iters_per_ckpt={max(1, min(2000, n_iters))}", f"asr.train.num_workers={s.train_workers()}",
            f"asr.train.device={s.device}", "asr.train.keep_last=2", f"asr.train.max_t={max_t}",
            f"asr.train.iters_per_eval={max(1, min(500, n_iters))}"]
    return train_in_chunks(s, "train_asr.py", over, n_iters, s.asr_dir(name), name,
                           minutes_key="asr.train.max_minutes")


def guidance_asr_sizes(s: RecipeSettings) -> list[str]:
    return ASR_SIZES[s.asr_size or s.size]


def stage_asr(s: RecipeSettings) -> Path:
    max_t = "${diffusion.T}" if s.asr_max_t is None else str(int(s.asr_max_t))
    return _stage_asr(s, "guidance", guidance_asr_sizes(s), s.asr_iters, s.seed, max_t)


def stage_judge(s: RecipeSettings) -> Path:
    return _stage_asr(s, "judge", JUDGE_SIZES[s.size], s.judge_iters, s.seed + 1000, "1")  # t = 0: clean mels


def stage_vocoder(s: RecipeSettings) -> Path | None:
    if s.vocoder_kind() == "griffinlim":
        return None   # nothing to train: generation vocodes with vocoder=griffinlim
    over = [*common(s), *VOCODER_SIZES[s.size], *TRAIN_SETTINGS[s.size]["vocoder"],
            f"vocoder_train.save_dir={s.work_dir}", "vocoder_train.name=synthetic",
            f"vocoder_train.n_iters={s.vocoder_iters}", f"vocoder_train.iters_per_ckpt={max(1, min(5000, s.vocoder_iters))}",
            f"vocoder_train.num_workers={s.train_workers()}", f"vocoder_train.device={s.device}",
            "vocoder_train.keep_last=2"]
    return train_in_chunks(s, "train_vocoder.py", over, s.vocoder_iters, s.vocoder_dir(), "vocoder",
                           pattern=r"^g_(\d+)$", minutes_key="vocoder_train.max_minutes")


def stage_texts(s: RecipeSettings) -> None:
    """texts/true_text/<id>.txt (the transcripts) and texts/corrupted_text/<id>.txt (words replaced)."""
    from dataloaders.text import transcript_from_lrs_text

    test = s.data / "videos" / "test"
    files = sorted(test.rglob("*.txt"))
    if not files:
        raise LipVoicerError(f"{test}: no test transcripts")
    vocab = sorted({w for p in s.data.glob("videos/*/*/*.txt") for w in transcript_from_lrs_text(p.read_text()).split()})
    if s.grammar == "homophene":   # the true texts, and three corrupted ways with their substitutions
        from recipes.synthetic_conditions import write_homophene_texts

        texts = {str(p.relative_to(test).with_suffix("")): transcript_from_lrs_text(p.read_text()) for p in files}
        for vid, text in texts.items():
            out = s.texts_dir("true_text") / f"{vid}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text + "\n")
        for way, frac in write_homophene_texts(s.texts_dir, texts, s.corrupt_fraction, s.seed + 7).items():
            log.info("%s: %.1f %% of words replaced", way, 100.0 * frac)
        return
    rng = random.Random(s.seed + 7)
    changed = total = 0
    for p in files:
        vid = p.relative_to(test).with_suffix("")
        text = transcript_from_lrs_text(p.read_text())
        bad = corrupt_text(text, s.corrupt_fraction, vocab, rng)
        total += len(text.split())
        changed += sum(a != b for a, b in zip(text.split(), bad.split()))
        for way, t in (("true_text", text), ("corrupted_text", bad)):
            out = s.texts_dir(way) / f"{vid}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(t + "\n")
    log.info("corrupted texts: %d of %d words replaced (%.1f %%)", changed, total, 100.0 * changed / max(total, 1))


# ----------------------------------------------------------------------------- audio files
def write_wav(path: Path, wav, sr: int) -> None:
    import soundfile as sf

    tmp = path.with_name(f".{path.name}.tmp.wav")
    sf.write(str(tmp), wav, sr, subtype="PCM_16", format="WAV")
    tmp.replace(path)


# ----------------------------------------------------------------------------- generation
def generation_overrides(s: RecipeSettings) -> list[str]:
    melgen = newest(next(iter(s.melgen_dir().glob("*/checkpoint")), s.melgen_dir()))
    asr = newest(s.asr_dir("guidance"))
    griffin = s.vocoder_kind() == "griffinlim"
    voc = None if griffin else newest(s.vocoder_dir(), r"^g_(\d+)$")
    missing = [n for n, v in (("melgen", melgen), ("asr", asr), ("vocoder", griffin or voc)) if not v]
    if missing:
        raise LipVoicerError(f"{s.work_dir}: no trained {', '.join(missing)} yet (run those stages first)")
    vocoder = ["vocoder=griffinlim"] if griffin else [*VOCODER_SIZES[s.size], f"vocoder.checkpoint={voc[1]}"]
    return [*common(s), *MELGEN_SIZES[s.size], *asr_overrides(s, guidance_asr_sizes(s)), *vocoder,
            f"generate.ckpt_path={melgen[1]}", f"generate.asr_ckpt={asr[1].resolve()}",
            f"asr.tokenizer={s.tokenizer.resolve()}",
            f"generate.batch_size={s.batch_size}",
            f"generate.device={s.device}", "generate.progress=false",
            *([f"generate.n_samples={s.n_test}"] if s.n_test else [])]


def conditions(s: RecipeSettings, which: str = "main"):
    """The recipe's conditions (recipes/synthetic_conditions.py): "main" (the ways, on --n_test clips),
    "extra" (the weight sweep and the fast samplers, on --sweep_clips clips; none without it)."""
    from recipes import synthetic_conditions as sc

    if which == "main":
        return sc.main_conditions(s.grammar == "homophene")
    if not s.sweep_clips:
        return []
    from utils.config import compose_config

    T = int(compose_config(list(SIZE_EXTRA.get(s.size, [])) + list(s.extra))["diffusion"]["T"])
    return [*sc.weight_sweep(), *sc.sampler_conditions(T)]


def condition_dir(s: RecipeSettings, cond, cfg_gen) -> Path:
    """The folder of a condition's generated clips."""
    from pipelines.outputs import run_dir

    name = cond if isinstance(cond, str) else cond.name
    if name == GROUND_TRUTH:
        return s.work_dir / "generated" / GROUND_TRUTH
    w_asr = 0 if getattr(cond, "texts", name) in (None, "no_guidance") else \
        (cond.w_asr if getattr(cond, "w_asr", None) is not None else cfg_gen["w_asr"])
    start = getattr(cond, "asr_start", None)
    return run_dir(s.work_dir / "generated" / name, "synthetic", cfg_gen["w_video"], w_asr,
                   cfg_gen["asr_start"] if start is None else start)


def run_dir_of(s: RecipeSettings, way: str, cfg_gen: dict) -> Path:
    return condition_dir(s, next((c for c in conditions(s) if c.name == way), way), cfg_gen)


def write_ground_truth(s: RecipeSettings, cfg, ids: list[str]) -> Path:
    """generated/ground_truth/<id>.wav(.spec): each test clip's own mel, vocoded like the generations (the
    judge's and the vocoder's ceiling)."""
    import shutil

    import torch

    folder = s.work_dir / "generated" / GROUND_TRUTH
    voc = None
    for vid in ids:
        spec, wav = folder / f"{vid}.wav.spec", folder / f"{vid}.wav"
        if wav.is_file() and spec.is_file() and wav.stat().st_mtime > spec.stat().st_mtime:
            continue
        spec.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s.data / "audios" / "test" / f"{vid}.wav.spec", spec)
        mel = torch.load(spec, map_location="cpu").float()
        if s.vocoder_kind() == "griffinlim":
            from models.griffin_lim import griffin_lim

            audio = griffin_lim(mel, cfg["audio"], int(cfg["vocoder"]["n_iter"]))
        else:
            from models.hifigan.generator import load_hifigan, vocode

            voc = voc or load_hifigan(str(cfg["vocoder"]["checkpoint"]), cfg["vocoder"])
            audio = vocode(voc, mel, peak_scale=float(cfg["vocoder"]["peak_scale"])).numpy()
        write_wav(wav, audio, int(cfg["audio"]["sampling_rate"]))
    return folder


def generated_ids(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix()[:-len(".wav.spec")] for p in folder.rglob("*.wav.spec")
                  if not p.name.startswith("."))


def generate_conditions(s: RecipeSettings, base: list[str], cfg, conds) -> None:
    """Generate (and with Griffin-Lim, vocode) each condition not yet complete; --parallel: two at a time.
    Each generation's wall time per clip goes to generation_seconds.json."""
    from recipes.synthetic_conditions import GenerationClock

    clock = GenerationClock(s.work_dir / "generation_seconds.json")
    lanes = 2 if s.parallel else 1

    def one(cond) -> None:
        folder = condition_dir(s, cond, cfg["generate"])
        n = s.sweep_clips if cond.sweep else s.n_test
        have = len(generated_ids(folder)) if folder.is_dir() else 0
        texts = [f"generate.lipread_text_dir={s.texts_dir(cond.texts)}"] if cond.texts else []
        t0 = time.time()
        run_script(s, ["inference_full_test_split.py", *base, f"generate.save_dir={s.work_dir / 'generated' / cond.name}",
                       *texts, *cond.overrides(), *([f"generate.n_samples={n}"] if n else [])], f"generate {cond.name}")
        made = len(generated_ids(folder)) - have
        if made > 0 and have == 0:
            clock.record(cond.name, time.time() - t0, made,
                         f"{lanes} generation(s) at a time on {os.cpu_count()} cores, {s.threads or 'default'} thread(s) each")

    if lanes > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(lanes) as pool:
            for f in [pool.submit(one, c) for c in conds]:
                f.result()
    else:
        for c in conds:
            one(c)


def stage_generate(s: RecipeSettings) -> None:
    from utils.config import compose_config

    base = generation_overrides(s)
    cfg = compose_config(base)
    main = conditions(s)
    generate_conditions(s, base, cfg, [*main, *conditions(s, "extra")])
    write_ground_truth(s, cfg, generated_ids(condition_dir(s, main[0], cfg["generate"])))


# ----------------------------------------------------------------------------- scoring
def guidance_asr_scores(s: RecipeSettings, cfg, folders: dict[str, Path]) -> dict:
    """The guidance ASR on the final mels of each way (t = 0): its CTC loss against the true text and against
    the text that guided the way, and its greedy WER against the true text. Says whether guidance did what it
    optimises (lower the guidance ASR's loss), separately from whether the judge agrees."""
    import torch

    from dataloaders.audio import normalise_mel
    from dataloaders.text import transcript_from_lrs_text
    from dataloaders.tokenizer import BPETokenizer
    from models.asr.decoding import greedy_decode
    from models.asr.model import ctc_loss_per_clip
    from models.builders import load_asr
    from pipelines.metrics import word_errors

    asr = load_asr(str(cfg["generate"]["asr_ckpt"]), cfg, "cpu")
    tok = BPETokenizer(str(s.tokenizer))
    clamp = float(cfg["audio"]["clamp_min"])
    out = {}
    for way, folder in folders.items():
        losses_true, losses_guide, errors, words = [], [], 0, 0
        for vid in generated_ids(folder):
            true = transcript_from_lrs_text((s.data / "videos" / "test" / f"{vid}.txt").read_text())
            guide_file = s.texts_dir(way) / f"{vid}.txt"
            guide = guide_file.read_text().strip() if guide_file.is_file() else None
            mel = normalise_mel(torch.load(folder / f"{vid}.wav.spec", map_location="cpu").float(), clamp)[None]
            with torch.no_grad():
                logits, out_len = asr(mel, torch.tensor([mel.shape[-1]]), torch.zeros(1, 1))

            def loss(text):
                ids = tok.encode(text)
                return float(ctc_loss_per_clip(logits, out_len, torch.tensor([ids]), torch.tensor([len(ids)]))[0])

            losses_true.append(loss(true))
            if guide is not None:
                losses_guide.append(loss(guide))
            e, n = word_errors(true, tok.decode(greedy_decode(logits, out_len)[0]))
            errors, words = errors + e, words + n
        mean = (lambda v: sum(v) / len(v) if v else None)
        out[way] = {"ctc_true_text": mean(losses_true), "ctc_guidance_text": mean(losses_guide),
                    "greedy_wer": errors / words if words else None, "n_clips": len(losses_true)}
    return out


def chance_wer(s: RecipeSettings, ids: list[str]) -> float | None:
    """WER of reading each test clip as another test clip's sentence (same grammar, wrong content)."""
    from dataloaders.text import transcript_from_lrs_text
    from pipelines.metrics import word_errors

    texts = [transcript_from_lrs_text((s.data / "videos" / "test" / f"{v}.txt").read_text()) for v in ids]
    if len(texts) < 2:
        return None
    pairs = [word_errors(t, texts[(i + 1) % len(texts)]) for i, t in enumerate(texts)]
    return sum(e for e, _ in pairs) / max(sum(n for _, n in pairs), 1)


def judge_checkpoint(s: RecipeSettings) -> Path:
    judge = newest(s.asr_dir("judge"))
    if judge is None:
        raise LipVoicerError(f"{s.asr_dir('judge')}: no judge checkpoint yet (run the judge stage first)")
    return judge[1]


def score_condition(s: RecipeSettings, name: str, gdir: Path, judge: Path, force: bool = False) -> dict:
    """The judge's scores of one generated folder (evaluate.py into results/<name>/); a summary already
    there for as many clips as the folder has is reused (the stage resumes)."""
    out = s.work_dir / "results" / name
    summary = out / "metrics_summary.json"
    n = len(generated_ids(gdir))
    if not force and summary.is_file() and json.loads(summary.read_text()).get("n_clips") == n:
        return json.loads(summary.read_text())
    run_script(s, ["evaluate.py", *common(s), *asr_overrides(s, JUDGE_SIZES[s.size]),
                   f"evaluate.generated_dir='{gdir}'", f"evaluate.asr_ckpt={judge}",
                   f"evaluate.tokenizer={s.tokenizer}", f"evaluate.out_dir={out}", f"evaluate.device={s.device}",
                   f"evaluate.recognize_from={s.judge_reads()}", f"generate.n_samples={n}", "evaluate.progress=false"],
               f"evaluate {name}")
    return json.loads(summary.read_text())


def stage_evaluate(s: RecipeSettings) -> dict:
    judge = judge_checkpoint(s)
    from utils.config import compose_config

    cfg = compose_config(generation_overrides(s))
    gen_cfg = cfg["generate"]
    main = conditions(s)
    folders = {c.name: condition_dir(s, c, gen_cfg) for c in main}
    folders = {GROUND_TRUTH: condition_dir(s, GROUND_TRUTH, gen_cfg), **folders}
    if not folders[GROUND_TRUTH].is_dir():  # generated before the ground-truth column existed
        write_ground_truth(s, cfg, generated_ids(folders[main[0].name]))
    # ground truth, then the main conditions (the table), then the sweep and the samplers
    results = {name: score_condition(s, name, gdir, judge) for name, gdir in folders.items()}
    for c in conditions(s, "extra"):
        gdir = condition_dir(s, c, gen_cfg)
        if gdir.is_dir() and generated_ids(gdir):
            score_condition(s, c.name, gdir, judge)
    diagnostics = {"guidance_asr": guidance_asr_scores(s, cfg, folders),
                   "chance_wer": chance_wer(s, generated_ids(folders[main[0].name]))}
    try:
        make_figure(s, folders)
    except Exception as e:  # noqa: BLE001 - the figure is a by-product; the table still gets written
        log.warning("figure not written: %s", e)
    write_results(s, results, diagnostics)
    return results


def stage_sweep(s: RecipeSettings) -> None:
    """asr_start earlier and later, at the weight of the sweep with the lowest judge WER (needs the
    evaluate stage's scores of the weight sweep); nothing without --sweep_clips."""
    if not s.sweep_clips:
        log.info("no sweep (--sweep_clips 0)")
        return
    from recipes import synthetic_conditions as sc
    from utils.config import compose_config

    base = generation_overrides(s)
    cfg = compose_config(base)
    gen = cfg["generate"]
    weights = weight_results(s, gen)
    best = sc.best_weight(weights, float(gen["w_asr"]))
    log.info("sweep: best w_asr %g (judge WER %s %%); asr_start sweep at it", best, weights[best].get("wer"))
    conds = sc.start_sweep(best, int(gen["asr_start"]), int(cfg["diffusion"]["T"]))
    generate_conditions(s, base, cfg, conds)
    judge = judge_checkpoint(s)
    for c in conds:
        score_condition(s, c.name, condition_dir(s, c, gen), judge)


def sweep_ids(s: RecipeSettings, gen_cfg) -> list[str]:
    """The test clips of the sweep (the first --sweep_clips of the main conditions)."""
    return generated_ids(condition_dir(s, conditions(s)[0], gen_cfg))[:s.sweep_clips]


def weight_results(s: RecipeSettings, gen_cfg) -> dict[float, dict]:
    """{w_asr: the judge's scores on the sweep clips}: 0 = no_guidance and the configured weight = true_text
    (their scores on the same clips), the others the sweep's own folders."""
    from recipes import synthetic_conditions as sc

    ids = sweep_ids(s, gen_cfg)
    res = s.work_dir / "results"
    out = {0.0: sc.flat_scores(sc.subset_summary(res / "no_guidance" / "metrics_per_clip.csv", ids)),
           float(gen_cfg["w_asr"]): sc.flat_scores(sc.subset_summary(res / "true_text" / "metrics_per_clip.csv", ids))}
    for c in sc.weight_sweep():
        out[float(c.w_asr)] = sc.flat_scores(sc.subset_summary(res / c.name / "metrics_per_clip.csv", ids))
    return dict(sorted(out.items()))


def per_clip_hypotheses(s: RecipeSettings, way: str) -> dict[str, str]:
    import csv

    path = s.work_dir / "results" / way / "metrics_per_clip.csv"
    if not path.is_file():
        return {}
    with path.open() as f:
        return {r["video_id"]: r["hypothesis"] for r in csv.DictReader(f)}


def make_figure(s: RecipeSettings, folders: dict[str, Path], n_clips: int = 3) -> Path:
    """figure.png: for the first n test clips, the ground-truth mel beside the three generated mels, each
    titled with its text (the judge's reading; the guidance text for guided ways)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from dataloaders.text import transcript_from_lrs_text

    ids = generated_ids(folders[WAYS[0]])[:n_clips]
    cols = (GROUND_TRUTH, *WAYS)   # ground truth beside the three generations
    hyps = {way: per_clip_hypotheses(s, way) for way in cols}
    fig, axes = plt.subplots(len(ids), len(cols), figsize=(3.2 * len(cols), 2.1 * len(ids)), squeeze=False)
    for r, vid in enumerate(ids):
        true = transcript_from_lrs_text((s.data / "videos" / "test" / f"{vid}.txt").read_text())
        for c, way in enumerate(cols):
            ax = axes[r][c]
            mel = torch.load(folders[way] / f"{vid}.wav.spec", map_location="cpu").float().numpy()
            ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=-11.5, vmax=2.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            title = way.replace("_", " ")
            guide = s.texts_dir(way) / f"{vid}.txt"
            if way == GROUND_TRUTH:
                title = f"ground truth: {true}"
            elif guide.is_file():
                title += f" ({guide.read_text().strip()})"
            hyp = hyps[way].get(vid)
            ax.set_title(title + (f"\njudge: {hyp}" if hyp is not None else ""), fontsize=7)
    fig.tight_layout()
    out = s.work_dir / "figure.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def iterations_reached(s: RecipeSettings) -> dict:
    found = {"melgen": newest(next(iter(s.melgen_dir().glob("*/checkpoint")), s.melgen_dir())),
             "asr": newest(s.asr_dir("guidance")), "judge": newest(s.asr_dir("judge")),
             "vocoder": newest(s.vocoder_dir(), r"^g_(\d+)$")}
    return {k: (v[0] if v else None) for k, v in found.items()}


STAGE_TIMES = "stage_times.json"


def stage_times(s: RecipeSettings) -> dict:
    path = s.work_dir / STAGE_TIMES
    return json.loads(path.read_text()) if path.is_file() else {}


_TIMES_LOCK = threading.Lock()


def wall_seconds(s: RecipeSettings, times: dict | None = None) -> float:
    """The recipe's wall time from its stage times: with --parallel the training lanes overlap, so they count
    as the longest lane."""
    times = stage_times(s) if times is None else times
    if not s.parallel:
        return float(sum(times.values()))
    lanes = training_lanes([n for n in TRAINING_STAGES if n in times])
    rest = sum(v for k, v in times.items() if k not in TRAINING_STAGES)
    return float(rest + max((sum(times[n] for n in lane) for lane in lanes), default=0.0))


def add_stage_time(s: RecipeSettings, name: str, seconds: float) -> None:
    with _TIMES_LOCK:
        _add_stage_time(s, name, seconds)


def _add_stage_time(s: RecipeSettings, name: str, seconds: float) -> None:
    times = stage_times(s)
    times[name] = times.get(name, 0.0) + seconds
    (s.work_dir / STAGE_TIMES).write_text(json.dumps(times, indent=1))


def write_results(s: RecipeSettings, results: dict, diagnostics: dict | None = None) -> Path:
    diagnostics = diagnostics or {}
    cols = [w for w in (GROUND_TRUTH, *(c.name for c in conditions(s))) if w in results]
    rows = [("judge WER (%)", "corpus_wer", 100.0, 2), ("judge CER (%)", "corpus_cer", 100.0, 2),
            ("STOI", "stoi", 1.0, 4), ("ESTOI", "estoi", 1.0, 4), ("PESQ (wide-band)", "pesq", 1.0, 3),
            ("log-mel L1", "log_mel_l1", 1.0, 4)]
    head = "| metric | " + " | ".join(("ground-truth mel" if w == GROUND_TRUTH else w.replace("_", " ")) for w in cols)
    lines = [head + " |", "|" + " --- |" * (len(cols) + 1)]
    for label, key, scale, digits in rows:
        cells = []
        for way in cols:
            r = results[way]
            v = r.get(key) if key.startswith("corpus_") else (r.get("means") or {}).get(key)
            cells.append("n/a" if v is None else f"{v * scale:.{digits}f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    g = diagnostics.get("guidance_asr") or {}
    for label, key, scale, digits in (("guidance-ASR CTC loss, true text", "ctc_true_text", 1.0, 2),
                                      ("guidance-ASR CTC loss, its guidance text", "ctc_guidance_text", 1.0, 2),
                                      ("guidance-ASR greedy WER (%)", "greedy_wer", 100.0, 2)):
        if g:
            cells = [("n/a" if (g.get(w) or {}).get(key) is None else f"{g[w][key] * scale:.{digits}f}") for w in cols]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    n = {results[w].get("n_clips") for w in cols}
    lines.append("| test clips | " + " | ".join(str(results[w].get("n_clips")) for w in cols) + " |")
    md = "\n".join(lines) + "\n"
    if diagnostics.get("chance_wer") is not None:
        md += (f"\nChance: reading each test clip as another test sentence of the same grammar gives "
               f"{100 * diagnostics['chance_wer']:.1f} % WER.\n")
    times = stage_times(s)
    if times:
        md += "\nWall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + \
              (" (the training stages ran at the same time)" if s.parallel else "") + ".\n"
    reached = iterations_reached(s)
    md += "Iterations trained: " + ", ".join(f"{k} {v}" for k, v in reached.items() if v is not None) + ".\n"
    meta = {"date": time.strftime("%Y-%m-%d"), "size": s.size, "n_clips": s.n_clips, "judge_input": s.judge_reads(),
            "grammar": s.grammar, "vocoder": s.vocoder_kind(), "extra_overrides": [*SIZE_EXTRA.get(s.size, []), *s.extra],
            "iters": {"melgen": s.melgen_iters, "asr": s.asr_iters, "judge": s.judge_iters,
                      "vocoder": s.vocoder_iters if s.vocoder_kind() == "hifigan" else 0},
            "iters_reached": iterations_reached(s), "parallel_training": s.parallel, "threads": s.threads,
            "corrupt_fraction": s.corrupt_fraction, "test_clips": sorted(x for x in n if x is not None),
            "stage_seconds": times, "cpu_cores": os.cpu_count()}
    try:
        import torch

        meta["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        meta["device"] = "unknown"
    reads = "mel (before the vocoder)" if s.judge_reads() == "mel" else "audio"
    out = s.work_dir / "results.md"
    out.write_text(f"Synthetic-corpus recipe, {meta['date']}, {meta['device']} ({meta['cpu_cores']} cores), sizes "
                   f"'{s.size}', {s.grammar} grammar, vocoder {s.vocoder_kind()}, the judge reads the generated "
                   f"{reads}\n\n" + md)
    (s.work_dir / "results.json").write_text(json.dumps({"meta": meta, "results": results,
                                                          "diagnostics": diagnostics}, indent=1))
    print(out.read_text())
    return out


def stage_report(s: RecipeSettings) -> None:
    """results_full.json (every condition, the sweep, the samplers, chance levels, the guidance ASR's WER
    on noisy mels, stage times) and, with --publish, the same under docs/results/ with samples, figures
    and the model set (recipes/synthetic_publish.py)."""
    from recipes.synthetic_publish import publish, write_full_report

    report = write_full_report(s)
    if s.publish:
        publish(s, report)


STAGE_FUNCS = {"corpus": stage_corpus, "prep": stage_prep, "tokenizer": stage_tokenizer, "melgen": stage_melgen,
               "asr": stage_asr, "judge": stage_judge, "vocoder": stage_vocoder, "texts": stage_texts,
               "generate": stage_generate, "evaluate": stage_evaluate, "sweep": stage_sweep, "report": stage_report}


def run_recipe(s: RecipeSettings, stages: list[str] | None = None) -> None:
    stages = list(stages or STAGES)
    bad = [x for x in stages if x not in STAGE_FUNCS]
    if bad:
        raise LipVoicerError(f"unknown recipe stage(s) {', '.join(bad)} (stages: {', '.join(STAGES)})")
    if s.size not in MELGEN_SIZES:
        raise LipVoicerError(f"unknown size '{s.size}' (sizes: {', '.join(MELGEN_SIZES)})")
    if s.vocoder not in VOCODERS:
        raise LipVoicerError(f"unknown vocoder '{s.vocoder}' (vocoders: {', '.join(VOCODERS)})")
    s.work_dir.mkdir(parents=True, exist_ok=True)
    if "prep" in stages:
        ensure_mean_face(s)  # before the corpus is built: a missing file stops the recipe at once
    todo = [name for name in STAGES if name in stages]
    together = [n for n in todo if n in TRAINING_STAGES] if s.parallel else []
    for name in todo:
        if name in together:
            if name == together[0]:
                run_stages_at_once(s, together)
            continue
        run_stage(s, name)


TRAINING_STAGES = ("judge", "asr", "melgen", "vocoder")


def run_stage(s: RecipeSettings, name: str) -> None:
    t0 = time.time()
    log.info("=== stage %s", name)
    try:
        STAGE_FUNCS[name](s)
    finally:
        add_stage_time(s, name, time.time() - t0)
    log.info("=== stage %s done in %.1f s", name, time.time() - t0)


def training_lanes(names: list[str]) -> list[list[str]]:
    """--parallel: MelGen (the longest) in a lane of its own, the other training stages one after another in a
    second lane (judge, guidance ASR, vocoder): two processes for two cores, not four."""
    rest = [n for n in names if n != "melgen"]
    return [lane for lane in (["melgen"] if "melgen" in names else [], rest) if lane]


def run_stages_at_once(s: RecipeSettings, names: list[str]) -> None:
    """--parallel: the training stages (independent of each other) as concurrent processes, in lanes
    (training_lanes); on a CPU shared with other jobs, one-thread processes get more of it than one
    multi-threaded process. A lane that ends leaves its cores to the next chunks of the others (CoreShare)."""
    from concurrent.futures import ThreadPoolExecutor

    def lane(stages: list[str]) -> None:
        _LANE.start = time.time()
        try:
            for name in stages:
                run_stage(s, name)
        finally:
            _LANE.start = None
            CORES.leave()

    lanes = training_lanes(names)
    for _ in lanes:
        CORES.enter()
    with ThreadPoolExecutor(len(lanes)) as pool:
        futures = [pool.submit(lane, stages) for stages in lanes]
    for f in futures:
        f.result()   # the first failure stops the recipe, naming its stage
