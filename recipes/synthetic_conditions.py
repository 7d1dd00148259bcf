"""The conditions the synthetic recipe generates, their guiding texts, and the generation stages.

A condition is one generation of (part of) the test split with one setting: no ASR guidance,
guidance from the true or a corrupted text, a guidance weight or start step of the sweep, or a
fast sampler. Each is generated into `<work_dir>/generated/<name>/`, vocoded like the others and
scored by the judge into `<work_dir>/results/<name>/` (recipes/synthetic_scoring.py).

    main       no_guidance, true_text, corrupted_text (and, on the homophene grammar,
               corrupted_homophene / corrupted_other: every replacement a homophene of the true
               word / a word of another group), on --n_test clips
    sweep      true-text guidance at w_asr 0.5 and 3 (0 and 1.5 are no_guidance and true_text);
               then asr_start earlier and later at the best weight, on --sweep_clips clips
    samplers   DDIM and DPM-Solver++ at 10 and 25 steps, without and with true-text guidance,
               on --sweep_clips clips (the ancestral sampler's rows are the main conditions on
               the same clips)

The stages:

  texts       guidance texts: true transcripts, and a corrupted copy (a fraction of words replaced; on
              the homophene grammar also copies whose replacements are all homophenes / all other words)
  generate    inference_full_test_split.py per condition: the main conditions and, with --sweep_clips,
              the weight sweep and the fast samplers; then the ground truth (the test clips' own mels,
              vocoded the same way)
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from recipes import synthetic_settings as settings
from utils.files import atomic_text
from recipes.synthetic_settings import (MELGEN_SIZES, SIZE_EXTRA, VOCODER_SIZES, RecipeSettings, asr_overrides, common,
                                        guidance_asr_sizes, newest, test_split_overrides)
from utils.errors import LipVoicerError

log = logging.getLogger(__name__)

WAYS = ("no_guidance", "true_text", "corrupted_text")
GROUND_TRUTH = "ground_truth"   # the test clips' own mels, vocoded and scored like a generation
SWEEP_WEIGHTS = (0.0, 0.5, 1.5, 3.0)
SAMPLER_STEPS = (("ddim", 10), ("ddim", 25), ("dpm_solver", 10), ("dpm_solver", 25))
SUBSTITUTIONS = "substitutions.json"   # beside the corrupted texts: which words were replaced, and how


@dataclass(frozen=True)
class Condition:
    name: str                      # folder under generated/ and results/
    texts: str | None              # the guiding texts (a folder name under texts/), None: no ASR guidance
    w_asr: float | None = None     # None: the configuration's
    asr_start: int | None = None
    sampler: str = "ancestral"
    steps: int | None = None
    sweep: bool = False            # on --sweep_clips clips (else --n_test)

    def overrides(self) -> list[str]:
        out = []
        if self.texts is None:
            out.append("generate.w_asr=0")
        elif self.w_asr is not None:
            out.append(f"generate.w_asr={self.w_asr:g}")
        if self.asr_start is not None:
            out.append(f"generate.asr_start={self.asr_start}")
        if self.sampler != "ancestral":
            out += [f"generate.sampler={self.sampler}", f"generate.steps={self.steps}"]
        return out


def main_conditions(homophene: bool, lipread: bool = False) -> list[Condition]:
    """no_guidance, lipread_text (with a lip reader: LipVoicer's main row), true_text, corrupted_text and, on a
    homophene grammar, corrupted_homophene / corrupted_other."""
    ways = ["no_guidance", *(["lipread_text"] if lipread else []), "true_text", "corrupted_text"] + \
        (["corrupted_homophene", "corrupted_other"] if homophene else [])
    return [Condition(w, None if w == "no_guidance" else w) for w in ways]


def weight_sweep() -> list[Condition]:
    """The weights of the sweep not already generated as main conditions (0 = no_guidance, 1.5 = true_text)."""
    return [Condition(f"sweep_w{w:g}", "true_text", w_asr=w, sweep=True) for w in SWEEP_WEIGHTS if w not in (0.0, 1.5)]


def start_sweep(best_w: float, default_start: int, T: int) -> list[Condition]:
    """asr_start earlier and later than the default (guidance over fewer / more of the last steps)."""
    starts = sorted({max(1, round(default_start * 0.6)), T - 1} - {default_start})   # asr_start < T
    return [Condition(f"sweep_w{best_w:g}_start{a}", "true_text", w_asr=best_w, asr_start=a, sweep=True)
            for a in starts]


def sampler_conditions(T: int | None = None) -> list[Condition]:
    """The fast samplers' conditions (steps capped at the schedule's T, duplicates dropped)."""
    out = {}
    for name, steps in SAMPLER_STEPS:
        steps = min(steps, T) if T else steps
        for guided in (False, True):
            c = Condition(f"{name}{steps}_{'true_text' if guided else 'no_guidance'}", "true_text" if guided else None,
                          sampler=name, steps=steps, sweep=True)
            out[c.name] = c
    return list(out.values())


def conditions(s: RecipeSettings, which: str = "main"):
    """The recipe's conditions: "main" (the ways, on --n_test clips),
    "extra" (the weight sweep and the fast samplers, on --sweep_clips clips; none without it)."""
    if which == "main":
        return main_conditions(s.homophenes, s.lipreader_iters > 0)
    if not s.sweep_clips:
        return []
    from utils.config import compose_config

    T = int(compose_config(list(SIZE_EXTRA.get(s.size, [])) + list(s.extra))["diffusion"]["T"])
    return [*weight_sweep(), *sampler_conditions(T)]


# ----------------------------------------------------------------------------- texts
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


def corrupt_words(words: list[str], fraction: float, rng: random.Random, kind: str, group_of, vocabulary: list[str]):
    """Replace round(fraction * len) words (at least one): kind "homophene" by another member of the word's
    group, "other" by a word of another group, "mixed" by either with probability one half. Returns (new
    words, [[position, kind, true word, new word], ...])."""
    words = list(words)
    n = max(1, round(fraction * len(words)))
    subs = []
    # only words that have homophenes (a homophene_context sentence's key has none and stays)
    places = [i for i, w in enumerate(words) if len(group_of(w)) > 1]
    for i in sorted(rng.sample(places, min(n, len(places)))):
        k = kind if kind != "mixed" else rng.choice(("homophene", "other"))
        group = group_of(words[i])
        pool = [w for w in group if w != words[i]] if k == "homophene" else [w for w in vocabulary if w not in group]
        new = rng.choice(pool)
        subs.append([i, k, words[i], new])
        words[i] = new
    return words, subs


def write_homophene_texts(texts_dir, test_texts: dict[str, str], fraction: float, seed: int,
                          grammar: str = "homophene") -> dict[str, float]:
    """texts_dir(way)/<id>.txt for the three corrupted ways of a homophene grammar, with
    substitutions.json beside each; returns the fraction of words replaced per way."""
    from dataloaders.synthetic import homophenes
    from dataloaders.synthetic.corpus import group_function

    vocab = homophenes.vocabulary()
    group_of = group_function(grammar)
    out = {}
    for way, kind in (("corrupted_text", "mixed"), ("corrupted_homophene", "homophene"), ("corrupted_other", "other")):
        rng = random.Random(f"{seed}:{way}")
        subs_all, changed, total = {}, 0, 0
        for vid, text in sorted(test_texts.items()):
            words, subs = corrupt_words(text.split(), fraction, rng, kind, group_of, vocab)
            subs_all[vid] = subs
            changed, total = changed + len(subs), total + len(words)
            path = Path(texts_dir(way)) / f"{vid}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(" ".join(words) + "\n")
        (Path(texts_dir(way)) / SUBSTITUTIONS).write_text(json.dumps(subs_all, indent=0))
        out[way] = changed / max(total, 1)
    return out


def write_lipread_texts(s: RecipeSettings) -> int:
    """texts/lipread_text/<id>.txt: what the run's lip reader read on each test clip (the lipreader stage's
    lip_reader/reads.csv); returns the number of clips."""
    import csv

    reads = s.work_dir / "lip_reader" / "reads.csv"
    if not reads.is_file():
        raise LipVoicerError(f"{reads}: no lip-read texts (run the lipreader stage, --lipreader_iters N)")
    with reads.open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        out = s.texts_dir("lipread_text") / f"{row['video_id']}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(row["hypothesis"].strip() + "\n")
    return len(rows)


def stage_texts(s: RecipeSettings) -> None:
    """texts/true_text/<id>.txt (the transcripts), texts/corrupted_text/<id>.txt (words replaced) and, with a
    lip reader, texts/lipread_text/<id>.txt (what it read)."""
    from dataloaders.text import transcript_from_lrs_text

    if s.lipreader_iters > 0:
        log.info("lip-read texts of %d test clips", write_lipread_texts(s))

    test = s.data / "videos" / "test"
    files = sorted(test.rglob("*.txt"))
    if not files:
        raise LipVoicerError(f"{test}: no test transcripts")
    vocab = sorted({w for p in s.data.glob("videos/*/*/*.txt") for w in transcript_from_lrs_text(p.read_text()).split()})
    if s.homophenes:   # the true texts, and three corrupted ways with their substitutions
        texts = {str(p.relative_to(test).with_suffix("")): transcript_from_lrs_text(p.read_text()) for p in files}
        for vid, text in texts.items():
            out = s.texts_dir("true_text") / f"{vid}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text + "\n")
        for way, frac in write_homophene_texts(s.texts_dir, texts, s.corrupt_fraction, s.seed + 7,
                                               s.grammar).items():
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
            *test_split_overrides(s), *([f"generate.n_samples={s.n_test}"] if s.n_test else [])]


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


def generated_ids(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix()[:-len(".wav.spec")] for p in folder.rglob("*.wav.spec")
                  if not p.name.startswith("."))


def write_wav(path: Path, wav, sr: int) -> None:
    import soundfile as sf

    tmp = path.with_name(f".{path.name}.tmp.wav")
    sf.write(str(tmp), wav, sr, subtype="PCM_16", format="WAV")
    tmp.replace(path)


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


class GenerationClock:
    """Seconds per clip of each condition's generation, kept in <work_dir>/generation_seconds.json."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def record(self, name: str, seconds: float, clips: int, note: str) -> None:
        """Add one generation call's time and the clips it made to the condition's totals (a resumed or partly
        failed generation adds to what the earlier calls recorded)."""
        data = self.read()
        old = data.get(name) or {}
        seconds, clips = seconds + old.get("seconds", 0.0), clips + old.get("clips", 0)
        data[name] = {"seconds": round(seconds, 1), "clips": clips,
                      "seconds_per_clip": round(seconds / max(clips, 1), 2), "note": note}
        atomic_text(self.path, json.dumps(data, indent=1))


