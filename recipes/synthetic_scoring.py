"""The synthetic recipe's scoring: the judge, the guidance ASR and chance on every condition.

  evaluate    evaluate.py with the judge (the separate recogniser, recipes/synthetic_training.py) on each
              generated condition and the ground truth, into results/<condition>/; the guidance ASR on
              the final mels (its CTC loss and greedy WER: did guidance do what it optimises?); chance;
              results.md / results.json (the main table) and figure.png
  sweep       asr_start earlier / later at the sweep's best weight (--sweep_clips), generated and scored

The per-clip analyses (where the words go, which word is said at a replaced one) are in
recipes/synthetic_words.py; the listener's rows of results.md come from results/listener.json
(recipes/synthetic_listening.py).
A new scoring stage is a function here that writes results/<name>/ per condition, an entry in
STAGE_FUNCS, and its name in the stage list of recipes/synthetic_recipe.py.
"""
from __future__ import annotations

import json
import math
import logging
import os
import time
from pathlib import Path

from recipes import synthetic_settings as settings
from recipes.synthetic_conditions import (GROUND_TRUTH, WAYS, condition_dir, conditions, generate_conditions,
                                          generated_ids, generation_overrides, start_sweep, weight_sweep,
                                          write_ground_truth)
from recipes.synthetic_settings import (JUDGE_SIZES, SIZE_EXTRA, RecipeSettings, asr_overrides, common, newest,
                                        stage_times, test_split_overrides)
from recipes.synthetic_training import iterations_reached
from recipes.synthetic_words import clip_rows, flat_scores, subset_summary
from utils.errors import LipVoicerError

log = logging.getLogger(__name__)

LISTENER_JSON = "listener.json"   # results/listener.json: the listen stage's (recipes/synthetic_listening.py)
CORPUS_AUDIO = "corpus_audio"     # the listener on the test clips' own audio (what espeak-ng said): its ceiling


def read_listener(s: RecipeSettings) -> dict:
    """{condition: the independent listener's summary} from results/listener.json ({} before the listen stage)."""
    path = s.work_dir / "results" / LISTENER_JSON
    return json.loads(path.read_text()).get("conditions", {}) if path.is_file() else {}


def guidance_asr_wer(cfg, asr_ckpt: str, tokenizer_path: str, t_values=(10, 25, 40), max_clips: int = 0) -> dict:
    """The guidance ASR's greedy WER (percent) on the ground-truth test mels: clean, and noised to x_t at
    each t of t_values (the inputs it sees while guiding), with a fixed seed."""
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


def best_weight(results: dict[str, dict], default: float) -> float:
    """The sweep's weight (> 0) with the lowest judge WER on the sweep clips (ties: the default)."""
    scored = [(r["wer"], w != default, w) for w, r in results.items() if w > 0 and r and r.get("wer") is not None]
    if not scored:
        raise LipVoicerError("the weight sweep has no scored condition yet (run the evaluate stage)")
    return min(scored)[2]


