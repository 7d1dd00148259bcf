"""The `homophene_context` grammar: homophenes whose member the sentence's context decides.

In the `homophene` grammar (homophenes.py) the lips decide each word's homophene group and nothing decides
the member: a lip reader, with or without a language model, is right one time in three. English is not like
that: "the black cat", not "the black gat". This grammar gives the corpus such collocations. A sentence is a
*key* followed by the six slots of the homophene grammar:

    red | bat pat mat, bad pad mad, ... | tip dip nip, ... | ... (7 words)

The keys are words that look different on the lips (their viseme sequences differ from each other in every
voice of the corpus; `distinct_keys`), so a lip reader reads the key. A fixed table (built from TABLE_SEED)
says, for each key, which member of every homophene group is said; a sentence follows the table with
probability `prob` (prep.synthetic.context_prob), otherwise its members are drawn at random. Every member of
a group is chosen by as many keys (the number of keys is a multiple of the group size), so how often a word
is said gives nothing away: only the key does. The mouth of a group word is still drawn from its group's
reference timing (homophene_speech), so the lips alone stay at within-group chance, while a lip reader with
a model of the corpus's language (the table) picks the member the key predicts.

    ctx = context_grammar(prob=0.8, n_keys=6)        # the corpus's grammar (espeak-ng finds the keys)
    sentences = make_sentences(100, seed=0, ctx=ctx)
    meta = ctx.to_meta()                             # what synthetic_corpus.json records
    stats = context_stats(meta, sentences)           # how often context decides, and chance within a group
    print(context_line(stats))                       # "context decides 86.5 % of group words; chance ..."
"""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import numpy as np

from dataloaders.synthetic import homophenes
from utils.errors import LipVoicerError

GRAMMAR = "homophene_context"
# Key candidates (colours, in CMUdict; none is a word of the homophene grammar). distinct_keys keeps, in this
# order, those whose viseme sequences differ from every key kept before in every voice.
KEY_CANDIDATES = ("red", "blue", "green", "white", "black", "brown", "grey", "pink", "orange", "purple",
                  "yellow", "silver")
KEY_SLOT = 0             # the key is the sentence's first word
TABLE_SEED = 20261207    # the fixed table of the language: which member each key selects in every group
DEFAULT_PROB = 0.8       # the defaults of prep.synthetic.context_prob / context_keys (configs/prep/default.yaml)
DEFAULT_KEYS = 6


# ----------------------------------------------------------------------------- the grammar
@dataclass(frozen=True)
class ContextGrammar:
    keys: tuple[str, ...]
    slots: tuple[tuple[tuple[str, ...], ...], ...]   # the homophene slots after the key: per slot its groups
    prob: float                                       # probability that a sentence follows the table
    table: tuple[tuple[tuple[str, ...], ...], ...]    # table[key][slot][group]: the member that key selects

    def all_slots(self) -> tuple[tuple[tuple[str, ...], ...], ...]:
        """Every position of a sentence, each a tuple of groups; the key slot's groups are single keys."""
        return (tuple((k,) for k in self.keys),) + self.slots

    def sentence(self, rng: np.random.Generator, follow: bool) -> str:
        """One sentence: a random key, a random group in each slot, and the member the table gives (follow)
        or a random one."""
        k = int(rng.integers(len(self.keys)))
        words = [self.keys[k]]
        for s, slot in enumerate(self.slots):
            g = int(rng.integers(len(slot)))
            words.append(self.table[k][s][g] if follow else slot[g][int(rng.integers(len(slot[g])))])
        return " ".join(words)

    def following_sentences(self) -> int:
        """How many distinct sentences follow the table."""
        return len(self.keys) * math.prod(len(slot) for slot in self.slots)

    def to_meta(self) -> dict:
        """The grammar as synthetic_corpus.json records it: `slots` (per position its groups, the key slot's
        groups single keys) and `context` (the keys, their slot, the probability, and the table: per key,
        aligned with `slots`, per group the member it selects; null at the key slot)."""
        slots = [[list(g) for g in slot] for slot in self.all_slots()]
        table = {key: [None] + [list(per_slot) for per_slot in self.table[k]] for k, key in enumerate(self.keys)}
        return {"slots": slots, "context": {"key_slot": KEY_SLOT, "keys": list(self.keys), "prob": self.prob,
                                            "table_seed": TABLE_SEED, "table": table}}

    @classmethod
    def from_meta(cls, meta: dict) -> "ContextGrammar":
        """The grammar back from to_meta's dict (as read from synthetic_corpus.json)."""
        ctx, slots = _context_of(meta)
        keys = tuple(ctx["keys"])
        table = tuple(tuple(tuple(per_slot) for per_slot in ctx["table"][key][1:]) for key in keys)
        return cls(keys, tuple(tuple(tuple(g) for g in slot) for slot in slots[1:]), float(ctx["prob"]), table)


