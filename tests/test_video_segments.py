"""Videos as they come (pipelines/video_to_speech.py by segments): cutaways, two speakers, long recordings and
subtitles get one soundtrack, segment by segment. Clips are built from the synthetic corpus's faces
(dataloaders/synthetic/scenes.py): placed, cut and concatenated; tiny random-weight checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dataloaders.synthetic.scenes import cutaway, loop, place, side_by_side, still, synthetic_speaker_frames
from tests.helpers import compose_cfg, write_video
from tests.tiny_generation import generation_overrides, make_tiny_assets, mean_face_source
from utils.errors import LipVoicerError

SPF = 640  # audio samples per video frame (16 kHz / 25 fps)
SILENCE = 10 ** (-60 / 20)  # -60 dBFS


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    faces = synthetic_speaker_frames(tmp_path_factory.mktemp("people"), n_clips=6)
    return faces["spk00"], faces["spk01"]   # two speakers who look different (voice and face)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_tiny_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def cutaway_clip(people, tmp_path_factory):
    """3 s of a face, a 3 s cutaway to a scene without a person, 3 s of the face again (225 frames)."""
    a, _ = people
    path = tmp_path_factory.mktemp("clips") / "cutaway.mp4"
    write_video(path, np.concatenate([loop(a, 75), cutaway(75, (256, 256)), loop(a[::-1], 75)]))
    return path


def _cfg(assets, video, out, *extra):
    """A run with the tiny checkpoints and 4 DDIM steps (the sampling is not what these tests are about)."""
    return compose_cfg(generation_overrides(assets, [f"generate.video_path={video}", f"generate.save_dir={out}",
                                                     "generate.text=null", "generate.sampler=ddim", "generate.steps=4",
                                                     *extra]))


def _prep(**extra):
    return {"mean_face_path": str(mean_face_source()), "detector": "mediapipe", "fps": 25, **extra}


def _record(monkeypatch):
    """Wrap speech_for_segments to keep the items each run samples (texts, identity images)."""
    import pipelines.video_to_speech as v2s

    seen = []
    real = v2s.speech_for_segments

    def spy(core, cfg, items, *a, **k):
        seen.append(items)
        return real(core, cfg, items, *a, **k)

    monkeypatch.setattr(v2s, "speech_for_segments", spy)
    return seen


def _spans(report):
    return [(g["start_s"], g["end_s"], g["status"], g["track"] is not None) for g in report["segments"]]


# ----------------------------------------------------------------------------- face / no face / face
def test_cutaway_gets_silence_between_two_speech_segments(cutaway_clip, assets, tmp_path, monkeypatch):
    from pipelines.video_to_speech import generate_for_video

    seen = _record(monkeypatch)
    out = generate_for_video(_cfg(assets, cutaway_clip, tmp_path, "generate.text=['one two','three four']"))
    report = json.loads((out / "cutaway.json").read_text())
    assert _spans(report) == [(0.0, 3.0, "generated", True), (3.0, 6.0, "silent", False),
                              (6.0, 9.0, "generated", True)]
    gap = report["segments"][1]
    assert gap["reason"] == "no face in this shot" and gap["speaker"] is None
    assert [g["text"] for g in report["segments"]] == ["one two", "", "three four"]
    assert report["face_detection"]["shots"] == [[0, 75], [75, 150], [150, 225]]
    wav, sr = sf.read(out / "cutaway.wav", dtype="float32")
    assert sr == 16000 and len(wav) == 225 * SPF   # as long as the video
    assert np.abs(wav[75 * SPF:150 * SPF]).max() < SILENCE
    for a, b in ((0, 75), (150, 225)):
        assert np.sqrt(np.mean(wav[a * SPF:b * SPF] ** 2)) > 1e-3
    # one person in two shots: one speaker, one identity image, one voice
    assert [g["speaker"] for g in report["segments"]] == [0, None, 0]
    tracks = [report["segments"][0]["track"], report["segments"][2]["track"]]
    assert tracks[0] != tracks[1]   # a cut ends a track
    assert report["speakers"] == [{"speaker": 0, "tracks": tracks, "identity_image": "cutaway_face.png"}]
    items = seen[0]
    assert np.array_equal(items[0]["face"], items[1]["face"])
    from dataloaders.video_io.decode import read_audio
    muxed = read_audio(out / "cutaway.mp4", 16000)
    assert abs(len(muxed) - len(wav)) <= SPF and (out / "cutaway.txt").read_text() == "one two\nthree four\n"
    mel = torch.load(out / "cutaway.wav.spec")
    assert mel.shape == (80, 4 * 225)


# ----------------------------------------------------------------------------- who speaks
def test_recoloured_copies_of_one_photograph_are_one_speaker(people, assets, tmp_path, monkeypatch):
    """The synthetic corpus's speakers are one photograph in other colours: by a face-identity descriptor they
    are one person, so alternating shots of two of them get one voice (two real people get two:
    tests/test_real_footage.py)."""
    from pipelines.video_to_speech import generate_for_video

    a, b = people
    path = tmp_path / "interview.mp4"
    write_video(path, np.concatenate([loop(a, 50), loop(b, 50), loop(a[10:], 50), loop(b[10:], 50)]))
    seen = _record(monkeypatch)
    out = generate_for_video(_cfg(assets, path, tmp_path / "o", "generate.text=['a','b','c','d']"))
    report = json.loads((out / "interview.json").read_text())
    assert [(g["start_s"], g["end_s"], g["status"], g["speaker"]) for g in report["segments"]] == [
        (0.0, 2.0, "generated", 0), (2.0, 4.0, "generated", 0), (4.0, 6.0, "generated", 0), (6.0, 8.0, "generated", 0)]
    faces = [it["face"] for it in seen[0]]   # in time order: one identity image for all
    assert all(np.array_equal(faces[0], f) for f in faces[1:])
    assert len(report["speakers"]) == 1 and len(report["speakers"][0]["tracks"]) == 4


@pytest.mark.parametrize("speaking_left", [True, False])
def test_the_face_whose_mouth_moves_is_chosen(people, tmp_path, speaking_left):
    from dataloaders.prep.segments import SegmentSettings
    from dataloaders.prep.video_segments import analyse_segments

    a, b = people
    talk, quiet = loop(a, 75), still(b, 75)
    path = tmp_path / "two.mp4"
    write_video(path, side_by_side(talk, quiet) if speaking_left else side_by_side(quiet, talk))
    video = analyse_segments(path, _prep(), SegmentSettings(min_frames=25, max_frames=250), identity_size=64)
    assert len(video.tracks) == 2
    (g,) = [video.segments[i] for i in video.generated]
    x = video.tracks[g.track].faces[0].center[0]
    assert (x < 256) == speaking_left, x
    assert video.stats["tracks"][g.track]["mouth_motion"] > 2 * video.stats["tracks"][1 - g.track]["mouth_motion"]
    assert set(video.identities) == {g.track}


def test_track_all_gives_each_speaking_face_its_own_segments(people, tmp_path):
    from dataloaders.prep.segments import SegmentSettings
    from dataloaders.prep.video_segments import analyse_segments

    a, b = people
    path = tmp_path / "both.mp4"
    write_video(path, np.concatenate([side_by_side(loop(a, 50), loop(b, 50)), cutaway(25, (256, 512)),
                                      side_by_side(loop(a, 50), still(b, 50))]))
    video = analyse_segments(path, _prep(), SegmentSettings(min_frames=25, max_frames=250, rule="all"),
                             identity_size=64)
    speech = [(g.start, g.stop, g.track) for g in video.segments if g.generated]
    # shot 0: both talk (two overlapping segments); shot 2: only the left one does
    assert video.shots == [(0, 50), (50, 75), (75, 125)], video.shots
    assert [(s, e) for s, e, _ in speech] == [(0, 50), (0, 50), (75, 125)]
    assert len({t for _, _, t in speech}) == 3


# ----------------------------------------------------------------------------- long recordings
def _long_run(people, assets, tmp_path, seconds: float, *extra):
    from pipelines.video_to_speech import generate_for_video

    a, _ = people
    n = int(seconds * 25)
    path = tmp_path / "long.mp4"
    write_video(path, place(loop(a, n), (128, 128), 128, (64, 64)))
    out = generate_for_video(_cfg(assets, path, tmp_path / "o", "generate.save_mouth_video=false", *extra))
    report = json.loads((out / "long.json").read_text())
    wav, _ = sf.read(out / "long.wav", dtype="float32")
    assert len(wav) == n * SPF
    return report, len(a)


def test_a_long_clip_is_generated_whole_in_segments_cut_at_pauses(people, assets, tmp_path, monkeypatch):
    """The cheap default-suite variant of the slow test below: 12 s with generate.segment_seconds=2."""
    import pipelines.generation as generation

    calls = []
    real = generation.GenerationCore.generate
    monkeypatch.setattr(generation.GenerationCore, "generate",
                        lambda self, mouth, *a, **k: calls.append(mouth.shape[0]) or real(self, mouth, *a, **k))
    srt = tmp_path / "words.srt"   # a word every half second: every segment gets its words
    srt.write_text("".join(f"{i + 1}\n00:00:{i // 2:02d},{i % 2 * 500:03d} --> 00:00:{i // 2:02d},{i % 2 * 500 + 400:03d}\n"
                           f"word{i}\n\n" for i in range(24)))
    report, _ = _long_run(people, assets, tmp_path, 12.0, "generate.segment_seconds=2",
                                    "generate.batch_size=4", f"generate.text={srt}")
    segs = report["segments"]
    assert all(g["status"] == "generated" for g in segs) and segs[0]["start_s"] == 0 and segs[-1]["end_s"] == 12.0
    spans = [(g["start_s"], g["end_s"]) for g in segs]
    assert all(1.0 <= b - a <= 2.0 for a, b in spans) and 6 <= len(segs) <= 12, spans
    assert all(a["end_s"] == b["start_s"] for a, b in zip(segs, segs[1:]))   # no gap, no overlap
    from dataloaders.text import normalize_text

    assert " ".join(g["text"] for g in segs) == normalize_text(" ".join(f"word{i}" for i in range(24)))
    assert calls == [4] * (len(segs) // 4) + ([len(segs) % 4] if len(segs) % 4 else [])   # batched samplings
    # (each cut is the quietest mouth-motion frame of its window: test_cut_points_fall_on_the_quietest_frames; on
    # this synthetic clip that is not always the loop's pause: a cut 15 frames from a seam was seen, so no check here)


def _word_cues(path: Path, seconds: float) -> Path:
    """A subtitle file with a word every half second (the tests' tiny assets have no lip reader)."""
    def ts(t: float) -> str:
        return f"00:{int(t) // 60:02d}:{int(t) % 60:02d},{int(round((t % 1) * 1000)):03d}"

    path.write_text("".join(f"{i + 1}\n{ts(i / 2)} --> {ts(i / 2 + 0.4)}\nword{i}\n\n" for i in range(int(seconds * 2))))
    return path


def test_a_clip_over_90_seconds_at_the_default_settings(people, assets, tmp_path):
    srt = _word_cues(tmp_path / "words.srt", 92.0)
    report, _ = _long_run(people, assets, tmp_path, 92.0, f"generate.text={srt}")
    segs = report["segments"]
    assert all(g["status"] == "generated" for g in segs) and segs[-1]["end_s"] == 92.0
    assert all(g["end_s"] - g["start_s"] <= 10.0 for g in segs) and len(segs) >= 10


# ----------------------------------------------------------------------------- texts
SRT = """1
00:00:00,400 --> 00:00:02,000
<i>Place blue</i> at F

2
00:00:02,800 --> 00:00:03,300
two now

3
00:00:03,500 --> 00:00:05,000
[music]

4
00:00:06,200 --> 00:00:08,800
- Bin red
- by G nine
"""


def test_subtitles_guide_each_segment_with_its_cues(cutaway_clip, assets, tmp_path, monkeypatch):
    from pipelines.video_to_speech import generate_for_video

    srt = tmp_path / "talk.srt"
    srt.write_text(SRT)
    seen = _record(monkeypatch)
    out = generate_for_video(_cfg(assets, cutaway_clip, tmp_path / "o", f"generate.text={srt}"))
    report = json.loads((out / "cutaway.json").read_text())
    texts = [(g["text"], g["text_source"]) for g in report["segments"]]
    assert texts == [("place blue at f two now", f"subtitles ({srt})"), ("", ""),
                     ("bin red by g nine", f"subtitles ({srt})")]
    assert [it["text"] for it in seen[0]] == ["place blue at f two now", "bin red by g nine"]
    # the same cues as WebVTT give the same texts; a segment no cue falls into is silent
    vtt = tmp_path / "talk.vtt"
    vtt.write_text("WEBVTT\n\n00:00.400 --> 00:02.000\nplace blue at f\n\n00:02.800 --> 00:03.300\ntwo now\n")
    out = generate_for_video(_cfg(assets, cutaway_clip, tmp_path / "o2", f"generate.text={vtt}"))
    report = json.loads((out / "cutaway.json").read_text())
    assert [(g["status"], g["text"]) for g in report["segments"]] == [
        ("generated", "place blue at f two now"), ("silent", ""), ("silent", "")]
    assert report["segments"][2]["reason"] == f"no cue of {vtt} falls into it"
    wav, _ = sf.read(out / "cutaway.wav", dtype="float32")
    assert np.abs(wav[75 * SPF:]).max() < SILENCE


def test_text_errors_are_one_line_before_any_model(cutaway_clip, assets, tmp_path, monkeypatch):
    import pipelines.video_to_speech as v2s

    monkeypatch.setattr(v2s.GenerationCore, "load", lambda *a, **k: pytest.fail("models loaded"))
    with pytest.raises(LipVoicerError) as e:
        v2s.generate_for_video(_cfg(assets, cutaway_clip, tmp_path / "o", "generate.text='hello there'"))
    assert str(e.value) == (
        f"{cutaway_clip}: generate.text gives one text for 2 speech segments (0.00-3.00 s, 6.00-9.00 s); give one "
        f"text per segment as a list (generate.text=\"['...','...']\"), a .srt / .vtt subtitle file, or no text "
        f"(the lips are read)")
    bad = tmp_path / "bad.srt"
    bad.write_text("1\nnot a time line\nhello\n")
    with pytest.raises(LipVoicerError, match=r"bad.srt: not a valid SRT subtitle file \("):
        v2s.generate_for_video(_cfg(assets, cutaway_clip, tmp_path / "o", f"generate.text={bad}"))
    with pytest.raises(LipVoicerError, match=r"^\S*missing.vtt: subtitle file not found \(generate.text names it\)$"):
        v2s.generate_for_video(_cfg(assets, cutaway_clip, tmp_path / "o", f"generate.text={tmp_path}/missing.vtt"))
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ----------------------------------------------------------------------------- the parts
def test_cut_points_fall_on_the_quietest_frames():
    from dataloaders.prep.segments import cut_points

    motion = np.ones(100, np.float32)
    motion[36:41] = 0.0   # a pause of 5 frames: cut in its middle
    motion[79:84] = 0.0
    assert cut_points(motion, 50, 10) == [38, 81]
    assert cut_points(motion[:50], 50, 10) == []
    flat = np.ones(30, np.float32)  # no pause: the first frame of the window, never a piece under min_frames
    assert cut_points(flat, 20, 12) == [12]


def test_soundtrack_crossfades_and_fades():
    from pipelines.soundtrack import Piece, assemble, fade_in

    f = 64
    one = np.ones(640 + f, np.float32)
    out = assemble(2000, [Piece(0, one, extend=f), Piece(640, np.ones(640, np.float32))], f)
    assert np.allclose(out[f:1280 - f], 1.0, atol=1e-6)   # the crossfade sums to one
    assert np.allclose(out[:f], fade_in(f)) and np.all(out[1280:] == 0)
    assert np.allclose(fade_in(f) + fade_in(f)[::-1], 1.0)


def test_subtitle_cues_go_to_the_segment_they_overlap_most(tmp_path):
    from dataloaders.subtitles import Cue, assign_cues, clean_cue_text

    cues = [Cue(0.5, 1.5, "a"), Cue(2.8, 3.6, "b"), Cue(3.9, 4.0, "c"), Cue(9.0, 9.5, "d")]
    assert assign_cues(cues, [(0.0, 3.0), (3.0, 6.0)]) == [[0], [1, 2]]   # d overlaps nothing
    assert clean_cue_text("<i>Hello</i> {\\an8}[laughs] there\n- (whispers) you") == "Hello there you"


def test_batched_segments_equal_one_by_one(assets):
    """Each segment's noise comes from its own generator: segments of equal length come out bit for bit the same
    batched or one by one (bucket_frames=0 on CPU); a shorter segment batched with longer ones differs (the
    convolutions see the padding; README, Performance)."""
    from pipelines.generation import GenerationCore
    from pipelines.video_to_speech import speech_for_segments

    cfg = compose_cfg(generation_overrides(assets, ["generate.bucket_frames=0", "generate.sampler=ddim",
                                                    "generate.steps=4"]))
    core = GenerationCore.load(cfg, torch.device("cpu"))
    rng = np.random.default_rng(0)
    face = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    items = [{"id": f"s{i}", "crops": rng.integers(0, 255, (n, 96, 96), dtype=np.uint8), "face": face,
              "text": "the cat sat"} for i, n in enumerate([30, 30, 30, 18])]
    cfg.generate.batch_size = 1
    alone = speech_for_segments(core, cfg, items, torch.device("cpu"), seed=3)
    cfg.generate.batch_size = 4
    batched = speech_for_segments(core, cfg, items, torch.device("cpu"), seed=3)
    for (m1, a1), (m4, a4) in zip(alone[:3], batched[:3]):
        # the mel bit for bit; the audio to float rounding (HiFi-GAN's CPU convolutions take another path for a batch)
        assert torch.equal(m1, m4)
        print(f"[30-frame segment] audio batched against alone: max abs difference {float((a1 - a4).abs().max()):.2e}")
        assert torch.allclose(a1, a4, rtol=0, atol=1e-5)
    m1, m4 = alone[3][0], batched[3][0]
    assert m1.shape == m4.shape == (80, 72)
    rel = float((m1 - m4).norm() / m1.norm())
    print(f"[18-frame segment batched with 30-frame ones] relative L2 difference of the log-mel {rel:.4f}")
    assert rel < 0.2


def test_new_settings_are_checked():
    from pipelines.settings import generation_problems

    problems = generation_problems(compose_cfg(["generate.segment_seconds=0", "generate.crossfade_seconds=-1",
                                                "generate.min_shot_frames=0.5", "generate.shot_threshold=no",
                                                "generate.same_speaker_distance=-0.1"]))
    assert problems == [
        "generate.segment_seconds=0: must be a number of seconds > 0",
        "generate.shot_threshold='no': must be a number > 0 (PySceneDetect's content threshold; 27 is its default)",
        "generate.crossfade_seconds=-1: must be a number of seconds >= 0 (0: segments join without fades)",
        "generate.same_speaker_distance=-0.1: must be a number >= 0 (0: every face track is its own speaker)",
        "generate.min_shot_frames=0.5: must be an integer number of frames >= 1"]
    assert generation_problems(compose_cfg(["generate.text=['a','b']"])) == []
    assert generation_problems(compose_cfg(["generate.segment_seconds=1.5"])) == [
        "generate.segment_seconds=1.5: must be at least 2 x generate.min_seconds=1.0 (a longer stretch is cut into "
        "pieces of at least min_seconds)"]


def test_a_piece_ends_at_its_segment_when_the_next_is_silenced():
    """The crossfade frame of a piece cut from a longer stretch is used only when the next piece is generated too
    (a subtitle file without a cue for the next piece silences it: that stays digital silence)."""
    from dataloaders.prep.segments import GENERATED, SILENT, Segment
    from dataloaders.prep.video_segments import SegmentedVideo
    from pipelines.video_to_speech import soundtrack

    for second in (GENERATED, SILENT):
        segs = [Segment(0, 10, 0, 0, GENERATED, extend=1), Segment(10, 20, 0, 0, second)]
        video = SegmentedVideo(20, [(0, 20)], [], segs, {}, {}, {}, {})
        speech = {0: (None, torch.ones(11 * SPF))}
        if second == GENERATED:
            speech[1] = (None, torch.ones(10 * SPF))
        out = soundtrack(video, speech, 20 * SPF, SPF, 1)
        if second == GENERATED:
            assert np.allclose(out[SPF:19 * SPF], 1.0, atol=1e-6)   # crossfaded across the cut
        else:
            assert np.all(out[10 * SPF:] == 0) and out[9 * SPF] > 0.99 and out[10 * SPF - 1] < 0.01
