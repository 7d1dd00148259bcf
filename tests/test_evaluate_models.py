"""The field's recogniser and speaker similarity on tiny models built here (nothing downloaded):
Whisper as recent papers run it (English transcription forced for a multilingual model such as
whisper-large-v3; Whisper's own English normaliser on reference and hypothesis), and the cosine similarity
of x-vector speaker embeddings (evaluate.speaker_model=hf:<model>)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.hf_tiny import tiny_wav2vec2, tiny_wavlm_sv, tiny_whisper
from tests.helpers import compose_cfg
from utils.errors import LipVoicerError

SR = 16000
TEXTS = {"spk/00001": "WE {LG} KNOW WHAT IT IS", "spk/00002": "THE COLOUR IS TWENTY FIVE"}
HYPOTHESES = {"spk/00001": "We know what it's.", "spk/00002": "The color is 25!"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("hf_models")
    return {"whisper": tiny_whisper(base / "whisper", multilingual=True, spelling={"colour": "color"}),
            "sv": tiny_wavlm_sv(base / "sv"), "ctc": tiny_wav2vec2(base / "ctc")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("gt")
    gen = root / "gen"
    rng = np.random.default_rng(0)
    for i, (vid, text) in enumerate(TEXTS.items()):
        wav = (0.1 * rng.standard_normal(SR // 2 + 1600 * i)).astype(np.float32)
        for folder in (root / "audios" / "test", gen):
            (folder / vid).parent.mkdir(parents=True, exist_ok=True)
            sf.write(folder / f"{vid}.wav", wav, SR)
        (root / "videos" / "test" / vid).parent.mkdir(parents=True, exist_ok=True)
        (root / "videos" / "test" / f"{vid}.txt").write_text(f"Text:  {text}\nConf:  3\n")
    return root, gen


def _cfg(root, gen, *extra):
    return compose_cfg([f"dataset.root={root}", f"evaluate.generated_dir={gen}", "evaluate.progress=false",
                        "evaluate.device=cpu", "evaluate.dnsmos=false", "evaluate.lse=false", *extra])


def test_whisper_reads_english_and_brings_its_normaliser(models, corpus):
    from pipelines.evaluation import build_recognizer

    root, gen = corpus
    rec = build_recognizer(_cfg(root, gen, f"evaluate.recognizer=hf:{models['whisper']}"))
    prompts = []
    hook = rec.model.model.decoder.register_forward_pre_hook(
        lambda m, args, kwargs: prompts.append(kwargs["input_ids"][0].tolist()), with_kwargs=True)
    try:
        rec([np.zeros(SR, np.float32)])
    finally:
        hook.remove()
    tok = rec.processor.tokenizer
    assert prompts[0][:4] == tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                                                         "<|notimestamps|>"])
    assert rec.text_normalizer_name == "Whisper EnglishTextNormalizer (transformers)"
    assert rec.text_normalizer("The colour, it's 25 Mr. Smith!") == "the color it is 25 mister smith"


def test_wer_uses_the_recognisers_normaliser_on_both_sides(models, corpus, tmp_path):
    from pipelines.evaluation import build_recognizer, run_evaluation

    root, gen = corpus
    cfg = _cfg(root, gen, f"evaluate.recognizer=hf:{models['whisper']}", f"evaluate.out_dir={tmp_path}")
    rec = build_recognizer(cfg)
    by_length = {len(sf.read(gen / f"{v}.wav")[0]): h for v, h in HYPOTHESES.items()}
    rec._batch = lambda wavs: [by_length[len(w)] for w in wavs]     # the model is untrained: fixed texts
    res = run_evaluation(cfg, recognizer=rec)
    assert res["corpus_wer"] == 0.0                                  # it's = it is, colour = color, 25 = twenty five
    rows = {r["video_id"]: r for r in csv.DictReader(open(tmp_path / "metrics_per_clip.csv"))}
    assert rows["spk/00002"]["reference"] == "the color is 25" and rows["spk/00002"]["hypothesis"] == "the color is 25"
    assert "| text normaliser | Whisper EnglishTextNormalizer (transformers) |" in res["table"]
    # the same texts under the project's normaliser (a CTC recogniser has none of its own): not equal
    ctc = build_recognizer(_cfg(root, gen, f"evaluate.recognizer=hf:{models['ctc']}"))
    ctc._batch = rec._batch
    other = run_evaluation(_cfg(root, gen, f"evaluate.out_dir={tmp_path / 'ctc'}"), recognizer=ctc)
    assert other["corpus_wer"] > 0 and other["settings"]["text_normalizer"].startswith("project")


def test_speaker_similarity_is_the_cosine_of_the_embeddings(models, corpus, tmp_path):
    from pipelines.evaluation import build_speaker_model, run_evaluation

    root, gen = corpus
    cfg = _cfg(root, gen, f"evaluate.speaker_model=hf:{models['sv']}", f"evaluate.out_dir={tmp_path}")
    sim = build_speaker_model(cfg)
    rng = np.random.default_rng(1)
    a, b = (0.1 * rng.standard_normal(SR // 2)).astype(np.float32), (0.1 * rng.standard_normal(9000)).astype(np.float32)
    ea, eb = sim.embedding(a), sim.embedding(b)
    assert sim(a, b) == pytest.approx(float(ea @ eb / (ea.norm() * eb.norm())), abs=1e-6)
    assert sim(a, a) == pytest.approx(1.0, abs=1e-5)
    res = run_evaluation(cfg, recognizer=None)
    assert [r["speaker_sim"] for r in res["rows"]] == pytest.approx([1.0, 1.0], abs=1e-5)   # generated = ground truth
    assert res["speaker_similarity"]["n_valid"]["speaker_sim"] == 2
    assert f"| speaker model | hf:{models['sv']} |" in res["table"]


def test_speaker_model_user_errors(models, corpus, tmp_path):
    from pipelines.evaluation import build_speaker_model

    root, gen = corpus
    with pytest.raises(LipVoicerError, match=r"evaluate.speaker_model=wavlm: use hf:<Hugging Face model id or folder>"):
        build_speaker_model(_cfg(root, gen, "evaluate.speaker_model=wavlm"))
    with pytest.raises(LipVoicerError, match=r"nowhere: model folder not found"):
        build_speaker_model(_cfg(root, gen, f"evaluate.speaker_model=hf:{tmp_path / 'nowhere'}"))
    with pytest.raises(LipVoicerError, match=r"not a speaker-verification model with an x-vector head") as e:
        build_speaker_model(_cfg(root, gen, f"evaluate.speaker_model=hf:{models['ctc']}"))
    assert "\n" not in str(e.value)
