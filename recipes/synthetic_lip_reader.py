"""The synthetic recipe's lip reader: stage `lipreader` (with --lipreader_iters N; none by default), its
scores, and its files in the model set.

  stage_lipreader(s)       train_lipreader.py in chunks (the size's preset of configs/lipreader_train/,
                           LIPREADER_SIZES) on the corpus's mouth crops and transcripts, then score_lip_reader
  score_lip_reader(s)      the trained lip reader, loaded through the inference reader (models/vsr/reader.py)
                           from the files it exports, on the test clips' mouth crops: WER, and on the homophene
                           grammar where its words go (right group: what the lips can decide);
                           <work_dir>/lip_reader/scores.json and reads.csv
  set_files(s, folder)     its weights (float16), model.json and units into a model set's folder; the settings
                           the set's config gives the vsr group
  add_to_model_set(...)    the same into an existing set, its manifest and config file (the command below)

    python recipes/synthetic_lip_reader.py --work_dir exp_lr --size cpu --grammar homophene   # -> model_sets/synthetic/

On the homophene grammar the lips decide only a word's homophene group: a perfect lip reader is at
lip_only_chance_wer (about 67 % WER) with every word in the right group.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.synthetic_words import homophene_words  # noqa: E402
from recipes.synthetic_settings import (MELGEN_SIZES, REPO_ROOT, RecipeSettings, common, newest, stage_times,  # noqa: E402
                                        test_split_overrides)
from recipes.synthetic_training import train_in_chunks  # noqa: E402
from utils.errors import LipVoicerError, exit_on_user_error  # noqa: E402

log = logging.getLogger(__name__)

# the lip reader's size per --size (configs/lipreader_train/); the MelGen preset sets the crop size it reads
LIPREADER_SIZES = {"full": [], "small": ["lipreader_train=cpu"], "cpu": ["lipreader_train=cpu"],
                   "mini": ["lipreader_train=cpu"], "tiny": ["lipreader_train=tiny"]}
# the files in a model set, and how the set decodes (no LM: the corpus has none; a narrower beam than the
# published 40 for a 30-unit character list)
SET_FILES = {"model_path": "lipreader.pth", "model_conf": "lipreader.json", "units_path": "lipreader_units.txt"}
SET_DECODING = {"beam_size": 10, "ctc_weight": 0.1, "lm_weight": 0.0}
CONFIG_NOTE = "# Its lip reader (vsr.*): the run's (--lipreader_iters), or added by `python recipes/synthetic_lip_reader.py`.\n"


def lipreader_dir(s: RecipeSettings) -> Path:
    return s.work_dir / "exp" / "lipreader" / "synthetic"


def exported(s: RecipeSettings) -> dict[str, Path] | None:
    """The trained lip reader's files as train_lipreader.py exports them, or None before there is one."""
    d = lipreader_dir(s)
    files = {"model_path": d / "model.pth", "model_conf": d / "model.json", "units_path": d / "units.txt"}
    return files if all(p.is_file() for p in files.values()) else None


def stage_lipreader(s: RecipeSettings) -> dict | None:
    if s.lipreader_iters <= 0:
        log.info("[lipreader] no lip reader (--lipreader_iters 0)")
        return None
    n = s.lipreader_iters
    over = [*common(s), *MELGEN_SIZES[s.size], *LIPREADER_SIZES[s.size], "lipreader_train.name=synthetic",
            f"lipreader_train.save_dir={s.work_dir}", f"lipreader_train.n_iters={n}",
            f"lipreader_train.iters_per_ckpt={max(1, min(300, n))}",
            f"lipreader_train.num_workers={s.train_workers()}", f"lipreader_train.device={s.device}"]
    train_in_chunks(s, "train_lipreader.py", over, n, lipreader_dir(s) / "checkpoint", "lipreader",
                    minutes_key="lipreader_train.max_minutes")
    return score_lip_reader(s)


