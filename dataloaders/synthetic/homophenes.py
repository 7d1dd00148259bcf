"""Homophenes: words that look the same on the lips, and speech whose mouth track cannot tell them apart.

The `homophene` grammar of the synthetic corpus (prep.synthetic.grammar=homophene) fills six
slots from groups of words with the same viseme sequence (visemes.py: p/b/m, f/v, t/d/n/s/z,
k/g ... share a mouth shape), e.g. "bat pat mat" or "tip dip nip". The groups are found by the
code, from espeak-ng's own phonemes of CANDIDATES spoken in isolation by every base voice of the
corpus: two words are homophenes when their viseme sequences (consecutive equal visemes merged,
silence dropped) agree in every voice.

Looking alike is not enough for a clean experiment: espeak speaks "mat" longer than "bat", so a
mouth drawn from each word's own timing would still give the word away. So the mouth of every
member of a group is drawn from one timing, the group's reference word spoken by the same voice
at the same rate and pitch, and the speech is made to follow it: each member's audio is
time-warped (a phase vocoder over a piecewise-linear time map) so that each of its viseme
segments lasts as long as the reference's. Two sentences that differ only by homophenes then get
identical videos (the same clip seed draws the same everything else) and differ only in sound.

    groups = homophene_groups()                 # [["bat", "pat", "mat"], ["tip", "dip", "nip"], ...]
    slots = homophene_slots()                   # six lists of groups
    speech = homophene_speech(["bat", ...], voice="en-us", rate=170, pitch=50, pitch_range=50, gaps=[...])
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from dataloaders.synthetic import espeak
from dataloaders.synthetic.visemes import phoneme_visemes
from utils.errors import LipVoicerError

# Candidate words (one syllable, common English). The code groups them; the order only decides which
# members a group keeps (the first GROUP_SIZE) and which one is its reference (the first).
CANDIDATES = (
    "bat pat mat bad pad mad ban pan man "
    "bit pit mitt bid mid "
    "but putt mutt bun pun "
    "tip dip nip sip zip lip "
    "tap nap sap lap "
    "fan van fat vat fad "
    "fine vine fight "
    "cap gap cab "
    "coat goat code "
    "cold gold colt "
    "tin din sin "
    "ten den said "
    "time dime lime "
    "pail bail mail "
    "cheap jeep sheep "
    "chin gin shin "
    "rope robe roam "
    "wait wade wane "
    "come gum cub "
    "dug tug snug "
    "bone moan mode "
    "pick big pig "
    "back pack bag "
    "kit kid kin "
    "cot got cod "
    "fit fin fill "
    "mug bug pug "
    "light night site "
    "dot lot tot"
).split()
GROUP_SIZE = 3          # words kept per group: a perfect lip reader is right one time in three
N_SLOTS = 6
GROUPS_PER_SLOT = 4     # 6 slots x 4 groups x 3 words = 72 words
VOICES = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-us-nyc")  # the corpus's base voices
WORD_RATE = 175          # words are grouped from speech at this rate (wpm)


@dataclass(frozen=True)
class Segment:
    viseme: str
    start: float   # seconds in the word's own audio
    end: float


def viseme_segments(phonemes) -> list[Segment]:
    """A spoken word's phonemes -> its viseme segments: equal neighbours merged, silence dropped."""
    segs: list[Segment] = []
    for ph in phonemes:
        visemes = phoneme_visemes(ph.name)
        dur = max(ph.end - ph.start, 0.0)
        for k, vis in enumerate(visemes):
            a = ph.start + dur * k / len(visemes)
            b = ph.start + dur * (k + 1) / len(visemes)
            if vis == "rest":
                continue
            if segs and segs[-1].viseme == vis:
                segs[-1] = Segment(vis, segs[-1].start, b)
            else:
                segs.append(Segment(vis, a, b))
    return segs


def viseme_key(word: str, voice: str = "en-us") -> tuple[str, ...]:
    """The merged viseme sequence of `word` spoken alone by `voice`."""
    return tuple(s.viseme for s in viseme_segments(_spoken(word, voice, WORD_RATE, 50, 50).phonemes))


