"""Text normalisation and LRS transcripts (ASR targets, lip-read texts, WER).

LRS2/LRS3 transcripts are upper case (`Text:  WE DON'T {LG} KNOW`), with noise
markers such as `{LG}` (laughter) and `{NS}` (noise). The ASR's tokenizer and its
language model work on lower-case words without punctuation; apostrophes inside
words are kept ("don't").

    normalize_text("WE DON'T {LG} KNOW.")            # "we don't know"
    transcript_from_lrs_text(path.read_text())      # normalised words of a `<clip>.txt`
    read_transcript(path)                           # the same from the file (errors name it)
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from utils.errors import LipVoicerError

_MARKER = re.compile(r"\{[A-Za-z]+\}")               # {LG}, {NS}, ...
_NOT_WORD = re.compile(r"[^a-z0-9' ]+")               # everything but letters, digits, apostrophe, space
_LOOSE_APOSTROPHE = re.compile(r"(^|\s)'+|'+(?=\s|$)")  # quotes around words, not inside them


def normalize_text(text: str) -> str:
    """Lower case, `{..}` markers removed, punctuation removed (word-internal apostrophes kept),
    accents folded to ASCII, whitespace collapsed."""
    text = _MARKER.sub(" ", text)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.lower().replace("\u2019", "'").replace("`", "'")
    text = _NOT_WORD.sub(" ", text)
    text = _LOOSE_APOSTROPHE.sub(" ", text)
    return " ".join(text.split())


def transcript_from_lrs_text(content: str) -> str:
    """The normalised words of an LRS `<clip>.txt` file's content (first line, after `Text:`)."""
    lines = content.splitlines()
    first = lines[0] if lines else ""
    if first.startswith("Text:"):
        first = first[len("Text:"):]
    return normalize_text(first)


def read_transcript(path: str | Path) -> str:
    """transcript_from_lrs_text of the file; a missing or empty file is a LipVoicerError naming it."""
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise LipVoicerError(f"{path}: transcript not found") from None
    if not content.splitlines():
        raise LipVoicerError(f"{path}: transcript is empty")
    return transcript_from_lrs_text(content)
