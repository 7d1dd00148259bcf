"""Text normalisation and LRS transcripts (ASR targets, lip-read texts, WER).

LRS2/LRS3 transcripts are upper case (`Text:  WE DON'T {LG} KNOW`), with noise
markers such as `{LG}` (laughter) and `{NS}` (noise). The ASR's tokenizer and its
language model work on lower-case words without punctuation; apostrophes inside
words are kept ("don't").

    normalize_text("WE DON'T {LG} KNOW.")            # "we don't know"
    normalize_text("call 911 at 10:30")              # "call nine hundred and eleven at ten thirty"
    transcript_from_lrs_text(path.read_text())      # normalised words of a `<clip>.txt`
    read_transcript(path)                           # the same from the file (errors name it)
"""
from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path

from utils.errors import LipVoicerError

log = logging.getLogger(__name__)

# Numbers are spelled out as words, as the LRS transcripts have them (they contain no digits),
# with num2words (English) and these rules, applied in this order:
#   times        10:30 -> ten thirty, 10:05 -> ten oh five, 9:00 -> nine o'clock
#   percentages  50% -> fifty percent, 2.5% -> two point five percent
#   ordinals     1st -> first, 22nd -> twenty-second (the hyphen later becomes a space)
#   grouping     1,000,000 -> 1000000 (commas between groups of three digits are dropped)
#   decimals     3.14 -> three point one four
#   leading zero 007 -> zero zero seven (codes, not quantities: read digit by digit)
#   years        four digits 1100..2099 -> nineteen ninety, twenty twenty-four (2000..2009: two thousand and nine)
#   the rest     cardinals: 911 -> nine hundred and eleven, 12 -> twelve
_TIME = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_GROUPED = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_DECIMAL = re.compile(r"\b(\d+)\.(\d+)\b")
_DIGITS = re.compile(r"\d+")
_DIGIT_WORDS = "zero one two three four five six seven eight nine".split()

# Letters that Unicode decomposition does not fold to ASCII.
_FOLD = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "ł": "l",
                       "Ł": "L", "đ": "d", "Đ": "D", "þ": "th", "Þ": "TH", "ı": "i"})

_MARKER = re.compile(r"\{[A-Za-z]+\}")               # {LG}, {NS}, ...
_NOT_WORD = re.compile(r"[^a-z0-9' ]+")               # everything but letters, digits, apostrophe, space
_LOOSE_APOSTROPHE = re.compile(r"(^|\s)'+|'+(?=\s|$)")  # quotes around words, not inside them


def _num2words(n, **kw) -> str:
    try:
        from num2words import num2words  # noqa: PLC0415 - listed in requirements.txt; digits as a fallback
    except ImportError:  # pragma: no cover
        return " ".join(_DIGIT_WORDS[int(d)] for d in str(n) if d.isdigit())
    return num2words(n, lang="en", **kw)


def _spell_digits(digits: str) -> str:
    return " ".join(_DIGIT_WORDS[int(d)] for d in digits)


def _spell_integer(digits: str) -> str:
    if len(digits) > 1 and digits.startswith("0"):
        return _spell_digits(digits)
    n = int(digits)
    if len(digits) == 4 and 1100 <= n <= 2099:
        return _num2words(n, to="year")
    return _num2words(n)


def _spell_time(m: re.Match) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    h = _num2words(hours)
    if minutes == 0:
        return f"{h} o'clock"
    return f"{h} oh {_num2words(minutes)}" if minutes < 10 else f"{h} {_num2words(minutes)}"


def _spell_decimal(m: re.Match) -> str:
    return f"{_spell_integer(m.group(1))} point {_spell_digits(m.group(2))}"


def spell_numbers(text: str) -> str:
    """Digits in `text` written as English words (rules above), the way LRS transcripts have them."""
    if not any(c.isdigit() for c in text):
        return text
    text = _TIME.sub(lambda m: f" {_spell_time(m)} ", text)
    text = _PERCENT.sub(lambda m: f" {m.group(1)} percent ", text)
    text = _ORDINAL.sub(lambda m: f" {_num2words(int(m.group(1)), to='ordinal')} ", text)
    text = _GROUPED.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _DECIMAL.sub(lambda m: f" {_spell_decimal(m)} ", text)
    return _DIGITS.sub(lambda m: f" {_spell_integer(m.group(0))} ", text)


def dropped_characters(text: str) -> list[str]:
    """Letters and digits of `text` that normalize_text removes because they are not a-z / 0-9 even
    after accents are folded (other scripts, ß, ...): sorted, without repeats."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", _MARKER.sub(" ", text).translate(_FOLD))
                     if not unicodedata.combining(c)).lower()
    return sorted({c for c in folded if c.isalnum() and not ("a" <= c <= "z" or "0" <= c <= "9")})


def normalize_text(text: str) -> str:
    """Lower case, `{..}` markers removed, numbers spelled as words (spell_numbers), punctuation
    removed (word-internal apostrophes kept), accents folded to ASCII, whitespace collapsed."""
    text = _MARKER.sub(" ", text)
    text = spell_numbers(unicodedata.normalize("NFKC", text)).translate(_FOLD)
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


def transcript_beside(video: str | Path) -> tuple[str, str]:
    """(text, where it came from) for a video without a lip reader: the transcript `<video stem>.txt` beside it
    (plain text, or an LRS-style `Text:` line), else an empty text (no ASR guidance), said in a warning."""
    path = Path(video).with_suffix(".txt")
    if path.is_file():
        text = transcript_from_lrs_text(path.read_text(encoding="utf-8", errors="replace"))
        if text:
            return text, f"transcript {path.name}"
    log.warning("%s: no text: this model set has no lip reader and there is no transcript %s beside the video; "
                "sampling without ASR guidance (give the words with generate.text='...')", video, path.name)
    return "", "none (no lip reader, no transcript)"
