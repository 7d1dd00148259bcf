"""Checks on input videos (dataloaders/video_io/, dataloaders/prep/mouthcrops.py): a truncated file is
refused instead of giving a shorter result, generate.max_seconds is enforced while decoding a stream whose
header gives no duration, and face detection / mouth cropping show progress bars."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from utils.errors import LipVoicerError

FPS = 25


# ----------------------------------------------------------------------------- bad files, built here
def encode(path: Path, frames: np.ndarray, fmt: str = "mp4", fps: int = FPS) -> Path:
    """uint8 RGB frames -> H.264 with PyAV: an .mp4 with its index first (faststart) or, with
    fmt="h264", a raw elementary stream (no container, so no duration anywhere)."""
    import av

    options = {"movflags": "faststart"} if fmt == "mp4" else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt, options=options) as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def truncate(path: Path, fraction: float = 0.6, out: Path | None = None) -> Path:
    """The first `fraction` of the file's bytes (the faststart header stays whole)."""
    data = path.read_bytes()
    out = out or path
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def loop_frames(frames: np.ndarray, n: int) -> np.ndarray:
    """n frames playing the clip forwards and backwards (no jump at the joins)."""
    cycle = np.concatenate([frames, frames[::-1]])
    return cycle[np.arange(n) % len(cycle)]


def _random_frames(n: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- video_io
def test_truncated_faststart_mp4_is_refused(tmp_path):
    from dataloaders.video_io.probe import probe_video
    from dataloaders.video_io.decode import read_video

    full = encode(tmp_path / "full.mp4", _random_frames(190))
    cut = truncate(full, 0.6, tmp_path / "cut.mp4")
    assert probe_video(cut)["duration"] == pytest.approx(7.6)  # the header is intact
    with pytest.raises(LipVoicerError) as e:
        read_video(cut)
    msg = str(e.value)
    assert msg.startswith(f"{cut}: truncated video: header says 7.60 s, only ") and " s decode" in msg, msg
    assert "\n" not in msg
    decoded = float(msg.split("only ")[1].split(" s")[0])
    assert 2.0 < decoded < 6.0
    # the whole file, a raw stream and a file a little short of its header are read as they are
    assert len(read_video(full)[0]) == 190
    assert len(read_video(encode(tmp_path / "raw.h264", _random_frames(60), fmt="h264"))[0]) == 60


def test_other_containers_cut_short_and_files_that_are_not(tmp_path):
    import shutil
    import subprocess

    from dataloaders.video_io.decode import read_video
    from dataloaders.video_io.encode import write_video

    frames = _random_frames(100)
    audio = (0.1 * np.sin(np.arange(4 * 16000) / 10)).astype(np.float32)
    mp4 = write_video(tmp_path / "a.mp4", frames, FPS, audio=audio, sample_rate=16000)
    # Matroska, with and without audio (the video's length is in a DURATION tag, not in the stream's
    # header): cut to 60 %, refused; whole, read in full
    for name, args in (("av.mkv", ["-c", "copy"]), ("v.mkv", ["-an", "-c", "copy"])):
        if not shutil.which("ffmpeg"):
            pytest.skip("the ffmpeg command is needed to remux")
        whole = tmp_path / name
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(mp4), *args, str(whole)], check=True)
        assert len(read_video(whole)[0]) == 100
        cut = truncate(whole, 0.6, tmp_path / f"cut_{name}")
        with pytest.raises(LipVoicerError, match=rf"cut_{name}: truncated video: header says 4.0\d s, only "):
            read_video(cut)
    # an mp4 trimmed without re-encoding (an edit list hides the frames before the cut): not truncated
    trimmed = tmp_path / "trimmed.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "1.3", "-i", str(mp4), "-c", "copy", str(trimmed)],
                   check=True)
    got, _ = read_video(trimmed)
    assert 60 <= len(got) < 100


def test_tolerance_for_missing_frames():
    from dataloaders.video_io.probe import missing_frames_tolerated

    assert missing_frames_tolerated(50) == 2     # short clips: 2 frames
    assert missing_frames_tolerated(190) == 2
    assert missing_frames_tolerated(1500) == 15  # long ones: 1 %