def score_lip_reader(s: RecipeSettings, files: dict[str, Path] | None = None) -> dict:
    """Read every test clip's mouth crops (at most --n_test) with the lip reader through the inference reader;
    WER (percent), and the homophene analysis on that grammar; written to <work_dir>/lip_reader/."""
    import jiwer
    import torch

    from dataloaders.layout import ClipPaths, list_split_clips
    from dataloaders.lrs_dataset import load_mouth
    from dataloaders.text import read_transcript
    from models.vsr.reader import load_lip_reader
    from utils.config import compose_config

    files = files or exported(s)
    if files is None:
        raise LipVoicerError(f"{lipreader_dir(s)}: no trained lip reader to score (run the lipreader stage)")
    cfg = compose_config([*common(s), *test_split_overrides(s), *MELGEN_SIZES[s.size], *(f"vsr.{k}={v}" for k, v in files.items()),
                          *(f"vsr.{k}={v}" for k, v in SET_DECODING.items())])
    reader = load_lip_reader(cfg, "cpu")
    clips = list_split_clips(cfg["dataset"], "test")[:s.n_test or None]
    out = s.work_dir / "lip_reader"
    out.mkdir(parents=True, exist_ok=True)
    rows, no_crops = [], []
    with torch.inference_mode():
        for clip in clips:
            paths = ClipPaths(cfg["dataset"], clip)
            if not paths.mouth.is_file():   # data preparation found no usable face track in the clip
                no_crops.append(clip)
                continue
            crops = load_mouth(paths.mouth, int(cfg["video"]["mouth_size"]))
            rows.append({"video_id": clip, "reference": read_transcript(paths.text),
                         "hypothesis": reader.read(crops, source=str(paths.mouth))})
    reads = out / "reads.csv"
    with reads.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["video_id", "reference", "hypothesis"])
        w.writeheader()
        w.writerows(rows)
    conf = json.loads(Path(files["model_conf"]).read_text())
    done = newest(lipreader_dir(s) / "checkpoint")
    if no_crops:
        log.warning("[lipreader] %d of %d test clips have no mouth crops (left out): %s", len(no_crops), len(clips),
                    ", ".join(no_crops[:5]))
    if not rows:
        raise LipVoicerError(f"{cfg['dataset']['mouthrois_dir']}: no test clip has mouth crops to score the lip reader on")
    scores = {"test_clips": len(rows), "test_clips_without_crops": len(no_crops), "wer_pct": round(100.0 * jiwer.wer([r["reference"] for r in rows],
                                                                           [r["hypothesis"] for r in rows]), 1),
              "iterations": done[0] if done else None,
              "parameters": int(sum(v.numel() for v in reader.model.state_dict().values()
                                    if v.is_floating_point())),
              "model": {k: conf[2][k] for k in ("adim", "elayers", "dlayers", "frontend_width")},
              "units": len(reader.tokens.units), "decoding": dict(SET_DECODING),
              "examples": [(r["reference"], r["hypothesis"]) for r in rows[:3]]}
    if s.homophenes:
        from dataloaders.synthetic.corpus import group_function

        group_of = group_function(s.grammar)
        scores["words"] = homophene_words(reads, group_of)
        scores["right_group_pct"] = scores["words"].get("right_group_pct")
        words = [w for r in rows for w in r["reference"].split()]
        scores["perfect_lip_reader_wer_pct"] = round(100.0 * sum(1.0 - 1.0 / len(group_of(w)) for w in words)
                                                     / max(len(words), 1), 1)
    (out / "scores.json").write_text(json.dumps(scores, indent=1) + "\n")
    log.info("[lipreader] test WER %.1f %% over %d clips%s", scores["wer_pct"], len(rows),
             f", right homophene group {scores['right_group_pct']} %" if "right_group_pct" in scores else "")
    return scores


def well_read_clips(s: RecipeSettings) -> list[str]:
    """Test clips (ids under test/) whose every word the lip reader put in its right homophene group when it was
    scored (reads.csv), with nothing inserted, in the order read; [] without its reads or a homophene grammar."""
    if not s.homophenes:
        return []
    from dataloaders.synthetic.corpus import group_function
    from recipes.synthetic_words import words_per_clip

    return [c["video_id"].removeprefix("test/")
            for c in words_per_clip(s.work_dir / "lip_reader" / "reads.csv", group_function(s.grammar))
            if c["right_group"] == c["words"] and not c["inserted"]]


