import math

import numpy as np
import pytest

from pipelines.metrics import char_errors, log_mel_l1, mel_cepstral_distortion, pesq_wb, stoi_scores, word_errors


def test_word_and_char_errors():
    assert word_errors("the cat sat", "the cat sat") == (0, 3)
    assert word_errors("the cat sat", "the hat") == (2, 3)
    assert word_errors("the cat", "") == (2, 2)
    assert word_errors("", "extra words") == (2, 0)
    assert char_errors("abc", "abd") == (1, 3)


@pytest.fixture(scope="module")
def speechlike():
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    env = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float32)
    return (env * (np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 660 * t))
            + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def test_identical_audio_scores_perfectly(speechlike):
    s, e = stoi_scores(speechlike, speechlike)
    assert s > 0.99 and e > 0.99
    assert pesq_wb(speechlike, speechlike) > 4.4
    assert log_mel_l1(speechlike, speechlike) == 0
    assert mel_cepstral_distortion(speechlike, speechlike) == 0


def test_noise_scores_badly(speechlike):
    noise = np.random.default_rng(1).standard_normal(len(speechlike) + 500).astype(np.float32)
    s, _ = stoi_scores(speechlike, noise)
    assert s < 0.5
    assert pesq_wb(speechlike, noise) < 2.0
    assert log_mel_l1(speechlike, noise) > 0.5
    assert mel_cepstral_distortion(speechlike, noise) > 1.0


def test_pesq_of_silence_is_nan():
    z = np.zeros(16000, np.float32)
    assert math.isnan(pesq_wb(z, z))