def test_max_seconds_stops_decoding_a_raw_stream(tmp_path):
    from dataloaders.video_io.probe import probe_video
    from dataloaders.video_io.decode import read_video, read_video_at_fps

    raw = encode(tmp_path / "long.h264", _random_frames(193), fmt="h264")
    assert probe_video(raw)["duration"] is None  # nothing to check before decoding
    with pytest.raises(LipVoicerError) as e:
        read_video_at_fps(raw, 25, max_seconds=3, limit_name="generate.max_seconds")
    msg = str(e.value)
    assert msg == (f"{raw}: video is longer than 3 s (decoding stopped at frame 76, 3.04 s; its header gives no "
                   f"duration); the limit is 3 s (generate.max_seconds; memory grows with length: cut the video "
                   f"or raise the limit)"), msg
    assert len(read_video(raw, max_seconds=8)[0]) == 193  # under the limit: read in full


# ----------------------------------------------------------------------------- mouth-crop extraction
@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    from tests.tiny_generation import make_synthetic_clips

    root = make_synthetic_clips(tmp_path_factory.mktemp("faces"), n_clips=1)
    return sorted((root / "videos").rglob("*.mp4"))[0]


def test_extraction_reports_a_truncated_video_and_goes_on(face_clip, tmp_path, caplog, capsys):
    from dataloaders import extract_mouthcrops
    from dataloaders.video_io.decode import read_video
    from tests.tiny_generation import mean_face_source

    frames, _ = read_video(face_clip)
    spk = tmp_path / "videos" / "test" / "spk00"
    spk.mkdir(parents=True)
    encode(spk / "good.mp4", frames)
    truncate(encode(spk / "cut.mp4", loop_frames(frames, 194)), 0.6)
    out = tmp_path / "rois"
    caplog.clear()
    code = extract_mouthcrops.main(["--ds_dir", str(tmp_path / "videos"), "--split", "test", "--out_dir", str(out),
                                    "--workers", "1", f"prep.mean_face_path={mean_face_source()}",
                                    "prep.progress=false"])
    assert code == 1
    assert "1 written, 0 already done, 1 failed" in capsys.readouterr().out
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith(f"{spk / 'cut.mp4'}: truncated video: header says 7.76 s, only ")
    assert (out / "test" / "spk00" / "good.npz").is_file() and not (out / "test" / "spk00" / "cut.npz").exists()


# ----------------------------------------------------------------------------- progress bars
def test_detection_and_cropping_show_progress_bars(face_clip, capsys):
    from dataloaders.prep.mouthcrops import mouth_crops_from_frames, video_frames
    from tests.tiny_generation import mean_face_source

    cfg = {"mean_face_path": str(mean_face_source()), "detector": "mediapipe"}
    frames = video_frames(face_clip, cfg, progress=True)
    crops = mouth_crops_from_frames(frames, cfg, source=str(face_clip), progress=True)
    assert crops.shape == (len(frames), 96, 96)
    err = capsys.readouterr().err
    for stage in ("decode", "face detection", "mouth cropping"):
        line = [x for x in err.replace("\r", "\n").splitlines() if x.startswith(stage)]
        assert line and f"{len(frames)}/{len(frames)}" in line[-1] and "frame/s" in line[-1], err
    video_frames(face_clip, cfg, progress=False)
    mouth_crops_from_frames(frames, cfg, progress=False)
    assert capsys.readouterr().err == ""


def test_extraction_shows_per_video_bars_only_on_a_terminal_with_one_worker(monkeypatch):
    import sys

    from dataloaders.prep.mouthcrops import PER_VIDEO_BAR, _per_video_bars

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert _per_video_bars({"progress": True, "num_workers": 1}) == PER_VIDEO_BAR
    assert PER_VIDEO_BAR["leave"] is False and PER_VIDEO_BAR["delay"] > 0  # short clips: no bar at all
    assert _per_video_bars({"progress": True, "num_workers": 2}) is False  # parallel workers: the file bar only
    assert _per_video_bars({"progress": False, "num_workers": 1}) is False
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert _per_video_bars({"progress": True, "num_workers": 1}) is False  # a log file: no per-frame lines
