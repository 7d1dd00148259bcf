"""Turning the ASR's CTC logits into text: greedy decoding, and beam search with an n-gram LM.

Greedy: arg-max per frame, repeats merged, blanks (id 0) dropped.

Beam search: Flashlight's lexicon-free CTC beam search (PyPI wheel `flashlight-text`,
which bundles KenLM; the same engine as torchaudio's `ctc_decoder`) with a token-level
ARPA language model. As in the original (ctcdecode with a "character-based" KenLM
scorer), the LM's words are the BPE tokens spelled as single characters,
token id i -> chr(i + ngram_offset), and every emitted token adds
    alpha * ln P_LM(token | previous tokens) + beta
to the hypothesis score (the published 6-gram: beam 16, alpha 0.6, beta 1.0). No
end-of-sentence LM term is added (as in the original). Results are close to, but not
bit-identical with, ctcdecode's prefix beam search.
"""
from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import torch

from utils.errors import LipVoicerError

LN10 = math.log(10.0)


# ----------------------------------------------------------------------------- greedy
def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor | None = None, blank: int = 0) -> list[list[int]]:
    """(B, T, V) logits (or log-probs) -> token ids per clip."""
    if logits.dim() != 3:
        raise ValueError(f"logits must be (batch, frames, vocab), got {tuple(logits.shape)}")
    best = logits.argmax(dim=-1).cpu()
    lens = [best.shape[1]] * best.shape[0] if lengths is None else [int(n) for n in lengths]
    out = []
    for b, n in enumerate(lens):
        seq = best[b, :n].tolist()
        out.append([k for k, _ in itertools.groupby(seq) if k != blank])
    return out


# ----------------------------------------------------------------------------- beam search
def _flashlight():
    try:
        from flashlight.lib.text import decoder as fl_decoder
        from flashlight.lib.text.dictionary import Dictionary
    except ImportError as e:
        raise LipVoicerError("beam search needs the 'flashlight-text' package (pip install flashlight-text)") from e
    return fl_decoder, Dictionary


def _kenlm_class():
    try:
        from flashlight.lib.text.decoder.kenlm import KenLM
    except ImportError:  # older flashlight-text
        from flashlight.lib.text.decoder import KenLM
    return KenLM


def _token_lm_class():
    fl, _ = _flashlight()

    class TokenNgramLM(fl.LM):
        """KenLM over token symbols, scored as alpha * ln P + beta per token, no end-of-sentence term."""

        def __init__(self, kenlm, alpha: float, beta: float):
            super().__init__()
            self.kenlm, self.alpha, self.beta = kenlm, float(alpha), float(beta)

        def start(self, start_with_nothing):
            return self.kenlm.start(start_with_nothing)

        def score(self, state, token_index):
            next_state, log10p = self.kenlm.score(state, token_index)
            return next_state, self.alpha * LN10 * log10p + self.beta

        def finish(self, state):
            next_state, _ = self.kenlm.finish(state)
            return next_state, 0.0

    return TokenNgramLM


