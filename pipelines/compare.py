"""Comparing result folders (evaluate.compare): means with 95 % bootstrap intervals, paired per-clip
differences against the first system, and a figure.

Every folder is scored by run_evaluation with the same settings; the comparison uses the clips that
every system has (by ground-truth id). WER is the length-normalised corpus WER (total word errors /
total reference words over the clips, as papers report it); its interval resamples clips and
recomputes that ratio. The per-clip mean WER is reported beside it. Bootstrap: numpy, fixed seed.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from omegaconf import OmegaConf

from pipelines.clip_sync import build_clip_sync
from pipelines.evaluation import run_evaluation
from pipelines.metrics import DNSMOS_KEYS
from utils.distributed import resolve_device
from utils.errors import LipVoicerError
from utils.files import atomic_text

# (key, label, scale, digits, higher is better)
COMPARED = (("corpus_wer", "WER (%, corpus)", 100.0, 2, False), ("wer", "WER (%, per-clip mean)", 100.0, 2, False),
            ("stoi", "STOI", 1.0, 3, True), ("estoi", "ESTOI", 1.0, 3, True), ("pesq", "PESQ", 1.0, 3, True),
            ("mcd", "MCD (dB)", 1.0, 3, False), ("dnsmos_sig", "DNSMOS SIG", 1.0, 3, True),
            ("dnsmos_bak", "DNSMOS BAK", 1.0, 3, True), ("dnsmos_ovrl", "DNSMOS OVRL", 1.0, 3, True),
            ("dnsmos_p808", "DNSMOS P.808", 1.0, 3, True), ("lse_c", "LSE-C", 1.0, 3, True),
            ("lse_d", "LSE-D", 1.0, 3, False), ("speaker_sim", "speaker similarity", 1.0, 3, True))
SEED = 0


def _stat(key: str, rows: Sequence[dict], idx: np.ndarray) -> float:
    if key == "corpus_wer":
        err = np.array([r["word_errors"] for r in rows], dtype=np.float64)[idx]
        words = np.array([r["ref_words"] for r in rows], dtype=np.float64)[idx]
        ok = np.array([math.isfinite(r["wer"]) for r in rows])[idx]
        return float(err[ok].sum() / words[ok].sum()) if words[ok].sum() > 0 else math.nan
    v = np.array([r.get(key, math.nan) for r in rows], dtype=np.float64)[idx]
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else math.nan


def bootstrap(key: str, rows: Sequence[dict], n: int, rng: np.random.Generator,
              base: Sequence[dict] | None = None) -> tuple[float, float, float]:
    """(value, low, high): the statistic (or, with `base`, statistic(rows) - statistic(base) on the same
    resampled clips: paired) and its 95 % percentile bootstrap interval."""
    all_idx = np.arange(len(rows))

    def f(idx):
        return _stat(key, rows, idx) - (_stat(key, base, idx) if base is not None else 0.0)

    value = f(all_idx)
    if not math.isfinite(value) or len(rows) < 2:
        return value, math.nan, math.nan
    samples = np.array([f(rng.integers(0, len(rows), len(rows))) for _ in range(int(n))])
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return value, math.nan, math.nan
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return value, float(lo), float(hi)


def compare_rows(systems: dict[str, Sequence[dict]], n_boot: int = 2000) -> dict:
    """Per-system means with intervals and paired differences against the first system, on common clips."""
    names = list(systems)
    common = sorted(set.intersection(*[{r["video_id"] for r in rows} for rows in systems.values()]))
    if not common:
        raise LipVoicerError("evaluate.compare: the folders have no clip in common")
    aligned = {s: [next(r for r in rows if r["video_id"] == v) for v in common] for s, rows in systems.items()}
    keys = [k for k, *_ in COMPARED if any(math.isfinite(_stat(k, aligned[s], np.arange(len(common)))) for s in names)]
    out = {"systems": names, "n_common": len(common), "n_clips": {s: len(r) for s, r in systems.items()},
           "bootstrap": int(n_boot), "seed": SEED, "metrics": keys, "means": {}, "differences": {}}
    for s in names:
        rng = np.random.default_rng(SEED)
        out["means"][s] = {k: bootstrap(k, aligned[s], n_boot, rng) for k in keys}
    for s in names[1:]:
        rng = np.random.default_rng(SEED)
        out["differences"][s] = {k: bootstrap(k, aligned[s], n_boot, rng, aligned[names[0]]) for k in keys}
    out["aligned"] = aligned
    return out


def _fmt(v, scale, digits, signed=False):
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v * scale:{'+' if signed else ''}.{digits}f}"


def _cell(t, scale, digits, signed=False):
    v, lo, hi = t
    if not math.isfinite(lo):
        return _fmt(v, scale, digits, signed)
    return f"{_fmt(v, scale, digits, signed)} [{_fmt(lo, scale, digits, signed)}, {_fmt(hi, scale, digits, signed)}]"


def comparison_table(res: dict, recognizer: str | None = None) -> str:
    names, spec = res["systems"], {k: (lab, sc, d, hb) for k, lab, sc, d, hb in COMPARED}
    head = ["metric", *names, *[f"{s} - {names[0]}" for s in names[1:]]]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for k in res["metrics"]:
        lab, sc, d, hb = spec[k]
        cells = [_cell(res["means"][s][k], sc, d) for s in names]
        cells += [_cell(res["differences"][s][k], sc, d, True) for s in names[1:]]
        lines.append(f"| {lab} {'↑' if hb else '↓'} | " + " | ".join(cells) + " |")
    note = (f"\n{res['n_common']} clips common to all systems; mean [95 % bootstrap interval, "
            f"{res['bootstrap']} resamples of clips, seed {res['seed']}]; differences are paired per clip.")
    if recognizer:
        note += f" WER recogniser: {recognizer}."
    return "\n".join(lines) + "\n" + note + "\n"


def comparison_figure(res: dict, path: Path) -> Path:
    """Per-metric distributions (box plots over clips) and a per-clip scatter of the first two systems."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = {k: (lab, sc) for k, lab, sc, *_ in COMPARED}
    keys = [k for k in res["metrics"] if k != "corpus_wer"]
    names = res["systems"]
    cols = min(4, len(keys) + 1)
    rows_n = math.ceil((len(keys) + 1) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.0 * cols, 2.6 * rows_n), dpi=80, squeeze=False)
    axes = axes.ravel()
    for ax, k in zip(axes, keys):
        lab, sc = spec[k]
        data = [[r[k] * sc for r in res["aligned"][s] if math.isfinite(r.get(k, math.nan))] for s in names]
        ax.boxplot([d or [math.nan] for d in data], showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names, fontsize=7, rotation=15)
        ax.set_title(lab, fontsize=9)
        ax.tick_params(labelsize=7)
    ax = axes[len(keys)]
    a, b = names[0], names[1]
    k = "dnsmos_ovrl" if "dnsmos_ovrl" in keys else ("stoi" if "stoi" in keys else keys[0])
    xa = [r.get(k, math.nan) for r in res["aligned"][a]]
    xb = [r.get(k, math.nan) for r in res["aligned"][b]]
    ax.scatter(xa, xb, s=10)
    finite = [v for v in xa + xb if math.isfinite(v)]
    if finite:
        lo, hi = min(finite), max(finite)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel(a, fontsize=8)
    ax.set_ylabel(b, fontsize=8)
    ax.set_title(f"per clip: {spec[k][0]}", fontsize=9)
    ax.tick_params(labelsize=7)
    for extra in axes[len(keys) + 1:]:
        extra.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def run_comparison(cfg, recognizer=None) -> dict:
    """Score each folder of evaluate.compare, then write comparison.md / .json / .png; returns the result
    (with `table` and `outputs`). recognizer: as run_evaluation (None here means the configured one)."""
    ev = cfg["evaluate"]
    folders = [Path(str(f)) for f in (ev.get("compare") or [])]
    if len(folders) < 2:
        raise LipVoicerError("evaluate.compare: give two or more result folders, e.g. "
                             "evaluate.compare=[published/LRS3,generated/run_a]")
    labels = [str(x) for x in (ev.get("compare_labels") or [])] or [f.name or str(f) for f in folders]
    if len(labels) != len(folders) or len(set(labels)) != len(labels):
        raise LipVoicerError(f"evaluate.compare_labels: need {len(folders)} distinct labels, one per folder "
                             f"(got {labels})")
    from pipelines.evaluation import build_recognizer, build_speaker_model, ground_truth_dirs, table_kind

    paper = table_kind(ev) == "paper"
    if recognizer is None:
        recognizer = build_recognizer(cfg)
    # the SyncNet and speaker models are loaded once for all the folders
    sync = build_clip_sync(cfg, ground_truth_dirs(cfg, "video"), resolve_device(ev.get("device", "auto")))
    speaker = build_speaker_model(cfg)
    systems, rec_name, normaliser = {}, None, None
    for label, folder in zip(labels, folders):
        sub = OmegaConf.merge(cfg, {"evaluate": {"generated_dir": str(folder), "out_dir": None, "compare": []}})
        res = run_evaluation(sub, recognizer=recognizer, sync=sync, speaker=speaker)
        systems[label] = res["rows"]
        rec_name, normaliser = res["settings"].get("recognizer"), res["settings"].get("text_normalizer")
    res = compare_rows(systems, int(ev.get("bootstrap", 2000)))
    out = Path(str(ev.get("compare_out") or Path(str(ev.get("out_dir") or folders[0])) / "comparison"))
    table = comparison_table(res, rec_name)
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in res.items() if k != "aligned"}
    summary["recognizer"] = rec_name
    summary["folders"] = {lab: str(f) for lab, f in zip(labels, folders)}
    outputs = {"md": atomic_text(out / "comparison.md", table),
               "json": atomic_text(out / "comparison.json", json.dumps(_jsonable(summary), indent=2) + "\n"),
               "png": comparison_figure(res, out / "comparison.png")}
    if paper:
        from pipelines.paper_table import write_paper_table

        paper_res = write_paper_table(systems, out, int(ev.get("bootstrap", 2000)), rec_name, normaliser)
        outputs.update(paper_res["outputs"])
        table += "\n" + paper_res["table"]
    return {**res, "table": table, "outputs": outputs, "recognizer": rec_name}


def _jsonable(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


__all__ = ["COMPARED", "DNSMOS_KEYS", "bootstrap", "compare_rows", "comparison_figure", "comparison_table",
           "run_comparison"]
