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
  texts       guidance texts: true transcripts, and a corrupted copy (a fraction of words replaced)
  generate    inference_full_test_split.py three ways: no ASR guidance, true text, corrupted text
  evaluate    evaluate.py with the judge; results.md / results.json

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
import time
from dataclasses import dataclass, field
from pathlib import Path

from utils.errors import LipVoicerError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = ("corpus", "prep", "tokenizer", "melgen", "asr", "judge", "vocoder", "texts", "generate", "evaluate")
WAYS = ("no_guidance", "true_text", "corrupted_text")

# Model sizes. "full" is the published configuration; "small" fits a short GPU budget;
# "mini" trains on a CPU in tens of minutes; "tiny" is for tests on CPU (seconds).
# MelGen sizes are the presets of configs/melgen/ (mini and tiny also shrink video.face_size / mouth_crop).
MELGEN_SIZES = {"full": ["melgen=published"], "small": ["melgen=small"], "mini": ["melgen=mini"],
                "tiny": ["melgen=tiny"]}
ASR_SIZES = {
    "full": [],
    "small": ["asr.dims=[120,168,240]", "asr.num_blocks=[3,3,3]"],
    "mini": ["asr.stem_filters=32", "asr.dims=[64,96,128]", "asr.num_blocks=[2,2,2]", "asr.step_embed_dim_mid=256",
             "asr.step_embed_dim_out=256"],
    "tiny": ["asr.stem_filters=8", "asr.dims=[16,24,32]", "asr.num_blocks=[1,1,1]", "asr.num_heads=2",
             "asr.conv_kernel=5", "asr.ff_ratio=2", "asr.step_embed_dim_in=16", "asr.step_embed_dim_mid=32",
             "asr.step_embed_dim_out=32", "asr.max_pos_encoding=2000"],
}
# The judge differs from the guidance ASR in size (and seed): it must not share its weaknesses.
JUDGE_SIZES = {
    "full": ["asr.dims=[144,196,256]", "asr.num_blocks=[4,4,4]"],
    "small": ["asr.dims=[96,144,192]", "asr.num_blocks=[2,3,2]"],
    "mini": ["asr.stem_filters=24", "asr.dims=[48,80,112]", "asr.num_blocks=[2,2,1]", "asr.conv_kernel=9",
             "asr.step_embed_dim_mid=256", "asr.step_embed_dim_out=256"],
    "tiny": ["asr.stem_filters=8", "asr.dims=[16,32,40]", "asr.num_blocks=[1,1,1]", "asr.num_heads=2",
             "asr.conv_kernel=3", "asr.ff_ratio=2", "asr.step_embed_dim_in=16", "asr.step_embed_dim_mid=32",
             "asr.step_embed_dim_out=32", "asr.max_pos_encoding=2000"],
}
VOCODER_SIZES = {"full": [], "small": ["vocoder.upsample_initial_channel=256"],
                 "mini": ["vocoder.upsample_initial_channel=32"], "tiny": ["vocoder.upsample_initial_channel=16"]}
# Training settings that go with a size (tiny: small batches so that CPU iterations take a second).
TRAIN_SETTINGS = {
    "full": {"melgen": [], "asr": [], "vocoder": []},
    "small": {"melgen": ["train.batch_size_per_gpu=32"], "asr": ["asr.train.accumulated_steps=1"], "vocoder": []},
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
    judge_input: str = "wav"          # the judge reads the vocoded wav, or the generated mel (before the vocoder)
    n_test: int | None = None
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


# ----------------------------------------------------------------------------- helpers
def run_script(s: RecipeSettings, args: list[str], what: str) -> None:
    """Run `python <args>` from the repository root; a failure stops the recipe naming the stage."""
    cmd = [s.python, *args]
    log.info("[%s] %s", what, " ".join(cmd))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
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
            f"hydra.run.dir={s.work_dir / 'hydra' / str(time.time_ns())}", *s.extra]


def asr_overrides(s: RecipeSettings, sizes: list[str]) -> list[str]:
    return [f"asr.vocab_size={s.vocab_size}", f"asr.train.tokenizer={s.tokenizer}", *sizes]


def train_in_chunks(s: RecipeSettings, script: str, overrides: list[str], n_iters: int, ckpt_dir: Path,
                    what: str, pattern: str = r"^(\d+)\.pkl$", minutes_key: str = "train.max_minutes") -> Path:
    """Call a training script repeatedly (each call at most chunk_minutes, resuming) until n_iters."""
    for _ in range(10_000):
        done = newest(ckpt_dir, pattern)
        if done is not None and done[0] >= n_iters:
            return done[1]
        run_script(s, [script, *overrides, f"{minutes_key}={s.chunk_minutes}"], what)
        after = newest(ckpt_dir, pattern)
        if after is None or (done is not None and after[0] <= done[0]):
            raise LipVoicerError(f"recipe stage '{what}': no progress (checkpoints in {ckpt_dir})")
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
def stage_corpus(s: RecipeSettings) -> None:
    run_script(s, ["-m", "dataloaders.synthetic.corpus", "--out_dir", str(s.data), "--n_clips", str(s.n_clips),
                   "--seed", str(s.seed), "--workers", str(s.workers), "--no_progress", *s.extra], "corpus")


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


