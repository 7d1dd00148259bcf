"""`<clip>.wav.spec` (log-mel, torch tensor 80 x frames) beside every `<clip>.wav` of a tree
(`python dataloaders/wav2mel.py`).

Files already done are skipped unless overwrite is set; every file is written under a
temporary name and renamed; unreadable files are logged, counted and skipped.
"""
from __future__ import annotations

import gc
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dataloaders.audio import wav_file_to_mel
from utils.errors import LipVoicerError
from utils.files import atomic_write
from utils.processes import die_with_parent, resolve_workers

log = logging.getLogger("wav2mel")  # the name Hydra's log lines of the script have always shown


def spec_path(wav: Path) -> Path:
    """`<clip>.wav` -> `<clip>.wav.spec`."""
    return wav.with_name(wav.name + ".spec")


def convert_one(wav: str, audio_cfg: dict) -> str | None:
    """Write the .wav.spec of one file; returns an error line or None."""
    wav = Path(wav)
    out = spec_path(wav)
    try:
        torch.set_num_threads(1)
        mel = wav_file_to_mel(wav, audio_cfg)
        atomic_write(out, lambda tmp: torch.save(mel.clone(), tmp))
        return None
    except LipVoicerError as e:
        return str(e)


def convert_tree(audios_dir, audio_cfg: dict, num_workers: int | str = "auto",
                 overwrite: bool = False) -> tuple[int, int, int]:
    """(converted, skipped, failed) for every .wav under audios_dir (num_workers: auto = min(4, usable cores))."""
    num_workers = resolve_workers(num_workers, "wav2mel.num_workers")
    root = Path(audios_dir)
    if not root.is_dir():
        raise LipVoicerError(f"{root}: audio directory not found")
    wavs = sorted(root.rglob("*.wav"))
    if not wavs:
        raise LipVoicerError(f"{root}: no .wav files found")
    todo = [w for w in wavs if overwrite or not spec_path(w).is_file()]
    skipped = len(wavs) - len(todo)
    failed = 0
    # log lines are printed above the bar, not glued to it; die_with_parent: no worker outlives a killed job
    with logging_redirect_tqdm(), tqdm(total=len(todo), desc="wav -> mel", unit="file", dynamic_ncols=True) as bar:
        if num_workers > 1 and len(todo) > 1:
            gc.collect()  # no PyAV garbage for the forked workers to free (its slice threads are not theirs: a hang)
            with ProcessPoolExecutor(min(num_workers, len(todo)), initializer=die_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                results = pool.map(convert_one, map(str, todo), [audio_cfg] * len(todo), chunksize=8)
                for err in results:
                    bar.update(1)
                    if err:
                        failed += 1
                        log.error(err)
        else:
            for w in todo:
                err = convert_one(str(w), audio_cfg)
                bar.update(1)
                if err:
                    failed += 1
                    log.error(err)
    return len(todo) - failed, skipped, failed
