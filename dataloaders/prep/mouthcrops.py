"""Mouth crops of a video: (T, 96, 96) uint8 greyscale, T = frames at 25 fps; and the batch job
writing them for every video of a split (`python dataloaders/extract_mouthcrops.py`).

Per video: frames at 25 fps (other rates are resampled first), face landmarks per frame
(prep.detector, dataloaders/prep/face_detection.py), then dataloaders/prep/mouth_crop.py
(interpolation of missed frames, 12-frame smoothing, alignment to the mean face, 96 x 96
crop around the mouth). A video that cannot be used (no face, corrupt, no video stream,
shorter than prep.min_seconds) raises a LipVoicerError naming the file and the reason.

    frames = video_frames("clip.mp4", cfg)                          # uint8 RGB (T, H, W, 3) at 25 fps
    crops = mouth_crops_from_frames(frames, cfg, source="clip.mp4")
    crops = mouth_crops_from_video("clip.mp4", cfg)                 # the two steps at once

cfg: the project config, its `prep` part, or a dict with the same keys.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dataloaders.prep.face_detection import check_backend, make_detector
from dataloaders.prep.jobs import failure_line, prep_settings, run_video_job
from dataloaders.prep.mouth_crop import crop_mouths, load_mean_face
from dataloaders.video_io import read_video_at_fps
from utils.errors import LipVoicerError
from utils.files import atomic_write
from utils.processes import resolve_workers


def _get(cfg, key, default):
    """cfg.prep.<key> from a full config, a prep config or a plain dict."""
    prep = cfg.get("prep", cfg) if hasattr(cfg, "get") else cfg
    value = prep.get(key, default) if hasattr(prep, "get") else default
    return default if value is None else value


def video_frames(path: str | Path, cfg=None, *, max_seconds: float | None = None,
                 limit_name: str = "generate.max_seconds", progress=False) -> np.ndarray:
    """uint8 RGB frames (T, H, W, 3) at prep.fps (25), refusing clips shorter than prep.min_seconds,
    truncated files, and (with max_seconds) clips longer than that: decoding stops at the limit
    and the error names the setting `limit_name`. progress: a bar over the decoded frames
    (False, True, or tqdm options: dataloaders.video_io.frame_bar)."""
    fps = float(_get(cfg or {}, "fps", 25))
    min_seconds = float(_get(cfg or {}, "min_seconds", 1.0))
    frames = read_video_at_fps(path, fps, max_seconds=max_seconds, limit_name=limit_name, progress=progress)
    if len(frames) < int(round(min_seconds * fps)):
        raise LipVoicerError(f"{path}: clip is {len(frames) / fps:.2f} s long; at least {min_seconds:g} s "
                             f"({int(round(min_seconds * fps))} frames at {fps:g} fps) is needed")
    return frames


_STATE: dict = {}  # per process: the face detector and the mean face, loaded once


def _detector(cfg):
    key = ("detector", str(_get(cfg, "detector", "mediapipe")))
    if key not in _STATE:
        prep = cfg.get("prep", cfg) if hasattr(cfg, "get") else cfg
        _STATE[key] = make_detector(prep)
    return _STATE[key]


def _mean_face(cfg):
    path = str(_get(cfg, "mean_face_path", "checkpoints/20words_mean_face.npy"))
    key = ("mean_face", path)
    if key not in _STATE:
        _STATE[key] = load_mean_face(path)
    return _STATE[key]


def mouth_crops_from_frames(frames: np.ndarray, cfg, source: str = "clip", progress=False,
                            stats: dict | None = None) -> np.ndarray:
    """(T, crop, crop) uint8 mouth crops of RGB frames already at 25 fps (progress: bars over the
    frames for face detection and for cropping; stats: a dict to receive the face-detection counts)."""
    landmarks = _detector(cfg).detect_video(frames, progress=progress)
    if stats is not None:
        found = sum(lm is not None for lm in landmarks)
        stats.update(frames=len(landmarks), frames_with_face=found, frames_interpolated=len(landmarks) - found)
    if all(lm is None for lm in landmarks):
        raise LipVoicerError(f"{source}: no face detected in any frame")
    return crop_mouths(frames, landmarks, _mean_face(cfg), crop_size=int(_get(cfg, "crop_size", 96)),
                       window=int(_get(cfg, "smoothing_window", 12)), warp_size=int(_get(cfg, "warp_size", 256)),
                       source=source, progress=progress)


def mouth_crops_from_video(path: str | Path, cfg, progress=False) -> np.ndarray:
    """(T, 96, 96) uint8 greyscale mouth crops of a video, T = frames at 25 fps.

    cfg: the project config (or its `prep` part, or a dict with the same keys).
    Raises LipVoicerError naming the file and the reason when the video cannot be used
    (truncated files included). progress: bars for decoding, detection and cropping.
    """
    return mouth_crops_from_frames(video_frames(path, cfg, progress=progress), cfg, source=str(path),
                                   progress=progress)


def save_npz(path: Path, data: np.ndarray) -> None:
    """`path` (.npz, key `data`), compressed, written under a temporary name and renamed."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, data=data)

    atomic_write(path, write)


# per-frame bars under a batch job's per-file bar: shown only for a stage lasting over 2 s, and
# removed when it ends, so that short clips add nothing to the output
PER_VIDEO_BAR = {"leave": False, "delay": 2.0}


def _per_video_bars(prep):
    """Per-frame bars in a batch job only on a terminal and when one process does the work (bars
    of parallel workers would interleave; in a log file they would add a line per update)."""
    if (bool(prep.get("progress", True)) and sys.stderr.isatty()
            and resolve_workers(prep.get("num_workers", "auto"), "prep.num_workers") <= 1):
        return PER_VIDEO_BAR
    return False


def crop_one(video: str, out: str, cfg) -> str | None:
    """Write the .npz of one video; returns an error line or None."""
    def work() -> None:
        import cv2  # noqa: PLC0415 - OpenCV is loaded by mouth_crop.py only when cropping; here only to pin its threads

        cv2.setNumThreads(1)
        save_npz(Path(out), mouth_crops_from_video(video, cfg, progress=_per_video_bars(cfg)))

    return failure_line(video, work)


def extract_mouthcrops(ds_dir, out_dir, split: str | None, cfg) -> tuple[int, int, int]:
    """(written, skipped, failed) for the videos of one split (or all splits) of ds_dir:
    `<out_dir>/<same relative path>.npz`."""
    prep = prep_settings(cfg)
    _mean_face(prep)  # a missing mean face or detector package stops the job before it starts
    check_backend(str(prep.get("detector", "mediapipe")))
    return run_video_job(ds_dir, out_dir, split, prep, ".npz", crop_one, "mouth crops")
