"""inference_real_video.py end to end on CPU: a synthetic talking-face clip, tiny random-weight
checkpoints written in the published formats, every output checked; and every handled bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.helpers import compose_cfg, write_video
from tests.parity_utils import REPO_ROOT
from tests.tiny_generation import generation_overrides, make_synthetic_clips, make_tiny_assets
from utils.errors import LipVoicerError

TEXT = "she sells sea shells"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    assets = make_tiny_assets(root / "assets")
    corpus = make_synthetic_clips(root / "corpus", n_clips=4)
    video = sorted((corpus / "videos").rglob("*.mp4"))[0]
    return root, assets, video


def _streams(path: Path) -> tuple[list[str], float, int]:
    import av

    with av.open(str(path)) as c:
        kinds = [s.type for s in c.streams]
        vs = c.streams.video[0]
        n = sum(1 for _ in c.decode(vs))
        fps = float(vs.average_rate)
    return kinds, fps, n


def _run(args: list[str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO_ROOT / "inference_real_video.py"), *args, f"hydra.run.dir={cwd / 'hydra_out'}"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_end_to_end_writes_every_output(setup, tmp_path):
    root, assets, video = setup
    save_dir = tmp_path / "out"
    res = _run([f"generate.video_path={video}", f"generate.save_dir={save_dir}", f"generate.text='{TEXT.upper()}!'",
                *generation_overrides(assets)], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = save_dir / video.stem
    name = video.stem
    assert sorted(p.name for p in save_dir.iterdir()) == [name], "temporary folders left behind"
    expected = {f"{name}{s}" for s in (".wav", ".wav.spec", ".png", ".mp4", "_mouth.mp4", "_face.png", ".txt", ".json")}
    assert {p.name for p in out.iterdir()} == expected

    _, fps, n_frames = _streams(video)
    assert fps == 25
    wav, sr = sf.read(out / f"{name}.wav")
    assert sr == 16000 and wav.ndim == 1
    assert abs(len(wav) / sr - n_frames / 25) <= 1 / 25 + 1e-9
    assert np.isfinite(wav).all() and 0 < np.abs(wav).max() <= 1 / 1.1 + 1e-3

    mel = torch.load(out / f"{name}.wav.spec")
    assert mel.shape == (80, 4 * n_frames) and torch.isfinite(mel).all()
    assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    kinds, out_fps, out_frames = _streams(out / f"{name}.mp4")
    assert sorted(kinds) == ["audio", "video"]
    assert out_frames == n_frames
    from dataloaders.video_io.decode import read_audio
    muxed = read_audio(out / f"{name}.mp4", 16000)
    assert abs(len(muxed) - len(wav)) <= 16000 // 25

    kinds, _, mouth_frames = _streams(out / f"{name}_mouth.mp4")
    assert kinds == ["video"] and mouth_frames == n_frames
    assert (out / f"{name}.txt").read_text().strip() == TEXT

    report = json.loads((out / f"{name}.json").read_text())
    assert report["text"] == TEXT and report["text_source"] == "generate.text"
    assert report["frames_25fps"] == n_frames and report["device"] == "cpu"
    assert report["settings"]["w_video"] == 2.0 and report["settings"]["w_asr"] == 1.5
    assert {"mouth_crops", "text", "load_models", "sampling", "write_videos"} <= set(report["timings_s"])
    assert report["versions"]["torch"] == torch.__version__
    assert set(report["checkpoints"]) == {"melgen", "vocoder", "asr", "tokenizer"}


def test_seeded_runs_repeat_and_rerun_replaces(setup, tmp_path):
    from pipelines.generation import GenerationCore
    from pipelines.video_to_speech import generate_for_video

    root, assets, video = setup
    cfg = compose_cfg(generation_overrides(assets, [f"generate.video_path={video}", f"generate.save_dir={tmp_path}",
                                                     f"generate.text={TEXT}", "generate.save_mouth_video=false"]))
    core = GenerationCore.load(cfg, torch.device("cpu"))
    out = generate_for_video(cfg, core)
    first = torch.load(out / f"{video.stem}.wav.spec")
    assert not (out / f"{video.stem}_mouth.mp4").exists()
    out2 = generate_for_video(cfg, core)  # same folder, replaced atomically
    assert out2 == out and torch.equal(torch.load(out / f"{video.stem}.wav.spec"), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == [video.stem]


def test_ntsc_rate_video_is_resampled_to_25_fps(setup, tmp_path):
    from dataloaders.video_io.decode import read_video
    from pipelines.video_to_speech import generate_for_video

    root, assets, video = setup
    frames, fps = read_video(video)
    idx = np.round(np.arange(int(len(frames) * 30 / 25)) * 25 / 30).astype(int).clip(0, len(frames) - 1)
    v30 = tmp_path / "clip30.mp4"
    write_video(v30, frames[idx], fps=30)
    cfg = compose_cfg(generation_overrides(assets, [f"generate.video_path={v30}", f"generate.save_dir={tmp_path / 'o'}",
                                                     f"generate.text={TEXT}", "generate.w_asr=0"]))
    out = generate_for_video(cfg)
    mel = torch.load(out / "clip30.wav.spec")
    assert abs(mel.shape[1] / 4 - len(frames)) <= 1


# ----------------------------------------------------------------------------- bad input
def _cfg(assets, video, save_dir, *extra):
    return compose_cfg(generation_overrides(assets, [f"generate.video_path={video}", f"generate.save_dir={save_dir}",
                                                     f"generate.text={TEXT}", *extra]))


def _expect_error(cfg, *needles):
    from pipelines.video_to_speech import generate_for_video

    with pytest.raises(LipVoicerError) as e:
        generate_for_video(cfg)
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


def _nothing_written(save_dir: Path):
    assert not save_dir.exists() or not any(save_dir.iterdir()), list(save_dir.iterdir())


def test_missing_video(setup, tmp_path):
    _, assets, _ = setup
    _expect_error(_cfg(assets, tmp_path / "nope.mp4", tmp_path / "o"), "nope.mp4", "not found")
    _nothing_written(tmp_path / "o")


def test_not_a_video(setup, tmp_path):
    _, assets, _ = setup
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n" * 20)
    _expect_error(_cfg(assets, bad, tmp_path / "o"), "notes.mp4", "cannot open as a video")
    _nothing_written(tmp_path / "o")


def test_video_without_a_face(setup, tmp_path):
    _, assets, _ = setup
    wall = tmp_path / "wall.mp4"
    ramp = np.linspace(40, 200, 128, dtype=np.float32)
    frames = np.stack([np.broadcast_to((ramp[None, :, None] + 2 * i).astype(np.uint8), (128, 128, 3))
                       for i in range(40)])
    write_video(wall, frames)
    _expect_error(_cfg(assets, wall, tmp_path / "o"), "wall.mp4", "no face detected")
    _nothing_written(tmp_path / "o")


def test_too_short_video(setup, tmp_path):
    from dataloaders.video_io.decode import read_video

    _, assets, video = setup
    frames, _ = read_video(video)
    short = tmp_path / "short.mp4"
    write_video(short, frames[:15])
    _expect_error(_cfg(assets, short, tmp_path / "o"), "short.mp4", "at least 1 s")
    _nothing_written(tmp_path / "o")


def test_too_long_video_names_the_limit(setup, tmp_path):
    _, assets, video = setup
    _expect_error(_cfg(assets, video, tmp_path / "o", "generate.max_seconds=0.5"), video.name,
                  "limit is 0.5 s", "generate.max_seconds")
    _nothing_written(tmp_path / "o")


def test_unwritable_output_directory(setup, tmp_path):
    _, assets, video = setup
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _expect_error(_cfg(assets, video, blocker / "sub"), "cannot be written")


def test_missing_published_checkpoint_names_the_fetch_command(setup, tmp_path):
    _, assets, video = setup
    empty = tmp_path / "ck"
    empty.mkdir()
    msg = _expect_error(_cfg(assets, video, tmp_path / "o", f"paths.checkpoints_dir={empty}"), "g_02400000",
                        "download_checkpoints.py --only hifigan")
    assert "--dest" in msg
    cfg = _cfg(assets, video, tmp_path / "o")
    cfg.generate.ckpt_path = "exp/LRS3/wnet_h512_d12_T400_betaT0.02/checkpoint/1000000.pkl"
    _expect_error(cfg, "1000000.pkl", "download_checkpoints.py --only melgen_lrs3")


def test_lip_reading_needs_its_files_or_the_text(setup, tmp_path):
    _, assets, video = setup
    cfg = _cfg(assets, video, tmp_path / "o")
    cfg.generate.text = None
    _expect_error(cfg, "model.pth", "download_checkpoints.py --only vsr_lrs3", "generate.text")


def test_script_error_is_one_line_and_nonzero(setup, tmp_path):
    _, assets, _ = setup
    res = _run([f"generate.video_path={tmp_path / 'missing.mp4'}", f"generate.save_dir={tmp_path / 'o'}",
                *generation_overrides(assets)], cwd=tmp_path)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'missing.mp4'}: file not found"
    assert "Traceback" not in res.stderr


def test_lip_reader_supplies_the_text_when_none_is_given(setup, tmp_path):
    from tests.test_vsr import write_assets
    from pipelines.video_to_speech import generate_for_video

    _, assets, video = setup
    ck = tmp_path / "ck"
    import shutil
    shutil.copytree(assets / "checkpoints", ck)
    write_assets(ck)
    cfg = compose_cfg(generation_overrides(assets, [f"paths.checkpoints_dir={ck}", f"generate.video_path={video}",
                                                     f"generate.save_dir={tmp_path / 'o'}", "vsr.beam_size=3"]))
    out = generate_for_video(cfg)
    report = json.loads((out / f"{video.stem}.json").read_text())
    assert report["text_source"] == "lip reader"
    assert (out / f"{video.stem}.txt").read_text().strip() == report["text"]
    assert report["text"] == report["text"].lower()


# ----------------------------------------------------------------------------- truncated / unbounded input
def _face_video(video: Path, path: Path, n_frames: int, fmt: str = "mp4") -> Path:
    """The test clip looped to n_frames, written as a faststart mp4 or a raw H.264 stream."""
    from dataloaders.video_io.decode import read_video
    from tests.test_video_input import encode, loop_frames

    frames, _ = read_video(video)
    return encode(path, loop_frames(frames, n_frames), fmt=fmt)


def test_truncated_video_is_refused(setup, tmp_path, capsys):
    from tests.test_video_input import truncate

    _, assets, video = setup
    cut = truncate(_face_video(video, tmp_path / "cut.mp4", 194), 0.6)
    msg = _expect_error(_cfg(assets, cut, tmp_path / "o", "generate.progress=true"),
                        f"{cut}: truncated video: header says 7.76 s, only ")
    assert msg.endswith(" s decode"), msg
    err = capsys.readouterr().err
    assert "decode: " in err and "frame/s" in err and "face detection" not in err  # stopped before detection
    _nothing_written(tmp_path / "o")


@pytest.mark.slow
def test_truncated_video_script_says_one_line(setup, tmp_path):
    from tests.test_video_input import truncate

    _, assets, video = setup
    cut = truncate(_face_video(video, tmp_path / "cut.mp4", 194), 0.6)
    with_bars = [o for o in generation_overrides(assets) if o != "generate.progress=false"] + ["generate.progress=true"]
    res = _run([f"generate.video_path={cut}", f"generate.save_dir={tmp_path / 'o'}", f"generate.text={TEXT}",
                *with_bars], cwd=tmp_path)
    assert res.returncode == 1, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {cut}: truncated video: header says 7.76 s, only ") and last.endswith(" s decode"), last
    assert "decode: " in res.stderr and "frame/s" in res.stderr  # the decoding bar, ended before the error line
    assert "Traceback" not in res.stderr
    _nothing_written(tmp_path / "o")


def test_raw_stream_past_max_seconds_stops_before_face_detection(setup, tmp_path, monkeypatch):
    import dataloaders.prep.mouthcrops as mouthcrops

    _, assets, video = setup
    raw = _face_video(video, tmp_path / "long.h264", 193, fmt="h264")

    def no_detection(*a, **k):
        raise AssertionError("face detection ran on a video past generate.max_seconds")

    monkeypatch.setattr(mouthcrops, "_detector", no_detection)
    msg = _expect_error(_cfg(assets, raw, tmp_path / "o", "generate.max_seconds=3"), f"{raw}: video is longer than 3 s",
                        "decoding stopped at frame 76, 3.04 s", "the limit is 3 s", "generate.max_seconds")
    assert "its header gives no duration" in msg
    _nothing_written(tmp_path / "o")
