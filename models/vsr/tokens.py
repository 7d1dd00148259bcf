"""The lip reader's token list and id -> text conversion.

For the published model (`labels_type` unigram5000): `<blank>` (id 0), the 5047
SentencePiece units of `unigram5000_units.txt` (first column of each line, ids
1..5047) and `<eos>` (id 5048, also used as start-of-sequence). Word pieces carry
the SentencePiece word-boundary mark `▁`; text is the pieces joined, `▁` turned
into spaces, `<eos>` removed.
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