def stage_prep(s: RecipeSettings) -> None:
    ensure_mean_face(s)
    videos = s.data / "videos"
    for split in ("pretrain", "trainval", "test"):
        run_script(s, ["dataloaders/extract_audio_from_video.py", "--ds_dir", str(videos), "--split", split,
                       "--out_dir", str(s.data / "audios"), f"prep.num_workers={s.workers}",
                       "prep.progress=false", *s.extra], f"prep audio {split}")
        run_script(s, ["dataloaders/extract_mouthcrops.py", "--ds_dir", str(videos), "--split", split,
                       "--out_dir", str(s.data / "mouth_rois"), f"prep.mean_face_path={s.mean_face}",
                       f"prep.num_workers={s.workers}", "prep.progress=false", *s.extra], f"prep mouth crops {split}")
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
            f"train.num_workers={s.workers}", f"train.device={s.device}", "train.keep_last=2"]
    ckpt_dir = next(iter(s.melgen_dir().glob("*/checkpoint")), None)
    if ckpt_dir is None:  # the model_dir name depends on the sizes: find it after the first chunk
        run_script(s, [*over, f"train.max_minutes={s.chunk_minutes}"], "melgen")
        ckpt_dir = next(iter(s.melgen_dir().glob("*/checkpoint")))
    return train_in_chunks(s, over[0], over[1:], s.melgen_iters, ckpt_dir, "melgen")


def _stage_asr(s: RecipeSettings, name: str, sizes: list[str], n_iters: int, seed: int, max_t: str) -> Path:
    over = [*common(s, seed), *asr_overrides(s, sizes), *TRAIN_SETTINGS[s.size]["asr"], f"asr.train.name={name}",
            f"asr.train.save_dir={s.work_dir}", f"asr.train.n_iters={n_iters}",
            f"asr.train.iters_per_ckpt={max(1, min(2000, n_iters))}", f"asr.train.num_workers={s.workers}",
            f"asr.train.device={s.device}", "asr.train.keep_last=2", f"asr.train.max_t={max_t}",
            f"asr.train.iters_per_eval={max(1, min(2000, n_iters))}"]
    return train_in_chunks(s, "train_asr.py", over, n_iters, s.asr_dir(name), name,
                           minutes_key="asr.train.max_minutes")


def stage_asr(s: RecipeSettings) -> Path:
    return _stage_asr(s, "guidance", ASR_SIZES[s.size], s.asr_iters, s.seed, "${diffusion.T}")


def stage_judge(s: RecipeSettings) -> Path:
    return _stage_asr(s, "judge", JUDGE_SIZES[s.size], s.judge_iters, s.seed + 1000, "1")  # t = 0: clean mels


def stage_vocoder(s: RecipeSettings) -> Path:
    over = [*common(s), *VOCODER_SIZES[s.size], *TRAIN_SETTINGS[s.size]["vocoder"],
            f"vocoder_train.save_dir={s.work_dir}", "vocoder_train.name=synthetic",
            f"vocoder_train.n_iters={s.vocoder_iters}", f"vocoder_train.iters_per_ckpt={max(1, min(5000, s.vocoder_iters))}",
            f"vocoder_train.num_workers={s.workers}", f"vocoder_train.device={s.device}", "vocoder_train.keep_last=2"]
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


def generation_overrides(s: RecipeSettings) -> list[str]:
    melgen = newest(next(iter(s.melgen_dir().glob("*/checkpoint")), s.melgen_dir()))
    asr, voc = newest(s.asr_dir("guidance")), newest(s.vocoder_dir(), r"^g_(\d+)$")
    missing = [n for n, v in (("melgen", melgen), ("asr", asr), ("vocoder", voc)) if v is None]
    if missing:
        raise LipVoicerError(f"{s.work_dir}: no trained {', '.join(missing)} yet (run those stages first)")
    return [*common(s), *MELGEN_SIZES[s.size], *asr_overrides(s, ASR_SIZES[s.size]), *VOCODER_SIZES[s.size],
            f"generate.ckpt_path={melgen[1]}", f"generate.asr_ckpt={asr[1].resolve()}",
            f"asr.tokenizer={s.tokenizer.resolve()}", f"vocoder.checkpoint={voc[1]}",
            f"generate.batch_size={s.batch_size}",
            f"generate.device={s.device}", "generate.progress=false",
            *([f"generate.n_samples={s.n_test}"] if s.n_test else [])]


def way_overrides(s: RecipeSettings, way: str) -> list[str]:
    out = [f"generate.save_dir={s.work_dir / 'generated' / way}"]
    if way == "no_guidance":
        return out + ["generate.w_asr=0"]
    return out + [f"generate.lipread_text_dir={s.texts_dir(way)}"]


