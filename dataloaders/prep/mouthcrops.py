"""Mouth crops of a video: (T, 96, 96) uint8 greyscale, T = frames at 25 fps; and the batch job
writing them for every video of a split (`python dataloaders/extract_mouthcrops.py`).

A video is read twice as a stream (dataloaders/video_io/), so memory grows with the number of
frames at crop size, never at full resolution:

1. decode + detect: every face of every frame at 25 fps (prep.detector,
   dataloaders/prep/face_detection.py); faces are linked over time into tracks and one track
   is chosen (prep.track, prep.track_index; dataloaders/prep/face_tracking.py), so two people
   are never mixed;
2. the chosen track is checked: the fraction of frames where it is found
   (`min_face_fraction`), the longest run of frames it is lost for (`max_gap_frames`), and
   how much the face must be magnified (a warning above prep.max_mouth_upscale);
3. decode + crop: dataloaders/prep/mouth_crop.py (gaps interpolated, 12-frame smoothing,
   alignment to the mean face, 96 x 96 crop around the mouth), and the identity image:
   a face-centred square (dataloaders/face_image.py) of the frame where the track's
   detection scores highest.

A video that cannot be used (no face, too few frames with the face, corrupt, no video stream,
shorter than prep.min_seconds) raises a LipVoicerError naming the file and the reason.

    faces = analyse_video("clip.mp4", cfg)     # .crops, .boxes, .identity, .identity_frame, .stats
    crops = mouth_crops_from_video("clip.mp4", cfg)
    frames = video_frames("clip.mp4", cfg)     # every frame in memory (small clips and tests only)

cfg: the project config, its `prep` part, or a dict with the same keys.
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataloaders.face_image import face_square
from dataloaders.prep.face_detection import check_backend, make_detector
from dataloaders.prep.face_tracking import (build_tracks, choose_track, track_boxes, track_landmarks, track_summary,
                                            tracking_settings)
from dataloaders.prep.fan_landmarks import fetch_weights
from dataloaders.prep.jobs import failure_line, prep_settings, run_video_job
from dataloaders.prep.mouth_crop import MouthCropper, fill_missing, load_mean_face, prepare_landmarks
from dataloaders.prep.mouth_motion import detect_with_mouths
from dataloaders.video_io.decode import iter_video_frames, open_video_stream, read_video_at_fps
from utils.errors import LipVoicerError
from utils.files import atomic_write
from utils.processes import resolve_workers
from dataloaders.progress import frame_bar

log = logging.getLogger(__name__)


def _get(cfg, key, default):
    """cfg.prep.<key> from a full config, a prep config or a plain dict."""
    prep = _prep_part(cfg)
    value = prep.get(key, default) if hasattr(prep, "get") else default
    return default if value is None else value


def video_frames(path: str | Path, cfg=None, *, max_seconds: float | None = None,
                 limit_name: str = "generate.max_seconds", progress=False) -> np.ndarray:
    """uint8 RGB frames (T, H, W, 3) at prep.fps (25), refusing clips shorter than prep.min_seconds,
    truncated files, and (with max_seconds) clips longer than that: decoding stops at the limit
    and the error names the setting `limit_name`. progress: a bar over the decoded frames
    (False, True, or tqdm options: dataloaders.progress.frame_bar)."""
    fps = float(_get(cfg or {}, "fps", 25))
    min_seconds = float(_get(cfg or {}, "min_seconds", 1.0))
    frames = read_video_at_fps(path, fps, max_seconds=max_seconds, limit_name=limit_name, progress=progress)
    if len(frames) < int(round(min_seconds * fps)):
        raise _too_short(path, len(frames) / fps, min_seconds, fps)
    return frames


def _too_short(source, seconds: float, min_seconds: float, fps: float) -> LipVoicerError:
    return LipVoicerError(f"{source}: clip is {seconds:.2f} s long; at least {min_seconds:g} s "
                          f"({int(round(min_seconds * fps))} frames at {fps:g} fps) is needed")


_STATE: dict = {}  # per process: the face detector and the mean face, loaded once


def _detector(cfg):
    key = ("detector", str(_get(cfg, "detector", "mediapipe")))
    if key not in _STATE:
        prep = _prep_part(cfg)
        _STATE[key] = make_detector(prep)
    return _STATE[key]


def _mean_face(cfg):
    path = str(_get(cfg, "mean_face_path", "checkpoints/20words_mean_face.npy"))
    key = ("mean_face", path)
    if key not in _STATE:
        _STATE[key] = load_mean_face(path)
    return _STATE[key]


@dataclass
class FaceVideo:
    """What the two passes over a video keep (nothing at full resolution but the identity image)."""
    crops: np.ndarray            # (T, crop, crop) uint8 greyscale mouth crops
    boxes: np.ndarray            # (T, 4) float32 x0, y0, x1, y1 of the tracked face, gaps interpolated
    identity: np.ndarray | None  # uint8 RGB face-centred square of `identity_frame` (None: not asked for)
    identity_frame: int          # frame (at 25 fps) the identity image comes from
    stats: dict                  # detection statistics (JSON-able), see face_statistics


@dataclass
class FaceLimits:
    """The checks of step 2, with the setting names the messages give."""
    min_face_fraction: float = 0.0
    max_gap_frames: int | None = None
    max_mouth_upscale: float | None = None
    prefix: str = "prep"

    @classmethod
    def from_cfg(cls, cfg, prefix: str = "prep") -> "FaceLimits":
        gap = _get(cfg, "max_gap_frames", None)
        up = _get(cfg, "max_mouth_upscale", None)
        return cls(float(_get(cfg, "min_face_fraction", 0.0)), None if gap is None else int(gap),
                   None if up is None else float(up), prefix)


def longest_gap(found: list[bool]) -> tuple[int, int]:
    """(length, first frame) of the longest run of frames without the face (edges included)."""
    best, best_at, run, at = 0, 0, 0, 0
    for i, f in enumerate(found):
        if f:
            run = 0
            continue
        if run == 0:
            at = i
        run += 1
        if run > best:
            best, best_at = run, at
    return best, best_at


def face_statistics(track, n: int, summary: dict, fps: float) -> dict:
    """JSON-able statistics of the chosen track over a clip of n frames."""
    found = [False] * n
    for t in track.frames:
        found[t] = True
    k = sum(found)
    gap, gap_at = longest_gap(found)
    sizes = [f.size for f in track.faces]
    return {"frames": n, "frames_with_face": k, "frames_interpolated": n - k,
            "face_fraction": round(k / n, 4) if n else 0.0,
            "longest_gap_frames": gap, "longest_gap_start_frame": gap_at if gap else None,
            "longest_gap_seconds": round(gap / fps, 3),
            "median_face_px": round(float(np.median(sizes)), 1) if sizes else None,
            "tracks": summary}


def check_face_statistics(stats: dict, limits: FaceLimits, source: str) -> None:
    """Refuse a clip whose chosen face is found too rarely or lost for too long (one line each)."""
    n, k = stats["frames"], stats["frames_with_face"]
    if k == 0:
        raise LipVoicerError(f"{source}: no face detected in any frame")
    if stats["face_fraction"] < limits.min_face_fraction:
        raise LipVoicerError(
            f"{source}: a face is found in only {k} of {n} frames ({100.0 * k / n:.0f} %), below "
            f"{limits.prefix}.min_face_fraction={limits.min_face_fraction:g} (no talking face, or one too small, "
            f"turned away or leaving the frame; lower the limit to accept the clip)")
    gap = stats["longest_gap_frames"]
    if limits.max_gap_frames is not None and gap > limits.max_gap_frames:
        at = stats["longest_gap_start_frame"]
        raise LipVoicerError(
            f"{source}: the face is lost for {gap} frames in a row (frames {at}-{at + gap - 1}, "
            f"{stats['longest_gap_seconds']:.2f} s), more than {limits.prefix}.max_gap_frames={limits.max_gap_frames}; "
            f"its mouth crops would be guessed (a scene cut, or the face leaving the frame: cut the video there, or "
            f"raise the limit)")


def _fill_boxes(boxes: list) -> np.ndarray:
    """(T, 4) boxes of the chosen track, interpolated / extended over frames without it."""
    return np.stack(fill_missing(boxes)).astype(np.float32)


def _frame_source(frames_or_path, cfg, max_seconds, limit_name):
    """A callable giving a fresh iterable over the frames at 25 fps (in memory, or streamed from the file)."""
    if isinstance(frames_or_path, (str, Path)):
        fps = float(_get(cfg, "fps", 25))
        return lambda: iter_video_frames(frames_or_path, fps, max_seconds=max_seconds, limit_name=limit_name)
    return lambda: frames_or_path


def _analyse(frames_or_path, cfg, *, source: str, limits: FaceLimits | None, identity_size: int | None,
             max_seconds=None, limit_name="generate.max_seconds", progress=False, total=None) -> FaceVideo:
    fps = float(_get(cfg, "fps", 25))
    frames = _frame_source(frames_or_path, cfg, max_seconds, limit_name)
    settings = tracking_settings(_prep_part(cfg))  # a bad prep.track* value stops before any detection
    detector = _detector(cfg)
    faces_per_frame = []
    with frame_bar(total, "face detection", progress) as bar:
        for frame in frames():
            faces_per_frame.append(detect_with_mouths(detector, frame))
            bar.update(1)
    n = len(faces_per_frame)
    min_seconds = float(_get(cfg, "min_seconds", 1.0))
    if n < int(round(min_seconds * fps)):
        raise _too_short(source, n / fps, min_seconds, fps)
    if not any(faces_per_frame):
        raise LipVoicerError(f"{source}: no face detected in any frame")
    tracks = build_tracks(faces_per_frame, settings["min_iou"], settings["max_keypoint_distance"], settings["max_gap"])
    chosen = choose_track(tracks, settings["rule"], settings["index"])
    stats = face_statistics(chosen, n, track_summary(tracks, chosen), fps)
    stats["detector"] = str(_get(cfg, "detector", "mediapipe"))
    stats["frames_with_any_face"] = sum(bool(f) for f in faces_per_frame)
    check_face_statistics(stats, limits or FaceLimits(), source)
    landmarks = prepare_landmarks(track_landmarks(chosen, n), int(_get(cfg, "smoothing_window", 12)), source)
    boxes = _fill_boxes(track_boxes(chosen, n))
    best = int(np.argmax([f.score for f in chosen.faces]))  # the first of equal scores
    identity_frame = int(chosen.frames[best])
    crop_size = int(_get(cfg, "crop_size", 96))
    cropper = MouthCropper(_mean_face(cfg), landmarks[0].shape[0], crop_size, int(_get(cfg, "warp_size", 256)),
                           source)
    crops = np.empty((n, crop_size, crop_size), dtype=np.uint8)
    identity = None
    with frame_bar(n, "mouth cropping", progress) as bar:
        for i, frame in enumerate(frames()):
            if i >= n:
                break
            crops[i] = cropper(frame, landmarks[i])
            if identity_size is not None and i == identity_frame:
                identity = face_square(frame, boxes[i], out_size=identity_size)
            bar.update(1)
    if len(cropper.scales) != n:
        raise LipVoicerError(f"{source}: the video decoded to {len(cropper.scales)} frames the second time, "
                             f"{n} the first")
    upscale = float(np.median(cropper.scales))
    stats["mouth_upscale"] = round(upscale, 3)
    stats["identity_frame"] = identity_frame
    if limits is not None and limits.max_mouth_upscale is not None and upscale > limits.max_mouth_upscale:
        log.warning("%s: the face is small (about %s px): mouth crops are magnified %.1fx (more than "
                    "prep.max_mouth_upscale=%g) and will be blurry", source, stats["median_face_px"], upscale,
                    limits.max_mouth_upscale)
    return FaceVideo(crops=crops, boxes=boxes, identity=identity, identity_frame=identity_frame, stats=stats)


def _prep_part(cfg):
    """cfg.prep of a full config; a prep config or plain dict as it is."""
    return cfg.get("prep", cfg) if hasattr(cfg, "get") else cfg


def analyse_video(path: str | Path, cfg, *, limits: FaceLimits | None = None, identity_size: int | None = None,
                  max_seconds: float | None = None, limit_name: str = "generate.max_seconds",
                  progress=False) -> FaceVideo:
    """Mouth crops, face boxes, identity image and detection statistics of a video, streamed twice
    (see the module's docstring). limits: the checks (default: prep's); identity_size: the side of
    the identity image (None: not made); max_seconds: decoding stops past it (error naming
    `limit_name`); progress: bars over the frames (False, True or tqdm options)."""
    fps = float(_get(cfg, "fps", 25))
    stream = open_video_stream(path, fps, max_seconds=max_seconds, limit_name=limit_name, progress=progress)
    min_seconds = float(_get(cfg, "min_seconds", 1.0))
    if stream.header_seconds is not None and stream.header_seconds < min_seconds - 0.5 / fps:
        raise _too_short(path, stream.header_seconds, min_seconds, fps)
    # a first pass that only decodes (no pictures made): a truncated file, or one past max_seconds whose header
    # gives no duration (a raw .h264 stream), is refused before any face detection; and the bars get a total
    total = stream.count()
    return _analyse(path, cfg, source=str(path), limits=limits or FaceLimits.from_cfg(cfg),
                    identity_size=identity_size, max_seconds=max_seconds, limit_name=limit_name,
                    progress=progress, total=total)


def mouth_crops_from_frames(frames: np.ndarray, cfg, source: str = "clip", progress=False,
                            stats: dict | None = None) -> np.ndarray:
    """(T, crop, crop) uint8 mouth crops of RGB frames already in memory at 25 fps, through the same
    detection, tracking and checks as analyse_video (stats: a dict to receive the statistics)."""
    result = _analyse(frames, cfg, source=source, limits=FaceLimits.from_cfg(cfg), identity_size=None,
                      progress=progress, total=len(frames))
    if stats is not None:
        stats.update(result.stats)
    return result.crops


def mouth_crops_from_video(path: str | Path, cfg, progress=False) -> np.ndarray:
    """(T, 96, 96) uint8 greyscale mouth crops of a video, T = frames at 25 fps (analyse_video's crops).

    cfg: the project config (or its `prep` part, or a dict with the same keys).
    Raises LipVoicerError naming the file and the reason when the video cannot be used
    (truncated files included). progress: bars for decoding, detection and cropping.
    """
    return analyse_video(path, cfg, progress=progress).crops


def save_npz(path: Path, data: np.ndarray, **extra: np.ndarray) -> None:
    """`path` (.npz: key `data` and any `extra` arrays), compressed, written under a temporary name
    and renamed."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, data=data, **extra)

    atomic_write(path, write)


def save_face_video(path: Path, faces: FaceVideo) -> None:
    """The .npz of data preparation: `data` (mouth crops), `face_boxes` (T, 4) and `face_frame` (the
    identity frame) for the datasets' face-centred identity images, `detection` (the statistics as JSON)."""
    save_npz(path, faces.crops, face_boxes=faces.boxes, face_frame=np.int64(faces.identity_frame),
             detection=np.array(json.dumps(faces.stats)))


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
        save_face_video(Path(out), analyse_video(video, cfg, progress=_per_video_bars(cfg)))

    return failure_line(video, work)


def extract_mouthcrops(ds_dir, out_dir, split: str | None, cfg) -> tuple[int, int, int]:
    """(written, skipped, failed) for the videos of one split (or all splits) of ds_dir:
    `<out_dir>/<same relative path>.npz`."""
    prep = prep_settings(cfg)
    _mean_face(prep)  # a missing mean face or detector package stops the job before it starts
    check_backend(str(prep.get("detector", "mediapipe")))
    if str(prep.get("detector")) == "face_alignment":  # weights fetched once here, not by every worker at once
        fetch_weights(str(prep.get("face_alignment_detector", "sfd")))
    return run_video_job(ds_dir, out_dir, split, prep, ".npz", crop_one, "mouth crops")