# ----------------------------------------------------------------------------- the evaluate and sweep stages
def guidance_asr_scores(s: RecipeSettings, cfg, folders: dict[str, Path]) -> dict:
    """The guidance ASR on the final mels of each way (t = 0): its CTC loss against the true text and against
    the text that guided the way, and its greedy WER against the true text. Says whether guidance did what it
    optimises (lower the guidance ASR's loss), separately from whether the judge agrees."""
    import torch

    from dataloaders.audio import normalise_mel
    from dataloaders.text import transcript_from_lrs_text
    from dataloaders.tokenizer import BPETokenizer
    from models.asr.decoding import greedy_decode
    from models.asr.model import ctc_loss_per_clip
    from models.builders import load_asr
    from pipelines.metrics import word_errors

    asr = load_asr(str(cfg["generate"]["asr_ckpt"]), cfg, "cpu")
    tok = BPETokenizer(str(s.tokenizer))
    clamp = float(cfg["audio"]["clamp_min"])
    out = {}
    for way, folder in folders.items():
        losses_true, losses_guide, errors, words = [], [], 0, 0
        for vid in generated_ids(folder):
            true = transcript_from_lrs_text((s.data / "videos" / "test" / f"{vid}.txt").read_text())
            guide_file = s.texts_dir(way) / f"{vid}.txt"
            guide = guide_file.read_text().strip() if guide_file.is_file() else None
            mel = normalise_mel(torch.load(folder / f"{vid}.wav.spec", map_location="cpu").float(), clamp)[None]
            with torch.no_grad():
                logits, out_len = asr(mel, torch.tensor([mel.shape[-1]]), torch.zeros(1, 1))

            def loss(text):
                ids = tok.encode(text)
                return float(ctc_loss_per_clip(logits, out_len, torch.tensor([ids]), torch.tensor([len(ids)]))[0])

            losses_true.append(loss(true))
            if guide is not None:
                losses_guide.append(loss(guide))
            e, n = word_errors(true, tok.decode(greedy_decode(logits, out_len)[0]))
            errors, words = errors + e, words + n
        mean = (lambda v: sum(v) / len(v) if v else None)
        out[way] = {"ctc_true_text": mean(losses_true), "ctc_guidance_text": mean(losses_guide),
                    "greedy_wer": errors / words if words else None, "n_clips": len(losses_true)}
    return out


def chance_wer(s: RecipeSettings, ids: list[str]) -> float | None:
    """WER of reading each test clip as another test clip's sentence (same grammar, wrong content)."""
    from dataloaders.text import transcript_from_lrs_text
    from pipelines.metrics import word_errors

    texts = [transcript_from_lrs_text((s.data / "videos" / "test" / f"{v}.txt").read_text()) for v in ids]
    if len(texts) < 2:
        return None
    pairs = [word_errors(t, texts[(i + 1) % len(texts)]) for i, t in enumerate(texts)]
    return sum(e for e, _ in pairs) / max(sum(n for _, n in pairs), 1)


def context_of_tests(s: RecipeSettings, ids: list[str]) -> dict | None:
    """On the homophene_context grammar, how often the key's table decides the member of a group on these test
    clips, and chance within the group (dataloaders/synthetic/context_grammar.py); None on other grammars."""
    from dataloaders.synthetic.context_grammar import context_stats
    from dataloaders.text import transcript_from_lrs_text

    meta_path = s.data / "synthetic_corpus.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if "context" not in meta or not ids:
        return None
    test = s.data / "videos" / "test"
    return context_stats(meta, [transcript_from_lrs_text((test / f"{v}.txt").read_text()) for v in ids])


def judge_checkpoint(s: RecipeSettings) -> Path:
    judge = newest(s.asr_dir("judge"))
    if judge is None:
        raise LipVoicerError(f"{s.asr_dir('judge')}: no judge checkpoint yet (run the judge stage first)")
    return judge[1]


def score_condition(s: RecipeSettings, name: str, gdir: Path, judge: Path, force: bool = False) -> dict:
    """The judge's scores of one generated folder (evaluate.py into results/<name>/); a summary already
    there for as many clips as the folder has is reused (the stage resumes)."""
    out = s.work_dir / "results" / name
    summary = out / "metrics_summary.json"
    n = len(generated_ids(gdir))
    if not force and summary.is_file() and json.loads(summary.read_text()).get("n_clips") == n:
        return json.loads(summary.read_text())
    settings.run_script(s, ["evaluate.py", *common(s), *test_split_overrides(s), *asr_overrides(s, JUDGE_SIZES[s.size]),
                            f"evaluate.generated_dir='{gdir}'", f"evaluate.asr_ckpt={judge}",
                            f"evaluate.tokenizer={s.tokenizer}", f"evaluate.out_dir={out}",
                            f"evaluate.device={s.device}", f"evaluate.recognize_from={s.judge_reads()}",
                            f"generate.n_samples={n}", "evaluate.progress=false"],
                        f"evaluate {name}")
    return json.loads(summary.read_text())


