"""Video and audio in and out of media files with PyAV (bundled FFmpeg; no ffmpeg binary needed).

    for img in iter_video_frames("clip.mp4", 25): ...  # uint8 RGB (H, W, 3) at 25 fps, one at a time
    stream = open_video_stream("clip.mp4", 25)        # the same, plus what it learns (VideoFrames)
    frames, fps = read_video("clip.mp4")              # uint8 RGB (T, H, W, 3), frames per second
    frames = read_video_at_fps("clip.mp4", 25)        # resampled to 25 fps when needed
    wav = read_audio("clip.mp4", 16000)               # float32 mono in [-1, 1]
    write_video("out.mp4", frames, 25, audio=wav, sample_rate=16000)
    plan = mux_plan("phone.mov", "with_speech.mp4")   # copy or re-encode: known before any long work
    mux_audio("phone.mov", wav, 16000, "with_speech.mp4", plan=plan)

Frames come out as displayed: the display matrix of the video stream (a phone's portrait video is
stored as landscape pixels plus a rotation) is applied, and probe_video gives the displayed size.
Decoding streams: memory does not grow with a video's length unless the caller keeps the frames.

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

import io
import itertools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

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


# ----------------------------------------------------------------------------- orientation
@dataclass(frozen=True)
class Orientation:
    """How decoded pixels become the picture as displayed, from the stream's display matrix (phones store
    portrait video as landscape pixels plus a rotation): transpose the image, then flip its rows and/or
    columns. rotation: the counter-clockwise turn in degrees (0, 90, 180 or 270; FFmpeg's and PyAV's
    `frame.rotation` sense); mirrored: the matrix also mirrors the picture."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    rotation: int = 0
    mirrored: bool = False

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def apply(self, img: np.ndarray) -> np.ndarray:
        """The displayed picture of an (H, W, ...) image (a new contiguous array unless nothing changes)."""
        if self.identity:
            return img
        if self.transpose:
            img = img.swapaxes(0, 1)
        if self.flip_rows:
            img = img[::-1]
        if self.flip_cols:
            img = img[:, ::-1]
        return np.ascontiguousarray(img)

    def displayed_size(self, width: int, height: int) -> tuple[int, int]:
        return (height, width) if self.transpose else (width, height)


UPRIGHT = Orientation()


def orientation_from_matrix(matrix) -> Orientation:
    """The Orientation of an FFmpeg display matrix (9 int32 in 16.16 fixed point, AV_PKT_DATA_DISPLAYMATRIX
    layout [a b u; c d v; x y w], a source pixel (x, y) going to (a x + c y, b x + d y)), snapped to the
    nearest quarter turn."""
    m = np.asarray(matrix, dtype=np.float64).reshape(-1)
    if m.size < 9:
        return UPRIGHT
    a, b, c, d = m[0], m[1], m[3], m[4]
    if abs(a) + abs(d) >= abs(b) + abs(c):  # no quarter turn: x' = a x, y' = d y
        transpose, flip_cols, flip_rows = False, a < 0, d < 0
    else:  # x' = c y, y' = b x: the rows of the picture come from the columns of the pixels
        transpose, flip_cols, flip_rows = True, c < 0, b < 0
    if not (transpose or flip_cols or flip_rows):
        return UPRIGHT
    det = a * d - b * c
    turn = float(np.degrees(np.arctan2(b if det >= 0 else -b, a if det >= 0 else -a)))  # clockwise angle
    rotation = int(round(-turn / 90.0)) % 4 * 90
    return Orientation(bool(transpose), bool(flip_rows), bool(flip_cols), rotation, bool(det < 0))


def _frame_orientation(frame) -> Orientation:
    from av.sidedata.sidedata import Type  # noqa: PLC0415

    data = frame.side_data.get(Type.DISPLAYMATRIX)
    if data is None:
        return UPRIGHT
    return orientation_from_matrix(np.frombuffer(bytes(data), dtype=np.int32)[:9])


def _first_frame(container, stream):
    """(Orientation, width, height) of the stream's first decodable frame, or None (nothing decodes)."""
    av = _av()
    try:
        for frame in container.decode(stream):
            return _frame_orientation(frame), frame.width, frame.height
    except av.error.FFmpegError:
        return None
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


