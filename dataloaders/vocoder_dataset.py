"""Training data of the HiFi-GAN vocoder (trainers/vocoder.py): the `.wav` files and random segments.

Files: every `.wav` of the split(s) `vocoder_train.split` under `dataset.audios_dir`, or every
`.wav` under `vocoder_train.wav_dir` when that is set. Items: a random `segment_samples` window
of one clip, the whole clip scaled to peak 1/peak_scale first (exactly as
`dataloaders.audio.wav_file_to_mel` does for the `.wav.spec` files); clips shorter than a
segment are padded with zeros.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dataloaders.audio import audio_params, peak_normalise, read_wav
from utils.errors import LipVoicerError

log = logging.getLogger(__name__)


def _splits(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(s) for s in value]


def list_training_wavs(cfg) -> list[Path]:
    """The training `.wav` files, sorted: every .wav under vocoder_train.wav_dir when set, else those
    of the split(s) vocoder_train.split under dataset.audios_dir (a `{dir, list}` source reads the
    clip ids of its file list; a `{dir}` source takes every .wav below `audios_dir/dir`)."""
    v = cfg["vocoder_train"]
    if v.get("wav_dir"):
        root = Path(str(v["wav_dir"]))
        if not root.is_dir():
            raise LipVoicerError(f"{root}: audio folder not found (vocoder_train.wav_dir)")
        wavs = sorted(p for p in root.rglob("*.wav") if p.is_file())
        if not wavs:
            raise LipVoicerError(f"{root}: no .wav files found (vocoder_train.wav_dir)")
        return wavs

    ds = cfg["dataset"]
    audios = Path(str(ds["audios_dir"]))
    if not audios.is_dir():
        raise LipVoicerError(f"{audios}: audio folder not found (dataset.audios_dir)")
    wavs, looked = set(), []
    for split in _splits(v["split"]):
        if split not in ds["splits"]:
            raise LipVoicerError(f"dataset '{ds['name']}' has no split '{split}' (has: {', '.join(ds['splits'])})")
        for src in ds["splits"][split]:
            d = audios / str(src["dir"])
            looked.append(str(src["dir"]))
            if src.get("list"):
                lst = Path(str(ds["root"])) / str(src["list"])
                if not lst.is_file():
                    raise LipVoicerError(f"{lst}: file list of split '{split}' not found")
                missing = 0
                for line in lst.read_text().splitlines():
                    if line.strip():
                        p = d / f"{line.split()[0]}.wav"
                        if p.is_file():
                            wavs.add(p)
                        else:
                            missing += 1
                if missing:
                    log.warning("%d clips of %s have no .wav under %s", missing, lst, d)
            elif d.is_dir():
                wavs.update(p for p in d.rglob("*.wav") if p.is_file())
            else:
                log.warning("%s: folder of split '%s' not found; skipped", d, split)
    if not wavs:
        raise LipVoicerError(f"{audios}: no .wav files for split '{v['split']}' "
                             f"(looked in {', '.join(dict.fromkeys(looked))})")
    return sorted(wavs)


class VocoderSegmentDataset(Dataset):
    """Random fixed-length segments of peak-normalised clips: item -> float32 (segment_samples,).

    Index with an int or with (int, seed); the seed fixes the segment position (used by the
    resumable sampler, so that a resumed run sees the same segments). An unreadable file (or one
    at another sample rate, empty, or holding NaN) raises LipVoicerError naming it; training skips
    it (trainers/base.py SkipBadClips)."""

    def __init__(self, files: list[Path], segment_samples: int, audio_cfg=None):
        self.files = [Path(f) for f in files]
        self.segment = int(segment_samples)
        self.audio = audio_params(audio_cfg)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        rng = random.Random(seed)
        wav = read_wav(self.files[index], int(self.audio["sampling_rate"]))
        if not np.isfinite(wav).all():
            raise LipVoicerError(f"{self.files[index]}: audio holds NaN or infinite samples")
        wav = peak_normalise(wav, float(self.audio["peak_scale"]))  # the whole clip, as wav_file_to_mel
        n = self.segment
        if wav.shape[0] >= n:
            start = rng.randint(0, wav.shape[0] - n)
            wav = wav[start:start + n]
        else:
            wav = np.pad(wav, (0, n - wav.shape[0]))
        return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
