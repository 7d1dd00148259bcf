"""Face crops as SyncNet sees them: 224 x 224 BGR squares framed the way syncnet_python's run_pipeline.py
frames a face track (the video input of the LSE-C / LSE-D scores).

Framing of one track (the original's numbers): per frame the box's half side s = max(width, height) / 2 and
its centre (x, y); each of s, x, y median-filtered over 13 frames along the track (scipy.signal.medfilt,
which pads the ends of the track with zeros, as the original does); then with crop_scale c = 0.4 the frame
is padded by int(s (1 + 2c)) pixels of value 110 on every side, and the window

    rows    y - s        ... y + s (1 + 2c)      (the face's top to well below the chin)
    columns x - s (1 + c) ... x + s (1 + c)

(ends truncated to integers as the original slices them) is resized to 224 x 224 (OpenCV, bilinear) and
kept in BGR order, pixel values 0..255, as cv2 reads the original's frames.

Where this differs from the original (docs/evaluate.md):
* the face boxes come from the project's own face detection and tracking (prep.detector, MediaPipe by
  default; prep.track picks the face, `speaking` by default) instead of S3FD (run at a quarter of the
  frame size, confidence 0.9) and the original's IoU tracker; their boxes differ in size and position, so
  absolute scores are comparable only between numbers computed the same way;
* the frames are used as decoded, without the original's JPEG and XVID round trips;
* every clip is scored whatever its length (the original keeps tracks longer than 100 frames and faces
  larger than 100 pixels only), down to 7 frames (below that the zero padding of the 13-frame median
  filter would be the median); the frames from the track's first to its last detection are scored,
  boxes of frames without a detection in between linearly interpolated, as the original does;
* a window reaching past the padded frame (a face centre outside the frame) is filled with the padding
  value instead of being cut short and stretched.

    crops = syncnet_crops_from_video("clip.mp4", cfg)   # .crops (n, 224, 224, 3) BGR uint8, .first, .stats
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from dataloaders.prep.face_tracking import build_tracks, choose_track, track_boxes, tracking_settings
from dataloaders.prep.mouth_crop import fill_missing
from dataloaders.prep.mouth_motion import detect_with_mouths
from dataloaders.prep.mouthcrops import _detector
from dataloaders.progress import frame_bar
from dataloaders.video_io.decode import iter_video_frames
from utils.errors import LipVoicerError

CROP_SCALE = 0.4      # run_pipeline.py --crop_scale
SMOOTHING = 13        # median filter over this many frames (box side and centre)
PAD_VALUE = 110       # grey of the padding around the frame
OUT_SIZE = 224        # SyncNet's input
# medfilt's zero padding: a track shorter than this gets a median of 0 (no face) at its ends
MIN_TRACK = SMOOTHING // 2 + 1


def framing(boxes: np.ndarray, smoothing: int = SMOOTHING) -> np.ndarray:
    """(n, 3) centre x, centre y and half side s per frame of a track's (n, 4) x0, y0, x1, y1 boxes, each
    median-filtered over `smoothing` frames with zero padding at the ends (scipy.signal.medfilt)."""
    from scipy.signal import medfilt  # noqa: PLC0415 - SciPy comes with the face tracking

    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.maximum(b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]) / 2.0
    x = (b[:, 0] + b[:, 2]) / 2.0
    y = (b[:, 1] + b[:, 3]) / 2.0
    with warnings.catch_warnings():  # a track shorter than the filter: medfilt pads it with zeros and warns
        warnings.simplefilter("ignore")
        return np.stack([medfilt(x, smoothing), medfilt(y, smoothing), medfilt(s, smoothing)], axis=1)


def face_crop(rgb: np.ndarray, cx: float, cy: float, s: float, crop_scale: float = CROP_SCALE,
              pad_value: int = PAD_VALUE, out_size: int = OUT_SIZE) -> np.ndarray:
    """(out_size, out_size, 3) uint8 BGR crop of one RGB frame framed around (cx, cy) with half side s (see the
    module text), as the original cuts it from the frame padded with pad_value."""
    import cv2  # noqa: PLC0415 - OpenCV comes with the face detection

    frame = np.asarray(rgb)
    h, w = frame.shape[:2]
    pad = int(s * (1 + 2 * crop_scale))
    my, mx = cy + pad, cx + pad                       # the centre in the padded frame
    r0, r1 = int(my - s), int(my + s * (1 + 2 * crop_scale))
    c0, c1 = int(mx - s * (1 + crop_scale)), int(mx + s * (1 + crop_scale))
    if r1 <= r0 or c1 <= c0:
        raise LipVoicerError(f"face box of size {2 * s:.1f} px: nothing to crop")
    window = np.full((r1 - r0, c1 - c0, 3), pad_value, dtype=np.uint8)
    # the part of the window that lies on the frame (padded coordinates -> frame coordinates: minus pad)
    fr0, fr1 = max(r0 - pad, 0), min(r1 - pad, h)
    fc0, fc1 = max(c0 - pad, 0), min(c1 - pad, w)
    if fr1 > fr0 and fc1 > fc0:
        window[fr0 - (r0 - pad):fr1 - (r0 - pad), fc0 - (c0 - pad):fc1 - (c0 - pad)] = frame[fr0:fr1, fc0:fc1, ::-1]
    return cv2.resize(window, (out_size, out_size))


def face_crops(frames: Iterable[np.ndarray], boxes: np.ndarray, first: int = 0, progress=False,
               total: int | None = None) -> np.ndarray:
    """(n, 224, 224, 3) BGR crops of frames first .. first + n - 1 of an RGB frame sequence, framed from the
    track's n boxes (framing + face_crop). Fewer frames than boxes, or a track shorter than MIN_TRACK frames
    (its medians would be the zero padding), is an error (the caller names the file)."""
    n = len(boxes)
    if n < MIN_TRACK:
        raise LipVoicerError(f"the face is tracked over {n} frames; SyncNet's framing (a {SMOOTHING}-frame median "
                             f"filter) needs at least {MIN_TRACK}")
    f = framing(boxes)
    out = np.empty((n, OUT_SIZE, OUT_SIZE, 3), dtype=np.uint8)
    k = 0
    with frame_bar(total, "SyncNet face crops", progress) as bar:
        for t, frame in enumerate(frames):
            if t >= first + n:
                break
            if t >= first:
                out[k] = face_crop(frame, *f[k])
                k += 1
            bar.update(1)
    if k != n:
        raise LipVoicerError(f"the video has {first + k} frames, the face track needs {first + n}")
    return out


@dataclass
class SyncCrops:
    crops: np.ndarray   # (n, 224, 224, 3) uint8 BGR, frames first .. first + n - 1
    first: int          # the first frame (at 25 fps) of the crops
    frames: int         # frames of the whole video
    stats: dict         # JSON-able: detector, track rule, frames with the face, interpolated frames


def track_span_boxes(faces_per_frame, prep_cfg) -> tuple[np.ndarray, int, dict]:
    """((n, 4) boxes from the chosen track's first to its last detection, gaps interpolated; its first frame;
    stats) from every frame's detected faces, the track chosen by prep.track (prep.track=all: `speaking`)."""
    settings = tracking_settings(prep_cfg or {})
    tracks = build_tracks(faces_per_frame, settings["min_iou"], settings["max_keypoint_distance"], settings["max_gap"])
    rule = "speaking" if settings["rule"] == "all" else settings["rule"]
    index = settings["index"] if settings["index"] is not None and settings["index"] < len(tracks) else None
    chosen = choose_track(tracks, rule, index)
    if chosen is None:
        raise LipVoicerError("no face detected in any frame")
    per_frame = track_boxes(chosen, len(faces_per_frame))[chosen.first:chosen.last + 1]
    boxes = np.stack(fill_missing(per_frame)).astype(np.float64)
    stats = {"track_rule": chosen.chosen_by, "n_tracks": len(tracks), "first_frame": int(chosen.first),
             "last_frame": int(chosen.last), "frames_with_face": int(chosen.length),
             "frames_interpolated": int(len(boxes) - chosen.length)}
    return boxes, int(chosen.first), stats


