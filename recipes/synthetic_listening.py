"""The synthetic recipe's listen stage: every condition heard by a listener of another kind than the guidance ASR.

The judge (recipes/synthetic_training.py) is a network of the guidance ASR's own kind, trained on the same
mels, so what the guidance gradient adds can fool it without being heard. The listener shares nothing with
either: PocketSphinx (pipelines/listener.py) with its own English acoustic model, decoding with the corpus's
slots as a grammar, a fresh decoder per clip.

  listen      the corpus's own audio of the test clips, the ground truth (their mels, vocoded like the
              generations) and every generated condition, into results/<condition>/listener_per_clip.csv
              (a condition already heard on the same clips is not heard again), and results/listener.json:
              per condition the WER with its 95 % bootstrap interval and, on a grammar of homophene groups,
              where the words go (right group, exact within it, with an interval on the right group) and, at
              the replaced words of a corrupted text, how often the speech says the guiding or the true word.

    slots = corpus_slots(s.data)             # per position, the words the grammar may put there
    summary = listener_summary(rows, group_of, subs_path)
"""
from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

from recipes.synthetic_conditions import (GROUND_TRUTH, SUBSTITUTIONS, condition_dir, conditions, generated_ids,
                                          generation_overrides, write_ground_truth)
from recipes.synthetic_scoring import CORPUS_AUDIO, LISTENER_JSON
from recipes.synthetic_words import homophene_words, substitution_following, words_per_clip
from recipes.synthetic_settings import RecipeSettings
from utils.errors import LipVoicerError
from utils.files import atomic_text

log = logging.getLogger(__name__)

LISTENER_CSV = "listener_per_clip.csv"
HOMOPHENE_SWAPS = "corrupted_homophene"   # the guiding text whose every replacement is a homophene
NOT_INSTALLED = "not heard: PocketSphinx is not installed (pip install pocketsphinx==5.1.1)"

COLUMNS = ("video_id", "reference", "hypothesis", "errors", "words")


def corpus_meta(data: Path) -> dict:
    path = data / "synthetic_corpus.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def recorded_slots(data: Path) -> list | None:
    """The slots of groups synthetic_corpus.json records: `homophene_slots` (the homophene grammar) or `slots`
    (homophene_context: the key slot's groups are single keys)."""
    meta = corpus_meta(data)
    return meta.get("homophene_slots") or meta.get("slots")


def corpus_slots(data: Path) -> list[list[str]] | None:
    """Per sentence position, the words it may hold: the groups of a homophene grammar as the corpus recorded
    them, else the words seen at each position in the corpus's transcripts; None when sentences differ in
    length (the free grammar: no slot grammar for the listener)."""
    from dataloaders.text import transcript_from_lrs_text

    slots = recorded_slots(data)
    if slots:
        return [sorted({w for group in slot for w in group}) for slot in slots]
    texts = [transcript_from_lrs_text(p.read_text()).lower().split() for p in sorted((data / "videos").rglob("*.txt"))]
    lengths = {len(t) for t in texts}
    if len(lengths) != 1 or not texts:
        return None
    return [sorted({t[k] for t in texts}) for k in range(lengths.pop())]


def group_lookup(data: Path):
    """group_of(word) -> its homophene group (a tuple), from the groups the corpus recorded; None when the
    corpus has no homophene groups. Raises LipVoicerError for a word outside them (as homophenes.group_of)."""
    slots = recorded_slots(data)
    if not slots:
        return None
    groups = {w: tuple(group) for slot in slots for group in slot for w in group}

    def group_of(word: str) -> tuple[str, ...]:
        try:
            return groups[word]
        except KeyError:
            raise LipVoicerError(f"'{word}' is in no homophene group of the corpus") from None

    return group_of


