"""(mouth crops, transcript) pairs for training a lip reader (train_lipreader.py).

Clips come from the dataset config (LRS2 / LRS3 / the synthetic corpus, same layout,
dataloaders/layout.py): the mouth crops `<mouthrois_dir>/<clip>.npz` (uint8 T x S x S,
S = video.mouth_size) and the transcript `<videos_dir>/<clip>.txt` (first line `Text:  <words>`).
An item is the whole clip: the crops as the model input (video.mouth_crop; random crop and flip
in training, the centre otherwise: dataloaders/transforms.py), the normalised text and its unit
ids from `encode(text, transcript_path)`, a function of the lip reader's units that raises
LipVoicerError naming the transcript when a character is not covered.

A clip that cannot be used raises LipVoicerError `<file>: <reason>`: crops not found or unreadable,
a transcript missing, empty or not covered by the units. Training skips it and counts it
(trainers/base.py SkipBadClips); more than `max_bad_fraction` of the clips stops the run with one line.
"""
from __future__ import annotations

import random
from typing import Callable

import torch
from torch.utils.data import Dataset

from dataloaders.layout import ClipPaths, list_split_clips
from dataloaders.lrs_dataset import load_mouth
from dataloaders.text import read_transcript
from dataloaders.transforms import mouth_to_tensor
from utils.errors import LipVoicerError


class LipReadingDataset(Dataset):
    """Index with an int, or with (int, seed) as the project's resumable sampler yields."""

    def __init__(self, cfg, split: str, encode: Callable[[str, str], list[int]] | None = None, train: bool = False,
                 max_clips: int = 0, seed: int = 0):
        self.dataset_cfg = cfg["dataset"]
        self.video_cfg = cfg["video"]
        self.mouth_size = int(cfg["video"]["mouth_size"])
        self.encode = encode
        self.train = train
        clips = list_split_clips(self.dataset_cfg, split)
        if max_clips and len(clips) > max_clips:
            clips = sorted(random.Random(seed).sample(clips, int(max_clips)))
        self.clips = [ClipPaths(self.dataset_cfg, c) for c in clips]

    def __len__(self):
        return len(self.clips)

    def text(self, index: int) -> str:
        """The clip's normalised transcript; missing or without words -> LipVoicerError naming the file."""
        path = self.clips[index].text
        text = read_transcript(path)
        if not text:
            raise LipVoicerError(f"{path}: the transcript has no words (its first line should be 'Text:' and the words)")
        return text

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (int(key), None)
        clip = self.clips[index]
        if not clip.mouth.is_file():
            raise LipVoicerError(f"{clip.mouth}: mouth crops not found (make them with "
                                 "dataloaders/extract_mouthcrops.py)")
        text = self.text(index)
        tokens = self.encode(text, str(clip.text)) if self.encode is not None else []
        crops = load_mouth(clip.mouth, self.mouth_size)
        video = mouth_to_tensor(crops, self.video_cfg, self.train, random.Random(seed) if self.train else None)
        return {"id": clip.id, "video": video, "text": text, "tokens": torch.tensor(tokens, dtype=torch.long)}


def collate_lipreading(items: list[dict | None]) -> dict | None:
    """Zero-padded batch: video (B, 1, T, H, W), lengths (B,), tokens (B, U) padded with -1, token_lengths,
    text, id; None items are left out (None when nothing is left)."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    b = len(items)
    _, _, h, w = items[0]["video"].shape
    t = max(it["video"].shape[1] for it in items)
    u = max(1, max(len(it["tokens"]) for it in items))
    video = torch.zeros(b, 1, t, h, w)
    tokens = torch.full((b, u), -1, dtype=torch.long)
    for i, it in enumerate(items):
        video[i, :, :it["video"].shape[1]] = it["video"]
        tokens[i, :len(it["tokens"])] = it["tokens"]
    return {"video": video, "lengths": torch.tensor([it["video"].shape[1] for it in items], dtype=torch.long),
            "tokens": tokens, "token_lengths": torch.tensor([len(it["tokens"]) for it in items], dtype=torch.long),
            "text": [it["text"] for it in items], "id": [it["id"] for it in items]}
