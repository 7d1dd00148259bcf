"""Phonemes (espeak-ng IPA names) -> visemes -> mouth shapes over time.

A viseme is what the lips show; several phonemes share one (p/b/m, f/v, t/d/n/s/z,
k/g, ...), so a lip reader sees the class but not the phoneme: the synthetic corpus
is learnable (classes differ) and ambiguous in the same way as real lip reading.

A mouth shape has four parameters, each in [0, 1] except `width` (a factor):
  open   - gap between the lips (0 closed ... 1 wide open)
  width  - mouth width relative to rest (rounded < 1 < spread)
  round  - lip rounding / protrusion (the opening becomes circular)
  teeth  - how much of the upper teeth shows inside the opening
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Shape:
    open: float
    width: float
    round: float
    teeth: float

    def as_array(self) -> np.ndarray:
        return np.array([self.open, self.width, self.round, self.teeth], dtype=np.float64)


SHAPES: dict[str, Shape] = {
    "rest": Shape(0.0, 1.00, 0.0, 0.0),   # silence
    "PBM": Shape(0.0, 0.96, 0.05, 0.0),   # lips pressed together
    "FV": Shape(0.10, 1.02, 0.0, 1.0),    # lower lip under the upper teeth
    "TH": Shape(0.22, 1.04, 0.0, 0.8),    # tongue between the teeth
    "TDN": Shape(0.22, 1.05, 0.0, 0.6),   # alveolar stops, nasal, lateral, sibilants
    "SH": Shape(0.24, 0.82, 0.65, 0.7),   # post-alveolar, protruded
    "KG": Shape(0.32, 1.00, 0.0, 0.4),    # velar, glottal
    "R": Shape(0.20, 0.85, 0.50, 0.2),
    "W": Shape(0.12, 0.70, 1.00, 0.0),    # w, oo
    "IY": Shape(0.20, 1.22, 0.0, 0.7),    # spread: i, ɪ, j
    "EH": Shape(0.50, 1.12, 0.0, 0.5),    # ɛ, e, æ
    "AA": Shape(0.85, 1.02, 0.0, 0.3),    # a, ɑ, ʌ, ɐ
    "AO": Shape(0.62, 0.86, 0.65, 0.1),   # ɔ, o, ɒ
    "UH": Shape(0.30, 0.80, 0.75, 0.0),   # ʊ
    "ER": Shape(0.38, 0.98, 0.15, 0.3),   # ə, ɜ, ɚ
}

# single IPA symbols -> viseme
_SYMBOL = {}
for _viseme, _symbols in {
    "PBM": "pbmɱ",
    "FV": "fv",
    "TH": "θð",
    "TDN": "tdnlszɾɫɬʦʣ",
    "SH": "ʃʒɕʑ",
    "KG": "kgŋhxɣqɢʔɡç",
    "R": "ɹrʁɻ",
    "W": "wʍɥu",
    "IY": "iɪjᵻy",
    "EH": "eɛæ",
    "AA": "aɑʌɐɶ",
    "AO": "ɔoɒ",
    "UH": "ʊɵ",
    "ER": "əɜɚɘ",
}.items():
    for _s in _symbols:
        _SYMBOL[_s] = _viseme

_AFFRICATES = {"tʃ": "SH", "dʒ": "SH", "ts": "TDN", "dz": "TDN"}
_MARKS = "ˈˌːˑ̩̯͡‿-_!#'\""


def phoneme_visemes(name: str) -> list[str]:
    """Viseme sequence of one phoneme name (diphthongs give two, e.g. 'aɪ' -> AA, IY)."""
    clean = "".join(ch for ch in name if ch not in _MARKS)
    if not clean:
        return ["rest"]
    if clean in _AFFRICATES:
        return [_AFFRICATES[clean]]
    seq = [_SYMBOL[ch] for ch in clean if ch in _SYMBOL]
    if not seq:
        return ["ER"]  # an unknown sound: a neutral half-open mouth
    out = [seq[0]]
    if len(seq) > 1 and seq[-1] != seq[0]:
        out.append(seq[-1])
    return out


def viseme_track(phonemes, total: float, step: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-constant target shapes: (times (N,), shape parameters (N, 4)).

    phonemes: objects with .name, .start, .end in seconds (dataloaders.synthetic.espeak.Phoneme).
    """
    n = max(int(np.ceil(total / step)), 1)
    times = np.arange(n) * step
    params = np.tile(SHAPES["rest"].as_array(), (n, 1))
    for ph in phonemes:
        visemes = phoneme_visemes(ph.name)
        dur = max(ph.end - ph.start, 0.0)
        for k, vis in enumerate(visemes):
            a = ph.start + dur * k / len(visemes)
            b = ph.start + dur * (k + 1) / len(visemes)
            sel = (times >= a) & (times < b)
            params[sel] = SHAPES[vis].as_array()
    return times, params


def mouth_shapes(phonemes, total: float, fps: float = 25.0, smooth_s: float = 0.022,
                 n_frames: int | None = None, rng: np.random.Generator | None = None,
                 articulation: float = 1.0) -> np.ndarray:
    """Mouth parameters for each video frame (T, 4), smoothly interpolated.

    The viseme targets are smoothed with a Gaussian of `smooth_s` seconds (co-articulation)
    and sampled at the centre of every frame; `articulation` scales how far the mouth
    opens (speaker style); `rng` adds small per-frame jitter.
    """
    step = 0.002
    times, params = viseme_track(phonemes, total, step)
    rest = SHAPES["rest"].as_array()
    params = rest + (params - rest) * np.array([articulation, articulation, 1.0, 1.0])
    sigma = max(smooth_s / step, 1e-3)
    radius = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([np.repeat(params[:1], radius, 0), params, np.repeat(params[-1:], radius, 0)])
    smooth = np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(params.shape[1])], 1)
    if n_frames is None:
        n_frames = max(int(round(total * fps)), 1)
    centres = (np.arange(n_frames) + 0.5) / fps
    idx = np.clip(np.round(centres / step).astype(int), 0, len(times) - 1)
    out = smooth[idx]
    if rng is not None:
        out = out + rng.normal(0.0, [0.015, 0.01, 0.01, 0.02], size=out.shape)
    out[:, 0] = np.clip(out[:, 0], 0.0, 1.0)
    out[:, 2:] = np.clip(out[:, 2:], 0.0, 1.0)
    return out