def stage_evaluate(s: RecipeSettings) -> dict:
    judge = judge_checkpoint(s)
    from utils.config import compose_config

    cfg = compose_config(generation_overrides(s))
    gen_cfg = cfg["generate"]
    main = conditions(s)
    folders = {c.name: condition_dir(s, c, gen_cfg) for c in main}
    folders = {GROUND_TRUTH: condition_dir(s, GROUND_TRUTH, gen_cfg), **folders}
    if not folders[GROUND_TRUTH].is_dir():  # generated before the ground-truth column existed
        write_ground_truth(s, cfg, generated_ids(folders[main[0].name]))
    # ground truth, then the main conditions (the table), then the sweep and the samplers
    results = {name: score_condition(s, name, gdir, judge) for name, gdir in folders.items()}
    for c in conditions(s, "extra"):
        gdir = condition_dir(s, c, gen_cfg)
        if gdir.is_dir() and generated_ids(gdir):
            score_condition(s, c.name, gdir, judge)
    ids = generated_ids(folders[main[0].name])
    diagnostics = {"guidance_asr": guidance_asr_scores(s, cfg, folders), "chance_wer": chance_wer(s, ids),
                   "context": context_of_tests(s, ids)}
    try:
        make_figure(s, folders)
    except Exception as e:  # noqa: BLE001 - the figure is a by-product; the table still gets written
        log.warning("figure not written: %s", e)
    write_results(s, results, diagnostics)
    return results


def stage_sweep(s: RecipeSettings) -> None:
    """asr_start earlier and later, at the weight of the sweep with the lowest judge WER (needs the
    evaluate stage's scores of the weight sweep); nothing without --sweep_clips."""
    if not s.sweep_clips:
        log.info("no sweep (--sweep_clips 0)")
        return
    from utils.config import compose_config

    base = generation_overrides(s)
    cfg = compose_config(base)
    gen = cfg["generate"]
    weights = weight_results(s, gen)
    best = best_weight(weights, float(gen["w_asr"]))
    log.info("sweep: best w_asr %g (judge WER %s %%); asr_start sweep at it", best, weights[best].get("wer"))
    conds = start_sweep(best, int(gen["asr_start"]), int(cfg["diffusion"]["T"]))
    generate_conditions(s, base, cfg, conds)
    judge = judge_checkpoint(s)
    for c in conds:
        score_condition(s, c.name, condition_dir(s, c, gen), judge)


def sweep_ids(s: RecipeSettings, gen_cfg) -> list[str]:
    """The test clips of the sweep (the first --sweep_clips of the main conditions)."""
    return generated_ids(condition_dir(s, conditions(s)[0], gen_cfg))[:s.sweep_clips]


def weight_results(s: RecipeSettings, gen_cfg) -> dict[float, dict]:
    """{w_asr: the judge's scores on the sweep clips}: 0 = no_guidance and the configured weight = true_text
    (their scores on the same clips), the others the sweep's own folders."""

    ids = sweep_ids(s, gen_cfg)
    res = s.work_dir / "results"
    out = {0.0: flat_scores(subset_summary(res / "no_guidance" / "metrics_per_clip.csv", ids)),
           float(gen_cfg["w_asr"]): flat_scores(subset_summary(res / "true_text" / "metrics_per_clip.csv", ids))}
    for c in weight_sweep():
        out[float(c.w_asr)] = flat_scores(subset_summary(res / c.name / "metrics_per_clip.csv", ids))
    return dict(sorted(out.items()))


def per_clip_hypotheses(s: RecipeSettings, way: str) -> dict[str, str]:
    import csv

    path = s.work_dir / "results" / way / "metrics_per_clip.csv"
    if not path.is_file():
        return {}
    with path.open() as f:
        return {r["video_id"]: r["hypothesis"] for r in csv.DictReader(f)}


