"""Per-clip scores of the synthetic recipe, read back from what a recogniser wrote: the judge's
metrics_per_clip.csv (evaluate.py) or the listener's listener_per_clip.csv (recipes/synthetic_listening.py).

    rows = read_rows(csv_path)                       # numbers as floats
    flat_scores(subset_summary(csv_path, ids))       # a condition's numbers on some of its clips
    homophene_words(rows, group_of)                  # where the words go: exact, right group, other group
    substitution_following(rows, subs_path)          # at a corrupted text's replaced words: guiding or true word
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from utils.errors import LipVoicerError


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


def clip_rows(source) -> list[dict]:
    """Per-clip rows with video_id, reference and hypothesis: a metrics_per_clip.csv (the judge's), a
    listener_per_clip.csv, or the rows themselves; [] for a file that is not there."""
    if isinstance(source, (str, Path)):
        return read_rows(Path(source)) if Path(source).is_file() else []
    return list(source)


def substitution_following(source, subs_path: Path) -> dict:
    """For each replaced word of a corrupted way: does the recogniser (the judge, or the listener) hear the
    guiding (wrong) word, the true word, or something else? Word positions are compared where the reading has
    as many words as the sentence (the grammar's six); other clips count as unaligned. `source`: see clip_rows."""
    rows = {r["video_id"]: r for r in clip_rows(source)}
    if not rows or not subs_path.is_file():
        return {}
    subs = json.loads(subs_path.read_text())
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


def words_per_clip(source, group_of) -> list[dict]:
    """Per clip, where its reference words go (aligned by edit distance): counts of words, exact, right_group
    (exact included), other_group, deleted, inserted. `source`: see clip_rows; group_of(word) gives a word's
    homophene group (or raises LipVoicerError for a word outside the grammar)."""
    import jiwer

    def group(word):
        try:
            return group_of(word)
        except LipVoicerError:
            return None

    out = []
    for row in clip_rows(source):
        ref, hyp = row["reference"].split(), row["hypothesis"].split()
        c = {"video_id": row["video_id"], "words": len(ref), "exact": 0, "right_group": 0, "other_group": 0,
             "deleted": 0, "inserted": 0}
        if not ref:
            continue
        if not hyp:
            c["deleted"] = len(ref)
            out.append(c)
            continue
        for chunk in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]:
            k = chunk.ref_end_idx - chunk.ref_start_idx
            if chunk.type == "equal":
                c["exact"] += k
                c["right_group"] += k
            elif chunk.type == "delete":
                c["deleted"] += k
            elif chunk.type == "insert":
                c["inserted"] += chunk.hyp_end_idx - chunk.hyp_start_idx
            else:   # substitute: as many reference as hypothesis words
                for i, j in zip(range(chunk.ref_start_idx, chunk.ref_end_idx), range(chunk.hyp_start_idx, chunk.hyp_end_idx)):
                    g = group(hyp[j])
                    if g is not None and g == group(ref[i]):
                        c["right_group"] += 1
                    elif g is not None:
                        c["other_group"] += 1
        out.append(c)
    return out


def homophene_words(source, group_of) -> dict:
    """Where the recogniser's words go, on a grammar of homophene groups: of the reference words (aligned by
    edit distance), the percent read exactly, read as a word of the right homophene group (exact included: the
    lips were rendered right), read as a word of another group, or deleted; and the words inserted. Right group
    but not exact is the ambiguity ASR guidance is there to resolve; a wrong group is the lip stream's error.
    `source`: see clip_rows (an absent file gives {})."""
    per_clip = words_per_clip(source, group_of)
    if not per_clip:
        return {}
    n, exact, right_group, other, deleted, inserted = (
        sum(c[k] for c in per_clip) for k in ("words", "exact", "right_group", "other_group", "deleted", "inserted"))
    pct = (lambda v: round(100.0 * v / max(n, 1), 1))
    return {"words": n, "exact_pct": pct(exact), "right_group_pct": pct(right_group),
            "exact_within_right_group_pct": round(100.0 * exact / max(right_group, 1), 1),
            "other_group_word_pct": pct(other), "deleted_pct": pct(deleted), "inserted_words": inserted}
