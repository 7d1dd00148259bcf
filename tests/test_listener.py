"""The independent listener (pipelines/listener.py): PocketSphinx with the corpus's slot grammar, a fresh
decoder per clip, bootstrap intervals. Needs `pocketsphinx` (install.sh --tests installs it); it hears the
corpus speech committed under docs/samples/."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf

from pipelines.listener import corpus_wer_ci, grammar_text, listen, listener_available
from tests.helpers import REPO_ROOT
from utils.errors import LipVoicerError

pytestmark = pytest.mark.skipif(not listener_available(), reason="pocketsphinx is not installed "
                                                                  "(bash install.sh --tests installs it)")


SAMPLES = REPO_ROOT / "docs" / "samples" / "synthetic_homophene"


@pytest.fixture(scope="module")
def spoken():
    """The homophene grammar's slots and the corpus speech committed with the homophene run (8 clips of
    ground truth, FLAC), with their texts."""
    from dataloaders.synthetic.homophenes import homophene_slots

    slots = [[w for group in slot for w in group] for slot in homophene_slots()]
    with (SAMPLES / "texts.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["condition"] == "ground_truth"]
    return slots, {r["clip"]: (SAMPLES / "ground_truth" / f"{r['clip']}.flac", r["true_text"]) for r in rows}


def test_the_listener_hears_the_corpus_speech(spoken):
    from pipelines.listener import SphinxListener

    slots, clips = spoken
    listener = SphinxListener(slots)
    rows = listen(listener, clips)
    wer, (lo, hi) = corpus_wer_ci(rows)
    print("listener on the corpus's speech:", [(r["reference"], r["hypothesis"]) for r in rows], wer)
    # 8 clips, 48 words: 35 % measured; guessing within the grammar would miss 11 words of 12 (92 %)
    assert len(rows) == 8 and wer <= 0.5 and lo <= wer <= hi
    # a fresh decoder per clip: the same clip decodes the same after another one
    first = listener(*sf.read(clips[rows[0]["video_id"]][0], dtype="float32"))
    listener(*sf.read(clips[rows[1]["video_id"]][0], dtype="float32"))
    assert listener(*sf.read(clips[rows[0]["video_id"]][0], dtype="float32")) == first == rows[0]["hypothesis"]


def test_silence_is_heard_as_nothing_and_counts_every_word(spoken, tmp_path):
    from pipelines.listener import SphinxListener

    slots, _ = spoken
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    (row,) = listen(SphinxListener(slots), {"quiet": (path, "bat fan pail dug tin dip")})
    assert row["hypothesis"] == "" and row["errors"] == row["words"] == 6


def test_grammar_and_bad_inputs(tmp_path):
    from pipelines.listener import SphinxListener

    assert grammar_text([["bat", "pat"], ["fan"]]) == (
        "#JSGF V1.0;\ngrammar corpus;\npublic <sentence> = <slot0> <slot1>;\n<slot0> = bat | pat;\n<slot1> = fan;\n")
    with pytest.raises(LipVoicerError, match=r"^the listener's dictionary \(CMUdict in pocketsphinx\) lacks 1 of the "
                                             r"corpus's words: zqxv$"):
        SphinxListener([["bat", "zqxv"]])
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    with pytest.raises(LipVoicerError, match=r"bad\.wav: cannot be read as audio"):
        listen(SphinxListener([["bat"]]), {"bad": (bad, "bat")})


def test_bootstrap_interval():
    rows = [{"errors": e, "words": 6} for e in (0, 1, 2, 3, 6, 0, 0, 1)]
    wer, (lo, hi) = corpus_wer_ci(rows, seed=1)
    assert wer == pytest.approx(13 / 48) and lo < wer < hi
    assert (lo, hi) == corpus_wer_ci(rows, seed=1)[1]          # seeded: the same interval again
    assert corpus_wer_ci([{"errors": 1, "words": 6}] * 5)[1] == pytest.approx((1 / 6, 1 / 6))
