"""Synthetic corpus -> extract_audio_from_video.py / extract_mouthcrops.py, face detection, and bad input."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import compose_cfg
from utils.errors import LipVoicerError

SR = 16000


def _mean_face_copy(dst_dir: Path) -> Path:
    """The mean face (the published one, or a stand-in when absent) copied into a temporary folder
    (library code never reads ../shared)."""
    from tests.tiny_generation import mean_face_source

    dst = dst_dir / "20words_mean_face.npy"
    shutil.copy(mean_face_source(), dst)
    return dst


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from dataloaders.synthetic.corpus import build_corpus, synthetic_settings

    root = tmp_path_factory.mktemp("synthetic")
    syn = synthetic_settings(compose_cfg(["prep.synthetic.n_clips=4", "prep.synthetic.workers=1"]))
    assert build_corpus(root, syn, progress=False) == (4, 0, 0)
    return root, syn


@pytest.fixture(scope="module")
def mean_face(tmp_path_factory):
    return _mean_face_copy(tmp_path_factory.mktemp("assets"))


# ----------------------------------------------------------------------------- the corpus
def test_plan_splits_speakers_and_held_out_sentences():
    from dataloaders.synthetic.corpus import plan_corpus

    specs = plan_corpus(40, seed=0)
    assert [sum(s.split == k for s in specs) for k in ("pretrain", "trainval", "test")] == [10, 24, 6]
    assert len({s.sentence for s in specs}) == 40  # every sentence once: test sentences are unseen
    train_spk = {s.speaker.name for s in specs if s.split != "test"}
    test_spk = {s.speaker.name for s in specs if s.split == "test"}
    assert train_spk and test_spk and not train_spk & test_spk
    assert len({s.speaker.voice for s in specs}) > 3 and len({s.rel for s in specs}) == 40
    again = plan_corpus(40, seed=0)
    assert [(s.rel, s.sentence, s.seed) for s in specs] == [(s.rel, s.sentence, s.seed) for s in again]
    assert [s.sentence for s in plan_corpus(40, seed=1)] != [s.sentence for s in specs]
    with pytest.raises(LipVoicerError, match="n_clips must be at least 1"):
        plan_corpus(0)


def test_corpus_layout_transcripts_and_signals(corpus):
    from dataloaders.text import read_transcript
    from dataloaders.video_io.probe import probe_video
    from dataloaders.video_io.decode import read_audio

    root, syn = corpus
    videos = sorted((root / "videos").rglob("*.mp4"))
    assert len(videos) == 4
    assert {v.relative_to(root / "videos").parts[0] for v in videos} == {"pretrain", "trainval", "test"}
    for v in videos:
        split, speaker, clip = v.relative_to(root / "videos").parts
        assert speaker.startswith("spk") and clip.endswith(".mp4")
        first = v.with_suffix(".txt").read_text().splitlines()[0]
        assert first.startswith("Text:  ") and first[7:].isupper()
        assert len(read_transcript(v.with_suffix(".txt")).split()) >= 4
        info = probe_video(v)
        assert info["fps"] == 25 and (info["width"], info["height"]) == (256, 256)
        wav = read_audio(v, SR)
        assert len(wav) == info["frames"] * SR // 25 and info["frames"] >= 30  # >= 1.2 s, aligned
        assert np.abs(wav).max() > 0.3
    assert (root / "synthetic_corpus.json").is_file()
    assert not [p for p in root.rglob(".*")]  # no temporary files


def test_rerun_skips_existing_clips(corpus):
    from dataloaders.synthetic.corpus import build_corpus

    root, syn = corpus
    stamp = {p: p.stat().st_mtime_ns for p in (root / "videos").rglob("*.mp4")}
    assert build_corpus(root, syn, progress=False) == (0, 4, 0)
    assert stamp == {p: p.stat().st_mtime_ns for p in (root / "videos").rglob("*.mp4")}


def test_clip_is_deterministic_and_mouth_follows_speech(corpus):
    from dataloaders.synthetic.corpus import plan_corpus, synthesize_clip

    _, syn = corpus
    spec = plan_corpus(4, 0)[1]
    frames, audio, timings = synthesize_clip(spec, syn)
    frames2, audio2, _ = synthesize_clip(spec, syn)
    np.testing.assert_array_equal(frames, frames2)  # same clip whatever the worker
    np.testing.assert_array_equal(audio, audio2)
    assert len(audio) == len(frames) * SR // 25
    assert [w for w, _, _ in timings] == spec.sentence.split()
    # frames change (mouth, head motion) while the speech runs
    assert np.abs(np.diff(frames.astype(np.float32), axis=0)).mean() > 0.5


def test_files_do_not_depend_on_the_worker_count(corpus, tmp_path):
    import hashlib

    from dataloaders.synthetic.corpus import build_corpus

    root, syn = corpus
    assert build_corpus(tmp_path, dict(syn, workers=2), progress=False) == (4, 0, 0)
    for video in (root / "videos").rglob("*.mp4"):
        other = tmp_path / video.relative_to(root)
        assert hashlib.md5(video.read_bytes()).digest() == hashlib.md5(other.read_bytes()).digest(), video


def test_cli_writes_a_corpus(tmp_path, capsys):
    from dataloaders.synthetic.corpus import main

    assert main(["--out_dir", str(tmp_path), "--n_clips", "1", "--workers", "1", "--no_progress"]) == 0
    assert "1 clips written" in capsys.readouterr().out
    assert len(list((tmp_path / "videos").rglob("*.mp4"))) == 1


# ----------------------------------------------------------------------------- preparation scripts
def test_extract_audio_same_relative_paths(corpus, capsys):
    from dataloaders.extract_audio_from_video import main
    from dataloaders.video_io.probe import probe_video

    root, _ = corpus
    out = root / "audios"
    assert main(["--ds_dir", str(root), "--out_dir", str(out), "--workers", "1", "prep.progress=false"]) == 0
    assert "4 written, 0 already done, 0 failed" in capsys.readouterr().out
    videos = {p.relative_to(root / "videos").with_suffix("") for p in (root / "videos").rglob("*.mp4")}
    wavs = {p.relative_to(out).with_suffix("") for p in out.rglob("*.wav")}
    assert videos == wavs
    for rel in wavs:
        wav, sr = sf.read(out / f"{rel}.wav")
        assert sr == SR and wav.ndim == 1
        assert len(wav) == probe_video(root / "videos" / f"{rel}.mp4")["frames"] * 640
    assert main(["--ds_dir", str(root / "videos"), "--split", "test", "--out_dir", str(out), "--workers", "1",
                 "prep.progress=false"]) == 0
    assert "0 written, 1 already done" in capsys.readouterr().out


def test_extract_mouthcrops_same_relative_paths(corpus, mean_face, capsys):
    from dataloaders.extract_mouthcrops import main
    from dataloaders.video_io.probe import probe_video

    root, _ = corpus
    out = root / "mouth_rois"
    args = ["--ds_dir", str(root / "videos"), "--out_dir", str(out), "--workers", "1",
            f"prep.mean_face_path={mean_face}", "prep.progress=false"]
    assert main(args) == 0
    assert "4 written, 0 already done, 0 failed" in capsys.readouterr().out
    videos = {p.relative_to(root / "videos").with_suffix("") for p in (root / "videos").rglob("*.mp4")}
    assert videos == {p.relative_to(out).with_suffix("") for p in out.rglob("*.npz")}
    for rel in videos:
        data = np.load(out / f"{rel}.npz")["data"]
        assert data.dtype == np.uint8 and data.shape == (probe_video(root / "videos" / f"{rel}.mp4")["frames"], 96, 96)
    assert main(args) == 0
    assert "0 written, 4 already done" in capsys.readouterr().out


def test_mouth_crop_is_centred_on_the_mouth(corpus, mean_face):
    from dataloaders.prep.mouthcrops import mouth_crops_from_video, video_frames

    root, _ = corpus
    cfg = {"mean_face_path": str(mean_face), "detector": "mediapipe"}
    video = sorted((root / "videos").rglob("*.mp4"))[0]
    crops = mouth_crops_from_video(video, cfg)
    assert crops.shape == (len(video_frames(video, cfg)), 96, 96)
    outside = (crops == 0).any(0)                      # black where the aligned frame left the video
    dark = (crops < 70) & ~outside                     # the inside of the open mouth
    area = dark.reshape(len(crops), -1).sum(1)
    t = int(np.argmax(area))
    assert area[t] > 150 and area.min() < 0.3 * area[t]  # the mouth opens and closes
    ys, xs = np.nonzero(dark[t])
    cy, cx = ys.mean(), xs.mean()
    print(f"[mouth crop] darkest region centroid ({cx:.1f}, {cy:.1f}) in a 96 x 96 crop")
    assert abs(cx - 47.5) < 10 and abs(cy - 47.5) < 14


def test_astronaut_face_detection():
    from skimage import data

    from dataloaders.prep.face_detection import MediaPipeDetector

    img = data.astronaut()
    det = MediaPipeDetector()
    faces = det.detect_image(img)
    assert len(faces) == 1
    face = faces[0]
    x0, y0, x1, y1 = face.box
    assert face.score > 0.8 and 60 < x1 - x0 < 160
    assert np.all((face.keypoints[:, 0] > x0) & (face.keypoints[:, 0] < x1))
    assert np.all((face.keypoints[:, 1] > y0) & (face.keypoints[:, 1] < y1))
    right_eye, left_eye, nose, mouth = face.keypoints
    assert right_eye[0] < left_eye[0] and max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    # on a blank image: no face with either model
    assert det.detect_video(np.full((3, 128, 128, 3), 128, np.uint8)) == [None, None, None]
    det.close()


def test_retinaface_backend_absent_says_how_to_install():
    try:
        import ibug.face_detection  # noqa: F401
        pytest.skip("ibug packages are installed here")
    except ImportError:
        pass
    from dataloaders.prep.face_detection import check_backend, make_detector

    for fail in (lambda: make_detector({"detector": "retinaface_fan"}), lambda: check_backend("retinaface_fan")):
        with pytest.raises(LipVoicerError, match="not on PyPI.*hhj1897/face_detection"):
            fail()
    with pytest.raises(LipVoicerError, match="unknown face detector 'dlib'"):
        make_detector({"detector": "dlib"})
    check_backend("mediapipe")


# ----------------------------------------------------------------------------- bad input
def _bad_split(root: Path, good: Path) -> Path:
    """A split with one usable clip and one file for each kind of bad input."""
    from tests.test_data_video_io import _audio_only
    from dataloaders.video_io.decode import read_audio, read_video
    from dataloaders.video_io.encode import write_video

    spk = root / "videos" / "bad" / "spk99"
    spk.mkdir(parents=True)
    shutil.copy(good, spk / "good.mp4")
    frames, _ = read_video(good)
    audio = read_audio(good, SR)
    rng = np.random.default_rng(0)
    blank = np.clip(128 + rng.normal(0, 3, (40, 96, 96, 3)), 0, 255).astype(np.uint8)
    write_video(spk / "noface.mp4", blank, 25)                                 # and no audio stream
    write_video(spk / "short.mp4", frames[:15], 25, audio=audio[: 15 * 640], sample_rate=SR)
    (spk / "corrupt.mp4").write_bytes(rng.bytes(20000))
    data = (spk / "good.mp4").read_bytes()
    (spk / "truncated.mp4").write_bytes(data[: len(data) // 3])
    _audio_only(spk / "audio_only.mp4")
    (root / "videos" / "empty" / "spk00").mkdir(parents=True)
    return spk


def test_bad_inputs_are_logged_counted_and_skipped(corpus, mean_face, tmp_path, caplog, capsys):
    from dataloaders import extract_audio_from_video, extract_mouthcrops

    root, _ = corpus
    good = sorted((root / "videos").rglob("*.mp4"))[0]
    spk = _bad_split(tmp_path, good)
    common = ["--ds_dir", str(tmp_path / "videos"), "--split", "bad", "--workers", "1", "prep.progress=false"]

    caplog.clear()
    assert extract_mouthcrops.main(common + ["--out_dir", str(tmp_path / "rois"),
                                             f"prep.mean_face_path={mean_face}"]) == 1
    assert "1 written, 0 already done, 5 failed" in capsys.readouterr().out
    errors = {r.getMessage().split(":")[0]: r.getMessage() for r in caplog.records if r.levelname == "ERROR"}
    expected = {"noface": "no face detected in any frame", "short": "clip is 0.60 s long; at least 1 s",
                "corrupt": "cannot open as a video", "truncated": "truncated", "audio_only": "no video stream"}
    for name, reason in expected.items():
        msg = errors[str(spk / f"{name}.mp4")]
        assert reason in msg and "\n" not in msg, msg
    assert [p.name for p in (tmp_path / "rois").rglob("*") if p.is_file()] == ["good.npz"]

    caplog.clear()
    assert extract_audio_from_video.main(common + ["--out_dir", str(tmp_path / "audios")]) == 1
    assert "2 written, 0 already done, 4 failed" in capsys.readouterr().out
    errors = {r.getMessage().split(":")[0]: r.getMessage() for r in caplog.records if r.levelname == "ERROR"}
    expected = {"noface": "no audio stream", "short": "audio is 0.60 s long", "corrupt": "cannot open as a video",
                "truncated": "truncated"}
    for name, reason in expected.items():
        assert reason in errors[str(spk / f"{name}.mp4")]
    assert sorted(p.name for p in (tmp_path / "audios").rglob("*") if p.is_file()) == ["audio_only.wav", "good.wav"]


def test_split_without_videos_and_missing_mean_face(tmp_path, mean_face, capsys):
    from dataloaders import extract_audio_from_video, extract_mouthcrops

    (tmp_path / "videos" / "empty" / "spk00").mkdir(parents=True)
    base = ["--ds_dir", str(tmp_path), "--out_dir", str(tmp_path / "out"), "prep.progress=false"]
    for main, extra in ((extract_audio_from_video.main, []),
                        (extract_mouthcrops.main, [f"prep.mean_face_path={mean_face}"])):
        with pytest.raises(SystemExit) as e:
            main(base + ["--split", "empty"] + extra)
        assert e.value.code == 1
        err = capsys.readouterr().err.strip()
        assert err == f"error: {tmp_path / 'videos' / 'empty'}: no .mp4 videos in split 'empty'"
        with pytest.raises(SystemExit):
            main(base + ["--split", "nosuchsplit"] + extra)
        assert "split directory not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        extract_mouthcrops.main(base + ["--split", "empty", f"prep.mean_face_path={tmp_path / 'none.npy'}"])
    assert "mean face not found (run `python download_checkpoints.py`" in capsys.readouterr().err
    if importlib.util.find_spec("ibug") is None:  # the optional backend, selected but not installed
        (tmp_path / "videos" / "empty" / "spk00" / "a.mp4").write_bytes(b"x")
        with pytest.raises(SystemExit):
            extract_mouthcrops.main(base + ["--split", "empty", f"prep.mean_face_path={mean_face}",
                                            "prep.detector=retinaface_fan"])
        assert capsys.readouterr().err.startswith("error: the retinaface_fan detector needs the ibug packages")


@pytest.mark.slow
def test_forty_clips_build_within_a_minute(tmp_path):
    import time

    from dataloaders.synthetic.corpus import build_corpus, synthetic_settings

    syn = synthetic_settings(compose_cfg(["prep.synthetic.n_clips=40", "prep.synthetic.workers=2"]))
    start = time.perf_counter()
    assert build_corpus(tmp_path, syn, progress=False) == (40, 0, 0)
    elapsed = time.perf_counter() - start
    print(f"[synthetic corpus] 40 clips with 2 workers in {elapsed:.1f} s")
    assert elapsed < 60
