"""espeak-ng through ctypes (dataloaders/synthetic/espeak.py) and phoneme -> viseme -> mouth shapes (dataloaders/synthetic/visemes.py)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from utils.errors import LipVoicerError
from dataloaders.synthetic.espeak import synthesize
from dataloaders.synthetic.visemes import SHAPES, mouth_shapes, phoneme_visemes


def test_synthesis_reports_timed_phonemes():
    utt = synthesize("place the red cup by the window", voice="en-us", rate=170)
    assert utt.sample_rate == 22050 and utt.samples.dtype == np.int16
    assert 1.0 < utt.duration < 4.0 and np.abs(utt.samples).max() > 1000
    names = [p.name for p in utt.phonemes]
    assert names[0] == "p" and "ð" in names and len(names) > 15
    starts = [p.start for p in utt.phonemes]
    assert starts == sorted(starts) and starts[-1] <= utt.duration
    assert all(p.end >= p.start for p in utt.phonemes)
    assert len(utt.words) == 7  # one word event per word


def test_voice_rate_and_pitch_change_the_speech():
    slow = synthesize("the green box", voice="en-us", rate=120)
    fast = synthesize("the green box", voice="en-us", rate=260)
    assert slow.duration > 1.4 * fast.duration
    low = synthesize("the green box", voice="en-us+m3", pitch=20)
    high = synthesize("the green box", voice="en-us+f3", pitch=80)
    assert not np.array_equal(low.samples[:2000], high.samples[:2000])


def test_bad_voice_and_empty_text():
    with pytest.raises(LipVoicerError, match="voice 'no-such-voice' not found"):
        synthesize("hello", voice="no-such-voice")
    with pytest.raises(LipVoicerError, match="empty text"):
        synthesize("   ")


def test_viseme_classes_are_shared_and_distinct():
    assert phoneme_visemes("p") == phoneme_visemes("b") == phoneme_visemes("m") == ["PBM"]
    assert phoneme_visemes("t") == phoneme_visemes("d") == phoneme_visemes("n") == phoneme_visemes("s")
    assert phoneme_visemes("f") == phoneme_visemes("v") == ["FV"]
    assert phoneme_visemes("aɪ") == ["AA", "IY"] and phoneme_visemes("oʊ")[0] == "AO"
    assert phoneme_visemes("tʃ") == ["SH"] and phoneme_visemes("ˈiː") == ["IY"]
    assert phoneme_visemes("") == ["rest"]
    assert SHAPES["AA"].open > SHAPES["EH"].open > SHAPES["IY"].open > SHAPES["PBM"].open
    assert SHAPES["W"].round > 0.9 and SHAPES["IY"].width > 1.1


def _ph(seq):
    t, out = 0.2, []
    for name in seq:
        out.append(SimpleNamespace(name=name, start=t, end=t + 0.12))
        t += 0.12
    return out


def test_mouth_shapes_are_smooth_and_ambiguous_within_a_viseme():
    pat = mouth_shapes(_ph(["p", "æ", "t"]), 1.0)
    bad = mouth_shapes(_ph(["b", "æ", "d"]), 1.0)
    shoe = mouth_shapes(_ph(["ʃ", "uː", "z"]), 1.0)
    assert pat.shape == (25, 4)
    np.testing.assert_allclose(pat, bad)          # same visemes: the lips cannot tell them apart
    assert np.abs(pat - shoe).max() > 0.3          # different visemes look different
    assert pat[:3, 0].max() < 0.05                 # closed during the leading silence
    assert pat[:, 0].max() > 0.35                  # open on the vowel
    assert np.abs(np.diff(pat[:, 0])).max() < 0.7 * pat[:, 0].max()  # eased in, not a jump


def _fresh_samples(code: str) -> bytes:
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT

    r = subprocess.run([sys.executable, "-c", "import sys\nfrom dataloaders.synthetic.espeak import synthesize\n" + code],
                       cwd=REPO_ROOT, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return r.stdout


def test_speaking_earlier_in_a_process_does_not_change_a_later_clip():
    """synthesize() speaks in a forked child by default, so what a process said before (another test, an
    evaluation) never changes a corpus clip it makes later: the same words as from a fresh process. Speaking
    in the process itself (isolated=False) would: the engine carries state from one utterance to the next."""
    clip = "sys.stdout.buffer.write(synthesize('place the red cup', rate=160).samples.tobytes())"
    fresh = _fresh_samples(clip)
    assert _fresh_samples("synthesize('the green box by the window')\n" + clip) == fresh
    assert _fresh_samples("synthesize('the green box by the window', isolated=False)\n" + clip) != fresh
    synthesize("the green box by the window")   # in this process too
    assert synthesize("place the red cup", rate=160).samples.tobytes() == fresh
