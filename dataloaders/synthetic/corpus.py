"""A synthetic talking-face corpus in the LRS3 layout, for running the whole pipeline without LRS2/LRS3.

    python -m dataloaders.synthetic.corpus --out_dir data/synthetic --n_clips 40 --workers 2
    python dataloaders/synthetic/corpus.py prep.synthetic.n_clips=2000 prep.synthetic.workers=16

Writes `<out>/videos/<split>/<speaker>/<clip>.mp4` (25 fps H.264 + 16 kHz mono AAC) and
`<clip>.txt` (first line `Text:  <WORDS>`, then LRS3-style word timings) for the splits
pretrain / trainval / test.

Each clip: a sentence from a small built-in grammar (prep.synthetic.grammar: free, eight
templates over about 200 words; grid, GRID's six-word commands over 51 words such as
"place blue at f two now"; or homophene, six slots of words that look alike on the lips,
such as "bat pat mat", spoken word by word on one timing per group so that the mouth cannot
tell them apart (dataloaders/synthetic/homophenes.py); or homophene_context, the same slots after a
key word that selects, by a fixed table, which member of each group is said (with probability
prep.synthetic.context_prob; dataloaders/synthetic/context_grammar.py); fixed seed; every sentence is unique,
so test sentences are never seen in training), spoken by espeak-ng with a speaker's voice,
pitch and speed (16 kHz mono); a video of a real face photograph (scikit-image's
astronaut) whose mouth is redrawn every frame from the phoneme timings espeak-ng reports:
each phoneme maps to a viseme (closed, open, rounded, spread, ...; see dataloaders/synthetic/visemes.py),
smoothly interpolated. Phonemes that share a viseme (p/b/m, t/d/n/s, k/g, ...) look alike,
as in real lip reading. Speakers differ in voice and look (mirroring, scale, position,
brightness, colour); clips add small variations and slow head motion.

`--audio_only N` writes N more utterances without video (`audios/audio_only/<speaker>/<clip>.wav`
and `.wav.spec`, transcripts under `videos/audio_only/`, listed in `audio_only.list`): speech is
cheap, faces are not, so a recogniser can hear many times more of the language than MelGen sees.
Their sentences never equal a test sentence.

Existing clips are kept (re-running resumes); files are written under temporary names
and renamed. Every clip depends on the seed and its index only: speech is synthesised
in a fresh forked state of espeak-ng and H.264 is encoded single-threaded, so the files
are bit-identical for any number of workers (with prep.synthetic.frame_size a multiple
of 128; other sizes differ in x264's decisions by a few grey levels).
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from omegaconf import OmegaConf
from tqdm import tqdm

from dataloaders.synthetic import context_grammar, espeak, homophenes
from dataloaders.synthetic.visemes import mouth_shapes
from dataloaders.video_io import write_video
from utils.config import compose_config
from utils.errors import LipVoicerError, exit_on_user_error
from utils.files import atomic_text

log = logging.getLogger("synthetic_corpus")

SPLITS = ("pretrain", "trainval", "test")

# ----------------------------------------------------------------------------- sentences
_W = {
    "verb": "place put move lift drop find bring take show give paint clean check open close push pull hold "
            "carry throw catch fold wash fix draw".split(),
    "verb_past": "placed moved lifted dropped found brought took showed gave painted cleaned checked opened "
                 "closed pushed pulled held carried threw caught folded washed fixed drew".split(),
    "adj": "red blue green white black yellow purple orange small large heavy light round square soft "
           "smooth bright dark new old warm cold wooden metal broken shiny".split(),
    "noun": "cup box book chair table lamp phone ball bag key door window bottle plate spoon knife shoe "
            "hat coat bike car boat clock map pen brush rope wheel basket mirror pillow".split(),
    "noun_pl": "cups boxes books chairs lamps phones balls bags keys bottles plates spoons shoes hats coats "
               "clocks maps pens brushes ropes wheels baskets mirrors pillows".split(),
    "prep": "on under beside behind near above below inside over by".split(),
    "adv": "now again slowly quickly today soon gently carefully later twice".split(),
    "name": "anna peter maria james sophie thomas laura david emma oliver lucy mark nina paul rosa victor".split(),
    "num": "two three four five six seven eight nine ten".split(),
    "place": "kitchen garden office bedroom garage hallway library station market studio".split(),
}
_TEMPLATES = (
    "verb the adj noun prep the noun",
    "please verb the adj noun adv",
    "name verb_past num adj noun_pl adv",
    "the adj noun is prep the noun",
    "name verb_past the noun in the place",
    "verb num noun_pl prep the adj noun",
    "we verb_past the adj noun prep the place adv",
    "can you verb the noun prep the adj noun",
)


# The GRID corpus's fixed grammar (Cooke et al. 2006): command colour preposition letter digit adverb,
# 51 words, e.g. "place blue at f two now". Letters are spoken as letter names; no "w" (three syllables).
_GRID = {
    "command": "bin lay place set".split(),
    "colour": "blue green red white".split(),
    "prep": "at by in with".split(),
    "letter": list("abcdefghijklmnopqrstuvxyz"),
    "digit": "zero one two three four five six seven eight nine".split(),
    "adverb": "again now please soon".split(),
}
GRAMMARS = ("free", "grid", "homophene", context_grammar.GRAMMAR)
HOMOPHENE_GRAMMARS = ("homophene", context_grammar.GRAMMAR)   # spoken word by word on one timing per group


def make_sentences(n: int, seed: int, grammar: str = "free",
                   context: context_grammar.ContextGrammar | None = None) -> list[str]:
    """n distinct sentences from a built-in grammar, reproducible from seed: "free" (eight templates over
    about 200 words), "grid" (GRID's six-word commands over 51 words), "homophene" (six slots of
    homophene groups, 72 words) or "homophene_context" (a key, then the homophene slots with members the
    key selects; `context`, default context_grammar.context_grammar())."""
    if grammar not in GRAMMARS:
        raise LipVoicerError(f"unknown grammar '{grammar}' in prep.synthetic.grammar (use {' or '.join(GRAMMARS)})")
    if grammar == context_grammar.GRAMMAR:
        return context_grammar.make_sentences(n, seed, context or context_grammar.context_grammar())
    rng = np.random.default_rng(seed)
    slots = homophenes.homophene_slots() if grammar == "homophene" else None
    seen, out = set(), []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise LipVoicerError(f"cannot make {n} distinct sentences from the built-in '{grammar}' grammar")
        if grammar == "grid":
            words = [v[rng.integers(len(v))] for v in _GRID.values()]
        elif slots is not None:
            words = [[w for g in slot for w in g][rng.integers(sum(len(g) for g in slot))] for slot in slots]
        else:
            template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
            words = [(_W[t][rng.integers(len(_W[t]))] if t in _W else t) for t in template.split()]
        sentence = " ".join(words)
        if sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    return out


# ----------------------------------------------------------------------------- plan
_BASE_VOICES = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-us-nyc")
_VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3", "+f4", "+f5")


@dataclass
class Speaker:
    name: str
    voice: str
    pitch: int
    pitch_range: int
    rate: int
    flip: bool
    scale: float
    shift: tuple[float, float]
    brightness: float
    tint: tuple[float, float, float]
    articulation: float


@dataclass
class ClipSpec:
    index: int
    split: str
    speaker: Speaker
    clip_id: str
    sentence: str
    seed: int

    @property
    def rel(self) -> str:
        return f"{self.split}/{self.speaker.name}/{self.clip_id}"


def _seed(*parts) -> int:
    return zlib.crc32(" ".join(map(str, parts)).encode()) & 0x7FFFFFFF


def make_speaker(name: str, seed: int) -> Speaker:
    rng = np.random.default_rng(_seed("speaker", name, seed))
    return Speaker(
        name=name,
        voice=_BASE_VOICES[rng.integers(len(_BASE_VOICES))] + _VARIANTS[rng.integers(len(_VARIANTS))],
        pitch=int(rng.integers(30, 75)), pitch_range=int(rng.integers(30, 80)), rate=int(rng.integers(140, 200)),
        flip=bool(rng.random() < 0.5), scale=float(rng.uniform(0.85, 1.15)),
        shift=(float(rng.uniform(-12, 12)), float(rng.uniform(-10, 10))),
        brightness=float(rng.uniform(0.75, 1.2)), tint=tuple(float(x) for x in rng.uniform(0.92, 1.08, 3)),
        articulation=float(rng.uniform(0.8, 1.15)),
    )


def plan_corpus(n_clips: int, seed: int = 0, fractions: dict | None = None, n_speakers: int = 8,
                n_test_speakers: int = 2, grammar: str = "free",
                context: context_grammar.ContextGrammar | None = None) -> list[ClipSpec]:
    """Which clip goes where, with which sentence and speaker (independent of the worker count); `context`:
    the homophene_context grammar's keys, table and probability (context_grammar.context_from_settings)."""
    if n_clips < 1:
        raise LipVoicerError(f"n_clips must be at least 1 (got {n_clips})")
    fractions = dict(fractions or {"pretrain": 0.25, "trainval": 0.6, "test": 0.15})
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise LipVoicerError(f"unknown split(s) {sorted(unknown)} in prep.synthetic.splits (use {list(SPLITS)})")
    total = sum(float(v) for v in fractions.values())
    if total <= 0:
        raise LipVoicerError("prep.synthetic.splits: fractions must add up to more than 0")
    active = [s for s in SPLITS if float(fractions.get(s, 0)) > 0]
    counts = {s: int(np.floor(float(fractions.get(s, 0)) / total * n_clips)) for s in SPLITS}
    for s in active:  # every split asked for gets at least one clip when there are enough
        if counts[s] == 0 and n_clips >= len(active):
            counts[s] = 1
    while sum(counts.values()) > n_clips:
        largest = max(active, key=lambda s: counts[s])
        counts[largest] -= 1
    biggest = max(active, key=lambda s: float(fractions[s]))
    counts[biggest] += n_clips - sum(counts.values())
    n_speakers = max(int(n_speakers), 1)
    n_test_speakers = min(max(int(n_test_speakers), 0), n_speakers - 1) if n_speakers > 1 else 0
    speakers = [make_speaker(f"spk{i:02d}", seed) for i in range(n_speakers)]
    train_spk = speakers[:n_speakers - n_test_speakers]
    test_spk = speakers[n_speakers - n_test_speakers:] or train_spk
    sentences = make_sentences(n_clips, seed, grammar, context)
    specs, index, per_speaker = [], 0, {}
    for split in SPLITS:
        pool = test_spk if split == "test" else train_spk
        for k in range(counts[split]):
            spk = pool[k % len(pool)]
            per_speaker[(split, spk.name)] = per_speaker.get((split, spk.name), 0) + 1
            specs.append(ClipSpec(index=index, split=split, speaker=spk,
                                  clip_id=f"{per_speaker[(split, spk.name)]:05d}", sentence=sentences[index],
                                  seed=_seed("clip", index, seed)))
            index += 1
    return specs


