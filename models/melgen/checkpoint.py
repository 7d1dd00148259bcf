"""Reading and writing MelGen checkpoints in the published format.

A checkpoint is `{"model_state_dict": ..., "optimizer_state_dict": ...}` (plus, for
files written by train_melgen.py, `iteration`), with the official key names
(`net_lipreading.*`, `net_facial.*`, `net_diffwave.*`, `mouthroi_null`, `face_null`;
weight norm as `weight_g` / `weight_v`). Loading is strict: a missing or unexpected
key is an error naming the keys. Files trained here load in the original release
and the other way round.
"""
from __future__ import annotations

from pathlib import Path

import torch

from models.melgen.model import MelGen
from utils.checkpoint import atomic_torch_save, load_state_dict_strict, read_checkpoint, strip_ddp_prefix
from utils.errors import LipVoicerError


def melgen_state_dict(obj: dict, source: str = "checkpoint") -> dict:
    if not isinstance(obj, dict) or "model_state_dict" not in obj:
        raise LipVoicerError(f"{source}: not a MelGen checkpoint (no 'model_state_dict')")
    sd = obj["model_state_dict"]
    return strip_ddp_prefix(sd)


def load_melgen(source, cfg, map_location="cpu", fetch_hint: str | None = None) -> MelGen:
    """Build MelGen from the full config `cfg` (uses cfg.melgen and cfg.video) and load a checkpoint.

    `source` is a path or an already-loaded checkpoint dict. Returns the model in eval mode.
    """
    if isinstance(source, (str, Path)):
        name = str(source)
        obj = read_checkpoint(source, fetch_hint)
    else:
        name, obj = "checkpoint", source
    model = build_melgen(cfg)
    load_state_dict_strict(model, melgen_state_dict(obj, name), what=name)
    return model.to(map_location).eval()


def build_melgen(cfg) -> MelGen:
    return MelGen(cfg["melgen"], mouth_crop=cfg["video"]["mouth_crop"], face_size=cfg["video"]["face_size"])


def save_melgen(path, model: torch.nn.Module, optimizer=None, iteration: int | None = None, extra: dict | None = None):
    """Write a checkpoint in the published format (atomically)."""
    model = getattr(model, "module", model)  # unwrap DDP
    obj = {"model_state_dict": model.state_dict()}
    if optimizer is not None:
        obj["optimizer_state_dict"] = optimizer.state_dict()
    if iteration is not None:
        obj["iteration"] = int(iteration)
    if extra:
        obj.update(extra)
    return atomic_torch_save(obj, path)
