"""The homophene grammar of the synthetic corpus: groups found from espeak-ng's phonemes, one mouth track per
group, speech warped to it, the audio-only utterances, and the corrupted texts of the recipe."""
from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from dataloaders.synthetic import espeak

pytestmark = [pytest.mark.skipif(not espeak.available(), reason="espeak-ng is not installed"), pytest.mark.espeak_words]


def _syn(n_clips=12):
    from dataloaders.synthetic.corpus import synthetic_settings
    from utils.config import compose_config

    syn = synthetic_settings(compose_config(["prep.synthetic.grammar=homophene", f"prep.synthetic.n_clips={n_clips}",
                                             "prep.synthetic.n_test_speakers=0", "prep.synthetic.frame_size=128"]))
    return syn


def test_groups_share_their_viseme_sequence_in_every_voice():
    from dataloaders.synthetic import homophenes

    slots = homophenes.homophene_slots()
    assert len(slots) == 6 and all(len(slot) == 4 for slot in slots)
    words = homophenes.vocabulary()
    assert len(words) == len(set(words)) == 72
    for slot in slots:
        for group in slot:
            assert len(group) == 3
            for voice in ("en-us", "en-gb-x-rp"):
                keys = {homophenes.viseme_key(w, voice) for w in group}
                assert len(keys) == 1, (group, voice, keys)
    # words that look different are never grouped: bat (closed lips first) and fan (lip on teeth)
    assert homophenes.viseme_key("bat") != homophenes.viseme_key("fan")
    assert homophenes.lip_only_chance_wer(["bat", "tip", "fan"]) == pytest.approx(2 / 3)


def test_two_words_of_one_group_give_identical_videos_and_different_speech():
    from dataloaders.synthetic import homophenes
    from dataloaders.synthetic.corpus import plan_corpus, synthesize_clip

    syn = _syn()
    spec = [c for c in plan_corpus(12, 0, None, 8, 0, "homophene") if c.split == "test"][0]
    words = spec.sentence.split()
    other = [w for w in homophenes.group_of(words[2]) if w != words[2]][0]
    twin = dataclasses.replace(spec, sentence=" ".join(words[:2] + [other] + words[3:]))
    frames_a, audio_a, _ = synthesize_clip(spec, syn)
    frames_b, audio_b, _ = synthesize_clip(twin, syn)
    assert frames_a.shape == frames_b.shape and np.array_equal(frames_a, frames_b)
    assert audio_a.shape == audio_b.shape and not np.allclose(audio_a, audio_b, atol=1e-3)
    # a word of another group changes the mouth
    stranger = next(w for w in homophenes.vocabulary() if w not in homophenes.group_of(words[2]))
    moved = dataclasses.replace(spec, sentence=" ".join(words[:2] + [stranger] + words[3:]))
    frames_c, _, _ = synthesize_clip(moved, syn)
    assert frames_c.shape != frames_a.shape or not np.array_equal(frames_c, frames_a)


def test_identical_mouth_tracks_counts_every_test_word():
    from dataloaders.synthetic.corpus import identical_mouth_tracks, plan_corpus

    specs = [c for c in plan_corpus(12, 0, None, 8, 0, "homophene") if c.split == "test"][:2]
    same, total = identical_mouth_tracks(specs, _syn())
    assert total == 6 * len(specs) and same == total


def test_time_warp_keeps_pitch_and_reaches_the_target_length():
    from dataloaders.synthetic.homophenes import time_warp

    sr = 22050
    t = np.arange(int(0.5 * sr)) / sr
    x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    y = time_warp(x, np.array([0.0, 0.25, 0.5]), np.array([0.0, 0.5, 0.8]), sr)
    assert len(y) == int(round(0.8 * sr))
    spec = np.abs(np.fft.rfft(y[2000:-2000]))
    assert abs(np.argmax(spec) * sr / len(y[2000:-2000]) - 440) < 10


def test_audio_only_utterances_never_use_a_test_sentence(tmp_path):
    import torch

    from dataloaders.audio import wav_file_to_mel
    from dataloaders.synthetic.corpus import AUDIO_ONLY, build_audio_corpus, plan_audio_corpus, plan_corpus
    from utils.config import compose_config
    from omegaconf import OmegaConf

    syn = _syn(n_clips=40)
    test = {c.sentence for c in plan_corpus(40, 0, None, 8, 0, "homophene") if c.split == "test"}
    plan = plan_audio_corpus(200, syn)
    assert len(plan) == 200 and not test & {c.sentence for c in plan}
    audio_cfg = OmegaConf.to_container(compose_config([]).audio, resolve=True)
    written, present, failed = build_audio_corpus(tmp_path, syn, audio_cfg, 2, progress=False)
    assert (written, present, failed) == (2, 0, 0)
    listed = (tmp_path / f"{AUDIO_ONLY}.list").read_text().split()
    assert len(listed) == 2
    wav = tmp_path / "audios" / AUDIO_ONLY / f"{listed[0]}.wav"
    assert torch.equal(torch.load(str(wav) + ".spec"), wav_file_to_mel(wav, audio_cfg))
    assert (tmp_path / "videos" / AUDIO_ONLY / f"{listed[0]}.txt").read_text().startswith("Text:  ")


def test_corrupted_texts_replace_by_kind():
    from dataloaders.synthetic import homophenes
    from recipes.synthetic_conditions import corrupt_words

    words = "bat bad bit but tip tap".split()
    vocab = homophenes.vocabulary()
    for kind in ("homophene", "other"):
        new, subs = corrupt_words(words, 0.2, random.Random(1), kind, homophenes.group_of, vocab)
        assert len(subs) == 1
        pos, k, true, guide = subs[0]
        assert k == kind and new[pos] == guide != true
        assert (guide in homophenes.group_of(true)) == (kind == "homophene")


def test_homophene_words_separates_the_lips_error_from_the_choice_in_a_group(tmp_path):
    from dataloaders.synthetic import homophenes
    from recipes.synthetic_words import homophene_words

    csv_path = tmp_path / "metrics_per_clip.csv"
    csv_path.write_text("video_id,reference,hypothesis\n"
                        "a,bat tip fan,pat tip fan\n"       # bat -> pat: right group, wrong word
                        "b,bat tip fan,bat tip\n"           # fan deleted
                        "c,bat tip fan,tip tip fan fan\n")  # bat -> tip: another group; one insertion
    out = homophene_words(csv_path, homophenes.group_of)
    assert out["words"] == 9 and out["inserted_words"] == 1
    assert out["exact_pct"] == pytest.approx(100 * 6 / 9, abs=0.1)
    assert out["right_group_pct"] == pytest.approx(100 * 7 / 9, abs=0.1)
    assert out["exact_within_right_group_pct"] == pytest.approx(100 * 6 / 7, abs=0.1)
    assert out["other_group_word_pct"] == pytest.approx(100 / 9, abs=0.1) and out["deleted_pct"] == pytest.approx(100 / 9, abs=0.1)