# ----------------------------------------------------------------------------- face
# Facial keypoints of skimage.data.astronaut() (512 x 512), measured with MediaPipe's detector,
# and the mouth (corners at about x 203 / 245, y 141) measured on the photograph.
ASTRONAUT_EYES = ((202.8, 103.5), (248.0, 105.9))
MOUTH_CENTRE = (224.0, 145.0)
MOUTH_HALF_WIDTH = 21.0
FACE_CENTRE = (225.0, 135.0)   # centre of the output crop in the photograph
FACE_SPAN = 230.0              # photograph pixels across the output frame at scale 1

LIP = np.array([192.0, 112.0, 116.0])
MOUTH_INSIDE = np.array([52.0, 18.0, 24.0])
TEETH = np.array([236.0, 232.0, 222.0])
TONGUE = np.array([170.0, 80.0, 88.0])


class FaceModel:
    """The photograph with its mouth painted over, and a renderer for mouth shapes."""

    def __init__(self):
        import cv2  # noqa: PLC0415 - OpenCV and scikit-image load only where clips are drawn
        from skimage import data

        img = data.astronaut()
        cx, cy = MOUTH_CENTRE
        mask = np.zeros(img.shape[:2], np.uint8)
        cv2.ellipse(mask, (int(cx), int(cy + 1)), (int(MOUTH_HALF_WIDTH + 7), 13), 0, 0, 360, 255, -1)
        base = cv2.inpaint(img, mask, 7, cv2.INPAINT_TELEA).astype(np.float32)
        rng = np.random.default_rng(1)
        grain = cv2.GaussianBlur(rng.normal(0, 3.0, img.shape[:2]).astype(np.float32), (0, 0), 0.8)
        base += (mask[..., None] > 0) * grain[..., None]  # give the painted skin some texture back
        self.base = np.clip(base, 0, 255)
        self.x0, self.y0 = int(cx) - 40, int(cy) - 28
        self.x1, self.y1 = int(cx) + 41, int(cy) + 34
        ys, xs = np.mgrid[self.y0:self.y1, self.x0:self.x1].astype(np.float32)
        self._dx, self._dy = xs - cx, ys - cy

    @staticmethod
    def _inside(dx, dy, a, b):
        """Soft (anti-aliased) inside-an-ellipse mask, about one pixel wide at the edge."""
        r = np.sqrt((dx / max(a, 1e-3)) ** 2 + (dy / max(b, 1e-3)) ** 2)
        return np.clip((1.0 - r) * min(a, b) + 0.5, 0.0, 1.0)

    def render(self, shape: np.ndarray) -> np.ndarray:
        """float32 RGB photograph (512, 512, 3) with the mouth drawn for (open, width, round, teeth)."""
        open_, width, round_, teeth = (float(v) for v in shape)
        img = self.base.copy()
        patch = img[self.y0:self.y1, self.x0:self.x1]
        dx, dy = self._dx, self._dy
        half_w = MOUTH_HALF_WIDTH * width * (1.0 - 0.28 * round_)
        gap = 0.6 + 12.0 * max(open_, 0.0)                 # half-height of the opening
        inner_w = half_w * (0.92 - 0.38 * round_)
        drop = 0.45 * gap                                  # the lower lip follows the jaw
        upper_t, lower_t = 3.2 + 1.2 * round_, 4.2 + 1.4 * round_
        lips = np.maximum(self._inside(dx, dy + gap * 0.15, half_w + 2.0, gap * 0.6 + upper_t + 1.0),
                          self._inside(dx, dy - drop, half_w + 1.5, gap * 0.55 + lower_t))
        # a darker seam under the lower lip and a shadow at the corners
        shade = self._inside(dx, dy - drop - gap * 0.55 - lower_t - 1.5, half_w * 0.7, 2.5) * 0.18
        patch *= (1.0 - shade)[..., None]
        patch[:] = patch * (1 - lips[..., None]) + LIP * lips[..., None]
        opening = self._inside(dx, dy - drop * 0.5, inner_w, gap * 0.9)
        if gap < 1.6:  # closed: only the line between the lips
            opening = self._inside(dx, dy - drop * 0.5, inner_w, 0.9) * 0.8
        teeth_h = teeth * min(gap * 0.9, 4.5)
        top = -gap * 0.9 + drop * 0.5
        teeth_mask = opening * np.clip(top + teeth_h - dy + 0.5, 0, 1)
        tongue_mask = opening * np.clip(dy - (drop * 0.5 + gap * 0.35), 0, 1) * (open_ > 0.3)
        inside = MOUTH_INSIDE * (1 - tongue_mask[..., None] * 0.7) + TONGUE * tongue_mask[..., None] * 0.7
        colour = inside * (1 - teeth_mask[..., None]) + TEETH * teeth_mask[..., None]
        patch[:] = patch * (1 - opening[..., None]) + colour * opening[..., None]
        return img