def _decoded_seconds(times: list, n: int, fps: float, start: float) -> float:
    """Seconds covered by the n frames decoded so far (their timestamps when known, else n / fps)."""
    last = times[-1] if times else None
    if last is None:
        return n / fps
    return float(last) - start + 1.0 / fps


def _fps_from_times(times) -> float | None:
    t = np.array([x for x in times if x is not None], dtype=np.float64)
    if len(t) < 2:
        return None
    step = np.median(np.diff(t))
    return 1.0 / step if step > 0 else None


# ----------------------------------------------------------------------------- streaming decoder
TIME_WINDOW = 8  # decoded frames held back at the start of a stream to judge its timestamps
_NO_PICTURE = np.zeros(0, np.uint8)


class _Clock:
    """Seconds since the first frame for each decoded frame: its timestamp while the timestamps are
    usable, else a regular grid at `rate` (from the start when the first frames' timestamps are
    missing or out of order, as resample_indices does; from the last good time when they go wrong later)."""

    def __init__(self, grid: bool, rate: float):
        self.rate, self.grid = float(rate), grid
        self.n = self.switched_at = 0
        self.base = 0.0
        self.t0 = self.last_time = None
        self.last = 0.0

    def __call__(self, time) -> float:
        if not self.grid and (time is None or (self.last_time is not None and time <= self.last_time)):
            self.grid, self.switched_at, self.base = True, self.n, self.last + 1.0 / self.rate
        if self.grid:
            t = self.base + (self.n - self.switched_at) / self.rate
        else:
            if self.t0 is None:
                self.t0 = time
            t = time - self.t0
            self.last_time = time
        self.n += 1
        self.last = t
        return t


class _Pic:
    """A decoded frame converted to RGB on first use (frames a resampling skips are never converted)."""

    __slots__ = ("frame", "img", "__weakref__")

    def __init__(self, frame):
        self.frame, self.img = frame, None

    def give(self, convert, again: bool) -> np.ndarray:
        """The RGB picture; a copy while it may be handed out again (callers may change what they get)."""
        if self.img is None:
            self.img, self.frame = convert(self.frame), None
        if again:
            return self.img.copy()
        img, self.img = self.img, None
        return img


def _nearest_in_time(items, dst_fps: float, final_src_fps, convert):
    """Streaming resample_indices: items are (seconds since the first frame, _Pic) in increasing time;
    yields the picture nearest in time to each k / dst_fps, for as many outputs as resample_indices
    gives (round((last time + 1 / src fps) * dst_fps), the source rate asked for at the end).
    Holds at most three pictures: the previous frame, the current one and one decided output."""
    dst = float(dst_fps)
    k = emitted = 0
    pending: list = []  # pictures of outputs emitted .. k - 1, decided but not yet known to exist
    last_t = last = None
    for t, pic in items:
        while k / dst <= t:  # the first frame at or after k / dst is this one: it or the one before
            out_t = k / dst
            pending.append(last if last is not None and abs(out_t - last_t) <= abs(t - out_t) else pic)
            k += 1
        exist = max(1, int(round(t * dst)))  # outputs below this exist whatever follows
        while pending and emitted < exist:
            p = pending.pop(0)
            yield p.give(convert, again=p is pic or any(q is p for q in pending))
            emitted += 1
        last_t, last = t, pic
    if last is None:
        return
    n_out = max(1, int(round((last_t + 1.0 / float(final_src_fps())) * dst)))
    pending += [last] * max(0, n_out - k)  # past the last frame: the last frame
    while pending and emitted < n_out:
        p = pending.pop(0)
        yield p.give(convert, again=emitted + 1 < n_out and any(q is p for q in pending))
        emitted += 1


