"""The lip reader's token list and id -> text conversion.

For the published model (`labels_type` unigram5000): `<blank>` (id 0), the 5047
SentencePiece units of `unigram5000_units.txt` (first column of each line, ids
1..5047) and `<eos>` (id 5048, also used as start-of-sequence). Word pieces carry
the SentencePiece word-boundary mark `▁`; text is the pieces joined, `▁` turned
into spaces, `<eos>` removed.

A lip reader trained here (trainers/lipreader.py) writes its own units file in the same format:
`char_units` makes one of characters (upper case, as the published pieces) and the word mark, and
`TokenList.encode` turns text into unit ids (greedy longest match, words starting with the mark).
"""
from __future__ import annotations

from pathlib import Path

from utils.errors import LipVoicerError

WORD_MARK = "\u2581"


class TokenList:
    def __init__(self, tokens: list[str]):
        if len(tokens) < 3:
            raise ValueError("a token list needs at least <blank>, one unit and <eos>")
        self.tokens = list(tokens)
        self.blank = 0
        self.eos = self.sos = len(self.tokens) - 1

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def units(self) -> list[str]:
        """The units file's entries (ids 1 .. len - 2)."""
        return self.tokens[1:-1]

    def encode(self, text: str, source: str = "text") -> list[int]:
        """Unit ids of a normalised text: each word, upper case, with the word mark in front, split by greedy
        longest match into the units; a character no unit covers is a LipVoicerError naming `source`."""
        index = getattr(self, "_index", None)
        if index is None:
            index = self._index = {u: i for i, u in enumerate(self.tokens) if i not in (self.blank, self.eos)}
            self._longest = max(len(u) for u in index)
        ids = []
        for word in text.split():
            piece, i = WORD_MARK + word.upper(), 0
            while i < len(piece):
                for n in range(min(self._longest, len(piece) - i), 0, -1):
                    unit = index.get(piece[i:i + n])
                    if unit is not None:
                        ids.append(unit)
                        i += n
                        break
                else:
                    raise LipVoicerError(f"{source}: '{piece[i]}' of the word '{word}' is not covered by the lip "
                                         f"reader's {len(self.units)} units")
        return ids

    @classmethod
    def from_units_file(cls, path, fetch_hint: str | None = None) -> "TokenList":
        path = Path(path)
        if not path.is_file():
            hint = f"; fetch it with: {fetch_hint}" if fetch_hint else ""
            raise LipVoicerError(f"{path}: lip-reader token list not found{hint}")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise LipVoicerError(f"{path}: not a readable token list ({e})") from e
        units = []
        for i, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                raise LipVoicerError(f"{path}: line {i} is empty (expected '<unit> <id>')")
            units.append(parts[0])
        if not units:
            raise LipVoicerError(f"{path}: the token list is empty")
        return cls(["<blank>"] + units + ["<eos>"])

    @classmethod
    def from_char_list(cls, chars) -> "TokenList":
        return cls(list(chars))

    def raw_text(self, yseq) -> str:
        """Text as the original pipeline prints it (case kept): yseq includes the leading sos."""
        pieces = [self.tokens[int(i)] for i in list(yseq)[1:]]
        text = "".join(pieces).replace("<space>", " ").replace(WORD_MARK, " ").strip()
        return text.replace("<eos>", "")

    def text(self, yseq) -> str:
        """Lower-case words separated by single spaces."""
        return " ".join(self.raw_text(yseq).split()).lower()


def char_units(texts) -> list[str]:
    """A units list for texts: `<unk>`, then every character of their words (upper case) and the word mark,
    sorted (the order of the published units file)."""
    chars = {c for t in texts for c in str(t).upper() if not c.isspace()}
    return ["<unk>"] + sorted(chars | {WORD_MARK})


def units_file_text(units: list[str]) -> str:
    """The units file's content: one `<unit> <id>` line per unit, ids from 1 (as unigram5000_units.txt)."""
    bad = [u for u in units if not u or any(c.isspace() for c in u)]
    if bad:
        raise ValueError(f"units must be non-empty and without spaces: {bad[:3]}")
    return "".join(f"{u} {i}\n" for i, u in enumerate(units, 1))
