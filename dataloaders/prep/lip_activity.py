"""Visual voice activity: does a face speak, and where.

Speech opens and closes the lips several times a second; a still, listening or smiling face keeps
them where they are. Every detection gets the gap between its inner lips over its eye distance
(dataloaders/prep/dlib_faces.py, `Face.lips`: size and distance to the camera cancel out). The lip
activity of a frame is the standard deviation of that opening over the second around it
(WINDOW frames); a face speaks where the activity reaches `generate.min_lip_activity`:

    lips = track_lips(track, start, stop)            # (stop - start,) opening per frame, NaN where unknown
    act = lip_activity(lips)                         # (stop - start,) std over WINDOW frames
    runs = speech_runs(act, threshold=0.04, min_frames=25, bridge=12)   # [(a, b, speaks)] covering all frames

Short silences next to speech (up to `bridge` frames) are speech, so a pause between words does not
split a sentence; speech shorter than `min_frames` counts as silence. The threshold and what it gets
wrong (chewing and laughing move the lips too) are measured in benchmarks/bench_face_decisions.py.
"""
from __future__ import annotations

import numpy as np

WINDOW = 25          # frames the activity is measured over (1 s at 25 fps)
MIN_KNOWN = 8        # a window with fewer known openings has no activity (NaN)


def track_lips(track, start: int, stop: int) -> np.ndarray:
    """(stop - start,) float32 lip opening of the track's detections in [start, stop), NaN where unknown."""
    out = np.full(max(stop - start, 0), np.nan, np.float32)
    for t, face in zip(track.frames, track.faces):
        lips = getattr(face, "lips", None)
        if start <= t < stop and lips is not None:
            out[t - start] = lips
    return out


def lip_activity(lips: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """(len(lips),) float32: the standard deviation of the known openings in the `window` frames centred on
    each frame (NaN where fewer than MIN_KNOWN of them are known, or than all frames of a shorter stretch)."""
    x = np.asarray(lips, np.float64)
    known = np.isfinite(x)
    v = np.where(known, x, 0.0)
    half = int(window) // 2

    def window_sums(a: np.ndarray) -> np.ndarray:   # sum over [i - half, i + half] at each i (any length)
        c = np.concatenate([[0.0], np.cumsum(np.pad(a, (half, half)))])
        return c[2 * half + 1:] - c[:len(a)]

    n = window_sums(known.astype(np.float64))
    s1 = window_sums(v)
    s2 = window_sums(v * v)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.maximum(s2 / n - (s1 / n) ** 2, 0.0)
    out = np.sqrt(var)
    out[n < min(MIN_KNOWN, len(x))] = np.nan
    return out.astype(np.float32)


def _runs(flags: np.ndarray) -> list[tuple[int, int, bool]]:
    out, start = [], 0
    for i in range(1, len(flags) + 1):
        if i == len(flags) or flags[i] != flags[start]:
            out.append((start, i, bool(flags[start])))
            start = i
    return out


def speech_runs(activity: np.ndarray, threshold: float, min_frames: int, bridge: int) -> list[tuple[int, int, bool]]:
    """[(start, stop, speaks)] in order, covering every frame: speech where the activity reaches `threshold`
    (unknown frames take the state of the frames before them, or after at the start), silences of at most
    `bridge` frames next to speech (between words, or at the stretch's edges, where the window is half
    empty) joined to it, and speech runs shorter than `min_frames` made silent."""
    n = len(activity)
    if n == 0:
        return []
    act = np.asarray(activity, np.float64)
    known = np.isfinite(act)
    if not known.any():
        return [(0, n, True)]   # nothing measured (no lips found): no evidence against speech
    speaks = np.where(known, act >= threshold, False)
    idx = np.where(known, np.arange(n), -1)
    np.maximum.accumulate(idx, out=idx)
    first = int(np.argmax(known))
    idx[idx < 0] = first
    speaks = speaks[idx]
    for a, b, s in _runs(speaks):   # short silences next to speech (between words, or at a stretch's edge) are speech
        if not s and b - a <= bridge and (a > 0 or b < n):
            speaks[a:b] = True
    for a, b, s in _runs(speaks):           # speech too short to generate becomes silence
        if s and b - a < min_frames:
            speaks[a:b] = False
    return _runs(speaks)
