"""Opening a media file and what its header says: frame rate, size as displayed, duration, audio,
rotation; how many frames a file may decode short of its header before it counts as truncated.
Unreadable input raises LipVoicerError with one line naming the file and the reason."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dataloaders.video_io.orientation import UPRIGHT, _first_frame
from utils.errors import LipVoicerError


def _av():
    import av  # noqa: PLC0415 - keep `import dataloaders.video_io` light

    return av


def _open_input(path: str | Path):
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise LipVoicerError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise LipVoicerError(f"{path}: empty file")
    try:
        return av.open(str(path), "r")
    except av.error.FFmpegError as e:
        raise LipVoicerError(f"{path}: cannot open as a video (corrupt, truncated or not a media file: "
                             f"{_reason(e)})") from None


def _reason(e: Exception) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return " ".join(str(msg).split())


def _video_stream(container, path):
    if not container.streams.video:
        raise LipVoicerError(f"{path}: no video stream")
    return container.streams.video[0]


def _stream_fps(stream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            fps = float(rate)
            if 0 < fps < 1000:
                return fps
    return None


def probe_video(path: str | Path) -> dict:
    """fps, frame count (from the header; may be 0 when unknown), displayed size (a rotated phone
    video's width and height swapped), duration, has_audio, rotation (counter-clockwise degrees of
    the display matrix: 0, 90, 180 or 270). Decodes the first frame (the display matrix)."""
    path = Path(path)
    with _open_input(path) as c:
        vs = _video_stream(c, path)
        fps = _stream_fps(vs) or 25.0
        duration = None
        if vs.duration is not None and vs.time_base:
            duration = float(vs.duration * vs.time_base)
        elif c.duration:
            duration = c.duration / 1_000_000.0
        info = {"fps": fps, "frames": int(vs.frames or 0), "width": vs.codec_context.width,
                "height": vs.codec_context.height, "duration": duration, "has_audio": bool(c.streams.audio)}
        first = _first_frame(c, vs)
    orientation = first[0] if first else UPRIGHT
    if first and not (info["width"] and info["height"]):
        info["width"], info["height"] = first[1], first[2]
    info["width"], info["height"] = orientation.displayed_size(info["width"], info["height"])
    info["rotation"] = orientation.rotation
    return info


def missing_frames_tolerated(header_frames: float) -> int:
    """Frames a file may decode short of its header before it counts as truncated: 2 frames
    (rounding of the stated duration, a damaged frame the decoder drops), or 1 % of the
    header's count when that is more (a cut file misses far more: 40 % for 60 % of its bytes)."""
    return max(2, int(np.ceil(0.01 * header_frames)))


def _header_length(container, stream, fps: float) -> tuple[float | None, float]:
    """(seconds the header says the video stream lasts or None, the stream's start in seconds)."""
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base), start
    if stream.frames:  # the mp4 sample count (the duration above accounts for edit lists, so comes first)
        return stream.frames / fps, start
    tag = _tag_seconds(stream.metadata.get("DURATION"))  # Matroska written by FFmpeg: the stream's end time
    if tag:
        return tag, 0.0
    if container.duration and len(container.streams) == 1:  # a video-only file with a container duration
        return container.duration / 1_000_000.0, start
    return None, start


def _tag_seconds(value) -> float | None:
    """'HH:MM:SS.fraction' -> seconds (None when absent or malformed)."""
    try:
        h, m, sec = str(value).split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except (TypeError, ValueError):
        return None
