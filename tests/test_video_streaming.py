"""The streaming decoder (dataloaders/video_io/: iter_video_frames, open_video_stream, VideoFrames):
the same frames as the whole-video readers (resampled by nearest frame in time), display rotation
applied, memory that does not grow with the length, the length limit and the truncation check,
and a progress bar over decoding. Clips are built here with PyAV (and the ffmpeg command for the
rotation metadata)."""
from __future__ import annotations

import shutil
import subprocess
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dataloaders.video_io.decode import VideoFrames, iter_video_frames, open_video_stream, read_video, read_video_at_fps, resample_indices
from dataloaders.video_io.orientation import orientation_from_matrix
from dataloaders.video_io.probe import probe_video
from utils.errors import LipVoicerError


def _pictures(n: int, w: int = 96, h: int = 64) -> np.ndarray:
    """Frames that tell their index and their orientation: brightness from the index, a bright
    block in the top-left corner and a dark bar along the bottom."""
    out = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        out[i] = 40 + (i * 5) % 150
        out[i, : h // 4, : w // 4] = 250
        out[i, -h // 8:, :] = 5
    return out


def encode(path: Path, frames: np.ndarray, fps=25, times_ms=None, fmt: str = "mp4") -> Path:
    """H.264 with PyAV; times_ms: each frame's presentation time in ms (a variable frame rate)."""
    import av

    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"threads": "1"}
        if times_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = int(times_ms[i]), Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _batch_at_fps(path, fps=25.0):
    """The whole-video reference: every frame with its time, then resample_indices when the source
    runs at another rate (read_video_at_fps's rule before it streamed)."""
    frames, src_fps, times = read_video(path, with_times=True)
    t = [x for x in times if x is not None]
    regular = 1.0 / np.median(np.diff(t)) if len(t) > 1 else None
    if abs(src_fps - fps) > 1e-3 or (regular is not None and abs(regular - fps) > 0.05 * fps):
        frames = frames[resample_indices(times, src_fps, fps)]
    return frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    rng = np.random.default_rng(0)
    steps = rng.choice([25, 33, 40, 50, 67], size=59)  # a phone's variable frame rate, about 24 fps
    vfr_times = np.concatenate([[0], np.cumsum(steps)])
    return {
        "30fps": encode(root / "30fps.mp4", _pictures(60), fps=30),
        "25fps": encode(root / "25fps.mp4", _pictures(50), fps=25),
        "vfr": encode(root / "vfr.mp4", _pictures(60), fps=24, times_ms=vfr_times),
        "raw": encode(root / "raw.h264", _pictures(40), fps=25, fmt="h264"),
        "root": root,
    }


# ----------------------------------------------------------------------------- same frames
@pytest.mark.parametrize("name", ["30fps", "25fps", "vfr", "raw"])
def test_streamed_frames_equal_the_whole_video_readers(clips, name):
    path = clips[name]
    reference = _batch_at_fps(path, 25.0)
    stream = open_video_stream(path, fps=25)
    got = list(stream)
    assert all(f.dtype == np.uint8 and f.flags.c_contiguous and f.shape == (64, 96, 3) for f in got)
    np.testing.assert_array_equal(np.stack(got), reference)
    np.testing.assert_array_equal(read_video_at_fps(path, 25), reference)
    assert stream.frames_yielded == len(reference)
    frames, src_fps = read_video(path)
    assert stream.frames_decoded == len(frames) and stream.src_fps == pytest.approx(src_fps)
    assert stream.resampled == (name in ("30fps", "vfr"))
    if name == "30fps":
        assert len(reference) == 50 and src_fps == pytest.approx(30)
    # the source's own frames (fps=None) are read_video's
    np.testing.assert_array_equal(np.stack(list(iter_video_frames(path, fps=None))), frames)


def test_two_passes_give_the_same_frames_and_what_the_stream_learnt(clips):
    stream = open_video_stream(clips["30fps"], fps=25)
    assert (stream.src_fps, stream.rotation, stream.width, stream.height) == (30, 0, 96, 64)
    assert stream.header_seconds == pytest.approx(2.0) and stream.expected_frames == 50 and stream.codec == "h264"
    assert stream.frames_decoded == 0 and stream.resampled is None and not stream.has_audio
    first, second = list(stream), list(stream)
    assert len(first) == 50 and all(np.array_equal(a, b) for a, b in zip(first, second))
    assert stream.frames_decoded == 60 and stream.decoded_seconds == pytest.approx(2.0)
    assert stream.count() == 50 and open_video_stream(clips["vfr"], fps=25).count() == len(_batch_at_fps(clips["vfr"]))
    # a frame shown twice (25 -> 30 fps) comes as two arrays: changing one leaves the other alone
    up = list(iter_video_frames(clips["25fps"], fps=30))
    assert len(up) == 60
    ids = {id(f) for f in up}
    assert len(ids) == 60
    up[0][:] = 0
    assert up[1].any()


def test_stream_resampling_matches_resample_indices_on_irregular_times():
    """The streaming nearest-frame choice against resample_indices, on made-up timelines (no decoding)."""
    from dataloaders.video_io.decode import _nearest_in_time, _Pic

    rng = np.random.default_rng(1)
    for trial in range(60):
        src = float(rng.choice([12.0, 23.976, 25.0, 30.0, 50.0, 60.0, 90.0]))
        dst = float(rng.choice([25.0, 30.0, 10.0]))
        n = int(rng.integers(1, 80))
        t = np.cumsum(rng.uniform(0.3, 1.7, n) / src) if trial % 2 else np.arange(n) / src
        t = t - t[0]
        expected = resample_indices(list(t), src, dst)
        got = list(_nearest_in_time(((float(x), _Pic(i)) for i, x in enumerate(t)), dst, lambda: src,
                                    lambda i: np.array([i])))
        np.testing.assert_array_equal(np.concatenate(got), expected, err_msg=f"src {src} dst {dst} n {n}")


# ----------------------------------------------------------------------------- rotation
def _ffmpeg(*args):
    if not shutil.which("ffmpeg"):
        pytest.skip("the ffmpeg command is needed to write rotation metadata")
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True)