def run_dir_of(s: RecipeSettings, way: str, cfg_gen: dict) -> Path:
    from pipelines.outputs import run_dir

    base = s.work_dir / "generated" / way
    w_asr = 0 if way == "no_guidance" else cfg_gen["w_asr"]
    return run_dir(base, "synthetic", cfg_gen["w_video"], w_asr, cfg_gen["asr_start"])


def stage_generate(s: RecipeSettings) -> None:
    base = generation_overrides(s)
    for way in WAYS:
        run_script(s, ["inference_full_test_split.py", *base, *way_overrides(s, way)], f"generate {way}")


def stage_evaluate(s: RecipeSettings) -> dict:
    judge = newest(s.asr_dir("judge"))
    if judge is None:
        raise LipVoicerError(f"{s.asr_dir('judge')}: no judge checkpoint yet (run the judge stage first)")
    from utils.config import compose_config

    gen_cfg = compose_config(generation_overrides(s))["generate"]
    results = {}
    for way in WAYS:
        gdir = run_dir_of(s, way, gen_cfg)
        out = s.work_dir / "results" / way
        run_script(s, ["evaluate.py", *common(s), *asr_overrides(s, JUDGE_SIZES[s.size]),
                       f"evaluate.generated_dir='{gdir}'", f"evaluate.asr_ckpt={judge[1]}",
                       f"evaluate.tokenizer={s.tokenizer}", f"evaluate.out_dir={out}", f"evaluate.device={s.device}",
                       f"evaluate.recognize_from={s.judge_input}",
                       *([f"generate.n_samples={s.n_test}"] if s.n_test else []),   # the clips generated
                       "evaluate.progress=false"], f"evaluate {way}")
        results[way] = json.loads((out / "metrics_summary.json").read_text())
    write_results(s, results)
    return results


def write_results(s: RecipeSettings, results: dict) -> Path:
    rows = [("judge WER (%)", "corpus_wer", 100.0, 2), ("judge CER (%)", "corpus_cer", 100.0, 2),
            ("STOI", "stoi", 1.0, 4), ("ESTOI", "estoi", 1.0, 4), ("PESQ (wide-band)", "pesq", 1.0, 3),
            ("log-mel L1", "log_mel_l1", 1.0, 4)]
    head = "| metric | " + " | ".join(w.replace("_", " ") for w in WAYS) + " |"
    lines = [head, "|" + " --- |" * (len(WAYS) + 1)]
    for label, key, scale, digits in rows:
        cells = []
        for way in WAYS:
            r = results[way]
            v = r.get(key) if key.startswith("corpus_") else (r.get("means") or {}).get(key)
            cells.append("n/a" if v is None else f"{v * scale:.{digits}f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    n = {results[w].get("n_clips") for w in WAYS}
    lines.append("| test clips | " + " | ".join(str(results[w].get("n_clips")) for w in WAYS) + " |")
    md = "\n".join(lines) + "\n"
    meta = {"date": time.strftime("%Y-%m-%d"), "size": s.size, "n_clips": s.n_clips, "judge_input": s.judge_input,
            "extra_overrides": list(s.extra), "iters": {
        "melgen": s.melgen_iters, "asr": s.asr_iters, "judge": s.judge_iters, "vocoder": s.vocoder_iters},
        "corrupt_fraction": s.corrupt_fraction, "test_clips": sorted(x for x in n if x is not None)}
    try:
        import torch

        meta["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        meta["device"] = "unknown"
    out = s.work_dir / "results.md"
    out.write_text(f"Synthetic-corpus recipe, {meta['date']}, {meta['device']}, sizes '{s.size}', the judge reads "
                   f"the generated {'mel (before the vocoder)' if s.judge_input == 'mel' else 'audio'}\n\n" + md)
    (s.work_dir / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(out.read_text())
    return out


STAGE_FUNCS = {"corpus": stage_corpus, "prep": stage_prep, "tokenizer": stage_tokenizer, "melgen": stage_melgen,
               "asr": stage_asr, "judge": stage_judge, "vocoder": stage_vocoder, "texts": stage_texts,
               "generate": stage_generate, "evaluate": stage_evaluate}


def run_recipe(s: RecipeSettings, stages: list[str] | None = None) -> None:
    stages = list(stages or STAGES)
    bad = [x for x in stages if x not in STAGE_FUNCS]
    if bad:
        raise LipVoicerError(f"unknown recipe stage(s) {', '.join(bad)} (stages: {', '.join(STAGES)})")
    if s.size not in MELGEN_SIZES:
        raise LipVoicerError(f"unknown size '{s.size}' (sizes: {', '.join(MELGEN_SIZES)})")
    s.work_dir.mkdir(parents=True, exist_ok=True)
    if "prep" in stages:
        ensure_mean_face(s)  # before the corpus is built: a missing file stops the recipe at once
    for name in STAGES:
        if name in stages:
            t0 = time.time()
            log.info("=== stage %s", name)
            STAGE_FUNCS[name](s)
            log.info("=== stage %s done in %.1f s", name, time.time() - t0)