def read_heard(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return [{**r, "errors": int(r["errors"]), "words": int(r["words"])} for r in csv.DictReader(f)]


def write_heard(path: Path, rows: list[dict]) -> None:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_text(path, buf.getvalue())


def hear(listener, audio: dict[str, Path], refs: dict[str, str], out_csv: Path) -> list[dict]:
    """The listener's rows for these clips; read back from out_csv when it holds exactly these clips."""
    from pipelines.listener import listen

    done = read_heard(out_csv)
    if sorted(r["video_id"] for r in done) == sorted(audio):
        return done
    rows = listen(listener, {vid: (audio[vid], refs[vid]) for vid in audio})
    write_heard(out_csv, rows)
    return rows


def listener_summary(rows: list[dict], group_of=None, subs_path: Path | None = None,
                     swaps_path: Path | None = None) -> dict:
    """WER (percent) with its 95 % interval; with homophene groups, where the words go and the right-group
    percent's interval; with a corrupted text's substitutions, what the speech says at the replaced words.
    swaps_path (the homophene-swapped text's substitutions), for a condition not guided by that text: what its
    speech says at the same places (`at_homophene_swaps`), the baseline of the swapped text's row."""
    from pipelines.intervals import ratio_interval
    from pipelines.listener import corpus_wer_ci

    pct = (lambda v: None if math.isnan(v) else round(100.0 * v, 1))   # no interval from one clip: null in JSON
    wer, (lo, hi) = corpus_wer_ci(rows)
    out = {"n_clips": len(rows), "wer": pct(wer), "wer_ci95": [pct(lo), pct(hi)]}
    if group_of is not None:
        out["words"] = homophene_words(rows, group_of)
        per_clip = words_per_clip(rows, group_of)
        lo, hi = ratio_interval([c["right_group"] for c in per_clip], [c["words"] for c in per_clip])
        out["words"]["right_group_ci95"] = [pct(lo), pct(hi)]
    if subs_path is not None and subs_path.is_file():
        out["substituted_words"] = substitution_following(rows, subs_path)
    elif swaps_path is not None and swaps_path.is_file():
        out["at_homophene_swaps"] = substitution_following(rows, swaps_path).get("homophene")
    return out


def references(s: RecipeSettings, ids: list[str]) -> dict[str, str]:
    from dataloaders.text import transcript_from_lrs_text

    return {vid: transcript_from_lrs_text((s.data / "videos" / "test" / f"{vid}.txt").read_text()) for vid in ids}


def wavs_of(folder: Path, ids: list[str]) -> dict[str, Path]:
    """{clip: its wav} for every clip of ids; an error naming the first missing one."""
    missing = [vid for vid in ids if not (folder / f"{vid}.wav").is_file()]
    if missing:
        raise LipVoicerError(f"{folder}: {len(missing)} of {len(ids)} clips have no .wav, e.g. {missing[0]}.wav "
                             f"(run the generate stage)")
    return {vid: folder / f"{vid}.wav" for vid in ids}


def stage_listen(s: RecipeSettings) -> dict:
    """The listener on the corpus audio, the ground truth and every generated condition (main ones on all test
    clips; sweep and sampler conditions where generated); results/listener.json."""
    from pipelines.listener import SphinxListener, listener_available
    from utils.config import compose_config

    if not listener_available():
        log.warning("listen: %s; the report has no listener rows", NOT_INSTALLED)
        return {}
    slots = corpus_slots(s.data)
    if slots is None:
        log.info("listen: the corpus's sentences differ in length (free grammar): no slot grammar, nothing heard")
        return {}
    listener = SphinxListener(slots)
    group_of = group_lookup(s.data)
    cfg = compose_config(generation_overrides(s))
    gen = cfg["generate"]
    main = conditions(s)
    ids = generated_ids(condition_dir(s, main[0], gen))
    if not ids:
        raise LipVoicerError(f"{condition_dir(s, main[0], gen)}: nothing generated yet (run the generate stage)")
    if not condition_dir(s, GROUND_TRUTH, gen).is_dir():   # generated before the ground-truth column existed
        write_ground_truth(s, cfg, ids)
    folders = {CORPUS_AUDIO: s.data / "audios" / "test", GROUND_TRUTH: condition_dir(s, GROUND_TRUTH, gen),
               **{c.name: condition_dir(s, c, gen) for c in main}}
    for c in conditions(s, "extra"):
        folder = condition_dir(s, c, gen)
        if folder.is_dir() and generated_ids(folder):
            folders[c.name] = folder
    same_clips = {CORPUS_AUDIO, GROUND_TRUTH, *(c.name for c in main)}
    results = {}
    for name, folder in folders.items():
        # the main conditions, the corpus audio and the ground truth on the same test clips; the sweep and
        # the samplers on theirs
        clip_ids = ids if name in same_clips else generated_ids(folder)
        rows = hear(listener, wavs_of(folder, clip_ids), references(s, clip_ids),
                    s.work_dir / "results" / name / LISTENER_CSV)
        subs = s.texts_dir(name) / SUBSTITUTIONS
        results[name] = listener_summary(rows, group_of, subs if subs.is_file() else None,
                                         s.texts_dir(HOMOPHENE_SWAPS) / SUBSTITUTIONS)
        log.info("listen: %s: WER %.1f %% %s on %d clips", name, results[name]["wer"], results[name]["wer_ci95"],
                 len(rows))
    out = {"listener": "PocketSphinx 5.1.1, its en-us acoustic model and CMUdict, the corpus's slots as a JSGF "
                       "grammar, a fresh decoder per clip", "slots": slots, "conditions": results}
    atomic_text(s.work_dir / "results" / LISTENER_JSON, json.dumps(out, indent=1) + "\n")
    return out


STAGE_FUNCS = {"listen": stage_listen}
