"""The table lip-to-speech papers print beside LipVoicer's (evaluate.table=paper; docs/evaluate.md).

LipVoicer's columns, WER, STOI-Net, DNSMOS, LSE-C and LSE-D, plus the speaker similarity of newer papers,
one row per system and one for the ground truth (the ceiling a reader compares with), each cell a mean over
clips with its 95 % bootstrap interval (pipelines/intervals.py):

| column | from the per-clip rows of pipelines/evaluation.py |
| --- | --- |
| WER (%) | corpus WER (all word errors / all reference words), its interval resampling clips |
| STOI-Net | `stoi_net` when a STOI-Net model was given (run_evaluation(..., stoi_net=...)); else the column is **intrusive STOI** (pystoi against the ground truth, named so: not the same number; 1 for the ground truth by definition, so not shown there) |
| DNSMOS | DNSMOS P.835 OVRL (speechmos, the official ONNX model) |
| LSE-C, LSE-D | SyncNet on the clip's video (pipelines/clip_sync.py) |
| speaker similarity | cosine of speaker embeddings, generated vs ground truth (not shown for the ground truth: 1) |

Systems compared are scored on the clips they all have; the ground-truth row uses those clips too, with
its own scores (evaluate.score_ground_truth, which evaluate.table=paper turns on).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from pipelines.intervals import mean_interval, ratio_interval
from utils.files import atomic_text

GROUND_TRUTH = "ground truth"


def _has(rows: Sequence[dict], key: str) -> bool:
    return any(math.isfinite(r.get(key, math.nan)) for r in rows)


def columns(rows: Sequence[dict]) -> list[tuple[str, str, float, int]]:
    """(label, key, scale, digits) of the table's columns for these rows (STOI-Net or intrusive STOI)."""
    stoi = ("STOI-Net ↑", "stoi_net") if _has(rows, "stoi_net") else ("STOI (intrusive) ↑", "stoi")
    return [("WER (%) ↓", "corpus_wer", 100.0, 2), (*stoi, 1.0, 3), ("DNSMOS OVRL ↑", "dnsmos_ovrl", 1.0, 3),
            ("LSE-C ↑", "lse_c", 1.0, 3), ("LSE-D ↓", "lse_d", 1.0, 3), ("speaker sim. ↑", "speaker_sim", 1.0, 3)]


def _cell_value(rows: Sequence[dict], key: str, prefix: str, n_boot: int) -> tuple[float, float, float]:
    """(mean, low, high) of one column over rows; the ground truth's columns have the prefix gt_."""
    if key == "corpus_wer":
        scored = [r for r in rows if math.isfinite(r.get(f"{prefix}wer", math.nan))]
        errors = [r[f"{prefix}word_errors"] for r in scored]
        words = [r["ref_words"] for r in scored]
        if not scored or sum(words) <= 0:
            return math.nan, math.nan, math.nan
        return (sum(errors) / sum(words), *ratio_interval(errors, words, n_boot))
    values = [r.get(f"{prefix}{key}", math.nan) for r in rows]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, math.nan
    return (sum(finite) / len(finite), *mean_interval(finite, n_boot))


def _not_for_ground_truth(key: str) -> bool:
    return key in ("stoi", "speaker_sim")   # against itself: 1 by definition


def paper_rows(systems: dict[str, Sequence[dict]], n_boot: int = 2000) -> dict:
    """{"columns", "rows": {system or "ground truth": {key: [mean, low, high]}}, "n_clips"} on the clips common
    to every system (by video_id)."""
    names = list(systems)
    common = sorted(set.intersection(*[{r["video_id"] for r in rows} for rows in systems.values()])) if names else []
    aligned = {s: sorted((r for r in rows if r["video_id"] in set(common)), key=lambda r: r["video_id"])
               for s, rows in systems.items()}
    cols = columns([r for rows in aligned.values() for r in rows])
    out = {"columns": [{"label": lab, "key": k} for lab, k, _, _ in cols], "n_clips": len(common),
           "bootstrap": int(n_boot), "rows": {}}
    for s in names:
        out["rows"][s] = {k: list(_cell_value(aligned[s], k, "", n_boot)) for _, k, _, _ in cols}
    if names:
        first = aligned[names[0]]
        out["rows"][GROUND_TRUTH] = {k: ([math.nan] * 3 if _not_for_ground_truth(k) else
                                         list(_cell_value(first, k, "gt_", n_boot))) for _, k, _, _ in cols}
    out["scales"] = {k: (sc, d) for _, k, sc, d in cols}
    return out


def _fmt(cell, scale: float, digits: int) -> str:
    v, lo, hi = cell
    if not math.isfinite(v):
        return "—"
    text = f"{v * scale:.{digits}f}"
    if math.isfinite(lo) and math.isfinite(hi):
        text += f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
    return text


def paper_markdown(res: dict, recognizer: str | None = None, normaliser: str | None = None) -> str:
    labels = [c["label"] for c in res["columns"]]
    keys = [c["key"] for c in res["columns"]]
    lines = ["| system | " + " | ".join(labels) + " |", "|" + " --- |" * (len(labels) + 1)]
    for name, cells in res["rows"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(cells[k], *res["scales"][k]) for k in keys) + " |")
    notes = [f"{res['n_clips']} clips; mean [95 % bootstrap interval, {res['bootstrap']} resamples of clips]; "
             "— = not measured (or 1 by definition for the ground truth)."]
    if "stoi" in keys:
        notes.append("STOI is intrusive STOI (pystoi, against the ground truth), not the STOI-Net LipVoicer reports.")
    if recognizer:
        notes.append(f"WER: {recognizer}" + (f", text normaliser: {normaliser}" if normaliser else "") +
                     " (WERs under other recognisers or normalisers are not comparable).")
    notes.append("DNSMOS: P.835 OVRL. LSE-C / LSE-D: SyncNet (syncnet_v2.model), docs/evaluate.md.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def _jsonable(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def write_paper_table(systems: dict[str, Sequence[dict]], out_dir: str | Path, n_boot: int = 2000,
                      recognizer: str | None = None, normaliser: str | None = None) -> dict:
    """paper_table.md and paper_table.json in out_dir (atomically); returns {"table", "result", "outputs"}."""
    res = paper_rows(systems, n_boot)
    table = paper_markdown(res, recognizer, normaliser)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {**{k: v for k, v in res.items() if k != "scales"}, "recognizer": recognizer,
               "text_normalizer": normaliser}
    outputs = {"paper_md": atomic_text(out_dir / "paper_table.md", table),
               "paper_json": atomic_text(out_dir / "paper_table.json", json.dumps(_jsonable(summary), indent=2) + "\n")}
    return {"table": table, "result": res, "outputs": outputs}