_FACE: FaceModel | None = None


def _face() -> FaceModel:
    global _FACE
    if _FACE is None:
        _FACE = FaceModel()
    return _FACE


def _frame_transform(spk: Speaker, jitter: np.ndarray, size: int) -> np.ndarray:
    """2x3 map from the photograph to an output frame (scale, rotation, shift, mirror)."""
    scale = size / FACE_SPAN * spk.scale * (1.0 + jitter[0])
    angle = np.deg2rad(jitter[1])
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    fx, fy = FACE_CENTRE
    tx = size / 2 + spk.shift[0] + jitter[2]
    ty = size / 2 + spk.shift[1] + jitter[3]
    m = np.array([[c, -s, tx - (c * fx - s * fy)], [s, c, ty - (s * fx + c * fy)]])
    if spk.flip:
        m = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    return m


# ----------------------------------------------------------------------------- one clip
class _Shifted:
    """A phoneme moved onto the clip's time line (after the lead silence)."""

    def __init__(self, p, offset: float):
        self.name, self.start, self.end = p.name, p.start + offset, p.end + offset


def _speech(spec: ClipSpec, syn_cfg: dict, rng: np.random.Generator):
    """(speech int16-scaled float at its own rate, rate, phonemes to draw the mouth from, word timings from 0)."""
    spk = spec.speaker
    grammar = str(syn_cfg.get("grammar", "free"))
    if grammar in HOMOPHENE_GRAMMARS:
        # word by word on each group's reference timing; rate and pitch in a few steps (each word is
        # synthesised once per voice, rate and pitch, and reused)
        rate = int(np.clip(spk.rate + 10 * rng.integers(-1, 2), 80, 450))
        pitch = int(spk.pitch + 3 * rng.integers(-1, 2))
        words = spec.sentence.split()
        gaps = rng.uniform(0.03, 0.10, max(len(words) - 1, 0))
        hs = homophenes.homophene_speech(words, spk.voice, rate, pitch, spk.pitch_range, list(gaps),
                                         groups=group_function(grammar))
        return hs.samples, hs.sample_rate, hs.phonemes, hs.words
    rate = int(np.clip(spk.rate + rng.integers(-15, 16), 80, 450))
    utt = espeak.synthesize(spec.sentence, voice=spk.voice, rate=rate, pitch=int(spk.pitch + rng.integers(-4, 5)),
                            pitch_range=spk.pitch_range, isolated=True)
    words = spec.sentence.split()
    total = len(utt.samples) / utt.sample_rate
    end_speech = utt.phonemes[-1].start if utt.phonemes else total
    starts = [t for _, t in utt.words][: len(words)]
    timings = []
    for k, w in enumerate(words):
        a = starts[k] if k < len(starts) else end_speech
        b = starts[k + 1] if k + 1 < len(starts) else end_speech
        timings.append((w, a, max(b, a)))
    return utt.samples.astype(np.float32) / 32768.0, utt.sample_rate, utt.phonemes, timings