def make_figure(s: RecipeSettings, folders: dict[str, Path], n_clips: int = 3) -> Path:
    """figure.png: for the first n test clips, the ground-truth mel beside the three generated mels, each
    titled with its text (the judge's reading; the guidance text for guided ways)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from dataloaders.text import transcript_from_lrs_text

    ids = generated_ids(folders[WAYS[0]])[:n_clips]
    cols = (GROUND_TRUTH, *WAYS)   # ground truth beside the three generations
    hyps = {way: per_clip_hypotheses(s, way) for way in cols}
    fig, axes = plt.subplots(len(ids), len(cols), figsize=(3.2 * len(cols), 2.1 * len(ids)), squeeze=False)
    for r, vid in enumerate(ids):
        true = transcript_from_lrs_text((s.data / "videos" / "test" / f"{vid}.txt").read_text())
        for c, way in enumerate(cols):
            ax = axes[r][c]
            mel = torch.load(folders[way] / f"{vid}.wav.spec", map_location="cpu").float().numpy()
            ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=-11.5, vmax=2.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            title = way.replace("_", " ")
            guide = s.texts_dir(way) / f"{vid}.txt"
            if way == GROUND_TRUTH:
                title = f"ground truth: {true}"
            elif guide.is_file():
                title += f" ({guide.read_text().strip()})"
            hyp = hyps[way].get(vid)
            ax.set_title(title + (f"\njudge: {hyp}" if hyp is not None else ""), fontsize=7)
    fig.tight_layout()
    out = s.work_dir / "figure.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def interval_text(ci, digits: int = 1) -> str:
    """' [lo, hi]', or '' where there is no interval (fewer than two clips)."""
    lo, hi = ci
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return ""
    return f" [{lo:.{digits}f}, {hi:.{digits}f}]"


def stoi_interval(s: RecipeSettings, way: str) -> str:
    """'[lo, hi]': the 95 % bootstrap interval of the mean STOI over the judge's clips of a condition."""
    import numpy as np

    from pipelines.intervals import mean_interval

    values = [r["stoi"] for r in clip_rows(s.work_dir / "results" / way / "metrics_per_clip.csv")
              if not np.isnan(r.get("stoi", np.nan))]
    if not values:
        return "n/a"
    return interval_text(mean_interval(values), 3).strip() or "n/a"


def listener_lines(s: RecipeSettings, cols: list[str]) -> list[str]:
    """The independent listener's rows of the table (results/listener.json), and STOI's intervals beside them."""
    heard = read_listener(s)
    if not heard:
        return []
    cell = (lambda way, f: "n/a" if way not in heard else f(heard[way]))
    rows = [("listener WER (%) [95 % CI]", lambda h: f"{h['wer']:.1f}{interval_text(h['wer_ci95'])}")]
    if any("words" in h for h in heard.values()):
        rows += [("listener: words in the right homophene group (%) [95 % CI]",
                  lambda h: "n/a" if not h.get("words") else
                  f"{h['words']['right_group_pct']:.1f}{interval_text(h['words']['right_group_ci95'])}"),
                 ("listener: exact, of the words in the right group (%)",
                  lambda h: "n/a" if not h.get("words") else f"{h['words']['exact_within_right_group_pct']:.1f}")]
    if any("substituted_words" in h for h in heard.values()):
        def swapped(h):
            subs = h.get("substituted_words") or {}
            if not subs:
                return "n/a"
            return "; ".join(f"{kind}: {c['follows_guidance']} / {c['follows_truth']} of {c['replaced']}"
                             for kind, c in sorted(subs.items()))
        rows.append(("listener at replaced words: says the guiding / the true word", swapped))
    if any("at_homophene_swaps" in h for h in heard.values()):
        rows.append(("listener at the homophene-swapped text's replaced words, unguided by it: says its word / "
                     "the true word", lambda h: "n/a" if not h.get("at_homophene_swaps") else
                     "{follows_guidance} / {follows_truth} of {replaced}".format(**h["at_homophene_swaps"])))
    lines = [f"| {label} | " + " | ".join(cell(w, f) for w in cols) + " |" for label, f in rows]
    lines.append("| STOI 95 % CI | " + " | ".join(stoi_interval(s, w) for w in cols) + " |")
    return lines