class VideoFrames:
    """A video decoded one frame at a time, for iteration (memory does not grow with its length).

        frames = open_video_stream("clip.mp4", fps=25)
        for img in frames: ...          # uint8 RGB (H, W, 3), upright, at 25 fps
        frames.src_fps, frames.rotation, frames.frames_decoded

    Every iteration decodes the file again from the start and gives the same frames (a second pass
    over a video costs a second decoding, not memory). Frames come out as displayed: the stream's
    display matrix (phone videos) is applied. fps: the output rate; frames are resampled by nearest
    frame in time (resample_indices) when the source runs at another rate, passed through when it
    runs at `fps` (None: the source's frames as they are). The first TIME_WINDOW decoded frames
    are held back to judge the timestamps: the median step of their times stands in for the whole
    stream's (read_video_at_fps's rule), and missing or out-of-order times among them put the
    stream on a regular grid at the source rate. max_seconds, limit_name: stop with a LipVoicerError
    as soon as the frames decoded pass this many seconds. A file decoding to less than its header
    states raises "truncated video" at the end of the stream. progress: a frame_bar over decoding.

    Known before iterating (from the header; asking for the rotation or the size before iterating
    decodes the first frame): path, fps, header_fps (None when the header gives no rate), src_fps
    (the header's rate, else learnt while decoding, else 25), rotation / orientation, width and
    height as displayed, coded_width / coded_height, codec, has_audio, header_seconds (None when the
    header gives no length), expected_frames (output frames the header promises, or None). Updated
    while iterating: frames_decoded, frames_yielded, decoded_seconds, resampled (whether the pass
    resamples; None before the first frame). One iteration at a time per object.
    """

    def __init__(self, path: str | Path, fps: float | None = 25.0, max_seconds: float | None = None,
                 limit_name: str = "max_seconds", progress=False):
        self.path = Path(path)
        self.fps = None if fps is None else float(fps)
        if self.fps is not None and not self.fps > 0:
            raise LipVoicerError(f"{self.path}: the frame rate asked for must be positive, got {fps}")
        self.max_seconds, self.limit_name, self.progress = max_seconds, limit_name, progress
        with _open_input(self.path) as c:
            vs = _video_stream(c, self.path)
            self.codec = vs.codec_context.name
            self.has_audio = bool(c.streams.audio)
            self.header_fps = _stream_fps(vs)
            self.header_seconds, self._start = _header_length(c, vs, self.header_fps or 25.0)
            self.coded_width, self.coded_height = vs.codec_context.width, vs.codec_context.height
        self._orientation = None  # from the first frame: when asked for, or while decoding
        self.src_fps = self.header_fps or 25.0
        self.frames_decoded = self.frames_yielded = 0
        self.decoded_seconds = 0.0
        self.resampled: bool | None = None
        self._size = None
        self._times = None

    # -------------------------------------------------------------- what it knows
    @property
    def orientation(self) -> Orientation:
        if self._orientation is None:
            self._look_at_first_frame()
        return self._orientation or UPRIGHT

    def _look_at_first_frame(self) -> None:
        with _open_input(self.path) as c:
            vs = _video_stream(c, self.path)
            first = _first_frame(c, vs)
        if first:
            self._orientation = first[0]
            if not (self.coded_width and self.coded_height):
                self.coded_width, self.coded_height = first[1], first[2]

    @property
    def rotation(self) -> int:
        return self.orientation.rotation

    @property
    def width(self) -> int:
        return self.orientation.displayed_size(self.coded_width, self.coded_height)[0]

    @property
    def height(self) -> int:
        return self.orientation.displayed_size(self.coded_width, self.coded_height)[1]

    @property
    def expected_frames(self) -> int | None:
        if not self.header_seconds:
            return None
        return int(round(self.header_seconds * (self.fps or self.src_fps)))

    def __repr__(self) -> str:
        rotation = "?" if self._orientation is None else self._orientation.rotation  # no file access here
        return (f"VideoFrames({str(self.path)!r}, fps={self.fps}, src_fps={self.src_fps:g}, rotation={rotation}, "
                f"frames_decoded={self.frames_decoded})")

    # -------------------------------------------------------------- iteration
    def __iter__(self):
        return self._frames()

    def count(self) -> int:
        """How many frames an iteration yields, found by decoding without making RGB pictures (the limit
        and the checks apply: a raw stream past max_seconds raises here)."""
        return sum(1 for _ in self._frames(convert=lambda frame: _NO_PICTURE))

    def _frames(self, convert=None):
        convert = convert or self._rgb
        self.frames_yielded = 0
        timeline = self._timeline()
        first = next(timeline, None)
        if first is None:
            return
        if not self.resampled:
            for _, frame in itertools.chain([first], timeline):
                self.frames_yielded += 1
                yield convert(frame)
            return
        pics = ((t, _Pic(frame)) for t, frame in itertools.chain([first], timeline))
        for img in _nearest_in_time(pics, self.fps, self._final_src_fps, convert):
            self.frames_yielded += 1
            yield img

    def _timeline(self):
        """(seconds since the first frame, decoded av.VideoFrame) for every frame of the stream; sets
        src_fps and resampled before the first one."""
        decoded = self._decoded()
        window = list(itertools.islice(decoded, TIME_WINDOW))
        if not window:
            return
        times = [t for _, t in window]
        usable = all(t is not None for t in times) and all(b > a for a, b in zip(times, times[1:]))
        regular = _fps_from_times(times)
        self.src_fps = self.header_fps or regular or 25.0
        self.resampled = self.fps is not None and (
            abs(self.src_fps - self.fps) > 1e-3 or (regular is not None and abs(regular - self.fps) > 0.05 * self.fps))
        clock = _Clock(grid=not usable, rate=self.src_fps)
        for frame, time in itertools.chain(window, decoded):
            yield clock(time), frame

    def _final_src_fps(self) -> float:
        return self.src_fps

    def _rgb(self, frame) -> np.ndarray:
        if self._size is None:
            self._size = (frame.width, frame.height)
            if self._orientation is None:
                self._orientation = _frame_orientation(frame)
            if not (self.coded_width and self.coded_height):
                self.coded_width, self.coded_height = self._size
        if (frame.width, frame.height) != self._size:  # a stream changing size midway: keep the first size
            frame = frame.reformat(width=self._size[0], height=self._size[1])
        return self.orientation.apply(frame.to_ndarray(format="rgb24"))

    def _decoded(self):
        """(av.VideoFrame, its time in s or None) for every decoded frame, with the limit and the checks."""
        av = _av()
        path = self.path
        rate = self.header_fps or 25.0
        header_s, start = self.header_seconds, self._start
        limit = None if self.max_seconds is None else float(self.max_seconds)
        self.frames_decoded, self.decoded_seconds, self._size = 0, 0.0, None
        self._times = [] if self.header_fps is None else None
        last = [None]
        n = 0
        with _open_input(path) as c:
            vs = _video_stream(c, path)
            vs.thread_type = "AUTO"
            with frame_bar(int(round(header_s * rate)) if header_s else None, "decode", self.progress) as bar:
                try:
                    for frame in c.decode(vs):
                        n += 1
                        last[0] = frame.time
                        if self._times is not None:
                            self._times.append(last[0])
                        self.frames_decoded = n
                        self.decoded_seconds = _decoded_seconds(last, n, rate, start)
                        bar.update(1)
                        if limit is not None and self.decoded_seconds > limit + 1e-6:
                            raise LipVoicerError(
                                f"{path}: video is longer than {limit:g} s (decoding stopped at frame {n}, "
                                f"{self.decoded_seconds:.2f} s{'' if header_s else '; its header gives no duration'}); "
                                f"the limit is {limit:g} s ({self.limit_name}; memory grows with length: cut the "
                                f"video or raise the limit)")
                        yield frame, last[0]
                except av.error.FFmpegError as e:
                    raise LipVoicerError(f"{path}: corrupt or truncated video (decoding failed after {n} frames: "
                                         f"{_reason(e)})") from None
        if not n:
            raise LipVoicerError(f"{path}: no decodable video frames (corrupt or truncated file)")
        if self._times is not None:  # no rate in the header: the median step of all the frames' times
            self.src_fps = _fps_from_times(self._times) or 25.0
        if header_s:
            decoded_s = self.decoded_seconds
            if (header_s - decoded_s) * rate > missing_frames_tolerated(header_s * rate):
                raise LipVoicerError(f"{path}: truncated video: header says {header_s:.2f} s, only {decoded_s:.2f} s "
                                     f"decode")