def generate_conditions(s: RecipeSettings, base: list[str], cfg, conds) -> None:
    """Generate (and with Griffin-Lim, vocode) each condition not yet complete; --parallel: two at a time.
    Each generation's wall time per clip goes to generation_seconds.json."""
    clock = GenerationClock(s.work_dir / "generation_seconds.json")
    lanes = 2 if s.parallel else 1

    def one(cond) -> None:
        folder = condition_dir(s, cond, cfg["generate"])
        n = s.sweep_clips if cond.sweep else s.n_test
        have = len(generated_ids(folder)) if folder.is_dir() else 0
        texts = [f"generate.lipread_text_dir={s.texts_dir(cond.texts)}"] if cond.texts else []
        t0 = time.time()
        try:
            settings.run_script(s, ["inference_full_test_split.py", *base,
                                    f"generate.save_dir={s.work_dir / 'generated' / cond.name}", *texts,
                                    *cond.overrides(), *([f"generate.n_samples={n}"] if n else [])], f"generate {cond.name}")
        finally:   # the clips it made are timed even when the script stopped on a failed clip
            made = (len(generated_ids(folder)) if folder.is_dir() else 0) - have
            if made > 0:
                clock.record(cond.name, time.time() - t0, made, f"{lanes} generation(s) at a time on "
                             f"{os.cpu_count()} cores, {s.threads or 'default'} thread(s) each")

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


STAGE_FUNCS = {"texts": stage_texts, "generate": stage_generate}
