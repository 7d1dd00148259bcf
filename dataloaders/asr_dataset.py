"""(mel, transcript) pairs for training the ASR guidance classifier (train_asr.py).

Clips come from the dataset config (LRS2 / LRS3 / the synthetic corpus, same layout):
the un-normalised log-mel `<audios_dir>/<clip>.wav.spec` (80 x frames) and the
transcript `<videos_dir>/<clip>.txt` (first line `Text:  <words>`). Items are whole
clips: the normalised clean mel (MelGen's range) and the BPE token ids of the
normalised text. Clips longer than `max_frames` (or without any text) are not used:
with substitute=True the next usable clip takes their place; otherwise the item is None
and `collate_asr` leaves it out. An unreadable mel (or one with the wrong number of
bands, or NaN) raises LipVoicerError naming the file; train_asr.py uses substitute=False
and lets trainers/base.py (SkipBadClips) skip both kinds, reporting the bad ones.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dataloaders.audio import normalise_mel
from dataloaders.layout import list_split_clips
from dataloaders.lrs_dataset import load_mel
from dataloaders.text import transcript_from_lrs_text
from utils.errors import LipVoicerError

log = logging.getLogger(__name__)


class ASRDataset(Dataset):
    """Index with an int, or with (int, seed) as the project's resumable sampler yields."""

    def __init__(self, cfg, split: str, tokenizer, max_frames: int = 0, max_clips: int = 0, seed: int = 0,
                 substitute: bool = True):
        dcfg = cfg["dataset"]
        self.substitute = substitute
        self.tokenizer = tokenizer
        self.max_frames = int(max_frames or 0)
        self.unusable_message = (f"no clip of split '{split}' is at most {self.max_frames} frames long and has a "
                                 "transcript (raise asr.train.max_frames?)")
        self.n_mels = int(cfg["audio"]["n_mels"])
        self.clamp_min = float(cfg["audio"]["clamp_min"])
        clips = list_split_clips(dcfg, split)
        if max_clips and len(clips) > max_clips:
            clips = sorted(random.Random(seed).sample(clips, int(max_clips)))
        self.items = []
        skipped = 0
        for c in clips:
            mel = Path(dcfg["audios_dir"]) / f"{c}.wav.spec"
            txt = Path(dcfg["videos_dir"]) / f"{c}.txt"
            if mel.is_file() and txt.is_file():
                self.items.append((c, mel, txt))
            else:
                skipped += 1
                log.warning("skipping %s: missing %s", c, mel if not mel.is_file() else txt)
        if not self.items:
            raise LipVoicerError(f"{dcfg['audios_dir']}: no clip of split '{split}' has both its mel (.wav.spec) and "
                                 f"its transcript (.txt in {dcfg['videos_dir']}); {skipped} incomplete "
                                 "(make the mels with dataloaders/wav2mel.py)")
        if skipped:
            log.warning("%d of %d clips of split '%s' skipped (incomplete)", skipped, len(clips), split)

    def __len__(self):
        return len(self.items)

    def load(self, index: int) -> dict | None:
        """The item, or None when the clip is longer than max_frames or has no text."""
        clip, mel_path, txt_path = self.items[index]
        mel = load_mel(mel_path, self.n_mels)
        if self.max_frames and mel.shape[1] > self.max_frames:
            return None
        try:
            raw = txt_path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise LipVoicerError(f"{txt_path}: transcript cannot be read ({e.strerror or e})") from e
        text = transcript_from_lrs_text(raw)
        if not text:
            return None
        tokens = self.tokenizer.encode(text, normalize=False)
        return {"id": clip, "mel": normalise_mel(mel, self.clamp_min), "tokens": torch.tensor(tokens, dtype=torch.long),
                "text": text}

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else int(key)
        if not self.substitute:
            return self.load(index)
        # training: an unusable clip is replaced by the next usable one, so batches stay full
        for k in range(len(self.items)):
            item = self.load((index + k) % len(self.items))
            if item is not None:
                return item
        raise LipVoicerError(self.unusable_message)


def collate_asr(items: list[dict | None]) -> dict | None:
    """Pad to the longest clip: mel (B, 80, T) with zeros, tokens (B, U) with 0; None when nothing is left."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    b = len(items)
    n_mels = items[0]["mel"].shape[0]
    t = max(it["mel"].shape[1] for it in items)
    u = max(len(it["tokens"]) for it in items)
    mel = torch.zeros(b, n_mels, t)
    tokens = torch.zeros(b, max(u, 1), dtype=torch.long)
    for i, it in enumerate(items):
        mel[i, :, :it["mel"].shape[1]] = it["mel"]
        tokens[i, :len(it["tokens"])] = it["tokens"]
    return {
        "mel": mel,
        "lengths": torch.tensor([it["mel"].shape[1] for it in items], dtype=torch.long),
        "tokens": tokens,
        "token_lengths": torch.tensor([len(it["tokens"]) for it in items], dtype=torch.long),
        "text": [it["text"] for it in items],
        "id": [it["id"] for it in items],
    }
