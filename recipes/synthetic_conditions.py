"""The conditions the synthetic recipe generates and scores, beyond its three ways.

A condition is one generation of (part of) the test split with one setting: no ASR guidance,
guidance from the true or a corrupted text, a guidance weight or start step of the sweep, or a
fast sampler. Each is generated into `<work_dir>/generated/<name>/`, vocoded like the others and
scored by the judge into `<work_dir>/results/<name>/`.

    main       no_guidance, true_text, corrupted_text (and, on the homophene grammar,
               corrupted_homophene / corrupted_other: every replacement a homophene of the true
               word / a word of another group), on --n_test clips
    sweep      true-text guidance at w_asr 0.5 and 3 (0 and 1.5 are no_guidance and true_text);
               then asr_start earlier and later at the best weight, on --sweep_clips clips
    samplers   DDIM and DPM-Solver++ at 10 and 25 steps, without and with true-text guidance,
               on --sweep_clips clips (the ancestral sampler's rows are the main conditions on
               the same clips)
"""
from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from utils.errors import LipVoicerError

log = logging.getLogger(__name__)

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


def main_conditions(homophene: bool) -> list[Condition]:
    ways = ["no_guidance", "true_text", "corrupted_text"] + (["corrupted_homophene", "corrupted_other"]
                                                            if homophene else [])
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


# ----------------------------------------------------------------------------- texts
def corrupt_words(words: list[str], fraction: float, rng: random.Random, kind: str, group_of, vocabulary: list[str]):
    """Replace round(fraction * len) words (at least one): kind "homophene" by another member of the word's
    group, "other" by a word of another group, "mixed" by either with probability one half. Returns (new
    words, [[position, kind, true word, new word], ...])."""
    words = list(words)
    n = max(1, round(fraction * len(words)))
    subs = []
    for i in sorted(rng.sample(range(len(words)), min(n, len(words)))):
        k = kind if kind != "mixed" else rng.choice(("homophene", "other"))
        group = group_of(words[i])
        pool = [w for w in group if w != words[i]] if k == "homophene" else [w for w in vocabulary if w not in group]
        new = rng.choice(pool)
        subs.append([i, k, words[i], new])
        words[i] = new
    return words, subs


def write_homophene_texts(texts_dir, test_texts: dict[str, str], fraction: float, seed: int) -> dict[str, float]:
    """texts_dir(way)/<id>.txt for the three corrupted ways of the homophene grammar, with
    substitutions.json beside each; returns the fraction of words replaced per way."""
    from dataloaders.synthetic import homophenes

    vocab = homophenes.vocabulary()
    out = {}
    for way, kind in (("corrupted_text", "mixed"), ("corrupted_homophene", "homophene"), ("corrupted_other", "other")):
        rng = random.Random(f"{seed}:{way}")
        subs_all, changed, total = {}, 0, 0
        for vid, text in sorted(test_texts.items()):
            words, subs = corrupt_words(text.split(), fraction, rng, kind, homophenes.group_of, vocab)
            subs_all[vid] = subs
            changed, total = changed + len(subs), total + len(words)
            path = Path(texts_dir(way)) / f"{vid}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(" ".join(words) + "\n")
        (Path(texts_dir(way)) / SUBSTITUTIONS).write_text(json.dumps(subs_all, indent=0))
        out[way] = changed / max(total, 1)
    return out


# ----------------------------------------------------------------------------- scores
def read_rows(csv_path: Path) -> list[dict]:
    """metrics_per_clip.csv -> rows with numbers as floats (what pipelines.evaluation.summarise takes)."""
    from pipelines.evaluation import CSV_COLUMNS, TEXT_COLUMNS

    text_cols = set(TEXT_COLUMNS)
    rows = []
    with csv_path.open() as f:
        for r in csv.DictReader(f):
            row = {}
            for k in CSV_COLUMNS:
                v = r.get(k, "")
                row[k] = v if k in text_cols else (float(v) if v not in ("", None) else math.nan)
            rows.append(row)
    return rows


def subset_summary(csv_path: Path, ids: list[str]) -> dict | None:
    """The judge's summary over only these clips (so conditions on fewer clips compare with the main ones)."""
    from pipelines.evaluation import summarise

    if not csv_path.is_file():
        return None
    keep = set(ids)
    rows = [r for r in read_rows(csv_path) if r["video_id"] in keep]
    return summarise(rows) if rows else None


