"""Who is who across shots: face tracks of one person get one speaker number, and one identity image, so
that a person keeps one voice over a whole video and two people get two voices.

Tracks are compared by identity: each track's descriptor is the mean of dlib's face-recognition
descriptors over a few of its frames (dataloaders/prep/video_segments.py), and two tracks are one
person when their descriptors lie closer than `generate.same_speaker_distance` (Euclidean; dlib's
own rule is 0.6; the default is measured on real faces in benchmarks/bench_face_decisions.py). In
time order, a track joins the speaker with the nearest of its tracks' descriptors below the threshold
who has no track in the same shot yet (two faces on screen at once are two people); otherwise it
starts a new speaker. A speaker's identity image is the one of its first track.

    speakers = assign_speakers({track: (shot, descriptor)}, threshold=0.5)   # {track: speaker}

Without descriptors (generate.face_checks=false) every track is its own speaker.
"""
from __future__ import annotations

import numpy as np


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def assign_speakers(faces: dict[int, tuple[int, np.ndarray | None]], threshold: float) -> dict[int, int]:
    """{track: speaker number} for {track: (shot, identity descriptor or None)}; see the module text."""
    speakers: list[tuple[list[np.ndarray], set[int]]] = []   # (descriptors of its tracks, shots it is in)
    out: dict[int, int] = {}
    for track in sorted(faces):
        shot, vec = faces[track]
        best, best_d = None, float(threshold)
        if vec is not None:
            for k, (vecs, shots) in enumerate(speakers):
                d = min(descriptor_distance(vec, v) for v in vecs) if vecs else float("inf")
                if shot not in shots and d < best_d:
                    best, best_d = k, d
        if best is None:
            speakers.append(([], set()))
            best = len(speakers) - 1
        if vec is not None:
            speakers[best][0].append(vec)
        speakers[best][1].add(shot)
        out[track] = best
    return out