def _check_prob(prob) -> float:
    if isinstance(prob, bool) or not isinstance(prob, numbers.Real) or not 0.0 <= float(prob) <= 1.0:
        raise LipVoicerError(f"prep.synthetic.context_prob must be a number from 0 to 1 (got {prob!r})")
    return float(prob)


def _check_key_count(n_keys, group_sizes) -> int:
    if isinstance(n_keys, bool) or not isinstance(n_keys, numbers.Integral):
        raise LipVoicerError(f"prep.synthetic.context_keys must be a whole number of keys (got {n_keys!r})")
    n_keys = int(n_keys)
    size = max(group_sizes)
    if n_keys < size:
        raise LipVoicerError(f"prep.synthetic.context_keys: {n_keys} keys cannot select each of the {size} members "
                             f"of a homophene group (at least {size})")
    if any(n_keys % s for s in group_sizes):
        raise LipVoicerError(f"prep.synthetic.context_keys: {n_keys} keys is not a multiple of the group size "
                             f"({size}), so some members would be said more often than others and their "
                             f"frequency, not the key, would tell them apart")
    return n_keys


def make_context_grammar(keys, slots, prob: float, seed: int = TABLE_SEED) -> ContextGrammar:
    """The grammar of these keys over these slots (per slot its groups), with a table drawn from seed: in every
    group, each member is selected by the same number of keys, the keys shuffled."""
    prob = _check_prob(prob)
    keys = tuple(str(k) for k in keys)
    slots = tuple(tuple(tuple(str(w) for w in g) for g in slot) for slot in slots)
    if len(set(keys)) != len(keys):
        raise LipVoicerError(f"prep.synthetic.context_keys: the keys must differ from each other (got {list(keys)})")
    groups = [g for slot in slots for g in slot]
    if not groups or min(len(g) for g in groups) < 2:
        raise LipVoicerError("the homophene_context grammar needs groups of at least two words in every slot")
    _check_key_count(len(keys), sorted({len(g) for g in groups}))
    rng = np.random.default_rng(seed)
    picks = [[g[i] for i in rng.permutation(np.resize(np.arange(len(g)), len(keys)))] for g in groups]
    table = []
    for k in range(len(keys)):
        per_slot, at = [], 0
        for slot in slots:
            per_slot.append(tuple(picks[at + j][k] for j in range(len(slot))))
            at += len(slot)
        table.append(tuple(per_slot))
    return ContextGrammar(keys, slots, prob, tuple(table))


@functools.lru_cache(maxsize=None)
def distinct_keys(candidates: tuple[str, ...] = KEY_CANDIDATES,
                  voices: tuple[str, ...] = homophenes.VOICES) -> tuple[str, ...]:
    """The candidates, in order, whose viseme sequences differ from those of every candidate kept before, in
    every voice (espeak-ng's phonemes, as homophenes.py groups words): keys the lips tell apart."""
    kept: list[tuple[str, tuple]] = []
    for word in dict.fromkeys(candidates):
        seqs = tuple(homophenes.viseme_key(word, v) for v in voices)
        if not all(seqs):
            continue
        if all(all(a != b for a, b in zip(seqs, other)) for _, other in kept):
            kept.append((word, seqs))
    return tuple(w for w, _ in kept)


def context_grammar(prob: float = DEFAULT_PROB, n_keys: int = DEFAULT_KEYS) -> ContextGrammar:
    """The corpus's homophene_context grammar: the first n_keys distinct keys before the homophene grammar's
    six slots; a sentence follows the table with probability prob."""
    return _context_grammar(_check_prob(prob), _check_key_count(n_keys, [homophenes.GROUP_SIZE]))


@functools.lru_cache(maxsize=None)
def _context_grammar(prob: float, n_keys: int) -> ContextGrammar:
    keys = distinct_keys()
    if n_keys > len(keys):
        raise LipVoicerError(f"prep.synthetic.context_keys: {n_keys} keys asked for, but only {len(keys)} of the "
                             f"key candidates look different from each other on the lips")
    return make_context_grammar(keys[:n_keys], homophenes.homophene_slots(), prob)


def context_from_settings(syn_cfg: dict) -> ContextGrammar | None:
    """The grammar that prep.synthetic (as a dict) asks for, or None for another grammar."""
    if str(syn_cfg.get("grammar", "free")) != GRAMMAR:
        return None
    return context_grammar(syn_cfg.get("context_prob", DEFAULT_PROB), syn_cfg.get("context_keys", DEFAULT_KEYS))


def group_of(word: str) -> tuple[str, ...]:
    """The group of a word of this grammar: a key is a group of its own; other words, their homophene group."""
    return (word,) if word in KEY_CANDIDATES else homophenes.group_of(word)