def flat_scores(summary: dict | None) -> dict:
    """One condition's numbers as the report gives them: WER / CER in percent, means, DNSMOS."""
    if not summary:
        return {}
    pct = (lambda v: None if v is None else round(100.0 * v, 2))
    means = summary.get("means") or {}
    dn = (summary.get("dnsmos") or {}).get("means") or {}
    out = {"wer": pct(summary.get("corpus_wer")), "cer": pct(summary.get("corpus_cer")),
           "stoi": means.get("stoi"), "estoi": means.get("estoi"), "log_mel_l1": means.get("log_mel_l1"),
           "dnsmos_ovrl": dn.get("dnsmos_ovrl"), "dnsmos_sig": dn.get("dnsmos_sig"), "dnsmos_bak": dn.get("dnsmos_bak"),
           "n_clips": summary.get("n_clips")}
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def substitution_following(csv_path: Path, subs_path: Path) -> dict:
    """For each replaced word of a corrupted way: does the judge hear the guiding (wrong) word, the true word,
    or something else? Word positions are compared where the judge's reading has as many words as the
    sentence (the grammar's six); other clips count as unaligned."""
    if not csv_path.is_file() or not subs_path.is_file():
        return {}
    subs = json.loads(subs_path.read_text())
    rows = {r["video_id"]: r for r in read_rows(csv_path)}
    counts: dict[str, dict[str, int]] = {}
    for vid, items in subs.items():
        row = rows.get(vid)
        if row is None:   # not generated (fewer clips than texts)
            continue
        hyp, ref = row["hypothesis"].split(), row["reference"].split()
        for pos, kind, true_word, guide_word in items:
            c = counts.setdefault(kind, {"replaced": 0, "follows_guidance": 0, "follows_truth": 0, "other": 0,
                                         "unaligned": 0})
            c["replaced"] += 1
            if len(hyp) != len(ref):
                c["unaligned"] += 1
            elif hyp[pos] == guide_word:
                c["follows_guidance"] += 1
            elif hyp[pos] == true_word:
                c["follows_truth"] += 1
            else:
                c["other"] += 1
    for c in counts.values():
        n = max(c["replaced"], 1)
        c["follows_guidance_pct"] = round(100.0 * c["follows_guidance"] / n, 1)
        c["follows_truth_pct"] = round(100.0 * c["follows_truth"] / n, 1)
    return counts


def homophene_words(csv_path: Path, group_of) -> dict:
    """Where the judge's words go, on the homophene grammar: of the reference words (aligned by edit distance),
    the percent read exactly, read as a word of the right homophene group (exact included: the lips were
    rendered right), read as a word of another group, or deleted; and the words inserted. Right group but not
    exact is the ambiguity ASR guidance is there to resolve; a wrong group is the lip stream's error."""
    import jiwer

    if not csv_path.is_file():
        return {}

    def group(word):
        try:
            return group_of(word)
        except LipVoicerError:
            return None

    n = exact = right_group = other = deleted = inserted = 0
    for row in read_rows(csv_path):
        ref, hyp = row["reference"].split(), row["hypothesis"].split()
        if not ref:
            continue
        if not hyp:
            n, deleted = n + len(ref), deleted + len(ref)
            continue
        for chunk in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]:
            k = chunk.ref_end_idx - chunk.ref_start_idx
            if chunk.type == "equal":
                n, exact, right_group = n + k, exact + k, right_group + k
            elif chunk.type == "delete":
                n, deleted = n + k, deleted + k
            elif chunk.type == "insert":
                inserted += chunk.hyp_end_idx - chunk.hyp_start_idx
            else:   # substitute: as many reference as hypothesis words
                for i, j in zip(range(chunk.ref_start_idx, chunk.ref_end_idx), range(chunk.hyp_start_idx, chunk.hyp_end_idx)):
                    n += 1
                    g = group(hyp[j])
                    if g is not None and g == group(ref[i]):
                        right_group += 1
                    elif g is not None:
                        other += 1
    pct = (lambda v: round(100.0 * v / max(n, 1), 1))
    return {"words": n, "exact_pct": pct(exact), "right_group_pct": pct(right_group),
            "exact_within_right_group_pct": round(100.0 * exact / max(right_group, 1), 1),
            "other_group_word_pct": pct(other), "deleted_pct": pct(deleted), "inserted_words": inserted}


def guidance_asr_wer(cfg, asr_ckpt: str, tokenizer_path: str, t_values=(10, 25, 40), max_clips: int = 0) -> dict:
    """The guidance ASR's greedy WER (percent) on the ground-truth test mels: clean, and noised to x_t at
    each t of t_values (the inputs it sees while guiding), with a fixed seed."""
    import torch
    from torch.utils.data import DataLoader

    from dataloaders.asr_dataset import ASRDataset, collate_asr
    from dataloaders.tokenizer import BPETokenizer
    from models.builders import load_asr
    from models.diffusion.schedule import DiffusionSchedule
    from trainers.asr import evaluate

    tok = BPETokenizer(tokenizer_path)
    ds = ASRDataset(cfg, "test", tok, max_clips=max_clips, substitute=False)
    loader = DataLoader(ds, batch_size=8, shuffle=False, collate_fn=collate_asr)
    model = load_asr(asr_ckpt, cfg, "cpu")
    schedule = DiffusionSchedule.from_config(cfg["diffusion"], "cpu")
    res = evaluate(model, schedule, loader, tok, [0, *t_values], "cpu", seed=123)
    return {("clean" if t == 0 else f"t={t}"): round(100.0 * r["wer"], 2) for t, r in res.items()}


class GenerationClock:
    """Seconds per clip of each condition's generation, kept in <work_dir>/generation_seconds.json."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def record(self, name: str, seconds: float, clips: int, note: str) -> None:
        data = self.read()
        data[name] = {"seconds": round(seconds, 1), "clips": clips,
                      "seconds_per_clip": round(seconds / max(clips, 1), 2), "note": note}
        self.path.write_text(json.dumps(data, indent=1))


def timed(fn):
    t0 = time.time()
    fn()
    return time.time() - t0


def best_weight(results: dict[str, dict], default: float) -> float:
    """The sweep's weight (> 0) with the lowest judge WER on the sweep clips (ties: the default)."""
    scored = [(r["wer"], w != default, w) for w, r in results.items() if w > 0 and r and r.get("wer") is not None]
    if not scored:
        raise LipVoicerError("the weight sweep has no scored condition yet (run the evaluate stage)")
    return min(scored)[2]
