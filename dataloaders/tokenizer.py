"""SentencePiece BPE tokenizer of the ASR (published: `tokenizerbpe256.model`), and training one.

Piece id 0 is `<unk>`; the ASR uses it as the CTC blank, so real text never maps
to it (the published model is trained with `unk_surface=""`, no BOS/EOS, full
character coverage). Text is normalised (dataloaders/text.py) before encoding.

Train a model of any size on a transcript corpus:

    python -m dataloaders.tokenizer --corpus texts.txt --vocab-size 256 --out checkpoints/my_bpe256.model
    python -m dataloaders.tokenizer --transcripts-dir data/synthetic/videos --vocab-size 256 --out tok.model

`--corpus` is a text file with one sentence per line; `--transcripts-dir` collects every
LRS-style `<clip>.txt` (first line `Text:  <words>`) below a folder.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable

from dataloaders.text import dropped_characters, normalize_text, transcript_from_lrs_text
from utils.errors import LipVoicerError, exit_on_user_error

log = logging.getLogger(__name__)


def _spm():
    try:
        import sentencepiece as spm  # noqa: PLC0415 - optional at import time; a clear error when missing
    except ImportError as e:  # pragma: no cover - listed in requirements.txt
        raise LipVoicerError("the 'sentencepiece' package is missing (pip install sentencepiece)") from e
    return spm


class BPETokenizer:
    """Thin wrapper around a SentencePiece model: encode(text) -> ids, decode(ids) -> text."""

    def __init__(self, model_path: str | os.PathLike):
        self.path = Path(model_path)
        if not self.path.is_file():
            raise LipVoicerError(f"{self.path}: tokenizer model not found "
                                 "(fetch it with: python download_checkpoints.py --only tokenizer_bpe256)")
        spm = _spm()
        self._warned: set[str] = set()
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file for the user
            raise LipVoicerError(f"{self.path}: not a SentencePiece model ({type(e).__name__})") from e

    def check_vocab_size(self, expected: int, setting: str = "asr.vocab_size") -> "BPETokenizer":
        """The tokenizer must have as many pieces as the model has outputs (else one line naming both)."""
        if self.vocab_size != int(expected):
            raise LipVoicerError(f"{self.path}: tokenizer has {self.vocab_size} pieces but {setting} is {expected}")
        return self

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    def encode(self, text: str, normalize: bool = True) -> list[int]:
        """Piece ids of `text` (normalised first: lower case, numbers as words, no punctuation).

        Characters the tokenizer cannot encode would become id 0, the CTC blank, which is no
        target: they are left out, with a warning naming them (once per character and tokenizer),
        as are letters that normalisation has to drop (other scripts)."""
        norm = normalize_text(text) if normalize else text
        ids = [int(i) for i in self.sp.encode(norm, out_type=int)]
        bad = set(dropped_characters(text)) if normalize else set()
        if 0 in ids:
            bad |= {c for c in set(norm) - {" "} if 0 in self.sp.encode(c, out_type=int)}
            ids = [i for i in ids if i != 0]
        new = sorted(bad - self._warned)
        if new:
            self._warned |= bad
            log.warning("%s: the tokenizer cannot encode %s in the text %r; left out of the ASR targets",
                        self.path, ", ".join(repr(c) for c in new), text if len(text) <= 80 else text[:77] + "...")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids if int(i) != 0])

    def pieces(self, ids: Iterable[int]) -> list[str]:
        return [self.sp.id_to_piece(int(i)) for i in ids]


def collect_lrs_transcripts(folder: str | os.PathLike) -> list[str]:
    """Normalised first lines of every `*.txt` transcript below `folder` (sorted by path)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LipVoicerError(f"{folder}: transcripts folder not found")
    texts = []
    for p in sorted(folder.rglob("*.txt")):
        content = p.read_text(encoding="utf-8", errors="replace")
        if content.startswith("Text:"):
            t = transcript_from_lrs_text(content)
            if t:
                texts.append(t)
    if not texts:
        raise LipVoicerError(f"{folder}: no transcripts (`<clip>.txt` starting with 'Text:') found")
    return texts


def read_corpus(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise LipVoicerError(f"{path}: corpus file not found")
    texts = [normalize_text(line) for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    texts = [t for t in texts if t]
    if not texts:
        raise LipVoicerError(f"{path}: corpus has no text")
    return texts


def train_bpe(texts: Iterable[str], out_model: str | os.PathLike, vocab_size: int = 256,
              model_type: str = "bpe") -> Path:
    """Train a SentencePiece model (published settings) on normalised sentences.

    Writes `out_model` (and the `.vocab` beside it) atomically; returns the model path.
    """
    out_model = Path(out_model)
    if out_model.suffix != ".model":
        raise LipVoicerError(f"{out_model}: the tokenizer file name must end in .model")
    texts = [t for t in (normalize_text(x) for x in texts) if t]
    if not texts:
        raise LipVoicerError(f"{out_model}: no training text")
    out_model.parent.mkdir(parents=True, exist_ok=True)
    spm = _spm()
    with tempfile.TemporaryDirectory(dir=out_model.parent, prefix=".bpe_train_") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
        prefix = Path(tmp) / "model"
        try:
            spm.SentencePieceTrainer.train(
                input=str(corpus), model_prefix=str(prefix), vocab_size=int(vocab_size),
                model_type=model_type, character_coverage=1.0, bos_id=-1, eos_id=-1, unk_surface="",
                minloglevel=2)
        except RuntimeError as e:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise LipVoicerError(f"{out_model}: cannot train a {vocab_size}-piece tokenizer on "
                                 f"{len(texts)} sentences ({msg})") from None
        os.replace(prefix.with_suffix(".vocab"), out_model.with_suffix(".vocab"))
        os.replace(prefix.with_suffix(".model"), out_model)
    return out_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train a SentencePiece BPE tokenizer for the ASR.")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", help="text file, one sentence per line")
    src.add_argument("--transcripts-dir", help="folder with LRS-style <clip>.txt transcripts (searched recursively)")
    ap.add_argument("--vocab-size", type=int, default=256)
    ap.add_argument("--model-type", default="bpe", choices=["bpe", "unigram", "char", "word"])
    ap.add_argument("--out", required=True, help="output model file (.model)")
    args = ap.parse_args(argv)
    texts = read_corpus(args.corpus) if args.corpus else collect_lrs_transcripts(args.transcripts_dir)
    path = train_bpe(texts, args.out, args.vocab_size, args.model_type)
    print(f"wrote {path} ({args.vocab_size} pieces, {len(texts)} sentences)")
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main)())
