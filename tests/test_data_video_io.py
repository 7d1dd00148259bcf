"""Video / audio reading and writing with PyAV (dataloaders/video_io/), including unreadable files."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from utils.errors import LipVoicerError
from dataloaders.video_io.mux import mux_audio
from dataloaders.video_io.probe import probe_video
from dataloaders.video_io.decode import read_audio, read_video, read_video_at_fps, resample_indices
from dataloaders.video_io.encode import write_video

SR = 16000


def _frames(n, size=64):
    """Frames whose brightness encodes their index (to check which frames were kept)."""
    out = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        out[i] = (i * 4) % 256
    return out


def _noise_audio(seconds, seed=0):
    rng = np.random.default_rng(seed)
    a = (0.2 * rng.standard_normal(int(seconds * SR))).astype(np.float32)
    a[: SR // 4] = 0.0  # a silent start, then noise: alignment is measurable
    return a


def test_roundtrip_frames_fps_and_audio(tmp_path):
    frames, audio = _frames(50), _noise_audio(2.0)
    path = write_video(tmp_path / "a.mp4", frames, 25, audio=audio, sample_rate=SR)
    info = probe_video(path)
    assert info["fps"] == 25 and info["frames"] == 50 and info["has_audio"]
    got, fps = read_video(path)
    assert got.shape == frames.shape and fps == 25
    assert np.abs(got.astype(int) - frames.astype(int)).mean() < 3
    wav = read_audio(path, SR)
    assert wav.dtype == np.float32 and len(wav) == len(audio)  # AAC padding is cut back
    lag = np.argmax(np.correlate(wav[: SR], audio[SR // 4: SR // 4 + 2000], "valid")) - SR // 4
    assert abs(lag) <= 1  # no shift between the written and the read sound track
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_resampling_to_25_fps(tmp_path):
    src = _frames(60)
    write_video(tmp_path / "b.mp4", src, 30)
    out, src_fps = read_video_at_fps(tmp_path / "b.mp4", 25, return_src_fps=True)
    assert src_fps == pytest.approx(30) and len(out) == 50
    # frame k at 25 fps shows the source frame nearest to k/25 s
    levels = out[:, 0, 0, 0].astype(int)
    expected = (np.round(np.arange(50) * 30 / 25).clip(0, 59) * 4) % 256
    assert np.abs(levels - expected).max() <= 4
    same = read_video_at_fps(write_video(tmp_path / "c.mp4", src[:30], 25), 25)
    assert len(same) == 30
    np.testing.assert_array_equal(resample_indices([0.0, 0.02, 0.04, 0.06], 50, 25), [0, 2])


def test_mux_audio_keeps_video_and_adds_sound(tmp_path):
    video = write_video(tmp_path / "silent.mp4", _frames(25), 25)
    assert not probe_video(video)["has_audio"]
    with pytest.raises(LipVoicerError, match="silent.mp4: no audio stream"):
        read_audio(video)
    out = mux_audio(video, _noise_audio(1.0), SR, tmp_path / "voiced.mp4")
    assert len(read_audio(out, SR)) == SR
    assert read_video(out)[0].shape == (25, 64, 64, 3)


def _audio_only(path):
    import av

    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=SR)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray((np.zeros((1, SR)) * 0).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SR, 0, Fraction(1, SR)
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def test_unreadable_files_give_one_line_errors(tmp_path):
    good = write_video(tmp_path / "good.mp4", _frames(40), 25)
    cases = {
        "missing.mp4": "file not found",
        "empty.mp4": "empty file",
        "corrupt.mp4": "cannot open as a video",
        "truncated.mp4": "truncated",
        "audio_only.mp4": "no video stream",
    }
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    data = good.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    _audio_only(tmp_path / "audio_only.mp4")
    for name, reason in cases.items():
        with pytest.raises(LipVoicerError) as e:
            read_video(tmp_path / name)
        msg = str(e.value)
        assert msg.startswith(str(tmp_path / name)) and reason in msg and "\n" not in msg, msg


def test_write_refuses_empty_frames(tmp_path):
    with pytest.raises(LipVoicerError, match="non-empty"):
        write_video(tmp_path / "x.mp4", np.zeros((0, 8, 8, 3), np.uint8))
    assert not (tmp_path / "x.mp4").exists()
