"""The synthetic recipe's models as a model set that ships with the repository (`models=synthetic`).

    export_model_set(s, REPO_ROOT / "model_sets" / "synthetic", REPO_ROOT / "configs" / "models" / "synthetic.yaml",
                     report, example=REPO_ROOT / "examples")

writes into the set's folder the newest MelGen and guidance-ASR checkpoints of the run (weights only,
floating-point tensors stored as float16 and loaded back into float32 models), the tokenizer, the
mean face the mouth crops were cut with, the lip reader when the run trained one (lipreader.pth / .json,
lipreader_units.txt: recipes/synthetic_lip_reader.py; the set then reads lips when no text is given), and manifest.json (sizes, SHA-256, how the set was made, its
one-line notice); the config group file that points every setting at the set and gives the sizes its
models were trained with; and, with `example`, one held-out test clip of the run (its video without
sound and its transcript) as the bundled example. The vocoder is the run's: Griffin-Lim when no
HiFi-GAN was trained (the cpu size), else the trained HiFi-GAN in float16 as well.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from recipes.synthetic_conditions import condition_dir, conditions, generated_ids, generation_overrides
from recipes.synthetic_lip_reader import CONFIG_NOTE
from recipes.synthetic_lip_reader import set_files as lip_reader_set_files
from recipes.synthetic_lip_reader import well_read_clips as lip_reader_well_read
from recipes.synthetic_settings import (MELGEN_SIZES, REPO_ROOT, SIZE_EXTRA, VOCODER_SIZES, RecipeSettings,
                                        guidance_asr_sizes, newest)
from recipes.synthetic_training import mouth_crop_overrides
from utils.errors import LipVoicerError
from utils.checkpoint import INT8_SCALE, atomic_torch_save, quantize_int8
from utils.files import atomic_text
from models.model_sets import write_manifest

log = logging.getLogger(__name__)

NAME = "synthetic"
NOTICE = ("using the synthetic-corpus model set (models=synthetic): small models trained on this project's "
          "synthetic talking faces; they speak only that corpus's {words}-word language and know only its faces "
          "(use the published checkpoints for real videos: python download_checkpoints.py --for-inference)")
EXAMPLE_NAME = "synthetic_clip"
INFERENCE_SECTIONS = ("diffusion", "generate", "asr", "melgen", "video", "prep", "audio")   # settings the set keeps


# MelGen's face stream (a ResNet-18 on 64-pixel faces: 11.2 M of the cpu size's 14.0 M parameters) is stored with
# int8 weights (one scale per output channel), the rest as float16: the set stays under 30 MB.
INT8_PREFIXES = ("net_facial.feature_extraction.",)


def half_state_dict(checkpoint: Path, key: str = "model_state_dict", int8_prefixes: tuple[str, ...] = ()) -> dict:
    """The checkpoint's model weights only (under `key`): floating-point tensors as float16, weights of two or
    more dimensions under `int8_prefixes` as int8 with per-channel scales (utils/checkpoint.py INT8_SCALE);
    other tensors (e.g. counters) kept."""
    obj = torch.load(checkpoint, map_location="cpu", weights_only=False)
    out = {}
    for k, v in obj[key].items():
        if torch.is_floating_point(v) and v.dim() >= 2 and k.startswith(int8_prefixes):
            out[k], out[k + INT8_SCALE] = quantize_int8(v)
        else:
            out[k] = (v.half() if torch.is_floating_point(v) else v).clone()
    return out


def set_overrides(s: RecipeSettings) -> list[str]:
    """The run's settings that inference must repeat, as key=value (sizes, schedule, guidance, cropping)."""
    keep = [o for o in [*SIZE_EXTRA.get(s.size, []), *s.extra]
            if o.split("=", 1)[0].split(".", 1)[0] in INFERENCE_SECTIONS and not o.startswith("prep.synthetic.")]
    crops = [o for o in mouth_crop_overrides(s) if o.startswith("prep.warp_size=")]
    vocoder = VOCODER_SIZES.get(s.size, []) if s.vocoder_kind() == "hifigan" else []
    return [*keep, f"asr.vocab_size={s.vocab_size}", *guidance_asr_sizes(s), *crops, *vocoder]


def config_text(s: RecipeSettings, folder_rel: str, vocoder_file: str | None, vsr: dict | None = None) -> str:
    """configs/models/synthetic.yaml: the set's files and the sizes of its models (with `vsr`, the settings of
    its lip reader: it reads the lips when no text is given)."""
    groups = [o.split("=", 1) for o in MELGEN_SIZES[s.size] if "=" in o]
    body = OmegaConf.from_dotlist(set_overrides(s))
    files = {"model_set": {"name": NAME, "dir": folder_rel, "lip_reader": vsr is not None},
             "generate": {"ckpt_path": "${model_set.dir}/melgen.pt", "asr_ckpt": "${model_set.dir}/asr.pt"},
             "asr": {"tokenizer": "${model_set.dir}/tokenizer.model"},
             "prep": {"mean_face_path": "${model_set.dir}/mean_face.npy"}}
    if vocoder_file:
        files["vocoder"] = {"checkpoint": "${model_set.dir}/" + vocoder_file}
    if vsr is not None:
        files["vsr"] = dict(vsr)
    body = OmegaConf.merge(body, files)
    defaults = [f"  - override /{g}: {v}" for g, v in groups]
    if not vocoder_file:
        defaults.append("  - override /vocoder: griffinlim")
    head = ("# @package _global_\n"
            "# The synthetic-corpus model set (models/model_sets.py): written by `python recipes/synthetic.py ... --publish`\n"
            "# from the run that trained it (model_sets/synthetic/manifest.json says which); not edited by hand.\n"
            "# Select it with models=synthetic; later overrides still apply (e.g. generate.w_asr=0).\n"
            + CONFIG_NOTE)
    return head + "defaults:\n" + "\n".join(defaults) + "\n\n" + OmegaConf.to_yaml(body)


