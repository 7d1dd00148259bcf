"""The synthetic recipe's stages that make its data and its models.

  corpus      synthetic talking-face clips (espeak-ng speech, animated face), LRS3 layout; with
              --audio_clips also utterances without video, shared between the two recognisers
  prep        16 kHz wavs, .wav.spec mels, mouth crops (the data-preparation scripts)
  tokenizer   SentencePiece BPE on the training transcripts
  judge       train_asr.py     a separate recogniser on clean mels only (other seed and size),
                               used only for scoring
  asr         train_asr.py     the guidance classifier (noisy mels, t < --asr_max_t)
  melgen      train_melgen.py
  vocoder     train_vocoder.py HiFi-GAN on the synthetic audio (nothing with Griffin-Lim)

A training stage calls its script in chunks of at most --chunk_minutes, each resuming from the
last checkpoint (train_in_chunks), until its iterations or --train_minutes. With --parallel the
training stages run in two lanes (training_lanes) that share the cores (CoreShare). A new training
stage is a function here that ends in train_in_chunks, an entry in STAGE_FUNCS and TRAINING_STAGES,
and its name in the stage list of recipes/synthetic_recipe.py (the lip reader's stage, which also scores
it, is in recipes/synthetic_lip_reader.py).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from recipes import synthetic_settings as settings
from recipes.synthetic_settings import (JUDGE_SIZES, MEAN_FACE_NAME, MELGEN_SIZES, TRAIN_SETTINGS, VOCODER_SIZES,
                                        RecipeSettings, asr_overrides, common, corpus_overrides, guidance_asr_sizes,
                                        newest, stage_times)
from utils.errors import LipVoicerError

log = logging.getLogger(__name__)

# independent of each other: --parallel runs them at once (the lip reader's stage is in recipes/synthetic_lip_reader.py)
TRAINING_STAGES = ("judge", "asr", "melgen", "vocoder", "lipreader")


# ----------------------------------------------------------------------------- training in chunks, in lanes
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
        settings.run_script(s, [script, *overrides, f"{minutes_key}={minutes:.2f}"], what, threads=CORES.threads(s))
        if ckpt_dir is None and find_dir is not None:
            ckpt_dir = find_dir()
        after = newest(ckpt_dir, pattern) if ckpt_dir is not None else None
        if after is None or (done is not None and after[0] <= done[0]):
            where = ckpt_dir if ckpt_dir is not None else "no checkpoint folder was written"
            raise LipVoicerError(f"recipe stage '{what}': no progress (checkpoints in {where})")
    raise LipVoicerError(f"recipe stage '{what}': did not finish")


# ----------------------------------------------------------------------------- stages
AUDIO_LISTS = {"guidance": "audio_guidance.list", "judge": "audio_judge.list"}   # under the corpus root


def stage_corpus(s: RecipeSettings) -> None:
    settings.run_script(s, ["-m", "dataloaders.synthetic.corpus", "--out_dir", str(s.data),
                            "--n_clips", str(s.n_clips), "--seed", str(s.seed), "--workers", str(s.workers),
                            "--no_progress",
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
        settings.run_script(s, ["download_checkpoints.py", "--only", "mean_face", "--dest", str(s.mean_face.parent)],
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
        settings.run_script(s, ["dataloaders/extract_audio_from_video.py", "--ds_dir", str(videos), "--split", split,
                                "--out_dir", str(s.data / "audios"), f"prep.num_workers={s.workers}",
                                "prep.progress=false", *corpus_overrides(s)], f"prep audio {split}")
        settings.run_script(s, ["dataloaders/extract_mouthcrops.py", "--ds_dir", str(videos), "--split", split,
                                "--out_dir", str(s.data / "mouth_rois"), *crops, f"prep.num_workers={s.workers}",
                                "prep.progress=false", *corpus_overrides(s)], f"prep mouth crops {split}",
                            partial_ok=True)   # a clip without a usable face: the datasets skip it
    settings.run_script(s, ["dataloaders/wav2mel.py", f"wav2mel.audios_dir={s.data / 'audios'}",
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


# ----------------------------------------------------------------------------- lanes, wall time, iterations
SECOND_LANE = ("judge", "lipreader", "asr", "vocoder")


def training_lanes(names: list[str]) -> list[list[str]]:
    """--parallel: MelGen (the longest) in a lane of its own, the other training stages one after another in a
    second lane (SECOND_LANE: judge, lip reader, guidance ASR, vocoder): two processes for two cores, not four.
    The guidance ASR comes after the lip reader: it is the one stage that improves with whatever time
    --train_minutes leaves, while a lip reader stopped by the cap before its first checkpoint would be none."""
    rest = sorted((n for n in names if n != "melgen"),
                  key=lambda n: SECOND_LANE.index(n) if n in SECOND_LANE else len(SECOND_LANE))
    return [lane for lane in (["melgen"] if "melgen" in names else [], rest) if lane]


def run_in_lanes(s: RecipeSettings, names: list[str], run_stage) -> None:
    """--parallel: the training stages (independent of each other) as concurrent processes, in lanes
    (training_lanes), each stage through run_stage(s, name); on a CPU shared with other jobs, one-thread
    processes get more of it than one multi-threaded process. A lane that ends leaves its cores to the next
    chunks of the others (CoreShare)."""
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


def wall_seconds(s: RecipeSettings, times: dict | None = None) -> float:
    """The recipe's wall time from its stage times: with --parallel the training lanes overlap, so they count
    as the longest lane."""
    times = stage_times(s) if times is None else times
    if not s.parallel:
        return float(sum(times.values()))
    lanes = training_lanes([n for n in TRAINING_STAGES if n in times])
    rest = sum(v for k, v in times.items() if k not in TRAINING_STAGES)
    return float(rest + max((sum(times[n] for n in lane) for lane in lanes), default=0.0))


def iterations_reached(s: RecipeSettings) -> dict:
    found = {"melgen": newest(next(iter(s.melgen_dir().glob("*/checkpoint")), s.melgen_dir())),
             "asr": newest(s.asr_dir("guidance")), "judge": newest(s.asr_dir("judge")),
             "vocoder": newest(s.vocoder_dir(), r"^g_(\d+)$")}
    return {k: (v[0] if v else None) for k, v in found.items()}


STAGE_FUNCS = {"corpus": stage_corpus, "prep": stage_prep, "tokenizer": stage_tokenizer, "judge": stage_judge,
               "asr": stage_asr, "melgen": stage_melgen, "vocoder": stage_vocoder}