def set_files(s: RecipeSettings, folder: Path) -> dict | None:
    """Write the trained lip reader into a model set's folder (weights float16, its model.json and units file):
    {'vsr': the set config's vsr settings, 'info': the manifest's lip_reader entry}; None without one."""
    import torch

    files = exported(s)
    if files is None:
        return None
    from utils.checkpoint import atomic_torch_save

    sd = torch.load(files["model_path"], map_location="cpu", weights_only=True)
    atomic_torch_save({k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()},
                      folder / SET_FILES["model_path"])
    shutil.copyfile(files["model_conf"], folder / SET_FILES["model_conf"])
    shutil.copyfile(files["units_path"], folder / SET_FILES["units_path"])
    scores_path = s.work_dir / "lip_reader" / "scores.json"
    scores = json.loads(scores_path.read_text()) if scores_path.is_file() else {}
    vsr = {**{k: "${model_set.dir}/" + name for k, name in SET_FILES.items()}, **SET_DECODING}
    info = {"files": sorted(SET_FILES.values()), "storage": "float16 weights, loaded into a float32 model",
            **{k: scores[k] for k in ("iterations", "test_clips", "wer_pct", "right_group_pct",
                                      "perfect_lip_reader_wer_pct", "parameters", "units") if k in scores}}
    seconds = stage_times(s).get("lipreader")   # recorded when the stage ends, after its scoring
    if seconds:
        info["stage_minutes"] = round(seconds / 60.0, 1)   # training and scoring
    return {"vsr": vsr, "info": info}


def add_to_model_set(s: RecipeSettings, folder: Path, config_path: Path, command: str | None = None) -> Path:
    """Add the run's lip reader to an existing model set: its files, the manifest (sizes, SHA-256, a lip_reader
    entry; the rest kept) and the config file (model_set.lip_reader true, the vsr settings)."""
    from omegaconf import OmegaConf

    from models.model_sets import MANIFEST, read_manifest, write_manifest
    from utils.files import atomic_text

    manifest = read_manifest(folder)
    added = set_files(s, folder)
    if added is None:
        raise LipVoicerError(f"{lipreader_dir(s)}: no trained lip reader (model.pth, model.json, units.txt) to add")
    info = {k: v for k, v in manifest.items() if k not in ("name", "notice", "files")}
    info["lip_reader"] = {**added["info"], **({"command": command} if command else {})}
    write_manifest(folder, manifest["name"], manifest["notice"], info)
    text = config_path.read_text()
    head, body = text.split("\n\n", 1) if "\n\n" in text else ("", text)
    if CONFIG_NOTE not in head and "defaults:" in head:
        head = head.replace("defaults:", CONFIG_NOTE + "defaults:", 1)
    conf = OmegaConf.merge(OmegaConf.create(body), {"model_set": {"lip_reader": True}, "vsr": added["vsr"]})
    atomic_text(config_path, head + "\n\n" + OmegaConf.to_yaml(conf))
    log.info("lip reader added to %s (%s)", folder / MANIFEST, config_path)
    return folder / MANIFEST


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Score the recipe run's trained lip reader on its test clips and add it "
                                             "to a model set.")
    ap.add_argument("--work_dir", type=Path, required=True, help="the recipe's work folder (--work_dir)")
    ap.add_argument("--size", default="cpu", choices=list(MELGEN_SIZES))
    ap.add_argument("--grammar", default="homophene", choices=["grid", "free", "homophene", "homophene_context"])
    ap.add_argument("--n_test", type=int, default=None, help="score at most this many test clips")
    ap.add_argument("--set_dir", type=Path, default=REPO_ROOT / "model_sets" / "synthetic")
    ap.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "models" / "synthetic.yaml")
    ap.add_argument("--score", action="store_true", help="score it again (else only when the lipreader stage has not)")
    ap.add_argument("--no_add", action="store_true", help="only score it")
    ap.add_argument("--command", default=None, help="how the lip reader was trained, for the manifest (default: this "
                                                     "command)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    s = RecipeSettings(work_dir=args.work_dir.resolve(), size=args.size, grammar=args.grammar, n_test=args.n_test)
    if args.score or args.no_add or not (s.work_dir / "lip_reader" / "scores.json").is_file():
        score_lip_reader(s)
    if not args.no_add:
        add_to_model_set(s, args.set_dir, args.config, command=args.command or " ".join(
            ["python recipes/synthetic_lip_reader.py", *(argv or sys.argv[1:])]))
    return 0


STAGE_FUNCS = {"lipreader": stage_lipreader}

if __name__ == "__main__":
    sys.exit(main())
