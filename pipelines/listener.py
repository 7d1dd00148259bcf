"""An independent listener: a recogniser that shares nothing with the guidance ASR.

The synthetic recipe's judge is a network of the guidance ASR's own kind, trained on the same mels; what
the guidance gradient adds can fool it without being heard. This listener is of another kind:
PocketSphinx (CMU Sphinx's HMM recogniser on MFCCs) with the US-English acoustic model and dictionary
that ship in its wheel (`pip install pocketsphinx==5.1.1`), decoding with a JSGF grammar of the corpus's
slots (each slot: its words, any of them). Every clip is decoded by a fresh decoder, so nothing carries
over from one clip to the next (PocketSphinx adapts its cepstral mean between utterances).

    listener = SphinxListener(slots)                 # slots: per position, the words it may hold
    text = listener(wav, sr)                         # "bat fan pail dug ..."
    rows = listen(listener, {"clip": (wav_path, "reference text")})
    wer, (lo, hi) = corpus_wer_ci(rows)              # corpus WER, 95 % bootstrap interval over clips (pipelines/intervals.py)
"""
from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from pipelines.intervals import ratio_interval
from utils.errors import LipVoicerError

POCKETSPHINX_INSTALL = "the independent listener needs PocketSphinx: pip install pocketsphinx==5.1.1"
SAMPLE_RATE = 16000


def listener_available() -> bool:
    return importlib.util.find_spec("pocketsphinx") is not None


def grammar_text(slots: Sequence[Sequence[str]]) -> str:
    """A JSGF grammar: one sentence of len(slots) words, the k-th any word of slots[k]."""
    lines = ["#JSGF V1.0;", "grammar corpus;",
             "public <sentence> = " + " ".join(f"<slot{k}>" for k in range(len(slots))) + ";"]
    lines += [f"<slot{k}> = {' | '.join(words)};" for k, words in enumerate(slots)]
    return "\n".join(lines) + "\n"


class SphinxListener:
    """PocketSphinx with the corpus's slot grammar; call it on a waveform to get its words."""

    def __init__(self, slots: Sequence[Sequence[str]]):
        if not listener_available():
            raise LipVoicerError(POCKETSPHINX_INSTALL)
        from pocketsphinx import get_model_path  # noqa: PLC0415 - optional package

        slots = [sorted({str(w).lower() for w in slot}) for slot in slots]
        if not slots or not all(slots):
            raise LipVoicerError("the listener's grammar needs at least one word in every slot")
        model = Path(get_model_path()) / "en-us"
        self.hmm = str(model / "en-us")
        words = sorted({w for slot in slots for w in slot})
        entries: dict[str, list[str]] = {}
        with open(model / "cmudict-en-us.dict", encoding="utf-8") as f:
            for line in f:
                head = line.split(maxsplit=1)[0]
                base = head.split("(")[0]
                if base in words:
                    entries.setdefault(base, []).append(line.rstrip("\n"))
        missing = [w for w in words if w not in entries]
        if missing:
            raise LipVoicerError(f"the listener's dictionary (CMUdict in pocketsphinx) lacks {len(missing)} of the "
                                 f"corpus's words: {', '.join(missing[:10])}")
        self._dir = tempfile.TemporaryDirectory(prefix="listener-")
        self.dict_path = Path(self._dir.name) / "corpus.dict"
        self.dict_path.write_text("\n".join(line for w in words for line in entries[w]) + "\n")
        self.grammar_path = Path(self._dir.name) / "corpus.gram"
        self.grammar_path.write_text(grammar_text(slots))

    def __call__(self, wav: np.ndarray, sr: int) -> str:
        from pocketsphinx import Decoder  # noqa: PLC0415

        x = np.asarray(wav, np.float32)
        if x.ndim > 1:
            x = x.mean(axis=1)
        if sr != SAMPLE_RATE:
            import librosa  # noqa: PLC0415

            x = librosa.resample(x, orig_sr=sr, target_sr=SAMPLE_RATE)
        pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()
        decoder = Decoder(hmm=self.hmm, dict=str(self.dict_path), jsgf=str(self.grammar_path), logfn="/dev/null")
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""


def listen(listener, clips: dict[str, tuple[Path, str]]) -> list[dict]:
    """[{video_id, reference, hypothesis, errors, words}] for {clip id: (audio file, reference text)}."""
    import jiwer  # noqa: PLC0415
    import soundfile as sf  # noqa: PLC0415

    rows = []
    for vid in sorted(clips):
        path, ref = clips[vid]
        try:
            wav, sr = sf.read(str(path), dtype="float32")
        except (OSError, RuntimeError) as e:
            raise LipVoicerError(f"{path}: cannot be read as audio ({e})") from None
        hyp = listener(wav, sr)
        ref = " ".join(ref.lower().split())
        out = jiwer.process_words(ref, hyp if hyp else "<nothing>") if ref else None
        errors = 0 if out is None else out.substitutions + out.deletions + out.insertions
        if out is not None and not hyp:   # nothing heard: every reference word deleted
            errors = len(ref.split())
        rows.append({"video_id": vid, "reference": ref, "hypothesis": hyp, "errors": errors,
                     "words": len(ref.split())})
    return rows


def corpus_wer(rows: Sequence[dict]) -> float:
    words = sum(r["words"] for r in rows)
    return sum(r["errors"] for r in rows) / words if words else float("nan")


def corpus_wer_ci(rows: Sequence[dict], **kw) -> tuple[float, tuple[float, float]]:
    """Corpus WER (errors over reference words) and its bootstrap 95 % interval over clips
    (pipelines/intervals.py, as evaluate.py's summaries)."""
    return corpus_wer(rows), ratio_interval([r["errors"] for r in rows], [r["words"] for r in rows], **kw)
