"""Pieces of batch generation over a test split: sharding, length buckets, padding, outputs.

Outputs of one clip live under
`<save_dir>/generated_mels/<DATASET>/w1=<w_video>_w2=<w_asr>_asr_start=<asr_start>/<video_id>`
as `.wav`, `.wav.spec`, `.png`, `_gt.png`, `.txt` (and optionally `.mp4`). Each file is
written under a temporary name and renamed; a clip is finished when all exist.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """Every world_size-th item from `rank`: disjoint shards whose union is `items`."""
    return list(items[rank::world_size])


def length_batches(lengths: dict[str, int], batch_size: int) -> list[list[str]]:
    """Group ids of similar length (sorted by length, then id) into batches of at most batch_size."""
    order = sorted(lengths, key=lambda k: (lengths[k], k))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate_clips(items: list[dict]) -> dict:
    """Pad whole-clip items (as MelGenTestDataset returns them) to one batch.

    mouthroi (B, 1, Tmax, H, W) zero-padded, face_image (B, 3, S, S), mel (B, 80, 4 Tmax) padded with -1
    (silence), lengths in mel frames, frames in video frames.
    """
    frames = torch.tensor([it["mouthroi"].shape[1] for it in items])
    tmax = int(frames.max())
    b = len(items)
    h, w = items[0]["mouthroi"].shape[-2:]
    mouth = torch.zeros(b, 1, tmax, h, w)
    per_frame = items[0]["mel"].shape[1] // max(items[0]["mouthroi"].shape[1], 1)
    mel = torch.full((b, items[0]["mel"].shape[0], tmax * per_frame), -1.0)
    for i, it in enumerate(items):
        mouth[i, :, :it["mouthroi"].shape[1]] = it["mouthroi"]
        mel[i, :, :it["mel"].shape[1]] = it["mel"]
    return {"mouthroi": mouth, "face_image": torch.stack([it["face_image"] for it in items]), "mel": mel,
            "frames": frames, "lengths": frames * per_frame, "ids": [it["id"] for it in items],
            "texts": [it["text"] for it in items], "audio": [it["audio"] for it in items]}


def _fmt(v) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else str(v)


def run_dir(save_dir, dataset_name: str, w_video, w_asr, asr_start) -> Path:
    return (Path(save_dir) / "generated_mels" / str(dataset_name).upper()
            / f"w1={_fmt(w_video)}_w2={_fmt(w_asr)}_asr_start={int(asr_start)}")


class ClipOutputs:
    """The output files of one clip."""

    SUFFIXES = (".wav", ".wav.spec", ".png", "_gt.png", ".txt")

    def __init__(self, run_directory: Path, video_id: str, with_video: bool = False):
        self.base = Path(run_directory) / video_id
        self.with_video = with_video

    def path(self, suffix: str) -> Path:
        return self.base.with_name(self.base.name + suffix)

    def expected(self) -> list[Path]:
        return [self.path(s) for s in self.SUFFIXES + ((".mp4",) if self.with_video else ())]

    def is_done(self) -> bool:
        return all(p.is_file() for p in self.expected())


def atomic_write(path: Path, writer) -> Path:
    """Call writer(tmp_path) then rename tmp_path over path (same folder, same extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-1:])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