def make_sentences(n: int, seed: int, ctx: ContextGrammar) -> list[str]:
    """n distinct sentences, reproducible from seed. Whether a sentence follows the table is drawn first (with
    probability ctx.prob) and a sentence already made is drawn again of the same kind, so the share that
    follows stays ctx.prob however many sentences there are, as long as the table allows that many."""
    need = n * ctx.prob
    if need > 0.9 * ctx.following_sentences():
        raise LipVoicerError(f"prep.synthetic.context_keys: {len(ctx.keys)} keys give "
                             f"{ctx.following_sentences()} sentences that follow the table; {n} sentences at "
                             f"context_prob {ctx.prob:g} need about {need:.0f} of them (use more keys)")
    rng = np.random.default_rng(seed)
    seen, out = set(), []
    attempts = 0
    while len(out) < n:
        follow = bool(rng.random() < ctx.prob)
        while True:
            attempts += 1
            if attempts > 50 * n + 1000:
                raise LipVoicerError(f"cannot make {n} distinct sentences from the built-in '{GRAMMAR}' grammar")
            sentence = ctx.sentence(rng, follow)
            if sentence not in seen:
                break
        seen.add(sentence)
        out.append(sentence)
    return out


# ----------------------------------------------------------------------------- reading the metadata
def _context_of(meta: dict) -> tuple[dict, list]:
    ctx, slots = meta.get("context"), meta.get("slots")
    if not isinstance(ctx, dict) or not isinstance(slots, list):
        raise LipVoicerError(f"synthetic_corpus.json: grammar '{meta.get('grammar')}' records no context table "
                             f"(only the {GRAMMAR} grammar has one)")
    return ctx, slots


def slot_words(meta: dict) -> list[list[str]]:
    """Per position, the words it may hold, from synthetic_corpus.json of a homophene or homophene_context
    corpus (what pipelines/listener.py's SphinxListener takes)."""
    slots = meta.get("slots", meta.get("homophene_slots"))
    if not isinstance(slots, list):
        raise LipVoicerError(f"synthetic_corpus.json: grammar '{meta.get('grammar')}' records no slots")
    return [[w for g in slot for w in g] for slot in slots]


def decided_words(meta: dict, sentence: str) -> list[bool | None]:
    """Per word of `sentence`: None for the key, else whether the key's table predicts that member of its group
    (a perfect lip reader with the corpus's language model reads it right)."""
    ctx, slots = _context_of(meta)
    words = sentence.split()
    if len(words) != len(slots):
        raise LipVoicerError(f"'{sentence}': {len(words)} words, the {GRAMMAR} grammar has {len(slots)}")
    key_slot = int(ctx["key_slot"])
    key = words[key_slot]
    if key not in ctx["table"]:
        raise LipVoicerError(f"'{sentence}': '{key}' is not one of the keys {ctx['keys']}")
    out: list[bool | None] = []
    for p, word in enumerate(words):
        if p == key_slot:
            out.append(None)
            continue
        g = next((i for i, group in enumerate(slots[p]) if word in group), None)
        if g is None:
            raise LipVoicerError(f"'{sentence}': '{word}' is not a word of position {p + 1}")
        out.append(ctx["table"][key][p][g] == word)
    return out


def context_stats(meta: dict, sentences) -> dict:
    """How often context decides, on these sentences (e.g. the test split's): of the group words (every word
    but the key), the percent whose member the key's table predicts (what a perfect lip reader with a perfect
    model of the corpus's language reads right), the within-group chance (a perfect lip reader without one:
    the mean of 1 / group size), the sentences that follow the table in every word, and the WER of the two
    readers over all words (the key always read right)."""
    ctx, slots = _context_of(meta)
    sizes = {w: len(g) for p, slot in enumerate(slots) if p != int(ctx["key_slot"]) for g in slot for w in g}
    decided = group_words = following = all_words = 0
    chance = 0.0
    sentences = list(sentences)
    for sentence in sentences:
        marks = decided_words(meta, sentence)
        words = [w for w, m in zip(sentence.split(), marks) if m is not None]
        group_words += len(words)
        all_words += len(marks)
        decided += sum(1 for m in marks if m)
        chance += sum(1.0 / sizes[w] for w in words)
        following += all(m is not False for m in marks)
    pct = lambda a, b: round(100.0 * a / b, 2) if b else float("nan")   # noqa: E731
    return {"sentences": len(sentences), "group_words": group_words, "decided_words": decided,
            "context_decides_pct": pct(decided, group_words),
            "chance_within_group_pct": pct(chance, group_words),
            "beyond_chance_pct": pct(decided - chance, group_words),
            "following_sentences_pct": pct(following, len(sentences)),
            "lip_only_wer_pct": pct(group_words - chance, all_words),
            "lip_reader_with_context_wer_pct": pct(group_words - decided, all_words)}


def context_line(stats: dict) -> str:
    return (f"context decides {stats['context_decides_pct']:.1f} % of group words; chance within group "
            f"{stats['chance_within_group_pct']:.1f} % ({stats['group_words']} words of {stats['sentences']} "
            f"sentences)")
