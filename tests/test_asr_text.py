"""ASR text side: transcript normalisation, BPE tokenizer (training + wrapper), greedy and LM beam-search decoding."""
from __future__ import annotations

import random

import pytest
import torch

from dataloaders.tokenizer import BPETokenizer, collect_lrs_transcripts, main as bpe_main, train_bpe
from models.asr.decoding import CTCBeamSearchDecoder, greedy_decode, greedy_texts, write_token_arpa
from utils.errors import LipVoicerError
from dataloaders.text import normalize_text, transcript_from_lrs_text

WORDS = ("the quick brown fox jumps over a lazy dog and we don't know what it is about "
         "cat sat on mat she sells sea shells by shore").split()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(400)]
    path = train_bpe(texts, tmp_path_factory.mktemp("bpe") / "tiny48.model", vocab_size=48)
    return BPETokenizer(path)


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("raw, norm", [
    ("WE DON'T {LG} KNOW, REALLY!", "we don't know really"),
    ("  HELLO-WORLD {NS}  ", "hello world"),
    ("'QUOTED' WORDS ARE 'FINE'", "quoted words are fine"),
    ("Caf\u00e9 na\u00efve it\u2019s", "cafe naive it's"),
    ("{NS}", ""),
])
def test_normalize_text(raw, norm):
    assert normalize_text(raw) == norm


def test_transcript_from_lrs_text():
    assert transcript_from_lrs_text("Text:  AND {LG} IT'S DONE.\nConf:  3\n\nWORD START END\n") == "and it's done"
    assert transcript_from_lrs_text("") == ""


# ----------------------------------------------------------------------------- tokenizer
def test_tokenizer_roundtrip_and_blank(tokenizer):
    assert tokenizer.vocab_size == 48
    assert tokenizer.pieces([0]) == ["<unk>"]            # id 0 = <unk> = CTC blank
    text = "The lazy DOG, she sells sea shells!"
    ids = tokenizer.encode(text)
    assert ids and 0 not in ids
    assert tokenizer.decode(ids) == normalize_text(text)
    assert tokenizer.decode([0] + ids + [0]) == normalize_text(text)   # blanks are ignored


def test_tokenizer_errors(tmp_path):
    with pytest.raises(LipVoicerError, match="nope.model: tokenizer model not found"):
        BPETokenizer(tmp_path / "nope.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"<html>not a model</html>")
    with pytest.raises(LipVoicerError, match="bad.model: not a SentencePiece model"):
        BPETokenizer(bad)
    with pytest.raises(LipVoicerError, match=r"cannot train a 5000-piece tokenizer on 2 sentences"):
        train_bpe(["a cat", "a dog"], tmp_path / "big.model", vocab_size=5000)
    assert not (tmp_path / "big.model").exists()
    with pytest.raises(LipVoicerError, match="must end in .model"):
        train_bpe(["a cat"], tmp_path / "x.bin", vocab_size=8)
    with pytest.raises(LipVoicerError, match="no training text"):
        train_bpe(["{NS}", "  "], tmp_path / "y.model", vocab_size=8)


def test_training_command_on_transcripts_dir(tmp_path, capsys):
    rng = random.Random(1)
    for i in range(60):
        d = tmp_path / "videos" / "pretrain" / f"spk{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        words = " ".join(rng.choice(WORDS) for _ in range(6)).upper()
        (d / f"{i:05d}.txt").write_text(f"Text:  {words} {{LG}}\nConf:  4\n")
    (tmp_path / "videos" / "notes.txt").write_text("not a transcript\n")
    assert len(collect_lrs_transcripts(tmp_path / "videos")) == 60
    out = tmp_path / "tok" / "bpe40.model"
    assert bpe_main(["--transcripts-dir", str(tmp_path / "videos"), "--vocab-size", "40", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    tok = BPETokenizer(out)
    assert tok.vocab_size == 40 and out.with_suffix(".vocab").is_file()
    with pytest.raises(LipVoicerError, match="no transcripts"):
        collect_lrs_transcripts(tmp_path / "tok")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(5)) for _ in range(50)))
    assert bpe_main(["--corpus", str(corpus), "--vocab-size", "32", "--out", str(tmp_path / "c.model")]) == 0
    assert BPETokenizer(tmp_path / "c.model").vocab_size == 32


