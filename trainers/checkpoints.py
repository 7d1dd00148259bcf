"""Training checkpoints in a folder: `<iter>.pkl` listing, resume choice, pruning, run-state restore."""
from __future__ import annotations

import re
from pathlib import Path

from utils.errors import LipVoicerError
from utils.seeding import set_rng_state

_CKPT_RE = re.compile(r"^(\d+)\.pkl$")


def list_checkpoints(ckpt_dir: str | Path) -> dict[int, Path]:
    """{iteration: path} of the `<iter>.pkl` files in a folder (temporary files are ignored)."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return {}
    out = {}
    for p in d.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_file():
            out[int(m.group(1))] = p
    return out


def find_latest_iteration(ckpt_dir: str | Path) -> int | None:
    its = list_checkpoints(ckpt_dir)
    return max(its) if its else None


def resolve_resume(ckpt_dir: str | Path, ckpt_iter) -> Path | None:
    """The checkpoint to resume from: `max` (newest, none -> fresh start), -1 (fresh) or an iteration."""
    if ckpt_iter is None or str(ckpt_iter) == "-1":
        return None
    its = list_checkpoints(ckpt_dir)
    if str(ckpt_iter) == "max":
        return its[max(its)] if its else None
    try:
        n = int(ckpt_iter)
    except ValueError:
        raise LipVoicerError(f"train.ckpt_iter={ckpt_iter}: expected 'max', -1 or an iteration number") from None
    if n not in its:
        raise LipVoicerError(f"{Path(ckpt_dir) / f'{n}.pkl'}: checkpoint for train.ckpt_iter={n} not found")
    return its[n]


def prune_checkpoints(ckpt_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints (0 keeps everything)."""
    if keep_last <= 0:
        return
    its = sorted(list_checkpoints(ckpt_dir))
    for it in its[:-keep_last]:
        list_checkpoints(ckpt_dir)[it].unlink(missing_ok=True)


def restore_run_state(ckpt: dict, path: Path, optimizer, info) -> int:
    """Optimizer state and this rank's RNG state from a training checkpoint; returns its iteration."""
    if ckpt.get("optimizer_state_dict"):
        optimizer.load_state_dict(ckpt["optimizer_state_dict"])
    if "rng_state" in ckpt and info.rank < len(ckpt["rng_state"]):
        set_rng_state(ckpt["rng_state"][info.rank])
    return int(ckpt.get("iteration", int(Path(path).stem)))
