"""Video and audio in and out of .mp4 files with PyAV (bundled FFmpeg; no ffmpeg binary needed).

    frames, fps = read_video("clip.mp4")              # uint8 RGB (T, H, W, 3), frames per second
    frames = read_video_at_fps("clip.mp4", 25)        # resampled to 25 fps when needed
    wav = read_audio("clip.mp4", 16000)               # float32 mono in [-1, 1]
    write_video("out.mp4", frames, 25, audio=wav, sample_rate=16000)
    mux_audio("silent.mp4", wav, 16000, "with_speech.mp4")

Every writer goes through a temporary name in the destination folder and an atomic
rename, so an interrupted job never leaves a half-written file under the final name.
Unreadable input raises LipVoicerError with one line naming the file and the reason.

Reading checks what it decodes against the file's header: a file that decodes to less
than its header states (a download or copy cut short: an .mp4 with its index first
stays playable up to the cut) is refused as truncated when more than
`missing_frames_tolerated(n)` frames are missing (2 frames, or 1 % of the header's
frame count when that is more). `max_seconds` stops decoding as soon as the frames
read pass the limit, for streams whose header gives no duration (raw .h264).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.errors import LipVoicerError
from utils.files import FULL_ERRNOS, atomic_write, write_errno


def frame_bar(total: int | None, desc: str, progress=False) -> tqdm:
    """A tqdm bar over frames on stderr (rate in frame/s), used as a context manager so that it is
    closed (and its line ended) before any error is printed. progress: False (no bar), True, or a
    dict of tqdm options (e.g. {"leave": False, "delay": 2.0} for bars under a batch job's bar)."""
    options = dict(progress) if isinstance(progress, dict) else {}
    return tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True, disable=not progress, **options)


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
    """fps, frame count (from the header; may be 0 when unknown), size, duration, has_audio."""
    path = Path(path)
    with _open_input(path) as c:
        vs = _video_stream(c, path)
        fps = _stream_fps(vs) or 25.0
        duration = None
        if vs.duration is not None and vs.time_base:
            duration = float(vs.duration * vs.time_base)
        elif c.duration:
            duration = c.duration / 1_000_000.0
        return {"fps": fps, "frames": int(vs.frames or 0), "width": vs.codec_context.width,
                "height": vs.codec_context.height, "duration": duration, "has_audio": bool(c.streams.audio)}


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


def _decoded_seconds(times: list, n: int, fps: float, start: float) -> float:
    """Seconds covered by the n frames decoded so far (their timestamps when known, else n / fps)."""
    last = times[-1] if times else None
    if last is None:
        return n / fps
    return float(last) - start + 1.0 / fps


def read_video(path: str | Path, with_times: bool = False, max_seconds: float | None = None,
               limit_name: str = "max_seconds", progress=False):
    """All frames as uint8 RGB (T, H, W, 3) and the stream's frame rate (plus frame times in s).

    max_seconds: stop with a LipVoicerError (naming the setting `limit_name`) as soon as the
    frames decoded pass this many seconds. A file decoding to less than its header says
    (beyond missing_frames_tolerated) raises "truncated video". progress: see frame_bar.
    """
    av = _av()
    path = Path(path)
    frames, times = [], []
    with _open_input(path) as c:
        vs = _video_stream(c, path)
        vs.thread_type = "AUTO"
        fps = _stream_fps(vs)
        rate = fps or 25.0
        header_s, start = _header_length(c, vs, rate)
        total = int(round(header_s * rate)) if header_s else None
        with frame_bar(total, "decode", progress) as bar:
            try:
                for frame in c.decode(vs):
                    frames.append(frame.to_ndarray(format="rgb24"))
                    times.append(frame.time)
                    bar.update(1)
                    if max_seconds is not None:
                        seconds = _decoded_seconds(times, len(frames), rate, start)
                        if seconds > float(max_seconds) + 1e-6:
                            raise LipVoicerError(
                                f"{path}: video is longer than {float(max_seconds):g} s (decoding stopped at frame "
                                f"{len(frames)}, {seconds:.2f} s"
                                f"{'' if header_s else '; its header gives no duration'}); the limit is "
                                f"{float(max_seconds):g} s ({limit_name}; memory grows with length: cut the video "
                                f"or raise the limit)")
            except av.error.FFmpegError as e:
                raise LipVoicerError(f"{path}: corrupt or truncated video (decoding failed after {len(frames)} "
                                     f"frames: {_reason(e)})") from None
    if not frames:
        raise LipVoicerError(f"{path}: no decodable video frames (corrupt or truncated file)")
    if header_s:
        decoded_s = _decoded_seconds(times, len(frames), rate, start)
        if (header_s - decoded_s) * rate > missing_frames_tolerated(header_s * rate):
            raise LipVoicerError(f"{path}: truncated video: header says {header_s:.2f} s, only {decoded_s:.2f} s "
                                 f"decode")
    if fps is None:
        fps = _fps_from_times(times) or 25.0
    arr = np.stack(frames)
    if with_times:
        return arr, fps, times
    return arr, fps


def _fps_from_times(times) -> float | None:
    t = np.array([x for x in times if x is not None], dtype=np.float64)
    if len(t) < 2:
        return None
    step = np.median(np.diff(t))
    return 1.0 / step if step > 0 else None


