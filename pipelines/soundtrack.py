"""One soundtrack from the speech of a video's segments: silence where nothing is generated, short fades at
every segment edge, crossfades where pieces of one face's speech join.

    audio = assemble(n_samples, [Piece(start_sample, audio, extend_samples), ...], fade_samples)

Each piece's audio starts at its start sample; its first `fade` samples fade in and its last `fade`
samples fade out (raised cosine). A piece cut from a longer stretch is generated `extend` samples
past its end, so that its fade-out lies over the next piece's fade-in (both made for the same
samples): the two sum to a crossfade. Pieces that overlap otherwise (prep.track=all, two faces
speaking at once) are added; the sum is clipped to [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Piece:
    start: int            # first sample
    audio: np.ndarray     # float32 samples, including `extend` samples past the segment's end
    extend: int = 0


def fade_in(n: int) -> np.ndarray:
    """0 -> 1 over n samples (raised cosine; fade_in(n) + fade_in(n)[::-1] == 1)."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32) if n > 0 else np.ones(0, np.float32)


def assemble(n_samples: int, pieces: list[Piece], fade: int) -> np.ndarray:
    out = np.zeros(int(n_samples), np.float32)
    for p in pieces:
        a = np.asarray(p.audio, np.float32).copy()
        f = min(int(fade), len(a) // 2)
        if f:
            ramp = fade_in(f)
            a[:f] *= ramp
            a[len(a) - f:] *= ramp[::-1]
        stop = min(p.start + len(a), len(out))
        if stop > p.start:
            out[p.start:stop] += a[:stop - p.start]
    return np.clip(out, -1.0, 1.0)