class CTCBeamSearchDecoder:
    """Beam search over (B, T, V) logits; optionally with a token-level ARPA / KenLM-binary LM.

    decode_ids(logits, lengths) -> list of token-id lists; decode(...) -> texts (needs a tokenizer).
    """

    def __init__(self, vocab_size: int, lm_path: str | os.PathLike | None = None, beam_size: int = 16,
                 alpha: float = 0.6, beta: float = 1.0, ngram_offset: int = 100, beam_threshold: float = 1000.0,
                 log_add: bool = True, blank: int = 0, tokenizer=None):
        fl, Dictionary = _flashlight()
        self.vocab_size, self.blank, self.tokenizer = int(vocab_size), int(blank), tokenizer
        symbols = [chr(i + int(ngram_offset)) for i in range(self.vocab_size)]
        if lm_path is not None:
            lm_path = Path(lm_path)
            if not lm_path.is_file():
                raise LipVoicerError(f"{lm_path}: n-gram language model not found "
                                     "(fetch it with: python download_checkpoints.py --only ngram_lm)")
            try:
                kenlm = _kenlm_class()(str(lm_path), Dictionary(symbols))
            except Exception as e:  # noqa: BLE001 - KenLM's own messages are long; keep the last line
                reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise LipVoicerError(f"{lm_path}: not a readable ARPA / KenLM file ({reason})") from None
            self.lm = _token_lm_class()(kenlm, alpha, beta)
        else:
            self.lm = fl.ZeroLM()
        self.lm_path = lm_path
        opts = fl.LexiconFreeDecoderOptions(
            beam_size=int(beam_size), beam_size_token=self.vocab_size, beam_threshold=float(beam_threshold),
            lm_weight=1.0, sil_score=0.0, log_add=bool(log_add), criterion_type=fl.CriterionType.CTC)
        # The blank doubles as Flashlight's "silence" token, so no real token is treated specially.
        self._decoder = fl.LexiconFreeDecoder(opts, self.lm, self.blank, self.blank, [])

    def decode_ids(self, logits: torch.Tensor, lengths: torch.Tensor | None = None) -> list[list[int]]:
        if logits.dim() != 3 or logits.shape[-1] != self.vocab_size:
            raise ValueError(f"logits must be (batch, frames, {self.vocab_size}), got {tuple(logits.shape)}")
        logp = torch.log_softmax(logits.detach().float(), dim=-1).cpu().contiguous()
        lens = [logp.shape[1]] * logp.shape[0] if lengths is None else [int(n) for n in lengths]
        out = []
        for b, n in enumerate(lens):
            em = logp[b, :n].contiguous()
            if n == 0:
                out.append([])
                continue
            results = self._decoder.decode(em.data_ptr(), n, self.vocab_size)
            path = results[0].tokens if results else []
            out.append([k for k, _ in itertools.groupby(path) if k != self.blank and 0 <= k < self.vocab_size])
        return out

    def decode(self, logits: torch.Tensor, lengths: torch.Tensor | None = None) -> list[str]:
        if self.tokenizer is None:
            raise ValueError("decode() needs a tokenizer; use decode_ids()")
        return [self.tokenizer.decode(ids) for ids in self.decode_ids(logits, lengths)]


def greedy_texts(logits: torch.Tensor, lengths: torch.Tensor | None, tokenizer) -> list[str]:
    return [tokenizer.decode(ids) for ids in greedy_decode(logits, lengths)]


def build_beam_decoder(cfg, tokenizer=None, use_lm: bool = True) -> CTCBeamSearchDecoder:
    """The published decoder from the config: beam 16 with `<checkpoints_dir>/<asr.ngram_lm>` (alpha 0.6, beta 1.0)."""
    a = cfg["asr"]
    d = a["decoder"]
    lm = Path(cfg["paths"]["checkpoints_dir"]) / a["ngram_lm"] if use_lm else None
    return CTCBeamSearchDecoder(int(a["vocab_size"]), lm, beam_size=int(d["beam_size"]), alpha=float(d["ngram_alpha"]),
                                beta=float(d["ngram_beta"]), ngram_offset=int(d["ngram_offset"]),
                                beam_threshold=float(d["beam_threshold"]), log_add=bool(d["log_add"]),
                                tokenizer=tokenizer)


def write_token_arpa(path: str | os.PathLike, ngrams: dict[int, dict[tuple[int, ...], tuple[float, float]]],
                     ngram_offset: int = 100) -> Path:
    """Write a small ARPA file over token ids (tests, toy LMs): ngrams[n][(ids...)] = (log10 p, log10 backoff).

    Ids are spelled chr(id + ngram_offset); the strings '<s>', '</s>', '<unk>' may be given as -1, -2, -3.
    """
    special = {-1: "<s>", -2: "</s>", -3: "<unk>"}

    def word(i: int) -> str:
        return special[i] if i in special else chr(i + ngram_offset)

    lines = ["\\data\\"] + [f"ngram {n}={len(ngrams[n])}" for n in sorted(ngrams)] + [""]
    for n in sorted(ngrams):
        lines.append(f"\\{n}-grams:")
        for ids, (lp, bo) in ngrams[n].items():
            entry = f"{lp:.6f}\t{' '.join(word(i) for i in ids)}"
            lines.append(entry + (f"\t{bo:.6f}" if n < max(ngrams) else ""))
        lines.append("")
    lines.append("\\end\\")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
