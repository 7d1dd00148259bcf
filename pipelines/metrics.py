"""Speech metrics for evaluate.py: WER/CER (jiwer), STOI/ESTOI (pystoi), wide-band PESQ (pesq),
log-mel distances after aligning lengths, and DNSMOS (speechmos: the
official ONNX models, run with onnxruntime)."""
from __future__ import annotations

import math
from pathlib import Path

import jiwer
import numpy as np
import torch

from dataloaders.audio import log_mel, peak_normalise


def _align(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(a), len(b))
    return a[:n], b[:n]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words); an empty reference counts its hypothesis words as insertions."""
    ref, hyp = reference.split(), hypothesis.split()
    if not ref:
        return len(hyp), 0
    out = jiwer.process_words(reference, hypothesis if hyp else "")
    return out.substitutions + out.deletions + out.insertions, len(ref)


def char_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    ref = " ".join(reference.split())
    if not ref:
        return len(hypothesis), 0
    out = jiwer.process_characters(ref, " ".join(hypothesis.split()) or "")
    return out.substitutions + out.deletions + out.insertions, len(ref)


def stoi_scores(reference: np.ndarray, generated: np.ndarray, sr: int = 16000) -> tuple[float, float]:
    """(STOI, ESTOI) of a generated waveform against the reference, lengths aligned."""
    from pystoi import stoi

    ref, gen = _align(reference, generated)
    return float(stoi(ref, gen, sr, extended=False)), float(stoi(ref, gen, sr, extended=True))


def pesq_wb(reference: np.ndarray, generated: np.ndarray, sr: int = 16000) -> float:
    """Wide-band PESQ; NaN when the signal is too short or silent for PESQ to score."""
    from pesq import pesq

    ref, gen = _align(reference, generated)
    try:
        return float(pesq(sr, ref, gen, "wb"))
    except Exception:  # noqa: BLE001 - pesq raises on silence / too-short input
        return math.nan


def log_mel_l1(reference: np.ndarray, generated: np.ndarray, audio_cfg=None) -> float:
    """Mean |log-mel(ref) - log-mel(gen)| over the common frames (both peak-normalised first)."""
    ref, gen = _align(reference, generated)
    a = log_mel(torch.from_numpy(np.ascontiguousarray(peak_normalise(ref))), audio_cfg)
    b = log_mel(torch.from_numpy(np.ascontiguousarray(peak_normalise(gen))), audio_cfg)
    return float((a - b).abs().mean())


def mel_cepstral_distortion(reference: np.ndarray, generated: np.ndarray, audio_cfg=None, n_coeffs: int = 13) -> float:
    """MCD in dB, frames aligned by position: mel-cepstra are the orthonormal DCT-II of the
    natural-log mel amplitudes (80 bands; c0, the energy, excluded), and
    MCD = 10 / ln 10 * sqrt(2 * sum_d (c_d - c'_d)^2), averaged over frames. Computed on
    mel-filterbank cepstra, not on SPTK mel-generalised cepstra: compare values between
    systems scored here, not with figures from other toolkits."""
    ref, gen = _align(reference, generated)
    a = log_mel(torch.from_numpy(np.ascontiguousarray(peak_normalise(ref))), audio_cfg).numpy()
    b = log_mel(torch.from_numpy(np.ascontiguousarray(peak_normalise(gen))), audio_cfg).numpy()
    n = a.shape[0]
    k = np.arange(n)
    dct = np.sqrt(2.0 / n) * np.cos(np.pi / n * (k[None, :] + 0.5) * np.arange(n_coeffs + 1)[:, None])
    ca, cb = dct @ a, dct @ b
    diff = ca[1:] - cb[1:]
    return float((10.0 / np.log(10)) * np.sqrt(2.0) * np.mean(np.sqrt((diff ** 2).sum(axis=0))))


# ----------------------------------------------------------------------------- DNSMOS
DNSMOS_KEYS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")
DNSMOS_SR = 16000
_dnsmos_model = None


def _dnsmos():
    """The official DNSMOS ONNX models shipped in the `speechmos` package (loaded once)."""
    global _dnsmos_model
    if _dnsmos_model is None:
        try:
            import speechmos.dnsmos as sd
        except ImportError as e:
            from utils.errors import LipVoicerError
            raise LipVoicerError(f"evaluate.dnsmos: DNSMOS needs the speechmos and onnxruntime packages ({e}); "
                                 "pip install -r requirements.txt, or set evaluate.dnsmos=false") from None
        folder = Path(sd.__file__).resolve().parent / "dnsmos_models"
        _dnsmos_model = sd.DNSMOS(str(folder / "sig_bak_ovr.onnx"), str(folder / "model_v8.onnx"))
    return _dnsmos_model


def dnsmos_scores(wav: np.ndarray, sr: int = DNSMOS_SR) -> dict[str, float]:
    """DNSMOS P.835 SIG / BAK / OVRL and P.808 MOS of one waveform (non-personalised models, as in
    the DNS challenge and the LipVoicer paper). Resampled to 16 kHz when needed; samples outside
    [-1, 1] are clipped; clips shorter than 9 s are repeated to 9 s by the model's own code; NaN for
    an empty or silent clip."""
    x = np.asarray(wav, dtype=np.float32).reshape(-1)
    if sr != DNSMOS_SR:
        import librosa

        x = librosa.resample(x, orig_sr=sr, target_sr=DNSMOS_SR).astype(np.float32)
    if len(x) == 0 or not np.any(x):
        return {k: math.nan for k in DNSMOS_KEYS}
    out = _dnsmos()(np.clip(x, -1.0, 1.0), DNSMOS_SR, False)
    return {"dnsmos_sig": float(out["sig_mos"]), "dnsmos_bak": float(out["bak_mos"]),
            "dnsmos_ovrl": float(out["ovrl_mos"]), "dnsmos_p808": float(out["p808_mos"])}
