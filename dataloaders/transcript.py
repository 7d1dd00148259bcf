"""LRS transcripts: `<clip>.txt` whose first line is `Text:  <words>`."""
from __future__ import annotations

import re
from pathlib import Path

from utils.errors import LipVoicerError

_MARKERS = re.compile(r"\{(LG|NS)\}", re.IGNORECASE)


def clean_transcript(text: str) -> str:
    """Lower case, `{LG}` / `{NS}` markers removed, whitespace collapsed."""
    return " ".join(_MARKERS.sub(" ", text).lower().split())


def read_transcript(path: str | Path) -> str:
    path = Path(path)
    try:
        first = path.read_text(encoding="utf-8", errors="replace").splitlines()[0]
    except FileNotFoundError:
        raise LipVoicerError(f"{path}: transcript not found") from None
    except IndexError:
        raise LipVoicerError(f"{path}: transcript is empty") from None
    if first.startswith("Text:"):
        first = first[len("Text:"):]
    return clean_transcript(first)
