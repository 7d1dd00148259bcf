"""Timed transcripts: SubRip (.srt, the `srt` package) and WebVTT (.vtt, the `webvtt-py` package) subtitle
files as cues, and which cues belong to which stretch of a video.

    cues = read_subtitles("talk.srt")                        # [Cue(start, end, text), ...] in time order
    per_segment = assign_cues(cues, [(0.0, 4.2), (4.2, 9.0)])  # cue indices of each span

A cue goes to the span it overlaps most (ties: the earlier span), so a sentence whose cue reaches a
little past a cut guides only the segment it is spoken in; a cue overlapping no span is unused.
Cue text loses markup (`<i>`, `{\\an8}`) and sound descriptions in brackets (`[music]`, `(laughs)`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from utils.errors import LipVoicerError

SUBTITLE_SUFFIXES = (".srt", ".vtt")
_MARKUP = re.compile(r"<[^>]*>|\{[^}]*\}")
_SOUNDS = re.compile(r"\[[^\]]*\]|\([^)]*\)")


@dataclass(frozen=True)
class Cue:
    start: float    # seconds
    end: float
    text: str


def is_subtitle_file(value) -> bool:
    return isinstance(value, str) and value.strip().lower().endswith(SUBTITLE_SUFFIXES)


def clean_cue_text(text: str) -> str:
    """The spoken words of a cue: markup, bracketed sound descriptions and dialogue dashes removed."""
    text = _SOUNDS.sub(" ", _MARKUP.sub(" ", text))
    lines = [re.sub(r"^\s*-\s*", "", line) for line in text.splitlines()]
    return " ".join(" ".join(lines).split())


def read_subtitles(path: str | Path) -> list[Cue]:
    """The cues of an .srt or .vtt file in time order (empty cues dropped). A missing, unreadable or
    malformed file raises LipVoicerError naming it."""
    path = Path(path)
    if not path.is_file():
        raise LipVoicerError(f"{path}: subtitle file not found (generate.text names it)")
    try:
        content = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LipVoicerError(f"{path}: cannot read the subtitle file ({e})") from None
    try:
        raw = _read_vtt(content) if path.suffix.lower() == ".vtt" else _read_srt(content)
    except Exception as e:  # noqa: BLE001 - each parser has its own exceptions: one line for the user
        raise LipVoicerError(f"{path}: not a valid {path.suffix.lower()[1:].upper()} subtitle file "
                             f"({' '.join(str(e).split())[:200]})") from None
    cues = [Cue(float(a), float(b), clean_cue_text(t)) for a, b, t in raw]
    cues = sorted((c for c in cues if c.text and c.end > c.start), key=lambda c: (c.start, c.end))
    if not cues:
        raise LipVoicerError(f"{path}: the subtitle file has no cue with text")
    return cues


def _read_srt(content: str) -> list[tuple[float, float, str]]:
    import srt  # noqa: PLC0415 - loaded when subtitles are given

    return [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in srt.parse(content)]


def _read_vtt(content: str) -> list[tuple[float, float, str]]:
    import io

    import webvtt  # noqa: PLC0415 - loaded when subtitles are given

    return [(c.start_time.in_milliseconds() / 1000.0, c.end_time.in_milliseconds() / 1000.0, c.text)
            for c in webvtt.from_buffer(io.StringIO(content))]


def assign_cues(cues: list[Cue], spans: list[tuple[float, float]]) -> list[list[int]]:
    """For each span (start, end in seconds) the indices of the cues it overlaps most (see module text)."""
    out: list[list[int]] = [[] for _ in spans]
    for k, cue in enumerate(cues):
        overlaps = [min(cue.end, b) - max(cue.start, a) for a, b in spans]
        if overlaps and max(overlaps) > 0:
            out[overlaps.index(max(overlaps))].append(k)
    return out
