"""The synthetic recipe's listen stage (recipes/synthetic_listening.py): the slots it gives the listener, the
summary it reports per condition, and resuming. A stand-in listener (a function of the waveform) keeps these
tests free of PocketSphinx; the real listener is tested in tests/test_listener.py and, on a tiny run, in
tests/test_synthetic_recipe.py."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from recipes.synthetic_listening import corpus_slots, group_lookup, hear, listener_summary
from utils.errors import LipVoicerError


def write_corpus(root, texts, groups=None):
    for i, text in enumerate(texts):
        clip = root / "videos" / "test" / "spk00" / f"{i:05d}.txt"
        clip.parent.mkdir(parents=True, exist_ok=True)
        clip.write_text(f"Text:  {text.upper()}\n")
    if groups is not None:
        (root / "synthetic_corpus.json").write_text(json.dumps({"grammar": "homophene", "homophene_slots": groups}))


def test_slots_come_from_the_recorded_groups_else_from_the_transcripts(tmp_path):
    groups = [[["bat", "pat", "mat"], ["fan", "van"]], [["tip", "dip"]]]
    write_corpus(tmp_path / "a", ["bat tip", "van dip"], groups)
    assert corpus_slots(tmp_path / "a") == [["bat", "fan", "mat", "pat", "van"], ["dip", "tip"]]
    group_of = group_lookup(tmp_path / "a")
    assert group_of("pat") == ("bat", "pat", "mat") and group_of("van") == ("fan", "van")
    with pytest.raises(LipVoicerError, match=r"^'zebra' is in no homophene group of the corpus$"):
        group_of("zebra")
    write_corpus(tmp_path / "b", ["place blue at f two now", "set red by g nine again"])
    assert corpus_slots(tmp_path / "b")[0] == ["place", "set"] and group_lookup(tmp_path / "b") is None
    write_corpus(tmp_path / "c", ["one two", "one two three"])      # the free grammar: no slots
    assert corpus_slots(tmp_path / "c") is None


def test_summary_wer_groups_and_replaced_words(tmp_path):
    write_corpus(tmp_path, ["bat tip"], [[["bat", "pat", "mat"]], [["tip", "dip"]]])
    group_of = group_lookup(tmp_path)
    rows = [{"video_id": "a", "reference": "bat tip", "hypothesis": "pat tip", "errors": 1, "words": 2},
            {"video_id": "b", "reference": "mat dip", "hypothesis": "mat dip", "errors": 0, "words": 2},
            {"video_id": "c", "reference": "bat dip", "hypothesis": "", "errors": 2, "words": 2}]
    subs = tmp_path / "substitutions.json"   # a: bat was replaced by pat in the guiding text; b: dip by tip
    subs.write_text(json.dumps({"a": [[0, "homophene", "bat", "pat"]], "b": [[1, "homophene", "dip", "tip"]]}))
    out = listener_summary(rows, group_of, subs)
    assert out["n_clips"] == 3 and out["wer"] == 50.0 and out["wer_ci95"][0] <= 50.0 <= out["wer_ci95"][1]
    assert out["words"]["words"] == 6 and out["words"]["right_group_pct"] == pytest.approx(66.7)
    assert out["words"]["exact_within_right_group_pct"] == 75.0 and out["words"]["deleted_pct"] == pytest.approx(33.3)
    lo, hi = out["words"]["right_group_ci95"]
    assert lo <= 66.7 <= hi
    homophene = out["substituted_words"]["homophene"]
    assert (homophene["replaced"], homophene["follows_guidance"], homophene["follows_truth"]) == (2, 1, 1)
    assert "words" not in listener_summary(rows) and "substituted_words" not in listener_summary(rows, group_of)
    # a condition not guided by the swapped text: what its speech says at the swapped text's places
    base = listener_summary(rows, group_of, None, subs)
    assert "substituted_words" not in base
    assert (base["at_homophene_swaps"]["follows_guidance"], base["at_homophene_swaps"]["follows_truth"]) == (1, 1)
    assert "at_homophene_swaps" not in listener_summary(rows, group_of, subs, subs)      # its own row says it
    assert "at_homophene_swaps" not in listener_summary(rows, group_of, None, tmp_path / "none.json")
    one = listener_summary(rows[:1], group_of)     # one clip: no interval, and the JSON stays strict
    assert one["wer_ci95"] == [None, None] and one["words"]["right_group_ci95"] == [None, None]
    json.dumps(one, allow_nan=False)


def test_hear_writes_rows_and_resumes_on_the_same_clips(tmp_path):
    calls = []

    def listener(wav, sr):       # hears "bat" in anything loud, nothing in silence
        calls.append(sr)
        return "bat" if np.abs(wav).max() > 0.1 else ""

    audio = {}
    for vid, amp in (("spk00/00000", 0.5), ("spk00/00001", 0.0)):
        path = tmp_path / "gen" / f"{vid}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, amp * np.ones(1600, np.float32), 16000)
        audio[vid] = path
    refs = {"spk00/00000": "bat", "spk00/00001": "pat"}
    out_csv = tmp_path / "results" / "x" / "listener_per_clip.csv"
    rows = hear(listener, audio, refs, out_csv)
    assert [(r["hypothesis"], r["errors"], r["words"]) for r in rows] == [("bat", 0, 1), ("", 1, 1)]
    assert len(calls) == 2 and out_csv.is_file()
    assert hear(listener, audio, refs, out_csv) == rows and len(calls) == 2      # read back, not heard again
    del audio["spk00/00001"]                                                     # other clips: heard again
    assert len(hear(listener, audio, refs, out_csv)) == 1 and len(calls) == 3


def test_context_grammar_slots_and_corruptions_keep_the_key(tmp_path):
    """homophene_context records `slots` (the key slot's groups single keys): the listener gets the keys as the
    first slot, and the corrupted texts never replace a key (it has no homophene)."""
    import random

    from recipes.synthetic_conditions import corrupt_words

    root = tmp_path / "ctx"
    write_corpus(root, ["red bat tip"])
    (root / "synthetic_corpus.json").write_text(json.dumps({
        "grammar": "homophene_context", "slots": [[["red"], ["blue"]], [["bat", "pat", "mat"]], [["tip", "dip"]]]}))
    assert corpus_slots(root) == [["blue", "red"], ["bat", "mat", "pat"], ["dip", "tip"]]
    group_of = group_lookup(root)
    assert group_of("red") == ("red",) and group_of("mat") == ("bat", "pat", "mat")
    for seed in range(20):
        for kind in ("homophene", "other", "mixed"):
            words, subs = corrupt_words(["red", "bat", "tip"], 0.7, random.Random(seed), kind, group_of,
                                        ["bat", "pat", "mat", "tip", "dip"])
            assert words[0] == "red" and len(subs) == 2 and all(pos > 0 for pos, *_ in subs)


def test_interval_text_leaves_out_an_interval_of_one_clip():
    import math

    from recipes.synthetic_scoring import interval_text

    assert interval_text((51.24, 70.06)) == " [51.2, 70.1]" and interval_text((0.5, 0.6), 3) == " [0.500, 0.600]"
    assert interval_text((math.nan, math.nan)) == "" and interval_text((None, None)) == ""


def test_report_rows_show_replaced_words_and_the_unguided_baseline_at_them(tmp_path):
    from recipes.synthetic_scoring import LISTENER_JSON, listener_lines
    from recipes.synthetic_settings import RecipeSettings

    swapped = {"replaced": 4, "follows_guidance": 3, "follows_truth": 1}
    heard = {"no_guidance": {"wer": 70.0, "wer_ci95": [60.0, 80.0],
                             "at_homophene_swaps": {"replaced": 4, "follows_guidance": 1, "follows_truth": 2}},
             "corrupted_homophene": {"wer": 65.0, "wer_ci95": [55.0, 75.0],
                                     "substituted_words": {"homophene": swapped}}}
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / LISTENER_JSON).write_text(json.dumps({"conditions": heard}))
    lines = listener_lines(RecipeSettings(work_dir=tmp_path), ["no_guidance", "corrupted_homophene"])
    replaced = next(x for x in lines if x.startswith("| listener at replaced words"))
    assert replaced.endswith("| n/a | homophene: 3 / 1 of 4 |")
    baseline = next(x for x in lines if x.startswith("| listener at the homophene-swapped text's replaced words"))
    assert baseline.endswith("| 1 / 2 of 4 | n/a |")
