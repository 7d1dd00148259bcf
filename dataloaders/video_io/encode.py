"""Writing: H.264 .mp4 files from frames in memory (with an optional mono AAC sound track), through a
temporary name and an atomic rename; the audio and picture encoding shared with muxing."""
from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import numpy as np

from dataloaders.video_io.probe import _av
from utils.errors import LipVoicerError
from utils.files import atomic_write


def _to_int16(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio)
    if a.dtype == np.int16:
        return a.reshape(-1)
    return (np.clip(a.astype(np.float32).reshape(-1), -1.0, 1.0) * 32767.0).round().astype(np.int16)


def _add_audio_stream(container, sample_rate: int, codec: str = "aac"):
    stream = container.add_stream(codec, rate=int(sample_rate))
    stream.layout = "mono"
    if codec == "aac":
        stream.bit_rate = 64000
    return stream


def _encode_audio(container, stream, audio: np.ndarray, sample_rate: int) -> None:
    av = _av()
    pcm = _to_int16(audio)
    step = 1024 * 8
    for start in range(0, len(pcm), step):
        chunk = pcm[start:start + step].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
        frame.sample_rate = int(sample_rate)
        frame.pts = start
        frame.time_base = Fraction(1, int(sample_rate))
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def _yuv420p_frame(rgb: np.ndarray):
    """A yuv420p frame of an RGB image whose plane padding is zeroed.

    x264 reads a little past the image width; with the padding left uninitialised (as
    PyAV allocates it) the encoded file would depend on earlier memory contents.
    """
    av = _av()
    src = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    h, w = rgb.shape[:2]
    out = av.VideoFrame(w, h, "yuv420p")
    for i, (sp, dp) in enumerate(zip(src.planes, out.planes)):
        rows, cols = (h, w) if i == 0 else (h // 2, w // 2)
        data = np.frombuffer(sp, np.uint8).reshape(rows, sp.line_size)[:, :cols]
        buf = np.zeros((rows, dp.line_size), np.uint8)
        buf[:, :cols] = data
        dp.update(buf)
    return out


def write_video(path: str | Path, frames, fps: float = 25.0, audio: np.ndarray | None = None,
                sample_rate: int = 16000, crf: int = 20, preset: str = "veryfast", threads: int = 1) -> Path:
    """H.264 (yuv420p) .mp4 from uint8 RGB frames (T, H, W, 3) or greyscale (T, H, W) with optional mono
    AAC audio. frames may also be any iterable of (H, W, 3) / (H, W) frames of one size (encoded as they
    come: a long video need not be held in memory).

    Odd frame sizes are cropped by one pixel (yuv420p needs even sizes). One encoder thread
    (the default) makes the file depend on the frames only; threads=0 lets x264 choose.
    """
    av = _av()
    if isinstance(frames, np.ndarray) and frames.ndim not in (3, 4):
        raise LipVoicerError(f"{path}: frames must be a non-empty (T, H, W, 3) array, got {frames.shape}")
    it = iter(frames)
    first = next(it, None)
    first = None if first is None else np.asarray(first)
    if first is None or not (first.ndim == 2 or (first.ndim == 3 and first.shape[-1] == 3)):
        shape = "none" if first is None else first.shape
        raise LipVoicerError(f"{path}: frames must be a non-empty (T, H, W, 3) array, got frames of shape {shape}")
    h, w = first.shape[0] // 2 * 2, first.shape[1] // 2 * 2
    path = Path(path)

    def rgb(img) -> np.ndarray:
        img = np.asarray(img)
        if img.ndim == 2:  # greyscale
            img = np.repeat(img[..., None], 3, axis=-1)
        return np.ascontiguousarray(img[:h, :w].astype(np.uint8, copy=False))

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as out:
            vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.options = {"crf": str(crf), "preset": preset, "threads": str(int(threads))}
            astream = _add_audio_stream(out, sample_rate) if audio is not None else None
            for img in itertools.chain([first], it):
                for packet in vs.encode(_yuv420p_frame(rgb(img))):
                    out.mux(packet)
            for packet in vs.encode(None):
                out.mux(packet)
            if astream is not None:
                _encode_audio(out, astream, audio, sample_rate)

    atomic_write(path, write)
    return path
