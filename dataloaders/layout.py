"""The dataset layout (configs/dataset/*.yaml), walked in one place for every dataset.

`videos_dir`, `audios_dir` and `mouthrois_dir` hold the same relative clip paths
`<source dir>/<speaker>/<clip>` with `.mp4` (+ `.txt` transcript), `.wav` + `.wav.spec`
(log-mel, 80 x frames) and `.npz` (mouth crops, key `data`, uint8 T x 96 x 96).
A split is a list of sources: `{dir: D}` (every .mp4 under `videos_dir/D`) or
`{dir: D, list: F}` (clip ids, first token of each line relative to D, from the file F
under the dataset root).

    clips = list_split_clips(cfg.dataset, "test")         # ["test/spk2/00001", ...]
    paths = ClipPaths(cfg.dataset, clips[0])              # .video .text .wav .mel .mouth
"""
from __future__ import annotations

from pathlib import Path

from utils.errors import LipVoicerError


def split_sources(dataset_cfg, split: str) -> list:
    """The sources (`{dir: D}` / `{dir: D, list: F}`) of a split; an unknown split is a LipVoicerError."""
    splits = dataset_cfg["splits"]
    if split not in splits:
        raise LipVoicerError(f"dataset '{dataset_cfg['name']}' has no split '{split}' (has: {', '.join(splits)})")
    return list(splits[split])


def list_split_clips(dataset_cfg, split: str) -> list[str]:
    """Clip ids (`<dir>/<speaker>/<clip>`, no extension) of a split, sorted.

    A source `{dir: D}` lists every .mp4 under `videos_dir/D`; `{dir: D, list: F}` reads
    clip ids (first token of each line, relative to D) from the file F under the dataset root.
    """
    sources = split_sources(dataset_cfg, split)
    videos_dir = Path(dataset_cfg["videos_dir"])
    if not videos_dir.is_dir():
        raise LipVoicerError(f"{videos_dir}: videos directory not found (dataset.videos_dir)")
    clips = []
    for src in sources:
        d = videos_dir / src["dir"]
        if src.get("list"):
            lst = Path(dataset_cfg["root"]) / src["list"]
            if not lst.is_file():
                raise LipVoicerError(f"{lst}: file list of split '{split}' not found")
            for line in lst.read_text().splitlines():
                if line.strip():
                    clips.append(f"{src['dir']}/{line.split()[0]}")
        else:
            if not d.is_dir():
                raise LipVoicerError(f"{d}: directory of split '{split}' not found")
            clips.extend(str(p.relative_to(videos_dir).with_suffix("")) for p in d.rglob("*.mp4"))
    if not clips:
        raise LipVoicerError(f"{videos_dir}: split '{split}' of dataset '{dataset_cfg['name']}' has no clips")
    return sorted(clips)


class ClipPaths:
    """The files of one clip id: video (.mp4), text (.txt), wav, mel (.wav.spec) and mouth crops (.npz)."""

    def __init__(self, dataset_cfg, clip: str):
        self.id = clip
        self.video = Path(dataset_cfg["videos_dir"]) / f"{clip}.mp4"
        self.text = Path(dataset_cfg["videos_dir"]) / f"{clip}.txt"
        self.wav = Path(dataset_cfg["audios_dir"]) / f"{clip}.wav"
        self.mel = Path(dataset_cfg["audios_dir"]) / f"{clip}.wav.spec"
        self.mouth = Path(dataset_cfg["mouthrois_dir"]) / f"{clip}.npz"

    def missing(self, need_wav: bool = False) -> list[Path]:
        """The files training / testing needs (video, mel, mouth crops; + wav) that do not exist."""
        need = [self.video, self.mel, self.mouth] + ([self.wav] if need_wav else [])
        return [p for p in need if not p.is_file()]