def open_video_stream(path: str | Path, fps: float | None = 25.0, max_seconds: float | None = None,
                      limit_name: str = "max_seconds", progress=False) -> VideoFrames:
    """A VideoFrames over `path` (reads the header now, an unreadable file raising here; decodes when iterated)."""
    return VideoFrames(path, fps=fps, max_seconds=max_seconds, limit_name=limit_name, progress=progress)


def iter_video_frames(path: str | Path, fps: float | None = 25.0, max_seconds: float | None = None,
                      limit_name: str = "max_seconds", progress=False) -> Iterator[np.ndarray]:
    """uint8 RGB frames (H, W, 3), upright, at `fps`, one at a time (see VideoFrames; an unreadable
    file raises here, decoding problems while iterating)."""
    return iter(open_video_stream(path, fps, max_seconds=max_seconds, limit_name=limit_name, progress=progress))


# ----------------------------------------------------------------------------- whole videos
def read_video(path: str | Path, with_times: bool = False, max_seconds: float | None = None,
               limit_name: str = "max_seconds", progress=False):
    """All frames as uint8 RGB (T, H, W, 3), upright, and the stream's frame rate (plus frame times in s).

    max_seconds: stop with a LipVoicerError (naming the setting `limit_name`) as soon as the
    frames decoded pass this many seconds. A file decoding to less than its header says
    (beyond missing_frames_tolerated) raises "truncated video". progress: see frame_bar.
    """
    stream = VideoFrames(path, fps=None, max_seconds=max_seconds, limit_name=limit_name, progress=progress)
    times = []

    def frames():
        for frame, time in stream._decoded():
            times.append(time)
            yield stream._rgb(frame)

    arr = _stack(frames(), _frames_to_hold(stream))
    fps = stream.header_fps or _fps_from_times(times) or 25.0
    if with_times:
        return arr, fps, times
    return arr, fps


