"""Checkpoint helpers shared by every model: atomic writes and strict, explained loading."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from utils.errors import LipVoicerError
from utils.files import atomic_write


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """torch.save under a temporary name in the same folder (synced to disk), then renamed over `path`.

    The file is written through a Python file object, so a full disk raises OSError(ENOSPC) (torch's own
    writer reports only `unexpected pos ...`); atomic_write turns it into one line naming `path`, and the
    file that was under `path` before (the previous checkpoint) stays as it was."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def read_checkpoint(path: str | os.PathLike, fetch_hint: str | None = None) -> dict:
    """Load a checkpoint file on CPU with a one-line error when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        hint = f"; fetch it with: {fetch_hint}" if fetch_hint else ""
        raise LipVoicerError(f"{path}: checkpoint not found{hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise LipVoicerError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e


# Compact storage of shipped model sets (models/model_sets.py): a weight of two or more dimensions may be stored as
# int8 under its own key with one float scale per output channel under `<key>` + INT8_SCALE (weight = int8 *
# scale); load_state_dict_strict turns it back into a float tensor. Other tensors may be float16.
INT8_SCALE = ".int8_scale"


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, float16 per-output-channel scale) with weight ~= int8 * scale (symmetric, max-abs)."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True) / 127.0).clamp_min(1e-12).half()
    q = torch.round(w / scale.float()).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(state_dict: dict) -> dict:
    """A state dict with int8-stored weights (see INT8_SCALE) as plain float32 tensors; others unchanged."""
    scales = {k[:-len(INT8_SCALE)]: v for k, v in state_dict.items() if k.endswith(INT8_SCALE)}
    if not scales:
        return state_dict
    return {k: (v.float() * scales[k].float() if k in scales else v) for k, v in state_dict.items()
            if not k.endswith(INT8_SCALE)}


def _short_list(keys, n=8) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_state_dict_strict(module: torch.nn.Module, state_dict: dict, what: str = "checkpoint") -> None:
    """Load `state_dict` into `module`; missing/unexpected keys or shape mismatches raise
    LipVoicerError naming the keys. Weights stored as int8 (INT8_SCALE) are dequantized first."""
    state_dict = dequantize_int8(state_dict)
    own = module.state_dict()
    missing = set(own) - set(state_dict)
    unexpected = set(state_dict) - set(own)
    problems = []
    if missing:
        problems.append(f"missing keys: {_short_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short_list(unexpected)}")
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(own[k].shape)}"
        for k in own.keys() & state_dict.keys()
        if tuple(own[k].shape) != tuple(state_dict[k].shape)
    ]
    if shapes:
        problems.append(f"shape mismatch: {_short_list(shapes)}")
    if problems:
        raise LipVoicerError(f"{what}: does not match the model; " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=True)


def strip_ddp_prefix(state_dict, inner: bool = False) -> dict:
    """Keys as saved from a DistributedDataParallel wrapper, made plain: the leading 'module.' removed
    when every key has it; with inner=True every '.module.' segment (a wrapped sub-module) and a
    leading 'module.' of any key are removed too."""
    items = dict(state_dict)
    if inner:
        out = {}
        for k, v in items.items():
            k = k.replace(".module.", ".")
            out[k[len("module."):] if k.startswith("module.") else k] = v
        return out
    if items and all(k.startswith("module.") for k in items):
        return {k[len("module."):]: v for k, v in items.items()}
    return items
