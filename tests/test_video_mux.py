"""Putting a new sound track on a user's video (dataloaders/video_io/: mux_plan, mux_audio): the plan is
known before any long work, the video stream is copied when an .mp4 takes it and players play it there,
re-encoded to H.264 otherwise, and every output plays: the frames, their times and the rotation of
the input, the new sound. Clips are made here with the ffmpeg command (ProRes .mov, MJPEG .avi, H.264 with B-frames in .avi,
VP8 / VP9 .webm, H.264 .mkv / .ts / .mp4 with a rotation, HEVC .mkv, a raw .h264 stream)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dataloaders.video_io.mux import MuxPlan, mux_audio, mux_plan
from dataloaders.video_io.probe import probe_video
from dataloaders.video_io.decode import read_audio, read_video
from utils.errors import LipVoicerError

SR = 16000
SOURCE = ["-f", "lavfi", "-i", "testsrc=size=96x64:rate=25:duration=1.2",
          "-f", "lavfi", "-i", "sine=frequency=300:duration=1.2"]
# name: (ffmpeg arguments after the sources, copied?)
CLIPS = {
    "prores.mov": (["-c:v", "prores_ks", "-c:a", "pcm_s16le"], False),
    "prores_rotated.mov": (["-c:v", "prores_ks", "-an"], False),
    "mjpeg.avi": (["-c:v", "mjpeg", "-c:a", "pcm_s16le"], False),
    "h264_bframes.avi": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le"], False),  # no pts in AVI
    "vp8.webm": (["-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libvorbis"], False),
    "vp9.webm": (["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus"], True),
    "h264.mkv": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"], True),
    "hevc.mkv": (["-c:v", "libx265", "-x265-params", "log-level=error", "-pix_fmt", "yuv420p", "-c:a", "aac"], True),
    "h264.ts": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"], True),
    "rotated.mp4": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-an"], True),
    "raw.h264": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-an"], False),
}
ROTATED = {"prores_rotated.mov": 90, "rotated.mp4": 270}  # a rotation in the metadata, as phones write it


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    if not shutil.which("ffmpeg"):
        pytest.skip("the ffmpeg command is needed to make the clips")
    root = tmp_path_factory.mktemp("mux")
    made = {}
    for name, (args, _) in CLIPS.items():
        out = root / name
        plain = root / f"plain_{name}" if name in ROTATED else out
        done = subprocess.run(["ffmpeg", "-v", "error", "-y", *SOURCE, *args, "-shortest", str(plain)],
                              capture_output=True, text=True)
        if done.returncode == 0 and name in ROTATED:  # ffmpeg 5.1 writes the tag when copying
            done = subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(plain), "-c", "copy", "-metadata:s:v",
                                   f"rotate={ROTATED[name]}", str(out)], capture_output=True, text=True)
        if done.returncode == 0:
            made[name] = out
    return made


def _speech(seconds=1.2):
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize("name", list(CLIPS))
def test_each_container_and_codec_muxes_to_a_playable_mp4(clips, tmp_path, name):
    import av

    if name not in clips:
        pytest.skip(f"this ffmpeg cannot make {name}")
    src = clips[name]
    out = tmp_path / f"{Path(name).stem}_speech.mp4"
    plan = mux_plan(src, out)
    assert isinstance(plan, MuxPlan) and not out.exists()  # decided without writing
    assert plan.copy_video == CLIPS[name][1], plan.reason
    assert "\n" not in plan.reason and plan.reason
    assert plan.out_codec == (plan.video_codec if plan.copy_video else "h264")
    assert plan.rotation == ROTATED.get(name, 0)
    mux_audio(src, _speech(), SR, out, plan=plan)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    want, want_fps = read_video(src)  # upright frames of the input
    if name in ROTATED:
        plain, _ = read_video(src.with_name(f"plain_{name}"))
        np.testing.assert_array_equal(want, np.rot90(plain, ROTATED[name] // 90, axes=(1, 2)))
    got, fps = read_video(out)
    assert got.shape == want.shape and fps == pytest.approx(want_fps, rel=0.02)
    diff = np.abs(got.astype(int) - want.astype(int)).mean()
    assert diff == 0 if plan.copy_video else diff < 12, diff
    info = probe_video(out)
    assert info["has_audio"] and info["duration"] == pytest.approx(len(want) / want_fps, abs=0.05)
    assert info["rotation"] == (plan.rotation if plan.copy_video else 0)  # a copy keeps the display matrix
    assert (info["width"], info["height"]) == (want.shape[2], want.shape[1])
    assert len(read_audio(out, SR)) == len(_speech())
    with av.open(str(out)) as c:
        vs = c.streams.video[0]
        assert vs.codec_context.name == plan.out_codec
        if plan.out_codec == "hevc":
            assert vs.codec_context.codec_tag == "hvc1"  # the tag Apple's players need
        first = next(c.decode(vs))
        assert first.time == pytest.approx(0.0, abs=1e-3)  # the picture starts with the new sound
        if not plan.copy_video:
            assert first.format.name == "yuv420p"


def test_mux_without_a_plan_and_when_the_copy_fails_midway(clips, tmp_path, monkeypatch):
    import dataloaders.video_io.mux as vio

    if "h264.mkv" not in clips:
        pytest.skip("no H.264 clip")
    out = mux_audio(clips["h264.mkv"], _speech(), SR, tmp_path / "a.mp4")  # the plan made on the spot
    assert len(read_video(out)[0]) == 30

    def refuse(video_path, *a, **k):
        raise vio._CopyFailed(f"{video_path}: a packet the muxer does not take")

    monkeypatch.setattr(vio, "_mux_copy", refuse)
    out = mux_audio(clips["h264.mkv"], _speech(), SR, tmp_path / "b.mp4")  # re-encoded instead
    assert len(read_video(out)[0]) == 30 and probe_video(out)["has_audio"]


def test_unreadable_inputs_give_one_line_errors(tmp_path):
    from tests.test_data_video_io import _audio_only

    (tmp_path / "junk.mov").write_bytes(np.random.default_rng(0).bytes(4000))
    _audio_only(tmp_path / "audio.mp4")
    for name, reason in (("missing.mov", "file not found"), ("junk.mov", "cannot open as a video"),
                         ("audio.mp4", "no video stream")):
        for call in (lambda p: mux_plan(p, tmp_path / "o.mp4"),
                     lambda p: mux_audio(p, _speech(), SR, tmp_path / "o.mp4")):
            with pytest.raises(LipVoicerError) as e:
                call(tmp_path / name)
            msg = str(e.value)
            assert msg.startswith(f"{tmp_path / name}: ") and reason in msg and "\n" not in msg, msg
    assert not (tmp_path / "o.mp4").exists()
