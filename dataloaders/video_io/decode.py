"""Decoding: a video streamed one frame at a time (upright, resampled to a frame rate by nearest frame in
time), whole videos in memory (small clips and tests), and the audio stream.

Reading checks what it decodes against the file's header: a file that decodes to less
than its header states (a download or copy cut short: an .mp4 with its index first
stays playable up to the cut) is refused as truncated when more than
`missing_frames_tolerated(n)` frames are missing (2 frames, or 1 % of the header's
frame count when that is more). `max_seconds` stops decoding as soon as the frames
read pass the limit, for streams whose header gives no duration (raw .h264).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator

import numpy as np

from dataloaders.video_io.orientation import UPRIGHT, Orientation, _first_frame, _frame_orientation
from dataloaders.video_io.probe import (_av, _header_length, _open_input, _reason, _stream_fps, _video_stream,
                                       missing_frames_tolerated)
from utils.errors import LipVoicerError
from dataloaders.progress import frame_bar


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
