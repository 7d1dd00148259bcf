"""Audio as SyncNet reads it: 16-bit samples and their MFCCs (the audio input of the LSE-C / LSE-D scores).

The original scorer (syncnet_python's SyncNetInstance.evaluate) extracts the audio of a video with ffmpeg
as 16 kHz mono 16-bit PCM, reads the integer samples (scipy's wavfile: int16 values, not scaled to [-1, 1])
and takes `python_speech_features.mfcc(audio, 16000)` with that package's defaults: 25 ms frames every
10 ms (100 per second; the last frame zero-padded), pre-emphasis 0.97, a 512-point FFT, 26 mel filters from
0 to 8 kHz, 13 cepstral coefficients with a lifter of 22 and the first replaced by the log frame energy.
The same package does it here (requirements.txt pins python_speech_features==0.6); the scale of the
samples matters (the log energies shift with it), so samples are always the 16-bit values.

    samples = int16_samples(read_wav_int16("clip.wav"))   # or from float samples in [-1, 1]
    mfcc = syncnet_mfcc(samples)                          # (13, frames) float32
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from utils.errors import LipVoicerError

SAMPLE_RATE = 16000
INT16_SCALE = 32768.0


def int16_samples(wav: np.ndarray) -> np.ndarray:
    """16-bit sample values (int16) of a waveform: int16 input as it is; float input in [-1, 1] scaled by
    32768, rounded to the nearest integer and clipped, as ffmpeg converts float audio to 16-bit PCM."""
    x = np.asarray(wav).reshape(-1)
    if x.dtype == np.int16:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"expected int16 or float samples, got {x.dtype}")
    return np.clip(np.rint(x.astype(np.float64) * INT16_SCALE), -32768, 32767).astype(np.int16)


def read_wav_int16(path: str | Path, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The 16-bit samples of a mono 16 kHz audio file (a stereo file is averaged, then rounded): 16-bit PCM
    files give their own integers, other sample formats are converted as int16_samples does. A missing or
    unreadable file, or another sample rate, is one LipVoicerError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise LipVoicerError(f"{path}: audio file not found")
    try:
        info = sf.info(str(path))
        pcm16 = info.subtype == "PCM_16"
        data, sr = sf.read(str(path), dtype="int16" if pcm16 else "float64", always_2d=True)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file
        raise LipVoicerError(f"{path}: not a readable audio file ({e})") from e
    if sr != sampling_rate:
        raise LipVoicerError(f"{path}: sample rate {sr} Hz, expected {sampling_rate} Hz")
    if data.shape[0] == 0:
        raise LipVoicerError(f"{path}: audio file is empty")
    if data.shape[1] == 1:
        return data[:, 0] if pcm16 else int16_samples(data[:, 0])
    if pcm16:
        return np.rint(data.astype(np.float64).mean(axis=1)).astype(np.int16)
    return int16_samples(data.mean(axis=1))


def syncnet_mfcc(samples: np.ndarray, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(13, frames) float32 MFCCs of 16-bit samples, exactly python_speech_features.mfcc(samples, rate)
    transposed (frames = 1 + ceil((n - 400) / 160) at 16 kHz; 1 for a clip shorter than one frame)."""
    try:
        from python_speech_features import mfcc
    except ImportError:
        raise LipVoicerError("LSE-C / LSE-D need the python_speech_features package (pip install -r "
                             "requirements.txt)") from None
    x = np.asarray(samples)
    if x.dtype != np.int16:
        raise TypeError(f"syncnet_mfcc takes 16-bit samples (int16_samples), got {x.dtype}")
    return mfcc(x.astype(np.float64), sampling_rate).T.astype(np.float32)