def syncnet_crops_from_video(path: str | Path, cfg, progress=False, max_seconds: float | None = None) -> SyncCrops:
    """SyncNet's face crops of a video at 25 fps, streamed twice (detect + track, then crop): the frames from
    the chosen face track's first to its last detection. No face in any frame, or an unreadable video, is one
    LipVoicerError naming the file. cfg: the project config or its prep part (detector, tracking)."""
    prep = cfg.get("prep", cfg) if hasattr(cfg, "get") else cfg
    fps = float(prep.get("fps", 25) if hasattr(prep, "get") else 25)
    source = str(path)
    try:
        detector, faces = _detector(cfg), []
        with frame_bar(None, "face detection", progress) as bar:
            for frame in iter_video_frames(path, fps, max_seconds=max_seconds):
                faces.append(detect_with_mouths(detector, frame))
                bar.update(1)
        boxes, first, stats = track_span_boxes(faces, prep)
        crops = face_crops(iter_video_frames(path, fps, max_seconds=max_seconds), boxes, first, progress, len(faces))
    except LipVoicerError as e:
        msg = str(e)
        raise LipVoicerError(msg if msg.startswith(source) else f"{source}: {msg}") from None
    stats.update(detector=str(prep.get("detector", "mediapipe") if hasattr(prep, "get") else "mediapipe"),
                 frames=len(faces))
    return SyncCrops(crops, first, len(faces), stats)
