"""The synthetic recipe's settings, and how a stage runs a script.

    RecipeSettings       every option of recipes/synthetic.py, and the work folder's layout
    *_SIZES, TRAIN_SETTINGS, SIZE_EXTRA
                         the model sizes (--size, --asr_size) as Hydra overrides
    common(), corpus_overrides(), asr_overrides(), guidance_asr_sizes()
                         the overrides every script of a stage gets
    run_script()         one project script as a subprocess; a failure stops the recipe naming its stage
    newest()             the newest checkpoint of a folder (what a stage has reached)
    stage_times()        seconds per stage, kept in <work_dir>/stage_times.json

Everything above this module (training, conditions, scoring, the report, the stage list) imports
from here; this module imports no other part of the recipe. Stages call the runner as
`synthetic_settings.run_script(...)`, through the module, so that one replacement of it (the tests
run the scripts in-process) reaches every stage.
"""
from __future__ import annotations

import json
import logging
import os
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
VOCODERS = ("auto", "hifigan", "griffinlim")
MEAN_FACE_NAME = "20words_mean_face.npy"  # the published file's name (asset `mean_face`)

# Model sizes. "full" is the published configuration; "small" fits a short GPU budget;
# "cpu" is the 2-core CPU recipe (about an hour for every stage); "mini" a larger CPU model;
# "tiny" is for tests on CPU (seconds).
# MelGen sizes are the presets of configs/melgen/ (cpu, mini and tiny also set video.*: smaller crops / faces).
MELGEN_SIZES = {"full": ["melgen=published"], "small": ["melgen=small"], "cpu": ["melgen=cpu"],
                "mini": ["melgen=mini"], "tiny": ["melgen=tiny"]}
# Settings every script of a size gets (before the user's overrides): the cpu recipe uses a 50-step
# diffusion (beta up to 0.2: alpha_bar_T = 0.004) with guidance from t = 35 down, each step's clean-mel
# estimate clamped to the data range (a guard: early checkpoints' samples leave it; the final one's do not), the
# ASR guidance weight fading with t (w_asr (t / 35)^3: what an independent listener heard best,
# docs/synthetic.md), and 128-pixel frames.
SIZE_EXTRA = {"cpu": ["diffusion.T=50", "diffusion.beta_T=0.2", "generate.asr_start=35", "generate.clip_x0=[-1,1.2]",
                      "generate.asr_weight_power=3", "prep.synthetic.frame_size=128"]}
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
    lipreader_iters: int = 0          # train a lip reader for this many iterations (stage lipreader; 0: none)
    extra: list[str] = field(default_factory=list)   # Hydra overrides for every script
    python: str = sys.executable

    @property
    def homophenes(self) -> bool:
        """Whether the grammar is one of homophene groups (homophene, homophene_context): the corrupted texts
        and the scores then count homophene substitutions and words in the right group."""
        from dataloaders.synthetic.corpus import HOMOPHENE_GRAMMARS

        return self.grammar in HOMOPHENE_GRAMMARS

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


# ----------------------------------------------------------------------------- running a stage's scripts
def run_script(s: RecipeSettings, args: list[str], what: str, threads: int | None = None,
               partial_ok: bool = False) -> None:
    """Run `python <args>` from the repository root; a failure stops the recipe naming the stage.
    threads: the process's CPU threads (default --threads; None: torch's default). partial_ok: exit status 1
    (a batch script that went on past failed files, which it has logged) is a warning, not a failure."""
    cmd = [s.python, *args]
    threads = threads or s.threads
    log.info("[%s]%s %s", what, f" ({threads} threads)" if threads else "", " ".join(cmd))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:  # on a shared or small CPU, one thread per process avoids oversubscription (much faster)
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    r = subprocess.run(cmd, cwd=REPO_ROOT, env=env)
    if r.returncode == 1 and partial_ok:
        log.warning("[%s] some files failed (named above); the recipe goes on without them", what)
    elif r.returncode != 0:
        raise LipVoicerError(f"recipe stage '{what}' failed (exit code {r.returncode}): {' '.join(cmd)}")


def newest(folder: Path, pattern: str = r"^(\d+)\.pkl$") -> tuple[int, Path] | None:
    """(iteration, path) of the newest checkpoint in `folder` matching `pattern` (group 1 = iteration)."""
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := re.match(pattern, p.name))]
    return max(found) if found else None


TEST_LIST = "test_clips.list"   # under the corpus root: the recipe's test clips (test_split_overrides)


def test_split_overrides(s: RecipeSettings) -> list[str]:
    """With --n_test N: the recipe's test clips are the first N of the test split that data preparation could
    crop (a clip without a usable face track has no mouth crops; taking the first N listed would leave the
    run with fewer than N, and the lip reader, which skips such clips, with other ones). Written to
    <corpus>/test_clips.list on every call (cheap); the overrides give it to generation and the lip reader."""
    if not s.n_test:
        return []
    from dataloaders.layout import ClipPaths, list_split_clips
    from utils.files import atomic_text
    from utils.config import compose_config

    dataset = compose_config(common(s))["dataset"]
    clips = [c for c in list_split_clips(dataset, "test") if ClipPaths(dataset, c).mouth.is_file()][:s.n_test]
    if not clips:
        raise LipVoicerError(f"{dataset['mouthrois_dir']}: no test clip has mouth crops (run the prep stage)")
    if len(clips) < s.n_test:
        log.warning("only %d test clips have mouth crops (--n_test %d)", len(clips), s.n_test)
    atomic_text(s.data / TEST_LIST, "".join(c.split("/", 1)[1] + "\n" for c in clips))
    return [f"dataset.splits.test=[{{dir:test,list:'{TEST_LIST}'}}]"]


def common(s: RecipeSettings, seed: int | None = None) -> list[str]:
    return ["dataset=synthetic", f"dataset.root={s.data}", f"seed={s.seed if seed is None else seed}",
            f"hydra.run.dir={s.work_dir / 'hydra' / str(time.time_ns())}", *SIZE_EXTRA.get(s.size, []), *s.extra]


def corpus_overrides(s: RecipeSettings) -> list[str]:
    """Overrides of the corpus and data-preparation scripts (no dataset= there)."""
    return [f"prep.synthetic.grammar={s.grammar}", f"prep.synthetic.n_test_speakers={s.test_speakers}",
            *SIZE_EXTRA.get(s.size, []), *s.extra]


def asr_overrides(s: RecipeSettings, sizes: list[str]) -> list[str]:
    return [f"asr.vocab_size={s.vocab_size}", f"asr.train.tokenizer={s.tokenizer}", *sizes]


def guidance_asr_sizes(s: RecipeSettings) -> list[str]:
    return ASR_SIZES[s.asr_size or s.size]


# ----------------------------------------------------------------------------- stage times
STAGE_TIMES = "stage_times.json"


def stage_times(s: RecipeSettings) -> dict:
    path = s.work_dir / STAGE_TIMES
    return json.loads(path.read_text()) if path.is_file() else {}


_TIMES_LOCK = threading.Lock()


def add_stage_time(s: RecipeSettings, name: str, seconds: float) -> None:
    with _TIMES_LOCK:
        _add_stage_time(s, name, seconds)


def _add_stage_time(s: RecipeSettings, name: str, seconds: float) -> None:
    times = stage_times(s)
    times[name] = times.get(name, 0.0) + seconds
    (s.work_dir / STAGE_TIMES).write_text(json.dumps(times, indent=1))

