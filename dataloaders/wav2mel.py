"""Compute `<clip>.wav.spec` (log-mel, torch tensor 80 x frames) beside every `<clip>.wav` of a tree.

    python dataloaders/wav2mel.py dataset=lrs3                     # dataset.audios_dir
    python dataloaders/wav2mel.py wav2mel.audios_dir=/data/audios wav2mel.num_workers=8   # default auto: min(4, cores)

Files already done are skipped (wav2mel.overwrite=true recomputes them); every
file is written under a temporary name and renamed; unreadable files are logged,
counted and skipped. The work is in dataloaders/prep/wav2mel.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig, OmegaConf

from dataloaders.prep.wav2mel import convert_tree
from utils.errors import exit_on_user_error


@hydra.main(version_base=None, config_path="../configs", config_name="config")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    w = cfg.wav2mel
    done, skipped, failed = convert_tree(w.audios_dir, OmegaConf.to_container(cfg.audio, resolve=True),
                                         w.num_workers, bool(w.overwrite))
    print(f"wav2mel: {done} written, {skipped} already done, {failed} failed")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