@pytest.mark.parametrize("degrees,turns", [(90, 1), (180, 2), (270, 3)])
def test_rotated_phone_video_comes_out_upright(clips, tmp_path, degrees, turns):
    """A clip with a rotation in its metadata (as phones write it): frames come out turned as players
    show them (the ffmpeg command's autorotate, checked below, turns them the same way)."""
    plain = clips["30fps"]
    rotated = tmp_path / f"r{degrees}.mp4"
    _ffmpeg("-i", plain, "-c", "copy", "-metadata:s:v", f"rotate={degrees}", rotated)
    upright, _ = read_video(plain)
    expected = np.rot90(upright, turns, axes=(1, 2))  # counter-clockwise quarter turns
    frames, fps = read_video(rotated)
    np.testing.assert_array_equal(frames, expected)
    info = probe_video(rotated)
    assert (info["width"], info["height"], info["rotation"]) == (expected.shape[2], expected.shape[1], degrees)
    stream = open_video_stream(rotated, fps=25)
    assert (stream.rotation, stream.width, stream.height) == (degrees, info["width"], info["height"])
    np.testing.assert_array_equal(np.stack(list(stream)), expected[resample_indices([None] * 60, 30, 25)])
    if degrees == 90:  # what the ffmpeg command shows (it rotates by the same display matrix)
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(rotated), "-f", "rawvideo", "-pix_fmt", "rgb24",
                              "-"], capture_output=True, check=True).stdout
        np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(expected.shape), expected)


def test_display_matrix_with_a_mirror(tmp_path):
    import av

    frames = _pictures(10)
    path = tmp_path / "mirror.mp4"
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        s.set_display_rotation(0, hflip=True)
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    got, _ = read_video(path)
    assert got.shape == frames.shape
    assert got[0, 2, -2].min() > 200 and got[0, 2, 2].max() < 220  # the bright corner is now top-right
    o = orientation_from_matrix([-65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30])
    assert (o.transpose, o.flip_rows, o.flip_cols, o.rotation, o.mirrored) == (False, False, True, 0, True)