def _frames_to_hold(stream: VideoFrames) -> int | None:
    """The frames a whole-video reader expects (from the header, at most what max_seconds lets through)."""
    n = stream.expected_frames
    if n and stream.max_seconds is not None:
        n = min(n, int(np.ceil(float(stream.max_seconds) * (stream.fps or stream.src_fps))) + 2)
    return n


def _stack(frames, expected: int | None) -> np.ndarray:
    """np.stack of an iterable of equal-shaped frames, written into one array sized from the header as
    they come (half the peak memory of a list then np.stack; pages past the end are never touched)."""
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError("no frames")
    out = None
    if expected and expected > 0:
        try:
            out = np.empty((int(expected) + 2, *first.shape), first.dtype)
        except (MemoryError, ValueError):  # a header promising far more than there is memory for
            out = None
    if out is None:
        return np.stack([first, *it])
    out[0] = first
    n, extra = 1, []
    for frame in it:
        if n < len(out):
            out[n] = frame
            n += 1
        else:
            extra.append(frame)
    if extra:
        return np.concatenate([out, np.stack(extra)])
    return out[:n]


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
    """Frames (uint8 RGB, upright) at `fps`: the stream as is when it already runs at that rate,
    otherwise resampled by nearest frame in time (like FFmpeg's fps filter). The frames of
    iter_video_frames, stacked. max_seconds, limit_name, progress: as for read_video."""
    stream = VideoFrames(path, fps=fps, max_seconds=max_seconds, limit_name=limit_name, progress=progress)
    frames = _stack(stream, _frames_to_hold(stream))
    return (frames, stream.src_fps) if return_src_fps else frames


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




# ----------------------------------------------------------------------------- muxing a new sound track
# Video codecs copied as they are into an .mp4: those the mp4 muxer takes AND common players play there.
# Others the muxer takes (MJPEG, MPEG-2, FFV1, ...) play in few players inside an .mp4: re-encoded.
MP4_COPY_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "mpeg4"})
_TRIAL_PACKETS = 8  # packets muxed by the trial in mux_plan


@dataclass(frozen=True)
class MuxPlan:
    """How mux_audio writes `out_path` from `video_path` (decided by mux_plan without writing it).

    copy_video: the video stream is copied as it is (else re-encoded to H.264 yuv420p, upright);
    video_codec: the input's video codec; out_codec: the output's ("h264" when re-encoded);
    rotation: the input's display rotation (counter-clockwise degrees; a copy keeps the display matrix,
    a re-encoding turns the pixels); reason: one line saying why."""

    video_path: Path
    out_path: Path
    copy_video: bool
    video_codec: str
    out_codec: str
    rotation: int
    reason: str


class _CopyFailed(LipVoicerError):
    """The mp4 muxer refused a packet while copying (mux_audio then re-encodes)."""