def clip_audio_and_mouth(spec: ClipSpec, syn_cfg: dict):
    """(audio float32 at sampling_rate, mouth shapes (T, 4), word timings, the clip's generator for what
    follows) of one clip: everything but the pictures."""
    from scipy.signal import resample_poly

    fps = float(syn_cfg["fps"])
    sr = int(syn_cfg["sampling_rate"])
    rng = np.random.default_rng(spec.seed)
    raw, raw_sr, phonemes, word_times = _speech(spec, syn_cfg, rng)
    g = np.gcd(sr, raw_sr)
    speech = resample_poly(raw, sr // g, raw_sr // g)
    lead = float(rng.uniform(*syn_cfg["lead_silence_s"]))
    tail = float(rng.uniform(*syn_cfg["tail_silence_s"]))
    total = lead + len(speech) / sr + tail
    total = max(total, float(syn_cfg["min_seconds"]))
    n_frames = int(np.ceil(total * fps))
    n_samples = int(round(n_frames * sr / fps))
    audio = np.zeros(n_samples, np.float32)
    start = int(round(lead * sr))
    audio[start:start + len(speech)] = speech[: max(n_samples - start, 0)]
    peak = float(np.abs(audio).max()) or 1.0
    audio *= float(rng.uniform(0.5, 0.9)) / peak
    audio += rng.normal(0, 10 ** (-float(rng.uniform(55, 70)) / 20), n_samples).astype(np.float32)
    shapes = mouth_shapes([_Shifted(p, lead) for p in phonemes], n_frames / fps, fps=fps, n_frames=n_frames,
                          rng=rng, articulation=spec.speaker.articulation)
    timings = [(w, a + lead, b + lead) for w, a, b in word_times]
    return audio, shapes, timings, rng


def group_function(grammar: str):
    """word -> its group (the reference first) in a homophene grammar."""
    return context_grammar.group_of if grammar == context_grammar.GRAMMAR else homophenes.group_of


def identical_mouth_tracks(specs: list[ClipSpec], syn_cfg: dict) -> tuple[int, int]:
    """(words whose mouth track equals that of every other member of their homophene group, words that have
    homophenes): each word of each clip replaced in turn by each other member, the clip's mouth shapes drawn
    again (the same code that draws the corpus's videos) and compared with the original's, exactly. In the
    homophene_context grammar the key has no homophene and is not counted."""
    same = total = 0
    group_of = group_function(str(syn_cfg.get("grammar", "homophene")))
    for spec in specs:
        words = spec.sentence.split()
        base = clip_audio_and_mouth(spec, syn_cfg)[1]
        for k, w in enumerate(words):
            others = [m for m in group_of(w) if m != w]
            if not others:
                continue
            total += 1
            alike = True
            for m in others:
                swapped = dataclasses.replace(spec, sentence=" ".join(words[:k] + [m] + words[k + 1:]))
                shapes = clip_audio_and_mouth(swapped, syn_cfg)[1]
                alike = alike and shapes.shape == base.shape and bool(np.array_equal(shapes, base))
            same += alike
    return same, total


def synthesize_clip(spec: ClipSpec, syn_cfg: dict) -> tuple[np.ndarray, np.ndarray, list[tuple[str, float, float]]]:
    """(frames uint8 (T, S, S, 3), audio float32 at sampling_rate, word timings) of one clip."""
    import cv2  # noqa: PLC0415 - OpenCV loads only where clips are drawn

    fps = float(syn_cfg["fps"])
    size = int(syn_cfg["frame_size"])
    spk = spec.speaker
    audio, shapes, timings, rng = clip_audio_and_mouth(spec, syn_cfg)
    n_frames = len(shapes)
    face = _face()
    clip_jitter = np.array([rng.uniform(-0.04, 0.04), rng.uniform(-3, 3), rng.uniform(-4, 4), rng.uniform(-4, 4)])
    phase = rng.uniform(0, 2 * np.pi, 4)
    speed = rng.uniform(0.2, 0.6, 4)
    gain = np.array(spk.tint, np.float32) * spk.brightness * float(rng.uniform(0.94, 1.06))
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    for t in range(n_frames):
        sway = np.sin(2 * np.pi * speed * t / fps + phase) * np.array([0.01, 1.2, 1.5, 1.2])
        m = _frame_transform(spk, clip_jitter + sway, size)
        img = cv2.warpAffine(face.render(shapes[t]), m, (size, size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT101)
        img = img * gain + rng.normal(0, 1.5, img.shape).astype(np.float32)
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames, audio, timings


def transcript_text(sentence: str, timings) -> str:
    lines = [f"Text:  {sentence.upper()}", "Conf:  4", "", "WORD START END ASDSCORE"]
    lines += [f"{w.upper()} {s:.2f} {e:.2f} 4.0" for w, s, e in timings]
    return "\n".join(lines) + "\n"


def write_clip(spec: ClipSpec, out_dir: str, syn_cfg: dict) -> tuple[str, str | None]:
    """Write one clip (video + transcript); returns (relative path, error line or None)."""
    video = Path(out_dir) / "videos" / f"{spec.rel}.mp4"
    text = video.with_suffix(".txt")
    if video.is_file() and text.is_file():
        return spec.rel, None
    try:
        import cv2  # noqa: PLC0415 - see synthesize_clip

        cv2.setNumThreads(1)
        frames, audio, timings = synthesize_clip(spec, syn_cfg)
        write_video(video, frames, syn_cfg["fps"], audio=audio, sample_rate=syn_cfg["sampling_rate"],
                    crf=int(syn_cfg["crf"]))
        atomic_text(text, transcript_text(spec.sentence, timings))
        return spec.rel, None
    except LipVoicerError as e:
        return spec.rel, f"{video}: {e}"


def build_corpus(out_dir: str | Path, syn_cfg: dict, progress: bool = True) -> tuple[int, int, int]:
    """Write the corpus; returns (written, already present, failed)."""
    if not espeak.available():
        raise LipVoicerError(f"espeak-ng is needed for the synthetic corpus: {espeak.INSTALL_HINT}")
    out_dir = Path(out_dir)
    context = context_grammar.context_from_settings(syn_cfg)   # keys found once here; workers inherit them
    specs = plan_corpus(int(syn_cfg["n_clips"]), int(syn_cfg["seed"]), syn_cfg.get("splits"),
                        int(syn_cfg["n_speakers"]), int(syn_cfg["n_test_speakers"]),
                        str(syn_cfg.get("grammar", "free")), context)
    out_dir.mkdir(parents=True, exist_ok=True)
    present = [s for s in specs if (out_dir / "videos" / f"{s.rel}.mp4").is_file()
               and (out_dir / "videos" / f"{s.rel}.txt").is_file()]
    todo = [s for s in specs if s not in present]
    if str(syn_cfg.get("grammar")) in HOMOPHENE_GRAMMARS:
        homophenes.homophene_slots()   # found once here; worker processes inherit the groups
    failed = _run_all(write_clip, todo, (str(out_dir), syn_cfg), max(int(syn_cfg.get("workers", 1)), 1),
                      "synthetic clips", progress)
    atomic_text(out_dir / "synthetic_corpus.json", json.dumps(corpus_metadata(specs, syn_cfg, context), indent=1))
    return len(todo) - failed, len(present), failed


def corpus_metadata(specs: list[ClipSpec], syn_cfg: dict,
                    context: context_grammar.ContextGrammar | None = None) -> dict:
    """What synthetic_corpus.json records: clips, seed, grammar, splits, speakers; the homophene grammar's
    slots; the homophene_context grammar's slots (the key slot first), keys, probability and table
    (ContextGrammar.to_meta; context_grammar.context_stats reads it)."""
    meta = {"n_clips": len(specs), "seed": int(syn_cfg["seed"]), "grammar": str(syn_cfg.get("grammar", "free")),
            "splits": {s: sum(1 for c in specs if c.split == s) for s in SPLITS},
            "speakers": {spk.name: asdict(spk) for spk in {c.speaker.name: c.speaker for c in specs}.values()}}
    if meta["grammar"] == "homophene":
        meta["homophene_slots"] = [[list(g) for g in slot] for slot in homophenes.homophene_slots()]
    elif meta["grammar"] == context_grammar.GRAMMAR:
        meta.update((context or context_grammar.context_from_settings(syn_cfg)).to_meta())
    return meta


# ----------------------------------------------------------------------------- audio without video
AUDIO_ONLY = "audio_only"   # the split folder (and `<root>/audio_only.list`) of the utterances without video


def plan_audio_corpus(n: int, syn_cfg: dict) -> list[ClipSpec]:
    """n utterances without video by the training speakers of the corpus that syn_cfg describes, with
    sentences of its grammar (another seed) that are never one of its test sentences."""
    seed = int(syn_cfg["seed"])
    grammar = str(syn_cfg.get("grammar", "free"))
    context = context_grammar.context_from_settings(syn_cfg)
    video = plan_corpus(int(syn_cfg["n_clips"]), seed, syn_cfg.get("splits"), int(syn_cfg["n_speakers"]),
                        int(syn_cfg["n_test_speakers"]), grammar, context)
    test = {c.sentence for c in video if c.split == "test"}
    train_spk = list({c.speaker.name: c.speaker for c in video if c.split != "test"}.values())
    sentences = [x for x in make_sentences(n + len(test), seed + 7919, grammar, context)
                 if x not in test][:n]
    specs, per_speaker = [], {}
    for k, sentence in enumerate(sentences):
        spk = train_spk[k % len(train_spk)]
        per_speaker[spk.name] = per_speaker.get(spk.name, 0) + 1
        specs.append(ClipSpec(index=k, split=AUDIO_ONLY, speaker=spk, clip_id=f"{per_speaker[spk.name]:05d}",
                              sentence=sentence, seed=_seed("audio", k, seed)))
    return specs


def write_audio_clip(spec: ClipSpec, out_dir: str, syn_cfg: dict, audio_cfg: dict) -> tuple[str, str | None]:
    """One utterance without video: `<clip>.wav` (16-bit), its `.wav.spec` mel (as wav2mel makes it) and
    the transcript; returns (relative path, error line or None)."""
    import soundfile as sf
    import torch

    from dataloaders.audio import wav_file_to_mel
    from utils.files import atomic_write

    root = Path(out_dir)
    wav = root / "audios" / f"{spec.rel}.wav"
    mel = wav.with_name(wav.name + ".spec")
    text = root / "videos" / f"{spec.rel}.txt"
    if wav.is_file() and mel.is_file() and text.is_file():
        return spec.rel, None
    try:
        torch.set_num_threads(1)
        audio, _, timings, _ = clip_audio_and_mouth(spec, syn_cfg)
        wav.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(wav, lambda tmp: sf.write(str(tmp), audio, int(syn_cfg["sampling_rate"]), subtype="PCM_16",
                                               format="WAV"))
        spec_mel = wav_file_to_mel(wav, audio_cfg)
        atomic_write(mel, lambda tmp: torch.save(spec_mel.clone(), tmp))
        text.parent.mkdir(parents=True, exist_ok=True)
        atomic_text(text, transcript_text(spec.sentence, timings))
        return spec.rel, None
    except LipVoicerError as e:
        return spec.rel, f"{wav}: {e}"


def _run_all(fn, todo: list, args: tuple, workers: int, desc: str, progress: bool) -> int:
    """fn(spec, *args) for every spec (in worker processes when workers > 1); returns how many failed."""
    failed = 0
    bar = tqdm(total=len(todo), desc=desc, unit="clip", dynamic_ncols=True, disable=not progress)
    if workers > 1 and len(todo) > 1:
        # decoded PyAV frames linger in reference cycles until the next garbage collection; a forked worker
        # that collects them frees their scaler's slice threads, which do not exist in the child: it hangs
        gc.collect()
        with ProcessPoolExecutor(min(workers, len(todo))) as pool:
            results = pool.map(fn, todo, *[[a] * len(todo) for a in args], chunksize=8)
            for _, err in results:
                bar.update(1)
                if err:
                    failed += 1
                    log.error(err)
    else:
        for spec in todo:
            _, err = fn(spec, *args)
            bar.update(1)
            if err:
                failed += 1
                log.error(err)
    bar.close()
    return failed


def build_audio_corpus(out_dir: str | Path, syn_cfg: dict, audio_cfg: dict, n: int,
                       progress: bool = True) -> tuple[int, int, int]:
    """Write n utterances without video (plan_audio_corpus) and `audio_only.list`; (written, present, failed)."""
    if not espeak.available():
        raise LipVoicerError(f"espeak-ng is needed for the synthetic corpus: {espeak.INSTALL_HINT}")
    out_dir = Path(out_dir)
    specs = plan_audio_corpus(int(n), syn_cfg)
    if str(syn_cfg.get("grammar")) in HOMOPHENE_GRAMMARS:
        homophenes.homophene_slots()   # found once here; worker processes inherit the groups
    done = [s for s in specs if all(p.is_file() for p in (
        out_dir / "audios" / f"{s.rel}.wav", out_dir / "audios" / f"{s.rel}.wav.spec",
        out_dir / "videos" / f"{s.rel}.txt"))]
    todo = [s for s in specs if s not in done]
    failed = _run_all(write_audio_clip, todo, (str(out_dir), syn_cfg, dict(audio_cfg)),
                      max(int(syn_cfg.get("workers", 1)), 1), "audio-only utterances", progress)
    ok = [s.rel.split("/", 1)[1] for s in specs if (out_dir / "audios" / f"{s.rel}.wav.spec").is_file()]
    atomic_text(out_dir / f"{AUDIO_ONLY}.list", "\n".join(ok) + "\n")
    return len(todo) - failed, len(done), failed


# ----------------------------------------------------------------------------- command line
def synthetic_settings(cfg) -> dict:
    """prep.synthetic plus the shared video/audio values, as a plain dict for worker processes."""
    syn = OmegaConf.to_container(cfg.prep.synthetic, resolve=True)
    syn["fps"] = float(cfg.video.fps)
    syn["sampling_rate"] = int(cfg.audio.sampling_rate)
    return syn


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="extra key=value arguments are Hydra overrides (configs/config.yaml)")
    ap.add_argument("--out_dir", help="corpus root (default: prep.synthetic.out_dir)")
    ap.add_argument("--n_clips", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--audio_only", type=int, default=0, metavar="N",
                    help="also write N utterances without video (for training a recogniser on more speech)")
    ap.add_argument("--no_progress", action="store_true")
    args, overrides = ap.parse_known_args(argv)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        ap.error(f"unrecognised arguments: {' '.join(bad)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = compose_config(overrides)
    syn = synthetic_settings(cfg)
    for key in ("n_clips", "seed", "workers"):
        if getattr(args, key) is not None:
            syn[key] = getattr(args, key)
    out_dir = args.out_dir or syn["out_dir"]
    written, present, failed = build_corpus(out_dir, syn, progress=not args.no_progress)
    print(f"synthetic corpus {out_dir}: {written} clips written, {present} already present, {failed} failed")
    if args.audio_only:
        a_written, a_present, a_failed = build_audio_corpus(out_dir, syn, OmegaConf.to_container(cfg.audio, resolve=True),
                                                            args.audio_only, progress=not args.no_progress)
        print(f"audio-only utterances: {a_written} written, {a_present} already present, {a_failed} failed")
        failed += a_failed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