@functools.lru_cache(maxsize=None)
def homophene_groups(candidates: tuple[str, ...] = tuple(CANDIDATES), voices: tuple[str, ...] = VOICES,
                     size: int = GROUP_SIZE) -> tuple[tuple[str, ...], ...]:
    """Groups of `size` candidate words whose viseme sequences agree in every voice, in candidate order
    (a group's first word is its reference); words beyond `size` in a group are left out."""
    by_key: dict[tuple, list[str]] = {}
    for w in dict.fromkeys(candidates):
        key = tuple(viseme_key(w, v) for v in voices)
        if all(key):
            by_key.setdefault(key, []).append(w)
    return tuple(tuple(ws[:size]) for ws in by_key.values() if len(ws) >= size)


@functools.lru_cache(maxsize=None)
def homophene_slots(n_slots: int = N_SLOTS, per_slot: int = GROUPS_PER_SLOT) -> tuple[tuple[tuple[str, ...], ...], ...]:
    """The grammar: n_slots slots of per_slot groups each, groups dealt to the slots in order."""
    groups = homophene_groups()
    if len(groups) < n_slots * per_slot:
        raise LipVoicerError(f"the homophene grammar needs {n_slots * per_slot} groups of {GROUP_SIZE} words; "
                             f"espeak-ng's phonemes of the candidates give {len(groups)} (espeak-ng version?)")
    return tuple(tuple(groups[s + n_slots * k] for k in range(per_slot)) for s in range(n_slots))


def group_of(word: str) -> tuple[str, ...]:
    """The homophene group (of the grammar) that `word` belongs to."""
    for slot in homophene_slots():
        for g in slot:
            if word in g:
                return g
    raise LipVoicerError(f"'{word}' is not a word of the homophene grammar")


def vocabulary() -> list[str]:
    return [w for slot in homophene_slots() for g in slot for w in g]


def lip_only_chance_wer(words) -> float:
    """The WER of a perfect lip reader (it knows each word's group, and guesses within it): the mean of
    1 - 1/|group| over the words."""
    words = list(words)
    if not words:
        return 0.0
    return float(np.mean([1.0 - 1.0 / len(group_of(w)) for w in words]))


# ----------------------------------------------------------------------------- speech
# 8 speakers x 3 rates x 3 pitches x 72 words = 5,184 words per voice setting: all of them stay cached
# (about 20 kB each), so a large audio-only corpus synthesises each only once per worker
@functools.lru_cache(maxsize=16384)
def _spoken(word: str, voice: str, rate: int, pitch: int, pitch_range: int) -> espeak.Utterance:
    # isolated: the audio depends on the arguments only (not on what this process said before)
    return espeak.synthesize(word, voice=voice, rate=rate, pitch=pitch, pitch_range=pitch_range, isolated=True)


def time_warp(x: np.ndarray, src: np.ndarray, dst: np.ndarray, sr: int, n_fft: int = 512,
              hop: int = 64) -> np.ndarray:
    """Phase-vocoder time warp of `x`: the time src[i] (seconds, increasing) of the input moves to dst[i]
    of the output, linearly in between; the output lasts dst[-1] - dst[0] seconds (x is cut to
    [src[0], src[-1]]). Pitch is kept: frames are interpolated in magnitude and their phases advanced
    by each bin's measured frequency."""
    import librosa

    x = np.asarray(x, np.float32)
    spec = librosa.stft(x, n_fft=n_fft, hop_length=hop, center=True)
    n_src = spec.shape[1]
    out_len = int(round((dst[-1] - dst[0]) * sr))
    n_out = out_len // hop + 1
    t_out = dst[0] + np.arange(n_out) * hop / sr
    pos = np.clip(np.interp(t_out, dst, src) * sr / hop, 0, n_src - 1.001)
    j = np.floor(pos).astype(int)
    a = (pos - j)[None, :]
    mag = (1 - a) * np.abs(spec[:, j]) + a * np.abs(spec[:, j + 1])
    expected = 2 * np.pi * hop * np.arange(spec.shape[0]) / n_fft
    dphi = np.angle(spec[:, j + 1]) - np.angle(spec[:, j]) - expected[:, None]
    dphi -= 2 * np.pi * np.round(dphi / (2 * np.pi))
    phase = np.angle(spec[:, j[:1]]) + np.concatenate(
        [np.zeros((spec.shape[0], 1)), np.cumsum(expected[:, None] + dphi, axis=1)[:, :-1]], axis=1)
    y = librosa.istft(mag * np.exp(1j * phase), hop_length=hop, n_fft=n_fft, length=n_out * hop)
    return y[:out_len].astype(np.float32)


