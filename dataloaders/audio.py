"""Audio front-end: waveform -> 80-band log-mel, and the diffusion model's mel normalisation.

Definitions (the published LipVoicer settings): 16 kHz audio, n_fft 640, hop 160, Hann window 640,
magnitude STFT with reflect padding of n_fft/2, Slaney mel basis 20-8000 Hz,
log(clamp(x, 1e-5)). Waveforms are scaled to peak 1/1.1 first.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch

from utils.errors import LipVoicerError

# Defaults mirror configs/config.yaml `audio:`; callers pass the config values.
_DEFAULTS = dict(sampling_rate=16000, filter_length=640, hop_length=160, win_length=640,
                 n_mels=80, mel_fmin=20.0, mel_fmax=8000.0, clamp_min=1e-5, peak_scale=1.1)


def audio_params(audio_cfg=None) -> dict:
    """The audio keys of the config as a plain dict (missing keys take the published values)."""
    p = dict(_DEFAULTS)
    if audio_cfg is not None:
        p.update({k: audio_cfg[k] for k in _DEFAULTS if k in audio_cfg})
    return p


@lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    return torch.from_numpy(basis).float()


def peak_normalise(wav: torch.Tensor | np.ndarray, peak_scale: float = 1.1):
    """Scale a waveform so that its peak is 1/peak_scale (silence stays silence)."""
    m = abs(wav).max()
    m = float(m)
    if m == 0.0:
        return wav
    return wav / m / peak_scale


def log_mel(wav: torch.Tensor, audio_cfg=None) -> torch.Tensor:
    """(..., samples) float waveform (already peak-normalised) -> (..., n_mels, frames) log-mel.

    frames = samples // hop + 1 (centred STFT).
    """
    p = audio_params(audio_cfg)
    squeeze = wav.dim() == 1
    x = wav.unsqueeze(0) if squeeze else wav
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1]).float()
    window = torch.hann_window(p["win_length"], device=x.device)
    spec = torch.stft(x, n_fft=p["filter_length"], hop_length=p["hop_length"], win_length=p["win_length"],
                      window=window, center=True, pad_mode="reflect", return_complex=True)
    mag = spec.abs()
    basis = _mel_basis(p["sampling_rate"], p["filter_length"], p["n_mels"], p["mel_fmin"], p["mel_fmax"])
    mel = torch.log(torch.clamp(basis.to(x.device) @ mag, min=p["clamp_min"]))
    mel = mel.reshape(*lead, mel.shape[-2], mel.shape[-1])
    return mel[0] if squeeze else mel


def normalise_mel(mel: torch.Tensor, clamp_min: float = 1e-5) -> torch.Tensor:
    """log-mel -> the diffusion model's range: log(clamp_min) maps to -1, 0 maps to +1."""
    lo = math.log(clamp_min)
    return (mel - lo) / (-lo / 2) - 1


def denormalise_mel(m: torch.Tensor, clamp_min: float = 1e-5) -> torch.Tensor:
    """Inverse of normalise_mel (before the vocoder)."""
    lo = math.log(clamp_min)
    return (m + 1) * (-lo / 2) + lo


def read_wav(path: str | Path, sampling_rate: int = 16000) -> np.ndarray:
    """Read a mono float32 waveform; stereo is averaged; a wrong sample rate is an error."""
    path = Path(path)
    if not path.is_file():
        raise LipVoicerError(f"{path}: audio file not found")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file
        raise LipVoicerError(f"{path}: not a readable audio file ({e})") from e
    if sr != sampling_rate:
        raise LipVoicerError(f"{path}: sample rate {sr} Hz, expected {sampling_rate} Hz")
    if data.shape[0] == 0:
        raise LipVoicerError(f"{path}: audio file is empty")
    return data.mean(axis=1)


def wav_file_to_mel(path: str | Path, audio_cfg=None) -> torch.Tensor:
    """A .wav file -> (n_mels, frames) log-mel, exactly as the .wav.spec files store it."""
    p = audio_params(audio_cfg)
    wav = peak_normalise(read_wav(path, p["sampling_rate"]), p["peak_scale"])
    return log_mel(torch.from_numpy(np.ascontiguousarray(wav)), p)