def vocabulary_size(s: RecipeSettings) -> int:
    from dataloaders.text import transcript_from_lrs_text

    return len({w for p in s.data.glob("videos/*/*/*.txt") if "audio_only" not in p.parts
                for w in transcript_from_lrs_text(p.read_text()).split()})


def write_example(s: RecipeSettings, folder: Path, clip_id: str) -> dict:
    """The run's test clip `clip_id` as <folder>/synthetic_clip.mp4 (its video stream only) and .txt."""
    from dataloaders.text import transcript_from_lrs_text

    src = s.data / "videos" / "test" / f"{clip_id}.mp4"
    if not src.is_file():
        raise LipVoicerError(f"{src}: test clip not found (the corpus stage made no such clip)")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{EXAMPLE_NAME}.tmp.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-an", "-c:v", "copy", str(tmp)], check=True)
    tmp.replace(folder / f"{EXAMPLE_NAME}.mp4")
    text = transcript_from_lrs_text((s.data / "videos" / "test" / f"{clip_id}.txt").read_text())
    atomic_text(folder / f"{EXAMPLE_NAME}.txt", text + "\n")
    return {"clip": f"test/{clip_id}", "text": text}


def export_model_set(s: RecipeSettings, folder: Path, config_path: Path, report: dict | None = None,
                     example: Path | None = None) -> Path:
    """Write the model set (see the module doc); returns its manifest's path."""
    melgen = newest(next(iter(s.melgen_dir().glob("*/checkpoint")), s.melgen_dir()))
    asr = newest(s.asr_dir("guidance"))
    if melgen is None or asr is None:
        raise LipVoicerError(f"{s.work_dir}: no trained MelGen or guidance ASR to export (run the training stages)")
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    atomic_torch_save({"model_state_dict": half_state_dict(melgen[1], int8_prefixes=INT8_PREFIXES),
                       "iteration": melgen[0]}, tmp / "melgen.pt")
    atomic_torch_save({"model_state_dict": half_state_dict(asr[1]), "model_step": asr[0]}, tmp / "asr.pt")
    shutil.copyfile(s.tokenizer, tmp / "tokenizer.model")
    mean_face = [o.split("=", 1)[1] for o in mouth_crop_overrides(s) if o.startswith("prep.mean_face_path=")][0]
    shutil.copyfile(mean_face, tmp / "mean_face.npy")
    vocoder_file = None
    if s.vocoder_kind() == "hifigan":
        voc = newest(s.vocoder_dir(), r"^g_(\d+)$")
        if voc is not None:
            vocoder_file = "hifigan.pt"
            atomic_torch_save({"generator": half_state_dict(voc[1], "generator")}, tmp / vocoder_file)
    lip = lip_reader_set_files(s, tmp)   # the lip reader, when the run trained one (--lipreader_iters)
    info = {"made_by": "recipes/synthetic.py --publish", "date": time.strftime("%Y-%m-%d"),
            "command": (report or {}).get("command"), "grammar": s.grammar, "size": s.size,
            "iterations": {"melgen": melgen[0], "guidance_asr": asr[0]},
            "vocoder": "griffinlim" if vocoder_file is None else "hifigan (float16)",
            "storage": "weights only, loaded into float32 models: float16, except MelGen's face-stream ResNet "
                       "weights as int8 with a float16 scale per output channel",
            "settings": set_overrides(s), "results": "docs/results/synthetic_%s_%s.json" % (s.grammar, s.size)}
    if lip is not None:
        info["lip_reader"] = lip["info"]
    if example is not None:
        ids = generated_ids(condition_dir(s, conditions(s)[0], _generate_cfg(s)))
        if not ids:
            raise LipVoicerError(f"{s.work_dir}: no generated test clip to take the example from")
        # with a lip reader: the first generated clip it reads with every word in the right homophene group (the
        # example shows what the set does where the lips are read as well as they can be; the manifest's
        # lip_reader entry gives how often that happens)
        well = set(lip_reader_well_read(s)) if lip is not None else set()
        chosen = next((i for i in ids if i in well), ids[0])
        info["example"] = write_example(s, example, chosen)
        if lip is not None:
            info["example"]["chosen"] = ("the first generated test clip the lip reader reads with every word in the "
                                         "right homophene group" if chosen in well else "the first generated test clip")
    write_manifest(tmp, NAME, NOTICE.format(words=vocabulary_size(s)), info)
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(folder)
    atomic_text(config_path, config_text(s, folder.relative_to(REPO_ROOT).as_posix()
                                         if folder.is_relative_to(REPO_ROOT) else str(folder), vocoder_file,
                                         lip["vsr"] if lip is not None else None))
    total = sum(p.stat().st_size for p in folder.iterdir())
    log.info("model set: %s (%.1f MB), config %s", folder, total / 1e6, config_path)
    return folder / "manifest.json"


def _generate_cfg(s: RecipeSettings):
    from utils.config import compose_config

    return compose_config(generation_overrides(s))["generate"]