# ----------------------------------------------------------------------------- memory
def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_of_iterating_does_not_grow_with_length(tmp_path):
    frame_bytes = 120 * 160 * 3
    short = encode(tmp_path / "short.mp4", _pictures(30, 160, 120), fps=30)
    long = encode(tmp_path / "long.mp4", _pictures(300, 160, 120), fps=30)

    def iterate(path, fps):
        def run():
            for img in iter_video_frames(path, fps=fps):
                img.sum()
        return run

    for fps in (25.0, None):  # resampled and passed through
        p_short, p_long = _peak_bytes(iterate(short, fps)), _peak_bytes(iterate(long, fps))
        assert p_long < p_short + frame_bytes, (fps, p_short, p_long)
        assert p_long < 6 * frame_bytes, (fps, p_long)
    assert _peak_bytes(lambda: read_video(long)) > 200 * frame_bytes  # what it replaces keeps every frame


def test_stream_holds_at_most_three_pictures():
    """Counting the pictures alive in _nearest_in_time while it runs (30 -> 25 and 25 -> 30 fps)."""
    import weakref

    from dataloaders.video_io.decode import _nearest_in_time, _Pic

    for src, dst in ((30.0, 25.0), (25.0, 30.0), (60.0, 25.0)):
        alive = weakref.WeakSet()
        most = 0

        def items():
            for i in range(200):
                pic = _Pic(i)
                alive.add(pic)
                yield i / src, pic

        for _ in _nearest_in_time(items(), dst, lambda: src, lambda i: np.array([i])):
            most = max(most, len(alive))
        assert most <= 3, (src, dst, most)


# ----------------------------------------------------------------------------- limits and checks
def test_limit_and_truncation_while_streaming(clips, tmp_path):
    raw = clips["raw"]  # no duration in a raw stream's header: stopped while decoding
    frames = iter_video_frames(raw, fps=25, max_seconds=1, limit_name="generate.max_seconds")
    got = []
    with pytest.raises(LipVoicerError) as e:
        for f in frames:
            got.append(f)
    assert str(e.value) == (f"{raw}: video is longer than 1 s (decoding stopped at frame 26, 1.04 s; its header "
                            f"gives no duration); the limit is 1 s (generate.max_seconds; memory grows with length: "
                            f"cut the video or raise the limit)")
    assert len(got) == 25  # the frames before the limit came out first
    # a file cut short: frames come out, then "truncated video" at the end of the stream
    full = encode(tmp_path / "full.mp4", np.random.default_rng(0).integers(0, 255, (150, 64, 64, 3), np.uint8))
    cut = tmp_path / "cut.mp4"
    _faststart(full, cut)  # the index first, so the cut file still opens
    data = cut.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    stream = open_video_stream(cut, fps=25)
    n = 0
    with pytest.raises(LipVoicerError, match=rf"^{cut}: truncated video: header says 6.00 s, only "):
        for _ in stream:
            n += 1
    assert n > 10 and stream.frames_decoded >= n
    with pytest.raises(LipVoicerError, match="file not found"):
        iter_video_frames(tmp_path / "missing.mp4")  # raised when asked for, not when iterated


def _faststart(src: Path, dst: Path) -> None:
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", format="mp4", options={"movflags": "faststart"}) as o:
        vo = o.add_stream_from_template(i.streams.video[0])
        for p in i.demux(i.streams.video[0]):
            if p.dts is None:
                continue
            p.stream = vo
            o.mux(p)


def test_decoding_shows_a_progress_bar(clips, capsys):
    list(iter_video_frames(clips["30fps"], fps=25, progress=True))
    err = capsys.readouterr().err
    assert "decode" in err and "60/60" in err and "frame/s" in err
    list(iter_video_frames(clips["30fps"], fps=25))
    assert capsys.readouterr().err == ""


def test_unreadable_input_and_bad_rate(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 100)
    with pytest.raises(LipVoicerError, match="cannot open as a video"):
        VideoFrames(tmp_path / "bad.mp4")
    with pytest.raises(LipVoicerError, match="must be positive"):
        VideoFrames(encode(tmp_path / "ok.mp4", _pictures(5)), fps=0)
