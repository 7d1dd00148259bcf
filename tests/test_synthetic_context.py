"""The homophene_context grammar (dataloaders/synthetic/context_grammar.py): a key word that the lips read
selects, by a fixed table, the member of each later homophene group; sampling, determinism, the metadata,
the measure of how often context decides, bad settings, and (with espeak-ng) keys that look different and
members that still look the same."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dataloaders.synthetic import context_grammar as cg
from dataloaders.synthetic import espeak
from utils.errors import LipVoicerError

needs_espeak = pytest.mark.skipif(not espeak.available(), reason="espeak-ng is not installed")


def _toy(prob=0.8, n_keys=6, n_slots=6):
    """A grammar of made-up words with the corpus's shape (keys, then slots of four groups of three):
    sampling and scoring need no speech."""
    keys = [f"key{k}" for k in range(n_keys)]
    slots = [[tuple(f"w{s}{g}{m}" for m in range(3)) for g in range(4)] for s in range(n_slots)]
    return cg.make_context_grammar(keys, slots, prob)


def _syn(grammar="homophene_context", n_clips=12, *extra):
    from dataloaders.synthetic.corpus import synthetic_settings
    from utils.config import compose_config

    return synthetic_settings(compose_config([f"prep.synthetic.grammar={grammar}", f"prep.synthetic.n_clips={n_clips}",
                                              "prep.synthetic.n_test_speakers=0", "prep.synthetic.frame_size=128",
                                              *extra]))


# ----------------------------------------------------------------------------- without speech
def test_sentences_follow_the_table_at_context_prob():
    for prob in (0.8, 0.3):
        ctx = _toy(prob)
        sentences = cg.make_sentences(3000, seed=5, ctx=ctx)
        assert len(set(sentences)) == 3000 and all(len(s.split()) == 7 for s in sentences)
        stats = cg.context_stats(ctx.to_meta(), sentences)
        # a random sentence follows the table in all six words one time in 3**6
        assert stats["following_sentences_pct"] == pytest.approx(100 * prob, abs=3.0)
        # a word of a random sentence is the table's member one time in three
        assert stats["context_decides_pct"] == pytest.approx(100 * (prob + (1 - prob) / 3), abs=2.0)
        assert stats["chance_within_group_pct"] == pytest.approx(100 / 3, abs=0.01)
        assert stats["group_words"] == 6 * 3000
    # every member of a group is selected by as many keys: word frequency alone does not tell members apart
    ctx = _toy()
    for s, slot in enumerate(ctx.slots):
        for g, group in enumerate(slot):
            picked = [ctx.table[k][s][g] for k in range(len(ctx.keys))]
            assert sorted(picked) == sorted(list(group) * 2)
    # keys are drawn evenly
    words = [s.split()[0] for s in cg.make_sentences(3000, seed=5, ctx=ctx)]
    assert min(words.count(k) for k in ctx.keys) > 400


def test_sentences_are_fixed_by_the_seed():
    ctx = _toy()
    a = cg.make_sentences(200, seed=3, ctx=ctx)
    assert a == cg.make_sentences(200, seed=3, ctx=ctx) and a != cg.make_sentences(200, seed=4, ctx=ctx)
    assert _toy().table == ctx.table   # the table is fixed (TABLE_SEED), not drawn per corpus
    assert cg.make_context_grammar(ctx.keys, ctx.slots, 0.8, seed=1).table != ctx.table
    # more sentences than the table allows at this probability: one line naming the setting
    small = cg.make_context_grammar(["a", "b", "c"], [[("x1", "x2", "x3")]], 0.8)   # 3 following sentences
    with pytest.raises(LipVoicerError, match=r"^prep.synthetic.context_keys: 3 keys give 3 sentences") as e:
        cg.make_sentences(10, seed=0, ctx=small)
    assert "\n" not in str(e.value)


def test_context_decides_on_hand_built_sentences():
    ctx = cg.make_context_grammar(["red", "blue", "green"], [[("bat", "pat", "mat")],
                                                            [("tip", "dip", "nip"), ("fan", "van", "fat")]], 0.8)
    meta = json.loads(json.dumps(ctx.to_meta()))
    table = meta["context"]["table"]
    follows = f"blue {table['blue'][1][0]} {table['blue'][2][1]}"
    assert cg.decided_words(meta, follows) == [None, True, True]
    other = next(w for w in ("bat", "pat", "mat") if w != table["blue"][1][0])
    breaks = f"blue {other} {table['blue'][2][1]}"
    assert cg.decided_words(meta, breaks) == [None, False, True]
    stats = cg.context_stats(meta, [follows, breaks])
    assert (stats["group_words"], stats["decided_words"]) == (4, 3)
    assert stats["context_decides_pct"] == 75.0 and stats["chance_within_group_pct"] == pytest.approx(33.33)
    assert stats["beyond_chance_pct"] == pytest.approx(41.67) and stats["following_sentences_pct"] == 50.0
    # over all six words (keys always right): a perfect lip reader misses 2/3 of 4, with the table 1 of 4
    assert stats["lip_only_wer_pct"] == pytest.approx(100 * (4 - 4 / 3) / 6, abs=0.01)
    assert stats["lip_reader_with_context_wer_pct"] == pytest.approx(100 / 6, abs=0.01)
    assert cg.context_line(stats).startswith("context decides 75.0 % of group words; chance within group 33.3 %")
    for bad, why in (("blue bat", "2 words"), ("black bat tip", "'black' is not one of the keys"),
                     ("blue tip bat", "'tip' is not a word of position 2")):
        with pytest.raises(LipVoicerError, match=why):
            cg.decided_words(meta, bad)
    with pytest.raises(LipVoicerError, match="grammar 'homophene' records no context table"):
        cg.context_stats({"grammar": "homophene", "homophene_slots": []}, [follows])


def test_bad_context_settings_give_one_line():
    def message(**settings):
        with pytest.raises(LipVoicerError) as e:
            cg.context_from_settings({"grammar": "homophene_context", **settings})
        assert "\n" not in str(e.value)
        return str(e.value)

    for prob in (1.5, -0.1, "often", True):
        assert message(context_prob=prob, context_keys=6).startswith(
            f"prep.synthetic.context_prob must be a number from 0 to 1 (got {prob!r})")
    assert message(context_keys=2) == ("prep.synthetic.context_keys: 2 keys cannot select each of the 3 members "
                                       "of a homophene group (at least 3)")
    assert message(context_keys=4).startswith("prep.synthetic.context_keys: 4 keys is not a multiple of the group "
                                              "size (3)")
    assert message(context_keys=6.5).startswith("prep.synthetic.context_keys must be a whole number")
    with pytest.raises(LipVoicerError, match="^prep.synthetic.context_keys: the keys must differ"):
        cg.make_context_grammar(["red", "red", "blue"], [[("bat", "pat", "mat")]], 0.8)
    assert cg.context_from_settings({"grammar": "homophene", "context_prob": 7}) is None   # another grammar


def test_metadata_round_trip_without_speech():
    from dataloaders.synthetic.corpus import corpus_metadata, plan_corpus

    ctx = _toy()
    specs = plan_corpus(30, 0, None, 4, 1, "homophene_context", ctx)
    meta = json.loads(json.dumps(corpus_metadata(specs, {"seed": 0, "grammar": "homophene_context"}, ctx)))
    assert meta["grammar"] == "homophene_context" and meta["n_clips"] == 30
    assert cg.ContextGrammar.from_meta(meta) == ctx
    assert meta["context"]["keys"] == list(ctx.keys) and meta["context"]["prob"] == 0.8
    words = cg.slot_words(meta)
    assert words[0] == list(ctx.keys) and len(words) == 7 and all(len(w) == 12 for w in words[1:])
    assert all(s.sentence.split()[k] in words[k] for s in specs for k in range(7))
    assert cg.context_stats(meta, [s.sentence for s in specs if s.split == "test"])["group_words"] > 0


# ----------------------------------------------------------------------------- with espeak-ng's phonemes
@needs_espeak
@pytest.mark.espeak_words
def test_keys_look_different_on_the_lips():
    """The first test here that speaks: it pays for grouping the homophene candidates (about 10 s on an idle
    core; cached for the rest of the session)."""
    from dataloaders.synthetic import homophenes

    ctx = cg.context_grammar()
    assert len(ctx.keys) == 6 and not set(cg.KEY_CANDIDATES) & set(homophenes.vocabulary())
    for voice in homophenes.VOICES:
        seqs = [homophenes.viseme_key(k, voice) for k in ctx.keys]
        assert len(set(seqs)) == len(seqs), (voice, dict(zip(ctx.keys, seqs)))
    assert ctx.slots == homophenes.homophene_slots() and cg.group_of(ctx.keys[0]) == (ctx.keys[0],)
    with pytest.raises(LipVoicerError, match=r"^prep.synthetic.context_keys: 30 keys asked for, but only \d+ of"):
        cg.context_grammar(0.8, 30)


@needs_espeak
@pytest.mark.espeak_words
def test_members_still_look_the_same_and_keys_do_not():
    import dataclasses

    from dataloaders.synthetic.corpus import clip_audio_and_mouth, identical_mouth_tracks, plan_corpus

    ctx = cg.context_grammar()
    syn = _syn()
    spec = [c for c in plan_corpus(20, 0, None, 8, 0, "homophene_context", ctx) if c.split == "test"][0]
    # every group word looks like the other members of its group; the key is not counted
    assert identical_mouth_tracks([spec], syn) == (6, 6)
    # another key changes the mouth
    words = spec.sentence.split()
    other = next(k for k in ctx.keys if k != words[0])
    moved = dataclasses.replace(spec, sentence=" ".join([other] + words[1:]))
    a, b = clip_audio_and_mouth(spec, syn)[1], clip_audio_and_mouth(moved, syn)[1]
    assert a.shape != b.shape or not np.array_equal(a, b)


@needs_espeak
@pytest.mark.espeak_words
def test_the_corpus_metadata_names_the_grammar_for_scoring_and_the_listener():
    from dataloaders.synthetic.corpus import corpus_metadata, plan_corpus
    from pipelines.listener import listener_available

    syn = _syn("homophene_context", 40, "prep.synthetic.context_prob=0.5")
    ctx = cg.context_from_settings(syn)
    assert ctx.prob == 0.5 and ctx == cg.context_grammar(0.5, 6)
    specs = plan_corpus(40, 0, None, 8, 0, "homophene_context", ctx)
    meta = json.loads(json.dumps(corpus_metadata(specs, syn)))
    assert cg.ContextGrammar.from_meta(meta) == ctx and meta["grammar"] == "homophene_context"
    stats = cg.context_stats(meta, [c.sentence for c in specs if c.split == "test"])
    assert stats["group_words"] == 6 * sum(c.split == "test" for c in specs)
    if listener_available():   # every word is in the listener's dictionary (CMUdict)
        from pipelines.listener import SphinxListener

        SphinxListener(cg.slot_words(meta))