def write_results(s: RecipeSettings, results: dict, diagnostics: dict | None = None) -> Path:
    diagnostics = diagnostics or {}
    cols = [w for w in (GROUND_TRUTH, *(c.name for c in conditions(s))) if w in results]
    rows = [("judge WER (%)", "corpus_wer", 100.0, 2), ("judge CER (%)", "corpus_cer", 100.0, 2),
            ("STOI", "stoi", 1.0, 4), ("ESTOI", "estoi", 1.0, 4), ("PESQ (wide-band)", "pesq", 1.0, 3),
            ("log-mel L1", "log_mel_l1", 1.0, 4)]
    head = "| metric | " + " | ".join(("ground-truth mel" if w == GROUND_TRUTH else w.replace("_", " ")) for w in cols)
    lines = [head + " |", "|" + " --- |" * (len(cols) + 1)]
    for label, key, scale, digits in rows:
        cells = []
        for way in cols:
            r = results[way]
            v = r.get(key) if key.startswith("corpus_") else (r.get("means") or {}).get(key)
            cells.append("n/a" if v is None else f"{v * scale:.{digits}f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    g = diagnostics.get("guidance_asr") or {}
    for label, key, scale, digits in (("guidance-ASR CTC loss, true text", "ctc_true_text", 1.0, 2),
                                      ("guidance-ASR CTC loss, its guidance text", "ctc_guidance_text", 1.0, 2),
                                      ("guidance-ASR greedy WER (%)", "greedy_wer", 100.0, 2)):
        if g:
            cells = [("n/a" if (g.get(w) or {}).get(key) is None else f"{g[w][key] * scale:.{digits}f}") for w in cols]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += listener_lines(s, cols)
    n = {results[w].get("n_clips") for w in cols}
    lines.append("| test clips | " + " | ".join(str(results[w].get("n_clips")) for w in cols) + " |")
    md = "\n".join(lines) + "\n"
    heard = read_listener(s).get(CORPUS_AUDIO)
    if heard:
        md += (f"\nThe listener (PocketSphinx with the corpus's slots as its grammar; it shares nothing with the "
               f"guidance ASR or the judge) on the corpus's own audio of these clips: {heard['wer']:.1f} % WER"
               f"{interval_text(heard['wer_ci95'])}.\n")
    if diagnostics.get("context"):
        from dataloaders.synthetic.context_grammar import context_line

        md += f"\nContext (the key word's table): {context_line(diagnostics['context'])}.\n"
    if diagnostics.get("chance_wer") is not None:
        md += (f"\nChance: reading each test clip as another test sentence of the same grammar gives "
               f"{100 * diagnostics['chance_wer']:.1f} % WER.\n")
    times = stage_times(s)
    if times:
        md += "\nWall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + \
              (" (the training stages ran at the same time)" if s.parallel else "") + ".\n"
    reached = iterations_reached(s)
    md += "Iterations trained: " + ", ".join(f"{k} {v}" for k, v in reached.items() if v is not None) + ".\n"
    meta = {"date": time.strftime("%Y-%m-%d"), "size": s.size, "n_clips": s.n_clips, "judge_input": s.judge_reads(),
            "grammar": s.grammar, "vocoder": s.vocoder_kind(), "extra_overrides": [*SIZE_EXTRA.get(s.size, []), *s.extra],
            "iters": {"melgen": s.melgen_iters, "asr": s.asr_iters, "judge": s.judge_iters,
                      "vocoder": s.vocoder_iters if s.vocoder_kind() == "hifigan" else 0},
            "iters_reached": iterations_reached(s), "parallel_training": s.parallel, "threads": s.threads,
            "corrupt_fraction": s.corrupt_fraction, "test_clips": sorted(x for x in n if x is not None),
            "stage_seconds": times, "cpu_cores": os.cpu_count()}
    try:
        import torch

        meta["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        meta["device"] = "unknown"
    reads = "mel (before the vocoder)" if s.judge_reads() == "mel" else "audio"
    out = s.work_dir / "results.md"
    out.write_text(f"Synthetic-corpus recipe, {meta['date']}, {meta['device']} ({meta['cpu_cores']} cores), sizes "
                   f"'{s.size}', {s.grammar} grammar, vocoder {s.vocoder_kind()}, the judge reads the generated "
                   f"{reads}\n\n" + md)
    (s.work_dir / "results.json").write_text(json.dumps({"meta": meta, "results": results,
                                                          "diagnostics": diagnostics}, indent=1))
    print(out.read_text())
    return out


STAGE_FUNCS = {"evaluate": stage_evaluate, "sweep": stage_sweep}
