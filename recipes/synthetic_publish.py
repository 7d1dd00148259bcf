"""The synthetic recipe's report stage: the full report, and what --publish puts into the repository.

  report      results_full.json (every condition, the sweep, the samplers, chance levels, the guidance
              ASR's WER on noisy mels, stage times); with --publish the same under docs/results/, with
              samples, figures and the model set

    report = write_full_report(s)    # <work_dir>/results_full.json
    publish(s, report)               # docs/results/synthetic_<grammar>_<size>.json,
                                     # docs/samples/synthetic_<grammar>/ (FLAC + texts.csv),
                                     # docs/images/synthetic_<grammar>_<size>.png and _sweep.png,
                                     # model_sets/synthetic/ + configs/models/synthetic.yaml + the
                                     # example clip (recipes/synthetic_model_set.py)

Everything here is read from what the recipe's stages wrote (results/<condition>/, generated/,
texts/, stage_times.json, generation_seconds.json); nothing is typed in by hand. A new scoring
stage's numbers enter the report in write_full_report.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path

from recipes.synthetic_conditions import (GROUND_TRUTH, SUBSTITUTIONS, GenerationClock, condition_dir, conditions,
                                          generated_ids, generation_overrides, run_dir_of, sampler_conditions,
                                          start_sweep)
from recipes.synthetic_model_set import NAME, export_model_set
from recipes.synthetic_scoring import (CORPUS_AUDIO, best_weight, chance_wer, guidance_asr_wer, read_listener, sweep_ids,
                                       weight_results)
from recipes.synthetic_words import flat_scores, homophene_words, subset_summary, substitution_following
from recipes.synthetic_settings import RecipeSettings, corpus_overrides, newest, stage_times
from recipes.synthetic_training import iterations_reached, wall_seconds
from utils.files import atomic_text

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CLIPS = 8
SAMPLE_CONDITIONS = (GROUND_TRUTH, "no_guidance", "true_text", "corrupted_text")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        gpu = None
    return f"{os.cpu_count()} CPU cores ({cpu})" + (f", {gpu}" if gpu else ", no GPU") + f", {platform.system()}"


def recipe_command(s: RecipeSettings) -> str:
    """The one command that reproduces this run (every stage; re-running it resumes)."""
    parts = ["python recipes/synthetic.py", f"--work_dir {s.work_dir.name}", f"--size {s.size}",
             f"--grammar {s.grammar}", f"--n_clips {s.n_clips}"]
    if s.audio_clips:
        parts.append(f"--audio_clips {s.audio_clips}")
    if s.asr_size:
        parts.append(f"--asr_size {s.asr_size}")
    if s.asr_max_t is not None:
        parts.append(f"--asr_max_t {s.asr_max_t}")
    parts += [f"--workers {s.workers}"]
    if s.loader_workers is not None:
        parts.append(f"--loader_workers {s.loader_workers}")
    if s.threads:
        parts.append(f"--threads {s.threads}")
    if s.parallel:
        parts.append("--parallel")
    if s.train_minutes:
        parts.append(f"--train_minutes {s.train_minutes:g}")
    parts += [f"--melgen_iters {s.melgen_iters}", f"--asr_iters {s.asr_iters}", f"--judge_iters {s.judge_iters}"]
    if s.lipreader_iters:
        parts.append(f"--lipreader_iters {s.lipreader_iters}")
    if s.n_test:
        parts.append(f"--n_test {s.n_test}")
    if s.sweep_clips:
        parts.append(f"--sweep_clips {s.sweep_clips}")
    parts.append(f"--vocab_size {s.vocab_size}")
    if s.publish:
        parts.append("--publish")
    return " ".join(parts + list(s.extra))


def _summary(s: RecipeSettings, name: str) -> dict | None:
    path = s.work_dir / "results" / name / "metrics_summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _test_specs(s: RecipeSettings, ids: list[str]):
    from dataloaders.synthetic.context_grammar import context_from_settings
    from dataloaders.synthetic.corpus import plan_corpus, synthetic_settings
    from utils.config import compose_config

    syn = synthetic_settings(compose_config(corpus_overrides(s)))
    syn.update(n_clips=s.n_clips, seed=s.seed)
    keep = {f"test/{v}" for v in ids}
    specs = plan_corpus(s.n_clips, s.seed, syn.get("splits"), int(syn["n_speakers"]), int(syn["n_test_speakers"]),
                        s.grammar, context_from_settings(syn))
    return [c for c in specs if c.rel in keep], syn


def homophene_measures(s: RecipeSettings, ids: list[str]) -> dict:
    """Within-group chance (a perfect lip reader's WER) and the fraction of test words whose mouth track is
    that of every other member of their group, on these test clips."""
    from dataloaders.synthetic import homophenes
    from dataloaders.synthetic.corpus import identical_mouth_tracks

    specs, syn = _test_specs(s, ids)
    same, total = identical_mouth_tracks(specs, syn)
    out = {"identical_mouth_track_fraction": round(same / max(total, 1), 4), "identical_mouth_track_words": [same, total]}
    if s.grammar == "homophene":
        words = [w for c in specs for w in c.sentence.split()]
        out["lip_only_chance_wer"] = round(100.0 * homophenes.lip_only_chance_wer(words), 2)
        out["homophene_slots"] = [[list(g) for g in slot] for slot in homophenes.homophene_slots()]
        return out
    # homophene_context: the key's table decides some members; how often, on these test sentences
    from dataloaders.synthetic.context_grammar import context_stats

    meta = json.loads((s.data / "synthetic_corpus.json").read_text())
    stats = context_stats(meta, [c.sentence for c in specs])
    out.update(lip_only_chance_wer=stats["lip_only_wer_pct"], context=stats, homophene_slots=meta["slots"])
    return out


def clips_without_crops(s: RecipeSettings) -> dict[str, list[int]]:
    """Per split of the video corpus: [clips mouth cropping found no usable face track in, clips] (they are left
    out of training and of the test list)."""
    out = {}
    for split_dir in sorted((s.data / "videos").glob("*")):
        if split_dir.name == "audio_only" or not split_dir.is_dir():
            continue
        clips = [p.relative_to(split_dir).with_suffix("") for p in split_dir.glob("*/*.mp4")]
        crops = s.data / "mouth_rois" / split_dir.name
        missing = sum(not (crops / c).with_suffix(".npz").is_file() for c in clips)
        out[split_dir.name] = [missing, len(clips)]
    return out


def write_full_report(s: RecipeSettings) -> dict:
    from utils.config import compose_config

    cfg = compose_config(generation_overrides(s))
    gen = cfg["generate"]
    T = int(cfg["diffusion"]["T"])
    main = conditions(s)
    ids = generated_ids(condition_dir(s, main[0], gen))
    times = GenerationClock(s.work_dir / "generation_seconds.json").read()
    res = s.work_dir / "results"

    heard = read_listener(s)
    by_condition = {}
    for name in (GROUND_TRUTH, *(c.name for c in main)):
        row = flat_scores(_summary(s, name))
        if name in times:
            row["seconds_per_clip"] = times[name]["seconds_per_clip"]
        if s.homophenes:
            from dataloaders.synthetic.corpus import group_function

            row["words"] = homophene_words(res / name / "metrics_per_clip.csv", group_function(s.grammar))
        subs = s.texts_dir(name) / SUBSTITUTIONS
        if subs.is_file():
            row["substituted_words"] = substitution_following(res / name / "metrics_per_clip.csv", subs)
        if name in heard:
            row["listener"] = heard[name]
        by_condition[name] = row

    sweep, samplers = [], []
    if s.sweep_clips:
        sw_ids = sweep_ids(s, gen)
        weights = weight_results(s, gen)
        for w, row in weights.items():
            sweep.append({"w_asr": w, "asr_start": int(gen["asr_start"]), **row})
        try:
            best = best_weight(weights, float(gen["w_asr"]))
        except Exception:  # noqa: BLE001 - the sweep is not scored yet
            best = None
        if best is not None:
            for c in start_sweep(best, int(gen["asr_start"]), T):
                row = flat_scores(subset_summary(res / c.name / "metrics_per_clip.csv", sw_ids))
                if row:
                    sweep.append({"w_asr": best, "asr_start": c.asr_start, **row})
        for way, guided in (("no_guidance", False), ("true_text", True)):
            row = flat_scores(subset_summary(res / way / "metrics_per_clip.csv", sw_ids))
            samplers.append({"sampler": "ancestral", "steps": T, "guidance": "true_text" if guided else "none",
                             "seconds_per_clip": (times.get(way) or {}).get("seconds_per_clip"), **row})
        for c in sampler_conditions(T):
            row = flat_scores(subset_summary(res / c.name / "metrics_per_clip.csv", sw_ids))
            if row:
                samplers.append({"sampler": c.sampler, "steps": c.steps, "guidance": c.texts or "none",
                                 "seconds_per_clip": (times.get(c.name) or {}).get("seconds_per_clip"), **row})

    stage_s = stage_times(s)
    asr = newest(s.asr_dir("guidance"))
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "command": recipe_command(s),
        "wall_minutes": round(wall_seconds(s, stage_s) / 60.0, 1),
        "stage_minutes": {k: round(v / 60.0, 1) for k, v in stage_s.items()},
        "training_stages_in_parallel": s.parallel,
        "iterations": iterations_reached(s),
        "test_clips": len(ids),
        "sweep_clips": min(s.sweep_clips, len(ids)) if s.sweep_clips else 0,
        "grammar": s.grammar,
        "audio_only_utterances": s.audio_clips,
        "clips_without_mouth_crops": clips_without_crops(s),
        "other_sentence_chance_wer": None,
        "guidance_asr_wer": (guidance_asr_wer(cfg, str(asr[1]), str(s.tokenizer),
                                                 t_values=(T // 5, T // 2, 4 * T // 5)) if asr else None),
        "conditions": by_condition,
        "listener_corpus_audio": heard.get(CORPUS_AUDIO),
        "listener_extra_conditions": {k: v for k, v in heard.items() if k not in by_condition and k != CORPUS_AUDIO},
        "sweep": sweep,
        "samplers": samplers,
        "generation_seconds_note": next(iter(times.values()), {}).get("note"),
    }
    chance = chance_wer(s, ids)
    report["other_sentence_chance_wer"] = None if chance is None else round(100.0 * chance, 2)
    if s.homophenes:
        report.update(homophene_measures(s, ids))
    atomic_text(s.work_dir / "results_full.json", json.dumps(report, indent=1) + "\n")
    return report


def stage_report(s: RecipeSettings) -> None:
    """results_full.json and, with --publish, the same under docs/results/ with samples, figures and the
    model set."""
    report = write_full_report(s)
    if s.publish:
        publish(s, report)


# ----------------------------------------------------------------------------- into the repository
def publish(s: RecipeSettings, report: dict) -> dict[str, Path]:
    """The report, SAMPLE_CLIPS test clips of each of SAMPLE_CONDITIONS as FLAC with texts.csv, and the
    figures, under docs/ of the repository."""
    root = s.publish_root or REPO_ROOT
    name = f"synthetic_{s.grammar}_{s.size}"
    out = {"json": root / "docs" / "results" / f"{name}.json",
           "samples": root / "docs" / "samples" / f"synthetic_{s.grammar}",
           "figure": root / "docs" / "images" / f"{name}.png",
           "sweep_figure": root / "docs" / "images" / f"{name}_sweep.png",
           "model_set": root / "model_sets" / NAME}
    atomic_text(out["json"], json.dumps(report, indent=1) + "\n")
    write_samples(s, out["samples"])
    fig = s.work_dir / "figure.png"
    if fig.is_file():
        out["figure"].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fig, out["figure"])
    if report.get("sweep"):
        sweep_figure(report, out["sweep_figure"])
    export_model_set(s, out["model_set"], root / "configs" / "models" / f"{NAME}.yaml", report,
                     example=root / "examples")
    log.info("published: %s", ", ".join(str(p.relative_to(root)) for p in out.values()))
    return out


def write_samples(s: RecipeSettings, folder: Path, n: int = SAMPLE_CLIPS) -> None:
    import soundfile as sf

    from dataloaders.text import transcript_from_lrs_text
    from utils.config import compose_config

    gen = compose_config(generation_overrides(s))["generate"]
    dirs = {c: run_dir_of(s, c, gen) for c in SAMPLE_CONDITIONS}
    ids = generated_ids(dirs["no_guidance"])[:n]
    if folder.exists():
        shutil.rmtree(folder)
    rows = []
    for cond, d in dirs.items():
        (folder / cond).mkdir(parents=True, exist_ok=True)
        for vid in ids:
            audio, sr = sf.read(str(d / f"{vid}.wav"), dtype="float32")
            clip = vid.replace("/", "_")
            sf.write(str(folder / cond / f"{clip}.flac"), audio, sr, format="FLAC", subtype="PCM_16")
            true = transcript_from_lrs_text((s.data / "videos" / "test" / f"{vid}.txt").read_text())
            guide_file = s.texts_dir(cond) / f"{vid}.txt"
            guide = guide_file.read_text().strip() if guide_file.is_file() else ""
            rows.append({"clip": clip, "condition": cond, "guiding_text": guide, "true_text": true})
    with (folder / "texts.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["clip", "condition", "guiding_text", "true_text"])
        w.writeheader()
        w.writerows(rows)


def sweep_figure(report: dict, path: Path) -> Path:
    """Judge WER against w_asr (true-text guidance, default asr_start), with the asr_start points at the
    best weight; the within-group chance as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["sweep"]
    start0 = rows[0]["asr_start"] if rows else None
    ws = [(x["w_asr"], x["wer"]) for x in rows if x["asr_start"] == start0 and x.get("wer") is not None]
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    if ws:
        ax.plot([a for a, _ in ws], [b for _, b in ws], "o-", label=f"asr_start {start0}")
    for x in rows:
        if x["asr_start"] != start0 and x.get("wer") is not None:
            ax.plot([x["w_asr"]], [x["wer"]], "s", label=f"asr_start {x['asr_start']} (w {x['w_asr']:g})")
    if report.get("lip_only_chance_wer") is not None:
        ax.axhline(report["lip_only_chance_wer"], ls="--", c="grey", lw=1, label="lip-only chance")
    ax.set_xlabel("w_asr (true-text guidance)")
    ax.set_ylabel("judge WER (%)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax.set_title(f"sweep on {report.get('sweep_clips')} test clips", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


STAGE_FUNCS = {"report": stage_report}