# ----------------------------------------------------------------------------- decoding
def logits_for(ids: list[int], vocab: int, frames_per_token: int = 2) -> torch.Tensor:
    """A logit matrix whose best path spells `ids` (blank frames between tokens)."""
    rows = []
    for i in ids:
        rows += [i] * frames_per_token + [0]
    rows = [0] + rows
    x = torch.full((1, len(rows), vocab), -4.0)
    for t, k in enumerate(rows):
        x[0, t, k] = 4.0
    return x


def test_greedy_and_beam_decode_constructed_logits(tokenizer):
    text = "she sells sea shells by the shore"
    ids = tokenizer.encode(text)
    logits = logits_for(ids, tokenizer.vocab_size)
    assert greedy_decode(logits) == [ids]
    assert greedy_texts(logits, None, tokenizer) == [text]
    beam = CTCBeamSearchDecoder(tokenizer.vocab_size, None, beam_size=16, tokenizer=tokenizer)
    assert beam.decode(logits) == [text]
    # repeated token with a blank in between stays twice; lengths cut the batch
    batch = torch.cat([logits_for([5, 5, 7], tokenizer.vocab_size), logits_for([5, 5, 7], tokenizer.vocab_size)])
    assert greedy_decode(batch, torch.tensor([batch.shape[1], 4])) == [[5, 5, 7], [5]]
    assert beam.decode_ids(batch, torch.tensor([batch.shape[1], 4])) == [[5, 5, 7], [5]]


def _lm_case(tmp_path):
    """Frame 1 slightly prefers token 2 over 3 acoustically; the LM strongly prefers 1 -> 3."""
    v = 6
    uni = {(-1,): (-99.0, 0.0), (-2,): (-1.0, 0.0), (-3,): (-3.0, 0.0)}
    uni.update({(i,): (-0.7, 0.0) for i in range(1, v)})
    lm = write_token_arpa(tmp_path / "toy.arpa", {1: uni, 2: {(1, 3): (-0.05, 0.0), (1, 2): (-3.0, 0.0)}})
    logits = torch.full((1, 4, v), -5.0)
    logits[0, 0, 1] = 3.0
    logits[0, 1, 2], logits[0, 1, 3] = 1.0, 0.7
    logits[0, 2:, 0] = 3.0
    return v, lm, logits


def test_ngram_lm_changes_the_result(tmp_path):
    v, lm, logits = _lm_case(tmp_path)
    assert greedy_decode(logits) == [[1, 2]]
    assert CTCBeamSearchDecoder(v, None, beam_size=16).decode_ids(logits) == [[1, 2]]
    assert CTCBeamSearchDecoder(v, lm, beam_size=16, alpha=0.6, beta=1.0).decode_ids(logits) == [[1, 3]]
    assert CTCBeamSearchDecoder(v, lm, beam_size=16, alpha=0.0, beta=0.0).decode_ids(logits) == [[1, 2]]


def test_beta_rewards_more_tokens(tmp_path):
    v, lm, _ = _lm_case(tmp_path)
    logits = torch.full((1, 3, v), -5.0)
    logits[0, 0, 4] = 3.0
    logits[0, 1, 0], logits[0, 1, 5] = 1.0, 0.2     # blank slightly better than an extra token
    logits[0, 2, 0] = 3.0
    assert CTCBeamSearchDecoder(v, lm, alpha=0.0, beta=0.0).decode_ids(logits) == [[4]]
    assert CTCBeamSearchDecoder(v, lm, alpha=0.0, beta=2.0).decode_ids(logits) == [[4, 5]]


def test_decoder_errors(tmp_path):
    with pytest.raises(LipVoicerError, match="none.arpa: n-gram language model not found"):
        CTCBeamSearchDecoder(8, tmp_path / "none.arpa")
    bad = tmp_path / "bad.arpa"
    bad.write_text("this is not an arpa file\n")
    with pytest.raises(LipVoicerError, match="bad.arpa: not a readable ARPA / KenLM file"):
        CTCBeamSearchDecoder(8, bad)
    with pytest.raises(ValueError, match="decode\\(\\) needs a tokenizer"):
        CTCBeamSearchDecoder(8, None).decode(torch.zeros(1, 3, 8))
    with pytest.raises(ValueError, match="logits must be"):
        CTCBeamSearchDecoder(8, None).decode_ids(torch.zeros(1, 3, 9))
