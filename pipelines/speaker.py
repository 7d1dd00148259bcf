"""Who is who across shots: face tracks of one person get one speaker number, and one identity image, so
that a person keeps one voice over a whole video and two people get two voices.

Tracks are compared by appearance: each track's identity image (the face-centred square MelGen sees)
shrunk to APPEARANCE_SIZE x APPEARANCE_SIZE colour pixels; the distance of two faces is the mean
absolute difference of those pixels (0..1). In time order, a track joins the nearest speaker whose
distance is below the threshold (generate.same_speaker_distance) and who has no track in the same
shot yet (two faces on screen at once are two people); otherwise it starts a new speaker. A speaker's
identity image is the one of its first track.

    speakers = assign_speakers({track: (shot, identity_image)}, threshold=0.08)   # {track: speaker}
"""
from __future__ import annotations

import numpy as np

APPEARANCE_SIZE = 16


def appearance(identity: np.ndarray) -> np.ndarray:
    """float32 (APPEARANCE_SIZE^2 * 3,) in 0..1: the identity image shrunk (area average)."""
    import cv2  # noqa: PLC0415 - comes with the mouth cropping

    small = cv2.resize(np.ascontiguousarray(identity), (APPEARANCE_SIZE, APPEARANCE_SIZE), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32).reshape(-1) / 255.0


def appearance_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def assign_speakers(faces: dict[int, tuple[int, np.ndarray]], threshold: float) -> dict[int, int]:
    """{track: speaker number} for {track: (shot, identity image)}; see the module text."""
    speakers: list[tuple[np.ndarray, set[int]]] = []   # (first track's appearance, shots it is in)
    out: dict[int, int] = {}
    for track in sorted(faces):
        shot, image = faces[track]
        look = appearance(image)
        best, best_d = None, float(threshold)
        for k, (first, shots) in enumerate(speakers):
            d = appearance_distance(look, first)
            if shot not in shots and d < best_d:
                best, best_d = k, d
        if best is None:
            speakers.append((look, set()))
            best = len(speakers) - 1
        speakers[best][1].add(shot)
        out[track] = best
    return out
