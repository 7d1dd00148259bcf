"""How much a face's mouth moves: who is speaking, and where the pauses are.

During the detection pass every detected face gets a small greyscale patch around its mouth
(`mouth_patch`: a square of MOUTH_SPAN face sizes centred on the mouth, resized to PATCH x PATCH
pixels), so no second look at the frames is needed. The motion of a face track at a frame is
the mean absolute difference between its mouth patch there and in the frame before, each patch
normalised to zero mean and unit contrast first (lighting changes and the face's own contrast
cancel out; a still face measures its codec noise only):

    face.mouth = mouth_patch(rgb, face)
    m = track_motion(track, start, stop)     # (stop - start,) motion per frame, NaN where unknown
    speaking = np.nanmean(m)                 # the active speaker has the most mouth motion
    cut = quietest_frame(m, lo, hi)          # a pause (closed / still mouth) to cut a long segment at

Mouth centre: MediaPipe's keypoint 3, or the mean of the 20 mouth points (48-67) of a 68-point layout.
"""
from __future__ import annotations

import numpy as np

PATCH = 24          # side of the stored mouth patch in pixels
MOUTH_SPAN = 0.5    # side of the patch around the mouth, in face sizes (sqrt of the box area)
MIN_CONTRAST = 8.0  # grey levels: the contrast a patch is normalised by at least (a flat patch stays flat)
PAUSE_WINDOW = 5    # frames averaged when looking for the quietest place (200 ms at 25 fps)


def mouth_centre(keypoints: np.ndarray) -> np.ndarray:
    k = np.asarray(keypoints, dtype=np.float64)
    return k[48:68].mean(axis=0) if len(k) == 68 else k[3]


def mouth_patch(rgb: np.ndarray, face) -> np.ndarray:
    """uint8 (PATCH, PATCH) greyscale patch around the mouth of `face` in the RGB frame (black outside it)."""
    import cv2  # noqa: PLC0415 - comes with the mouth cropping

    h, w = rgb.shape[:2]
    cx, cy = mouth_centre(face.keypoints)
    half = max(face.size * MOUTH_SPAN / 2.0, 2.0)
    x0, y0, x1, y1 = (int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    side = max(x1 - x0, y1 - y0, 2)
    grey = np.zeros((side, side), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        grey[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = cv2.cvtColor(np.ascontiguousarray(rgb[sy0:sy1, sx0:sx1]),
                                                                  cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (PATCH, PATCH), interpolation=cv2.INTER_AREA)


def _normalised(patch: np.ndarray) -> np.ndarray:
    p = patch.astype(np.float32)
    return (p - p.mean()) / max(float(p.std()), MIN_CONTRAST)


def patch_motion(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two normalised mouth patches."""
    return float(np.abs(_normalised(a) - _normalised(b)).mean())


def track_motion(track, start: int, stop: int) -> np.ndarray:
    """(stop - start,) float32: the track's mouth motion at each frame of [start, stop) (against the frame
    before), NaN where the track or its frame before has no detection with a mouth patch."""
    out = np.full(max(stop - start, 0), np.nan, np.float32)
    prev_t, prev = None, None
    for t, face in zip(track.frames, track.faces):
        if face.mouth is not None and prev is not None and prev_t == t - 1 and start <= t < stop:
            out[t - start] = patch_motion(prev, face.mouth)
        prev_t, prev = t, face.mouth
    return out


def mean_motion(motion: np.ndarray) -> float:
    """The mean of the known values (0 when none is known)."""
    known = motion[np.isfinite(motion)]
    return float(known.mean()) if len(known) else 0.0


def quietest_frame(motion: np.ndarray, lo: int, hi: int, window: int = PAUSE_WINDOW) -> int:
    """The index in [lo, hi) where the motion, averaged over `window` frames around it, is lowest (unknown
    values count as the median; the first of equals)."""
    lo, hi = max(int(lo), 0), min(int(hi), len(motion))
    if hi <= lo:
        return max(min(lo, len(motion)), 0)
    m = np.asarray(motion, np.float64).copy()
    known = np.isfinite(m)
    m[~known] = np.median(m[known]) if known.any() else 0.0
    smooth = np.convolve(m, np.ones(window) / window, mode="same")
    return lo + int(np.argmin(smooth[lo:hi]))


def detect_with_mouths(detector, rgb: np.ndarray) -> list:
    """detector.detect_frame(rgb), each face given its mouth patch."""
    faces = detector.detect_frame(rgb)
    for face in faces:
        face.mouth = mouth_patch(rgb, face)
    return faces
