"""Scenes built from the synthetic corpus's talking face, for tests and benchmarks of face detection
and cropping on what real footage looks like: the face placed anywhere in a larger frame, at any
size, frames where it is missing, clips looped to any length.

    faces = synthetic_face_frames(tmp_dir)                      # (T, 256, 256, 3) of one synthetic clip
    wide = place(faces, (360, 640), 200, (470, 230))            # small, off-centre face in a wide shot
    gap = blank_out(loop(faces, 75), 30, 50)                    # 20 frames without a face
    people = synthetic_speaker_frames(tmp_dir, n_clips=6)       # {speaker: frames}: faces that differ in look
    shot = cutaway(50, (256, 256))                              # a scene without a person
    two = side_by_side(a, still(b, len(a)))                     # two faces, one of them silent
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_face_frames(root: Path) -> np.ndarray:
    """uint8 RGB frames (T, 256, 256, 3) of one clip of a fresh synthetic corpus under root."""
    from dataloaders.synthetic.corpus import build_corpus, synthetic_settings
    from dataloaders.video_io.decode import read_video
    from utils.config import compose_config

    syn = synthetic_settings(compose_config(["prep.synthetic.n_clips=1", "prep.synthetic.workers=1"]))
    build_corpus(root, syn, progress=False)
    frames, _ = read_video(sorted((Path(root) / "videos").rglob("*.mp4"))[0])
    return frames


def place(frames: np.ndarray, canvas: tuple[int, int], size: int, centre: tuple[int, int],
          background: int = 90) -> np.ndarray:
    """The face frames resized to size x size and pasted with their centre at `centre` (x, y) into
    (h, w) = canvas frames of a flat grey (parts outside the canvas are cut)."""
    import cv2  # noqa: PLC0415 - OpenCV only where scenes are made

    h, w = canvas
    out = np.full((len(frames), h, w, 3), background, dtype=np.uint8)
    x0, y0 = centre[0] - size // 2, centre[1] - size // 2
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + size, w), min(y0 + size, h)
    for i, f in enumerate(frames):
        small = cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA)
        out[i, sy0:sy1, sx0:sx1] = small[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
    return out


def blank_out(frames: np.ndarray, start: int, stop: int, value: int = 90) -> np.ndarray:
    """A copy with frames [start, stop) replaced by a flat grey (no face)."""
    out = frames.copy()
    out[start:stop] = value
    return out


def loop(frames: np.ndarray, n: int) -> np.ndarray:
    """n frames: the clip played forwards and backwards as often as needed (no jump at the seams)."""
    both = np.concatenate([frames, frames[::-1]])
    reps = int(np.ceil(n / len(both)))
    return np.concatenate([both] * reps)[:n]


def synthetic_speaker_frames(root: Path, n_clips: int = 6) -> dict[str, np.ndarray]:
    """{speaker: uint8 RGB frames (T, 256, 256, 3) of its first clip} of a fresh synthetic corpus under root."""
    from dataloaders.synthetic.corpus import build_corpus, synthetic_settings
    from dataloaders.video_io.decode import read_video
    from utils.config import compose_config

    syn = synthetic_settings(compose_config([f"prep.synthetic.n_clips={n_clips}", "prep.synthetic.workers=1"]))
    build_corpus(root, syn, progress=False)
    out: dict[str, np.ndarray] = {}
    for path in sorted((Path(root) / "videos").rglob("*.mp4")):
        out.setdefault(path.parent.name, read_video(path)[0])
    return out


def still(frames: np.ndarray, n: int) -> np.ndarray:
    """n copies of the first frame: a face that does not speak."""
    return np.repeat(frames[:1], n, axis=0)


def cutaway(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """n frames (h, w) = size of a scene without a person: a colour ramp panning slowly, with texture."""
    h, w = size
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 40, (h, 2 * w, 1)).astype(np.int16)
    ramp = np.linspace(0, 255, 2 * w)[None, :, None] * np.array([0.3, 0.8, 0.5])[None, None, :]
    scene = np.clip(ramp + texture, 0, 255).astype(np.uint8)
    return np.stack([np.ascontiguousarray(np.broadcast_to(scene[:, i % w:i % w + w], (h, w, 3))) for i in range(n)])


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two clips of equal length and height next to each other (two people in one shot)."""
    n = min(len(left), len(right))
    return np.concatenate([left[:n], right[:n]], axis=2)