def _input_packets(src, vin, video_path: Path):
    """The non-empty packets of vin; a read failure is one LipVoicerError about the input."""
    av = _av()
    packets = src.demux(vin)
    while True:
        try:
            packet = next(packets, None)
        except av.error.FFmpegError as e:
            raise LipVoicerError(f"{video_path}: corrupt or truncated video ({_reason(e)})") from None
        if packet is None:
            return
        if packet.size:  # not the demuxer's final empty packet
            yield packet


def _packets_from_zero(src, vin, video_path: Path, stream=None):
    """The video packets of vin for a copy (assigned to `stream`), their timestamps moved so that the first
    frame shown starts at 0 (the new sound track starts there): the earliest presentation time among the
    first packets is subtracted when positive (an MPEG-TS clock, an AVI's first B-frame delay). A packet
    without any timestamp (a raw stream) raises _CopyFailed."""
    packets = _input_packets(src, vin, video_path)
    head = list(itertools.islice(packets, _TRIAL_PACKETS))
    times = [p.pts for p in head if p.pts is not None]
    shift = min(times) if times and min(times) > 0 else 0
    for packet in itertools.chain(head, packets):
        if packet.pts is None and packet.dts is None:
            raise _CopyFailed(f"{video_path}: its packets carry no timestamps (a raw stream)")
        if shift:
            if packet.pts is not None:
                packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
        if stream is not None:
            packet.stream = stream
        yield packet


def _copy_stream(out, vin):
    """An output stream for a copy of vin (HEVC tagged 'hvc1', the tag Apple's players require)."""
    vout = out.add_stream_from_template(vin)
    if vin.codec_context.name == "hevc":
        vout.codec_context.codec_tag = "hvc1"
    return vout


def _copy_refusal(video_path: Path, codec: str) -> str | None:
    """Why the video stream of video_path cannot be copied into an .mp4 (None: it can), from a trial
    mux of its first packets into memory: the muxer's header checks (codec, codec tag, extradata) and
    its first timestamps. A trial that fails to write (a full disk seen through a patched av.open)
    says nothing about the input: it counts as a success, and the real mux reports the disk."""
    av = _av()
    if codec not in MP4_COPY_CODECS:
        with av.open(io.BytesIO(), "w", format="mp4") as probe:
            takes = codec in probe.supported_codecs
        return (f"'{codec}' video plays in few players inside an .mp4" if takes
                else f"the mp4 format does not take '{codec}' video")
    with _open_input(video_path) as src:
        vin = _video_stream(src, video_path)
        if "avi" in src.format.name.split(",") and vin.codec_context.has_b_frames:
            return f"an AVI file keeps no presentation times for the B-frames of its '{codec}' stream"
        muxed = 0
        try:
            with av.open(io.BytesIO(), "w", format="mp4") as out:
                vout = _copy_stream(out, vin)
                _add_audio_stream(out, 16000)
                for packet in _packets_from_zero(src, vin, video_path, vout):
                    out.mux(packet)
                    muxed += 1
                    if muxed >= _TRIAL_PACKETS:
                        break
        except _CopyFailed as e:
            return str(e).split(": ", 1)[-1]
        except (av.error.FFmpegError, ValueError, OSError) as e:
            if write_errno(e) is not None:
                return None
            return f"the mp4 muxer refuses its '{codec}' stream ({_reason(e)})"
    if not muxed:
        return "it has no video packets to copy"
    return None


def mux_plan(video_path: str | Path, out_path: str | Path) -> MuxPlan:
    """How mux_audio will write out_path (an .mp4) from video_path, decided without writing anything:
    copy the video stream when the mp4 muxer takes it (a trial mux of its first packets into memory)
    and players play it there (MP4_COPY_CODECS), else re-encode it to H.264. Call it before long work
    whose result mux_audio writes: an unreadable input raises its LipVoicerError here."""
    video_path, out_path = Path(video_path), Path(out_path)
    with _open_input(video_path) as src:
        vin = _video_stream(src, video_path)
        codec = vin.codec_context.name
        first = _first_frame(src, vin)
    rotation = first[0].rotation if first else 0
    refusal = _copy_refusal(video_path, codec)
    if refusal is None:
        return MuxPlan(video_path, out_path, True, codec, codec, rotation,
                       f"the '{codec}' video stream is copied as it is")
    return MuxPlan(video_path, out_path, False, codec, "h264", rotation,
                   f"the video is re-encoded to H.264: {refusal}")