def resample_indices(times, src_fps: float, dst_fps: float) -> np.ndarray:
    """Source frame index for each output frame at dst_fps (nearest frame in time).

    times: presentation time of each source frame in seconds (None entries, or None for
    the whole list, fall back to a regular grid at src_fps).
    """
    n = len(times)
    t = np.array([np.nan if x is None else x for x in times], dtype=np.float64)
    if np.isnan(t).any() or n < 2 or np.any(np.diff(t) <= 0):
        t = np.arange(n) / float(src_fps)
    t = t - t[0]
    duration = t[-1] + 1.0 / float(src_fps)
    n_out = max(1, int(round(duration * dst_fps)))
    out_t = np.arange(n_out) / float(dst_fps)
    idx = np.searchsorted(t, out_t, side="left")
    idx = np.clip(idx, 0, n - 1)
    prev = np.clip(idx - 1, 0, n - 1)
    use_prev = np.abs(out_t - t[prev]) <= np.abs(t[idx] - out_t)
    return np.where(use_prev, prev, idx)


def read_video_at_fps(path: str | Path, fps: float = 25.0, return_src_fps: bool = False,
                      max_seconds: float | None = None, limit_name: str = "max_seconds", progress=False):
    """Frames (uint8 RGB) at `fps`: the stream as is when it already runs at that rate,
    otherwise resampled by nearest frame in time (like FFmpeg's fps filter).
    max_seconds, limit_name, progress: as for read_video."""
    frames, src_fps, times = read_video(path, with_times=True, max_seconds=max_seconds, limit_name=limit_name,
                                        progress=progress)
    regular = _fps_from_times(times)
    if abs(src_fps - fps) > 1e-3 or (regular is not None and abs(regular - fps) > 0.05 * fps):
        frames = frames[resample_indices(times, src_fps, fps)]
    return (frames, src_fps) if return_src_fps else frames


def read_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """The first audio stream as float32 mono at sample_rate."""
    av = _av()
    path = Path(path)
    chunks = []
    with _open_input(path) as c:
        if not c.streams.audio:
            raise LipVoicerError(f"{path}: no audio stream")
        stream = c.streams.audio[0]
        n_expected = None  # AAC pads its last frame: cut back to the stream's stated duration
        if stream.duration and stream.time_base:
            n_expected = int(round(float(stream.duration * stream.time_base) * sample_rate))
        resampler = av.AudioResampler(format="flt", layout="mono", rate=int(sample_rate))
        try:
            for frame in c.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as e:
            raise LipVoicerError(f"{path}: corrupt or truncated audio ({_reason(e)})") from None
    if not chunks:
        raise LipVoicerError(f"{path}: audio stream has no decodable samples")
    wav = np.concatenate(chunks).astype(np.float32)
    if n_expected and 0 < n_expected < len(wav):
        wav = wav[:n_expected]
    return wav


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
    """H.264 (yuv420p) .mp4 from uint8 RGB frames (T, H, W, 3) with optional mono AAC audio.

    Odd frame sizes are cropped by one pixel (yuv420p needs even sizes). One encoder thread
    (the default) makes the file depend on the frames only; threads=0 lets x264 choose.
    """
    av = _av()
    frames = np.asarray(frames)
    if frames.ndim == 3:  # greyscale (T, H, W)
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise LipVoicerError(f"{path}: frames must be a non-empty (T, H, W, 3) array, got {frames.shape}")
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    frames = np.ascontiguousarray(frames[:, :h, :w].astype(np.uint8, copy=False))
    path = Path(path)

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as out:
            vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.options = {"crf": str(crf), "preset": preset, "threads": str(int(threads))}
            astream = _add_audio_stream(out, sample_rate) if audio is not None else None
            for img in frames:
                for packet in vs.encode(_yuv420p_frame(img)):
                    out.mux(packet)
            for packet in vs.encode(None):
                out.mux(packet)
            if astream is not None:
                _encode_audio(out, astream, audio, sample_rate)

    atomic_write(path, write)
    return path


def mux_audio(video_path: str | Path, audio: np.ndarray, sample_rate: int, out_path: str | Path) -> Path:
    """Copy the video stream of video_path (no re-encoding) and add `audio` as its sound track."""
    av = _av()
    video_path, out_path = Path(video_path), Path(out_path)
    with _open_input(video_path) as src:
        vin = _video_stream(src, video_path)

        def write(tmp: Path) -> None:
            with av.open(str(tmp), "w", format="mp4") as out:
                vout = out.add_stream_from_template(vin)
                astream = _add_audio_stream(out, sample_rate)
                try:
                    for packet in src.demux(vin):
                        if packet.dts is None:
                            continue
                        packet.stream = vout
                        out.mux(packet)
                except av.error.FFmpegError as e:
                    if write_errno(e, FULL_ERRNOS) is not None:  # the output failed (disk full, ...): atomic_write names it
                        raise
                    raise LipVoicerError(f"{video_path}: corrupt or truncated video ({_reason(e)})") from None
                _encode_audio(out, astream, audio, sample_rate)

        atomic_write(out_path, write)
    return out_path
