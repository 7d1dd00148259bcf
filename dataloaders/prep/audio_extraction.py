"""16 kHz mono .wav of a video, and the batch job writing them for every video of a split
(`python dataloaders/extract_audio_from_video.py`).

`<ds_dir>/<split>/<speaker>/<clip>.mp4` -> `<out_dir>/<split>/<speaker>/<clip>.wav` (PCM 16-bit,
prep.sampling_rate), written under a temporary name and renamed. A video that cannot be
used (corrupt, no audio stream, shorter than prep.min_seconds) gives one error line
naming the file and the reason.
"""
from __future__ import annotations

from pathlib import Path

import soundfile as sf

from dataloaders.prep.jobs import failure_line, prep_settings, run_video_job
from dataloaders.video_io.decode import read_audio
from utils.errors import LipVoicerError
from utils.files import atomic_write


def extract_one(video: str, out: str, prep: dict) -> str | None:
    """Write the .wav of one video; returns an error line or None."""
    sr = int(prep.get("sampling_rate", 16000))
    min_seconds = float(prep.get("min_seconds", 1.0))
    out = Path(out)

    def work() -> None:
        wav = read_audio(video, sr)
        if len(wav) < min_seconds * sr:
            raise LipVoicerError(f"{video}: audio is {len(wav) / sr:.2f} s long; at least {min_seconds:g} s is needed")
        atomic_write(out, lambda tmp: sf.write(str(tmp), wav, sr, subtype="PCM_16", format="WAV"))

    return failure_line(video, work)


def extract_audio(ds_dir, out_dir, split: str | None, cfg) -> tuple[int, int, int]:
    """(written, skipped, failed) for the videos of one split (or all splits) of ds_dir."""
    return run_video_job(ds_dir, out_dir, split, prep_settings(cfg), ".wav", extract_one, "audio")
