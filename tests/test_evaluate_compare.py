"""DNSMOS, Hugging Face recognisers, other folder layouts and comparisons (issue 17)."""
from __future__ import annotations

import json
import logging
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from pipelines.compare import bootstrap, compare_rows, run_comparison
from pipelines.evaluation import build_recognizer, guidance_warning, id_candidates, run_evaluation
from pipelines.metrics import dnsmos_scores
from tests.helpers import REPO_ROOT
from tests.hf_tiny import tiny_wav2vec2, tiny_whisper
from tests import test_evaluate as te
from tests.test_evaluate import SR, Oracle, _cfg, make_generated
from utils.errors import LipVoicerError

corpus = te.corpus  # the ground-truth fixture of tests/test_evaluate.py


def _speech():
    from dataloaders.synthetic import espeak

    if espeak.available():
        u = espeak.synthesize("the quick brown fox jumps over the lazy dog")
        x = np.asarray(u.samples, dtype=np.float32)
        return (0.5 * x / np.abs(x).max()).astype(np.float32), int(u.sample_rate)
    from tests.test_evaluate import speechlike
    return speechlike(3.0, 1), SR


def test_dnsmos_prefers_clean_speech_to_noisy():
    x, sr = _speech()
    rng = np.random.default_rng(0)
    noisy = x + rng.standard_normal(x.shape).astype(np.float32) * np.sqrt(np.mean(x ** 2))   # 0 dB SNR
    noisy = (0.9 * noisy / np.abs(noisy).max()).astype(np.float32)
    clean, bad = dnsmos_scores(x, sr), dnsmos_scores(noisy, sr)
    assert set(clean) == {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"}
    assert all(1.0 <= v <= 5.0 for v in clean.values())
    assert clean["dnsmos_ovrl"] > bad["dnsmos_ovrl"] + 0.5 and clean["dnsmos_bak"] > bad["dnsmos_bak"]
    assert all(math.isnan(v) for v in dnsmos_scores(np.zeros(100, np.float32)).values())


@pytest.mark.slow
def test_dnsmos_is_on_by_default_and_in_the_report(corpus, tmp_path):
    root, wavs = corpus
    gen = make_generated(tmp_path / "gen", wavs, with_orphan=False)
    res = run_evaluation(_cfg(root, gen, "evaluate.dnsmos=true"), recognizer=Oracle(wavs))
    assert all(res["dnsmos"]["n_valid"][k] == 3 for k in res["dnsmos"]["n_valid"])
    assert 1.0 < res["dnsmos"]["means"]["dnsmos_ovrl"] < 5.0
    assert "| DNSMOS OVRL |" in res["table"] and "| recogniser | oracle |" in res["table"]
    assert "dnsmos_ovrl" in (gen / "metrics_per_clip.csv").read_text().splitlines()[0]
    from omegaconf import OmegaConf
    assert OmegaConf.load(REPO_ROOT / "configs/evaluate/default.yaml")["dnsmos"] is True


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    base = tmp_path_factory.mktemp("hf")
    return {"ctc": tiny_wav2vec2(base / "w2v"), "seq2seq": tiny_whisper(base / "whisper")}


@pytest.mark.parametrize("kind", ["ctc", "seq2seq"])
def test_hugging_face_recognizer_end_to_end(corpus, tiny_hf, tmp_path, kind):
    root, wavs = corpus
    gen = make_generated(tmp_path / "gen", wavs, with_orphan=False)
    cfg = _cfg(root, gen, f"evaluate.recognizer=hf:{tiny_hf[kind]}", "evaluate.batch_size=2")
    rec = build_recognizer(cfg)
    assert rec.kind == kind and rec.name == f"hf:{tiny_hf[kind]}"
    texts = rec([wavs["spk2/00001"], wavs["spk2/00002"]])
    assert len(texts) == 2 and all(isinstance(t, str) and "<|" not in t for t in texts)
    res = run_evaluation(cfg)
    assert res["settings"]["recognizer"] == f"hf:{tiny_hf[kind]}" and res["corpus_wer"] is not None
    assert f"| recogniser | hf:{tiny_hf[kind]} |" in res["table"] and "recognizer_warning" not in res


def test_hugging_face_recognizer_user_errors(corpus, tmp_path):
    root, _ = corpus
    with pytest.raises(LipVoicerError, match="nowhere: model folder not found"):
        build_recognizer(_cfg(root, tmp_path, f"evaluate.recognizer=hf:{tmp_path / 'nowhere'}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LipVoicerError, match="cannot load the model") as e:
        build_recognizer(_cfg(root, tmp_path, f"evaluate.recognizer=hf:{tmp_path / 'empty'}"))
    assert "\n" not in str(e.value)


def test_guidance_classifier_as_recogniser_is_warned(corpus, tmp_path):
    from pipelines.evaluation import ASRRecognizer

    root, _ = corpus
    rec = ASRRecognizer.__new__(ASRRecognizer)
    assert "guided generation" in guidance_warning(_cfg(root, tmp_path), rec)
    assert guidance_warning(_cfg(root, tmp_path, f"evaluate.asr_ckpt={tmp_path / 'other.ckpt'}"), rec) is None
    assert guidance_warning(_cfg(root, tmp_path), Oracle({})) is None


def test_id_candidates():
    assert id_candidates("LRS3/test/spk/00001") == ["LRS3/test/spk/00001", "test/spk/00001", "spk/00001",
                                                    "00001"]
    assert "spk_a/00001" in id_candidates("spk_a_00001")


def test_folder_in_another_layout_is_matched_by_id(corpus, tmp_path, caplog):
    root, wavs = corpus
    other = tmp_path / "published" / "LRS3_test"
    for i, (vid, wav) in enumerate(wavs.items()):
        p = other / (f"audio/{vid}.wav" if i == 0 else f"{vid.replace('/', '_')}.wav")
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, wav, SR)
    sf.write(other / "stray.wav", wavs["spk2/00001"], SR)
    with caplog.at_level(logging.INFO, logger="pipelines.evaluation"):
        res = run_evaluation(_cfg(root, other, f"evaluate.out_dir={tmp_path / 'out'}", "evaluate.min_coverage=1"),
                             recognizer=Oracle(wavs))
    assert [r["video_id"] for r in res["rows"]] == sorted(wavs) and res["corpus_wer"] == 0
    assert res["settings"]["n_matched"] == 3 and res["settings"]["skipped"] == ["stray"]
    assert any("matched 3 of 4 generated wavs" in r.getMessage() and "1 unmatched" in r.getMessage()
               for r in caplog.records)


def test_bootstrap_interval_and_paired_difference():
    rng = np.random.default_rng(1)
    a = [{"video_id": f"c{i}", "stoi": float(v), "wer": 0.5, "word_errors": 1, "ref_words": 2}
         for i, v in enumerate(rng.normal(0.8, 0.05, 40))]
    b = [dict(r, stoi=r["stoi"] - 0.1, word_errors=0, wer=0.0) for r in a]
    v, lo, hi = bootstrap("stoi", a, 500, np.random.default_rng(0))
    assert lo < v < hi and hi - lo < 0.05
    res = compare_rows({"A": a, "B": b}, 500)
    d, dlo, dhi = res["differences"]["B"]["stoi"]
    assert d == pytest.approx(-0.1) and dlo == pytest.approx(-0.1) and dhi == pytest.approx(-0.1)
    assert res["means"]["A"]["corpus_wer"][0] == 0.5 and res["differences"]["B"]["corpus_wer"][0] == -0.5


def test_comparison_of_two_folders_writes_table_and_figure(corpus, tmp_path):
    root, wavs = corpus
    clean = make_generated(tmp_path / "clean", wavs, with_orphan=False)
    noisy = make_generated(tmp_path / "noisy", wavs, noise_snr_db=5.0, with_orphan=False)
    out = tmp_path / "cmp"
    cfg = _cfg(root, clean, f"evaluate.compare=[{clean},{noisy}]", f"evaluate.compare_out={out}",
               "evaluate.bootstrap=200")
    res = run_comparison(cfg, recognizer=Oracle(wavs, wrong={"spk2/00002": "THE DOG SAT"}))
    md = (out / "comparison.md").read_text()
    assert md.startswith("| metric | clean | noisy | noisy - clean |")
    assert "| WER (%, corpus) ↓ |" in md and "| WER (%, per-clip mean) ↓ |" in md and "[" in md
    assert "recogniser: oracle" in md and "3 clips common to all systems" in md
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["differences"]["noisy"]["stoi"][0] < 0 and summary["n_common"] == 3
    png = (out / "comparison.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) < 200_000
    assert res["means"]["clean"]["corpus_wer"][0] == pytest.approx(4 / 13)


def test_comparison_user_errors(corpus, tmp_path):
    root, wavs = corpus
    gen = make_generated(tmp_path / "gen", wavs, with_orphan=False)
    with pytest.raises(LipVoicerError, match="two or more"):
        run_comparison(_cfg(root, gen, f"evaluate.compare=[{gen}]"), recognizer=Oracle(wavs))
    with pytest.raises(LipVoicerError, match="compare_labels"):
        run_comparison(_cfg(root, gen, f"evaluate.compare=[{gen},{gen}]", "evaluate.compare_labels=[a]"),
                       recognizer=Oracle(wavs))


def test_script_compares_in_one_line_on_error(corpus, tmp_path):
    root, wavs = corpus
    gen = make_generated(tmp_path / "gen", wavs, with_orphan=False)
    r = subprocess.run([sys.executable, "evaluate.py", f"evaluate.compare=[{gen},{tmp_path / 'missing'}]",
                        f"dataset.root={root}", "evaluate.recognizer=none", "evaluate.dnsmos=false",
                        "evaluate.progress=false", f"hydra.run.dir={tmp_path / 'h'}"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'missing'}: ")