def mux_audio(video_path: str | Path, audio: np.ndarray, sample_rate: int, out_path: str | Path,
              plan: MuxPlan | None = None, crf: int = 20, preset: str = "veryfast", progress=False) -> Path:
    """video_path's picture with `audio` as its sound track, into the .mp4 out_path (the input's sound
    is dropped). Follows `plan` (mux_plan's, made now when None): copies the video stream (timestamps
    moved to start at 0; the display matrix kept), or re-encodes it to H.264 yuv420p at the same
    frame times, its pixels turned upright. A copy the muxer refuses midway is re-encoded. progress:
    a frame_bar while re-encoding. Unreadable input or a failed encoding raise one LipVoicerError
    naming video_path; a write failure one naming out_path."""
    video_path, out_path = Path(video_path), Path(out_path)
    plan = plan if plan is not None else mux_plan(video_path, out_path)
    if plan.copy_video:
        try:
            return _mux_copy(video_path, audio, sample_rate, out_path)
        except _CopyFailed:
            pass
    return _mux_reencode(video_path, audio, sample_rate, out_path, crf=crf, preset=preset, progress=progress)


def _mux_copy(video_path: Path, audio: np.ndarray, sample_rate: int, out_path: Path) -> Path:
    av = _av()
    with _open_input(video_path) as src:
        vin = _video_stream(src, video_path)

        def write(tmp: Path) -> None:
            with av.open(str(tmp), "w", format="mp4") as out:
                try:
                    vout = _copy_stream(out, vin)
                except ValueError as e:
                    raise _CopyFailed(f"{video_path}: {_reason(e)}") from None
                astream = _add_audio_stream(out, sample_rate)
                for packet in _packets_from_zero(src, vin, video_path, vout):
                    try:
                        out.mux(packet)
                    except (av.error.FFmpegError, ValueError) as e:
                        if write_errno(e, FULL_ERRNOS) is not None:  # the output failed: atomic_write names it
                            raise
                        raise _CopyFailed(f"{video_path}: {_reason(e)}") from None
                _encode_audio(out, astream, audio, sample_rate)

        atomic_write(out_path, write)
    return out_path


_ENCODE_TIME_BASE = Fraction(1, 90000)


def _mux_reencode(video_path: Path, audio: np.ndarray, sample_rate: int, out_path: Path, crf: int = 20,
                  preset: str = "veryfast", progress=False) -> Path:
    """H.264 yuv420p of video_path's frames, upright, at their own times, plus `audio`."""
    av = _av()
    frames = VideoFrames(video_path, fps=None, progress=progress)

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as out:
            vs = astream = None
            last_pts = -1
            for t, frame in frames._timeline():
                img = frames._rgb(frame)
                if vs is None:
                    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
                    if not (h and w):
                        raise LipVoicerError(f"{video_path}: cannot re-encode a {img.shape[1]}x{img.shape[0]} "
                                             f"picture to H.264 for {out_path.name}")
                    vs = out.add_stream("libx264", rate=Fraction(frames.src_fps).limit_denominator(1001))
                    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
                    vs.codec_context.time_base = _ENCODE_TIME_BASE
                    vs.options = {"crf": str(crf), "preset": preset}
                    astream = _add_audio_stream(out, sample_rate)
                pts = max(int(round(t / _ENCODE_TIME_BASE)), last_pts + 1)
                last_pts = pts
                picture = _yuv420p_frame(np.ascontiguousarray(img[:h, :w]))
                picture.pts, picture.time_base = pts, _ENCODE_TIME_BASE
                try:
                    packets = vs.encode(picture)
                except av.error.FFmpegError as e:
                    if write_errno(e, FULL_ERRNOS) is not None:
                        raise
                    raise LipVoicerError(f"{video_path}: re-encoding the video to H.264 for {out_path.name} failed "
                                         f"({_reason(e)})") from None
                for packet in packets:
                    out.mux(packet)
            for packet in vs.encode(None):
                out.mux(packet)
            _encode_audio(out, astream, audio, sample_rate)

    atomic_write(out_path, write)
    return out_path
