"""Models, schedule and sampler from the project's config: the one place that reads its model sections.

    schedule = build_schedule(cfg, device)
    sampler = build_sampler(cfg, schedule)            # generate.sampler / steps / eta / bf16 / w_* / asr_start
    melgen = load_melgen(melgen_checkpoint_path(cfg), cfg, device)
    asr = load_asr(asr_checkpoint_path(cfg), cfg, device)
    syncnet = load_syncnet(syncnet_checkpoint_path(cfg), device)    # LSE-C / LSE-D (syncnet.ckpt)

Which published fine-tunes are used follows one setting, `dataset.name` (LRS2 or LRS3):
the MelGen checkpoint (`generate.ckpt_path`, by default under `exp/<dataset.name>/`) and the
ASR fine-tune (`generate.asr_ckpt`, by default `asr.checkpoints[<dataset.name>]`) agree.
"""
from __future__ import annotations

from pathlib import Path

from models.asr.model import ASRGuidanceModel, build_asr, load_asr_checkpoint
from models.diffusion.guidance import AsrShaping
from models.diffusion.samplers import Sampler
from models.diffusion.schedule import DiffusionSchedule
from models.griffin_lim import GriffinLimVocoder
from models.hifigan.generator import HiFiGANGenerator, load_hifigan
from models.melgen.checkpoint import build_melgen, load_melgen as _load_melgen
from models.melgen.model import MelGen
from models.syncnet import SyncNet, load_syncnet
from models.weight_norm import fold_weight_norm
from utils.errors import LipVoicerError

__all__ = ["asr_checkpoint_path", "build_asr", "build_melgen", "build_sampler", "build_schedule", "load_asr",
           "load_melgen", "load_syncnet", "load_vocoder", "melgen_checkpoint_path", "syncnet_checkpoint_path",
           "syncnet_settings", "load_syncnet_model", "vocoder_kind"]


def _get(section, key, default=None):
    try:
        v = section[key]
    except (KeyError, AttributeError, TypeError):
        return default
    return default if v is None else v


def build_schedule(cfg, device=None) -> DiffusionSchedule:
    return DiffusionSchedule.from_config(cfg["diffusion"], device)


def build_sampler(cfg, schedule: DiffusionSchedule) -> Sampler:
    """The sampler `generate` asks for: sampler (ancestral | ddim | dpm_solver), steps (ddim / dpm_solver),
    eta (ddim), bf16, cuda_graphs, clip_x0, w_video, w_asr, asr_start, the ASR term's shaping. Accepts the whole config or its `generate` section."""
    gen = cfg["generate"] if _get(cfg, "generate") is not None else cfg
    return Sampler(schedule, name=str(_get(gen, "sampler", "ancestral")), w_video=float(_get(gen, "w_video", 2.0)),
                   w_asr=float(_get(gen, "w_asr", 1.5)), asr_start=int(_get(gen, "asr_start", 270)),
                   steps=_get(gen, "steps"), eta=float(_get(gen, "eta", 0.0)), bf16=bool(_get(gen, "bf16", False)),
                   cuda_graphs=bool(_get(gen, "cuda_graphs", True)), clip_x0=_get(gen, "clip_x0"),
                   asr_shaping=asr_shaping(gen))


def asr_shaping(gen) -> AsrShaping:
    """generate.asr_clean, asr_smooth, asr_weight_power (models/diffusion/guidance.py; validated by
    pipelines/settings.py)."""
    smooth = _get(gen, "asr_smooth")
    return AsrShaping(clean=bool(_get(gen, "asr_clean", False)),
                      smooth=None if smooth is None else (int(smooth[0]), int(smooth[1])),
                      power=float(_get(gen, "asr_weight_power", 0.0) or 0.0))


def melgen_checkpoint_path(cfg) -> Path:
    return Path(str(cfg["generate"]["ckpt_path"]))


def asr_checkpoint_path(cfg, override_key: tuple[str, str] = ("generate", "asr_ckpt")) -> Path:
    """The ASR checkpoint: `<section>.<key>` when set (generate.asr_ckpt, or evaluate.asr_ckpt for the
    recogniser), else the published fine-tune of dataset.name under paths.checkpoints_dir."""
    section, key = override_key
    explicit = _get(_get(cfg, section, {}), key)
    if explicit:
        return Path(str(explicit))
    table = cfg["asr"]["checkpoints"]
    name = str(cfg["dataset"]["name"]).lower()
    if name not in table:
        raise LipVoicerError(f"no published ASR fine-tune for dataset '{cfg['dataset']['name']}' (have: "
                             f"{', '.join(table)}); give one with {section}.{key}=<checkpoint>")
    return Path(str(cfg["paths"]["checkpoints_dir"])) / str(table[name])


def load_melgen(path, cfg, device="cpu", inference: bool = True) -> MelGen:
    """MelGen from a checkpoint; for inference without gradients and with weight norm folded once
    (g * v / ||v|| computed here, not in every one of the 400 x 2 forward passes)."""
    melgen = _load_melgen(path, cfg, map_location=device)
    if inference:
        melgen.requires_grad_(False)
        fold_weight_norm(melgen)
    return melgen


def load_asr(path, cfg, device="cpu") -> ASRGuidanceModel:
    """The ASR classifier in eval mode without parameter gradients (only d loss / d x is needed)."""
    asr = load_asr_checkpoint(path, cfg["asr"], map_location=device)
    asr.requires_grad_(False)
    return asr


def vocoder_kind(cfg) -> str:
    """vocoder.kind: hifigan (a checkpoint) or griffinlim (no training, no file)."""
    kind = str(_get(cfg["vocoder"], "kind", "hifigan"))
    if kind not in ("hifigan", "griffinlim"):
        raise LipVoicerError(f"vocoder.kind={kind}: must be hifigan or griffinlim")
    return kind


def load_vocoder(path, cfg, device="cpu") -> HiFiGANGenerator | GriffinLimVocoder:
    """HiFi-GAN from `path`, or with vocoder.kind=griffinlim the untrained Griffin-Lim vocoder (path unused)."""
    if vocoder_kind(cfg) == "griffinlim":
        return GriffinLimVocoder(cfg["audio"], int(_get(cfg["vocoder"], "n_iter", 32))).to(device)
    return load_hifigan(path, cfg["vocoder"], map_location=device)



def syncnet_checkpoint_path(cfg) -> Path:
    """SyncNet's weights (syncnet.ckpt; default <paths.checkpoints_dir>/syncnet_v2.model, the published file)."""
    return Path(str(_get(_get(cfg, "syncnet", {}), "ckpt", Path(str(cfg["paths"]["checkpoints_dir"])) /
                     "syncnet_v2.model")))


def syncnet_settings(cfg) -> dict:
    """{"vshift", "batch_size"} of the syncnet section (the original's 15 and 20 when left out)."""
    section = _get(cfg, "syncnet", {})
    try:
        vshift, batch = int(_get(section, "vshift", 15)), int(_get(section, "batch_size", 20))
    except (TypeError, ValueError):
        raise LipVoicerError("syncnet.vshift and syncnet.batch_size must be integers") from None
    if vshift < 1 or batch < 1:
        raise LipVoicerError(f"syncnet.vshift={vshift}, syncnet.batch_size={batch}: both must be >= 1")
    return {"vshift": vshift, "batch_size": batch}


def load_syncnet_model(cfg, device="cpu") -> SyncNet:
    """SyncNet from syncnet.ckpt, strict on the published keys (a missing file: one line with the fetch command)."""
    return load_syncnet(syncnet_checkpoint_path(cfg), map_location=device)
