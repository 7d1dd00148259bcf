"""A new sound track on a user's video: copy the video stream into an .mp4 when it can be copied (decided
before any long work by a trial mux into memory), else re-encode it to H.264, upright."""
from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from dataloaders.video_io.decode import VideoFrames
from dataloaders.video_io.encode import _add_audio_stream, _encode_audio, _yuv420p_frame
from dataloaders.video_io.orientation import _first_frame
from dataloaders.video_io.probe import _av, _open_input, _reason, _video_stream
from utils.errors import LipVoicerError
from utils.files import FULL_ERRNOS, atomic_write, write_errno


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