@dataclass
class HomopheneSpeech:
    samples: np.ndarray                 # float32 mono at sample_rate (speech only, no lead/tail silence)
    sample_rate: int
    phonemes: list                      # espeak.Phoneme of the REFERENCE words on this time line: draw the mouth from these
    words: list[tuple[str, float, float]]   # (word, start, end) seconds
    segment_aligned: int                # words warped segment by segment (the rest: as a whole)


def homophene_speech(words, voice: str, rate: int, pitch: int, pitch_range: int, gaps,
                     groups=None) -> HomopheneSpeech:
    """Speak `words` one by one, each warped to its group reference's viseme timing in this voice, with
    gaps[k] seconds of silence after word k (len(gaps) == len(words) - 1). The timing (and so the mouth)
    depends on the groups only, never on which member was said. `groups` (word -> its group, the reference
    first) is the grammar's; default group_of, the homophene grammar's (a word alone in its group is spoken
    on its own timing)."""
    group = groups or group_of
    words = list(words)
    if len(gaps) != max(len(words) - 1, 0):
        raise LipVoicerError("homophene_speech: one gap between each two words")
    sr = None
    pieces, phonemes, timings = [], [], []
    t = 0.0
    aligned = 0
    for k, word in enumerate(words):
        ref_word = group(word)[0]
        ref = _spoken(ref_word, voice, rate, pitch, pitch_range)
        own = ref if word == ref_word else _spoken(word, voice, rate, pitch, pitch_range)
        sr = ref.sample_rate
        ref_segs, own_segs = viseme_segments(ref.phonemes), viseme_segments(own.phonemes)
        if not ref_segs or not own_segs:
            raise LipVoicerError(f"espeak-ng gave no phonemes for '{word}' in voice {voice}")
        dst = np.array([s.start for s in ref_segs] + [ref_segs[-1].end])
        if [s.viseme for s in ref_segs] == [s.viseme for s in own_segs]:
            src = np.array([s.start for s in own_segs] + [own_segs[-1].end])
            aligned += 1
        else:   # this voice says the word otherwise: stretched as a whole
            src = np.array([own_segs[0].start, own_segs[-1].end])
            dst = np.array([dst[0], dst[-1]])
        audio = own.samples.astype(np.float32) / 32768.0
        piece = time_warp(audio, src, dst, sr) if word != ref_word else \
            audio[int(round(dst[0] * sr)):int(round(dst[0] * sr)) + int(round((dst[-1] - dst[0]) * sr))]
        start = t
        for ph in ref.phonemes:   # the reference's phonemes inside its spoken span, on the sentence's time line
            a, b = max(ph.start, dst[0]), min(ph.end, dst[-1])
            if b > a:
                phonemes.append(espeak.Phoneme(ph.name, start + a - dst[0], start + b - dst[0]))
        pieces.append(piece)
        t += len(piece) / sr
        timings.append((word, start, t))
        if k < len(gaps):
            gap = np.zeros(int(round(gaps[k] * sr)), np.float32)
            pieces.append(gap)
            t += len(gap) / sr
    return HomopheneSpeech(np.concatenate(pieces) if pieces else np.zeros(0, np.float32), int(sr or 22050),
                           phonemes, timings, aligned)
