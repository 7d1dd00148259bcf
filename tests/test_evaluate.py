"""evaluate.py / pipelines/evaluation.py: scoring generated wavs against the ground truth."""
from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import subprocess
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf

from tests.helpers import REPO_ROOT, compose_cfg, run_script_in_process
from utils.errors import LipVoicerError
from pipelines.evaluation import ASRRecognizer, build_recognizer, run_evaluation

SR = 16000
TEXTS = {"spk2/00001": "HELLO WORLD", "spk2/00002": "THE CAT SAT ON A MAT", "spk3/00001": "WE {LG} KNOW WHAT IT IS"}
TINY_ASR = ["asr.vocab_size=40", "asr.stem_filters=8", "asr.dims=[16,24,32]", "asr.num_blocks=[1,1,1]",
            "asr.num_heads=2", "asr.conv_kernel=5", "asr.ff_ratio=2", "asr.step_embed_dim_in=16",
            "asr.step_embed_dim_mid=32", "asr.step_embed_dim_out=32", "asr.max_pos_encoding=2000"]


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Harmonic tones switched on and off (syllable-like) plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 30 * seed
    env = (np.sin(2 * np.pi * (3 + seed) * t) > -0.2).astype(np.float32)
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    return (0.2 * env * tone + 0.005 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """Ground truth in the LRS3 layout: <root>/audios/test/<id>.wav and <root>/videos/test/<id>.txt."""
    root = tmp_path_factory.mktemp("eval_gt")
    wavs = {}
    for i, (vid, text) in enumerate(TEXTS.items()):
        wav = speechlike(1.2 + 0.3 * i, i)
        wavs[vid] = wav
        (root / "audios" / "test" / vid).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / "audios" / "test" / f"{vid}.wav", wav, SR)
        (root / "videos" / "test" / vid).parent.mkdir(parents=True, exist_ok=True)
        (root / "videos" / "test" / f"{vid}.txt").write_text(f"Text:  {text}\nConf:  3\n")
    return root, wavs


def make_generated(folder: Path, wavs: dict[str, np.ndarray], noise_snr_db: float | None = None,
                   with_orphan: bool = True) -> Path:
    """Generated copies of the ground truth (optionally noisy), plus files that must be ignored."""
    rng = np.random.default_rng(7)
    for vid, wav in wavs.items():
        out = wav.copy()
        if noise_snr_db is not None:
            p = float(np.mean(wav ** 2))
            out = (wav + rng.standard_normal(wav.shape) * math.sqrt(p / 10 ** (noise_snr_db / 10))).astype(np.float32)
        (folder / vid).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{vid}.wav", out, SR)
        sf.write(folder / f"{vid}_gt.wav", wav, SR)              # ignored
        (folder / f"{vid}.txt").write_text(f"gt: {TEXTS[vid].lower()}\nlipread: something else\n")
    sf.write(folder / "spk2" / ".00001.wav.tmp.wav", wavs["spk2/00001"], SR)   # hidden temp file: ignored
    if with_orphan:
        (folder / "spk9").mkdir(exist_ok=True)
        sf.write(folder / "spk9" / "00042.wav", wavs["spk2/00001"], SR)        # no ground truth: skipped
    return folder


class Oracle:
    """Recognises a wav by finding the ground-truth clip it equals (upper case, as LRS writes it)."""

    name = "oracle"

    def __init__(self, wavs: dict[str, np.ndarray], wrong: dict[str, str] | None = None):
        self.wavs, self.wrong = wavs, wrong or {}

    def __call__(self, wavs):
        out = []
        for w in wavs:
            vid = next((v for v, ref in self.wavs.items()
                        if len(ref) == len(w) and np.allclose(ref, w, atol=1e-3)), None)
            out.append("" if vid is None else self.wrong.get(vid, TEXTS[vid]))
        return out


def _cfg(root: Path, gen: Path, *extra: str):
    return compose_cfg([f"dataset.root={root}", f"evaluate.generated_dir={gen}", "evaluate.progress=false",
                        "evaluate.device=cpu", "evaluate.dnsmos=false", *extra])


def test_identical_audio_scores_perfectly(corpus, tmp_path, caplog):
    root, wavs = corpus
    gen = make_generated(tmp_path / "gen", wavs)
    with caplog.at_level(logging.WARNING, logger="pipelines.evaluation"):
        res = run_evaluation(_cfg(root, gen), recognizer=Oracle(wavs))
    assert any("spk9/00042" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    assert res["n_clips"] == 3 and res["settings"]["skipped"] == ["spk9/00042"]
    assert res["corpus_wer"] == 0 and res["corpus_cer"] == 0
    m = res["means"]
    assert m["wer"] == 0 and m["stoi"] > 0.99 and m["estoi"] > 0.99 and m["pesq"] > 4.0
    assert m["log_mel_l1"] == pytest.approx(0, abs=1e-3) and m["mcd"] == pytest.approx(0, abs=1e-2)
    # the three files, with one row per scored clip
    assert {p.name for p in res["outputs"].values()} == {"metrics_per_clip.csv", "metrics_summary.json", "metrics.md"}
    with open(gen / "metrics_per_clip.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["video_id"] for r in rows] == sorted(TEXTS)
    assert rows[2]["reference"] == "we know what it is" and float(rows[0]["wer"]) == 0
    summary = json.loads((gen / "metrics_summary.json").read_text())
    assert summary["n_clips"] == 3 and summary["corpus_wer"] == 0 and summary["settings"]["recognizer"] == "oracle"
    assert set(summary["means"]) == {"wer", "cer", "stoi", "estoi", "pesq", "log_mel_l1", "mcd"}
    md = (gen / "metrics.md").read_text()
    assert md.startswith("| metric | value |") and "| clips | 3 |" in md and "| WER (%) | 0.00 |" in md
    assert "| coverage | 3 of 3 clips (100.0 %) |" in md
    assert summary["coverage"]["scored"] == 3 and summary["coverage"]["expected"] == 3
    assert summary["coverage"]["fraction"] == 1.0 and summary["coverage"]["missing"] == []
    assert not list(gen.rglob(".metrics*"))                      # no temporary files left


def test_noisy_audio_scores_worse(corpus, tmp_path):
    root, wavs = corpus
    clean = run_evaluation(_cfg(root, make_generated(tmp_path / "clean", wavs, with_orphan=False)), recognizer=None)
    noisy = run_evaluation(_cfg(root, make_generated(tmp_path / "noisy", wavs, noise_snr_db=5.0,
                                                       with_orphan=False)), recognizer=None)
    c, n = clean["means"], noisy["means"]
    assert n["stoi"] < c["stoi"] - 0.05 and n["estoi"] < c["estoi"] - 0.05
    assert n["pesq"] < c["pesq"] - 1.0
    assert n["log_mel_l1"] > c["log_mel_l1"] + 0.1 and n["mcd"] > c["mcd"] + 0.5
    assert noisy["corpus_wer"] is None and noisy["means"]["wer"] is None     # no recogniser: no WER
    assert "| WER (%) | n/a |" in noisy["table"]


def test_corpus_wer_is_jiwer_over_all_words(corpus, tmp_path):
    root, wavs = corpus
    wrong = {"spk2/00002": "the hat sat on mat", "spk3/00001": "we know what is it"}
    gen = make_generated(tmp_path / "gen", wavs, with_orphan=False)
    # gt text from the generated <id>.txt `gt:` line when the text folder has none
    empty = tmp_path / "no_text"
    empty.mkdir()
    res = run_evaluation(_cfg(root, gen, f"evaluate.gt_text_dir={empty}", f"evaluate.out_dir={tmp_path / 'o'}",
                              "evaluate.batch_size=2"), recognizer=Oracle(wavs, wrong))
    refs = ["hello world", "the cat sat on a mat", "we know what it is"]
    hyps = ["hello world", wrong["spk2/00002"], wrong["spk3/00001"]]
    assert [r["reference"] for r in res["rows"]] == refs
    assert res["corpus_wer"] == pytest.approx(jiwer.wer(refs, hyps))
    assert res["corpus_cer"] == pytest.approx(jiwer.cer(refs, hyps))
    assert res["rows"][1]["wer"] == pytest.approx(jiwer.wer(refs[1], hyps[1]))
    assert (tmp_path / "o" / "metrics_summary.json").is_file() and not (gen / "metrics_summary.json").exists()


def test_silent_clip_gives_nan_pesq_with_warning(corpus, tmp_path, caplog):
    root, wavs = corpus
    gen = tmp_path / "gen"
    (gen / "spk2").mkdir(parents=True)
    sf.write(gen / "spk2" / "00001.wav", np.zeros_like(wavs["spk2/00001"]), SR)
    with caplog.at_level(logging.WARNING, logger="pipelines.evaluation"):
        res = run_evaluation(_cfg(root, gen, "evaluate.min_coverage=0"), recognizer=None)   # 1 of 3 clips
    assert math.isnan(res["rows"][0]["pesq"]) and res["means"]["pesq"] is None
    assert any("PESQ" in r.getMessage() for r in caplog.records)
    assert json.loads((gen / "metrics_summary.json").read_text())["means"]["pesq"] is None


@pytest.fixture(scope="module")
def tiny_asr(tmp_path_factory) -> Path:
    """checkpoints/ with a 40-piece tokenizer and a random-weight tiny ASR fine-tune for lrs3."""
    import torch

    from models.asr import build_asr, save_asr_checkpoint
    from dataloaders.tokenizer import train_bpe

    ck = tmp_path_factory.mktemp("eval_asr") / "checkpoints"
    cfg = compose_cfg([f"paths.checkpoints_dir={ck}", *TINY_ASR])
    words = "hello world the cat sat on a mat we know what it is about she sells sea shells".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=rng.integers(3, 8))) for _ in range(200)]
    train_bpe(texts, ck / str(cfg.asr.tokenizer), vocab_size=40)
    torch.manual_seed(0)
    save_asr_checkpoint(build_asr(cfg.asr), None, 0, ck / str(cfg.asr.checkpoints.lrs3))
    return ck


def test_real_asr_recognizer_runs(corpus, tiny_asr, tmp_path):
    root, wavs = corpus
    gen = make_generated(tmp_path / "gen", wavs, with_orphan=False)
    cfg = _cfg(root, gen, f"paths.checkpoints_dir={tiny_asr}", *TINY_ASR)
    rec = build_recognizer(cfg)
    assert isinstance(rec, ASRRecognizer) and rec.batch_size == 1
    batch = list(wavs.values())
    texts = rec(batch)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert [rec([w])[0] for w in batch[::-1]] == texts[::-1]     # each clip read on its own, order kept
    batched = build_recognizer(_cfg(root, gen, f"paths.checkpoints_dir={tiny_asr}", *TINY_ASR,
                                    "evaluate.batch_size=2"))
    assert batched.batch_size == 2 and len(batched(batch)) == 3
    res = run_evaluation(cfg)                                 # the configured recogniser, end to end
    assert res["settings"]["recognizer"] == "asr" and res["settings"]["decoder"] == "greedy"
    assert res["n_clips"] == 3 and res["corpus_wer"] is not None and res["corpus_wer"] >= 0
    beam = build_recognizer(_cfg(root, gen, f"paths.checkpoints_dir={tiny_asr}", *TINY_ASR,
                                 "evaluate.decoder=beam", "evaluate.beam_lm=false"))
    assert all(isinstance(t, str) for t in beam(batch))


def test_user_errors(corpus, tmp_path):
    root, wavs = corpus
    with pytest.raises(LipVoicerError, match="missing_dir"):
        run_evaluation(_cfg(root, tmp_path / "missing_dir"), recognizer=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LipVoicerError, match="no generated .wav"):
        run_evaluation(_cfg(root, tmp_path / "empty"), recognizer=None)
    gen = make_generated(tmp_path / "gen", wavs, with_orphan=False)
    with pytest.raises(LipVoicerError, match="dnsmos"):
        run_evaluation(_cfg(root, gen, "evaluate.extra_metrics=[dnsmos]"), recognizer=None)
    with pytest.raises(LipVoicerError, match="whisper"):
        build_recognizer(_cfg(root, gen, "evaluate.recognizer=whisper"))
    with pytest.raises(LipVoicerError, match="none of the 3"):
        run_evaluation(_cfg(tmp_path / "no_root", gen), recognizer=None)
    with pytest.raises(LipVoicerError, match="tokenizer not found"):
        build_recognizer(_cfg(root, gen, f"evaluate.tokenizer={tmp_path / 'none.model'}"))


def test_missing_asr_checkpoint_is_a_user_error(corpus, tiny_asr, tmp_path):
    root, _ = corpus
    cfg = _cfg(root, tmp_path, f"paths.checkpoints_dir={tiny_asr}", *TINY_ASR,
               f"evaluate.asr_ckpt={tmp_path / 'none.ckpt'}")
    with pytest.raises(LipVoicerError, match="none.ckpt: checkpoint not found"):
        build_recognizer(cfg)


def test_script_prints_table_and_fails_cleanly(corpus, tmp_path):
    root, wavs = corpus
    gen = make_generated(tmp_path / "gen", wavs)
    r = subprocess.run([sys.executable, "evaluate.py", f"evaluate.generated_dir={gen}", f"dataset.root={root}",
                        "evaluate.recognizer=none", "evaluate.progress=false", "evaluate.dnsmos=false",
                        f"hydra.run.dir={tmp_path / 'h'}"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "| metric | value |" in r.stdout and "| clips | 3 |" in r.stdout and "| STOI |" in r.stdout
    assert "| coverage | 3 of 3 clips (100.0 %) |" in r.stdout
    assert (gen / "metrics.md").is_file()
    missing = tmp_path / "nowhere"
    r = subprocess.run([sys.executable, "evaluate.py", f"evaluate.generated_dir={missing}",
                        f"dataset.root={root}", "evaluate.recognizer=none", f"hydra.run.dir={tmp_path / 'h2'}"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {missing}: "), r.stderr


def test_default_generated_dir_is_the_batch_generation_folder(tmp_path, caplog):
    from tests.helpers import compose_cfg
    from pipelines.evaluation import run_evaluation

    cfg = compose_cfg([f"generate.save_dir={tmp_path}", "generate.w_asr=0", "evaluate.progress=false",
                       "evaluate.recognizer=none"])
    with pytest.raises(LipVoicerError) as e:
        run_evaluation(cfg, recognizer=None)
    assert str(e.value).startswith(f"{tmp_path}/generated_mels/LRS3/w1=2_w2=0_asr_start=270: ")


def test_recognising_the_generated_mels(corpus, tiny_asr, tmp_path):
    """evaluate.recognize_from=mel reads <id>.wav.spec beside each wav (the mel before the vocoder)."""
    import torch

    from dataloaders.audio import denormalise_mel

    root, wavs = corpus
    gen = make_generated(tmp_path / "gen", wavs, with_orphan=False)
    cfg = _cfg(root, gen, f"paths.checkpoints_dir={tiny_asr}", *TINY_ASR, "evaluate.recognize_from=mel")
    rec = build_recognizer(cfg)
    with pytest.raises(LipVoicerError, match=r"00001\.wav\.spec: generated mel not found"):
        run_evaluation(cfg, recognizer=rec)
    for vid, w in wavs.items():    # the wav's own mel, saved as generation does (denormalised log-mel)
        torch.save(denormalise_mel(rec.mel(w)), gen / f"{vid}.wav.spec")
    res = run_evaluation(cfg, recognizer=rec)
    assert res["settings"]["recognize_from"] == "mel"
    from_wavs = run_evaluation(_cfg(root, gen, f"paths.checkpoints_dir={tiny_asr}", *TINY_ASR), recognizer=rec)
    assert [r["hypothesis"] for r in res["rows"]] == [r["hypothesis"] for r in from_wavs["rows"]]
    with pytest.raises(LipVoicerError, match="recognize_from: 'text'"):
        run_evaluation(_cfg(root, gen, "evaluate.recognize_from=text"), recognizer=rec)


# ----------------------------------------------------------------------------- coverage (issue 14, item 3)
def test_partial_generation_is_refused_below_min_coverage(corpus, tmp_path):
    """Scoring 2 of the 3 clips of the split used to print a table of the 2 without a word."""
    root, wavs = corpus
    gen = make_generated(tmp_path / "gen", {k: v for k, v in wavs.items() if k != "spk3/00001"}, with_orphan=False)
    with pytest.raises(LipVoicerError) as e:
        run_evaluation(_cfg(root, gen), recognizer=None)
    msg = str(e.value)
    assert msg.startswith(f"{gen}: only 2 of 3 clips of the ground-truth wavs in {root / 'audios' / 'test'} can be "
                          "scored (66.7 %, below evaluate.min_coverage=1); missing e.g. spk3/00001; ")
    assert "evaluate.min_coverage=0" in msg and "\n" not in msg
    assert not (gen / "metrics_summary.json").exists()                  # nothing scored, nothing written
    with pytest.raises(LipVoicerError, match="below evaluate.min_coverage=0.9"):
        run_evaluation(_cfg(root, gen, "evaluate.min_coverage=0.9"), recognizer=None)
    res = run_evaluation(_cfg(root, gen, "evaluate.min_coverage=0.5"), recognizer=None)
    cov = res["coverage"]
    assert (cov["scored"], cov["expected"], cov["n_missing"], cov["missing"]) == (2, 3, 1, ["spk3/00001"])
    assert cov["fraction"] == pytest.approx(2 / 3) and cov["min_coverage"] == 0.5
    assert "| coverage | 2 of 3 clips (66.7 %) |" in res["table"] and res["table"] == (gen / "metrics.md").read_text()
    assert json.loads((gen / "metrics_summary.json").read_text())["coverage"]["missing"] == ["spk3/00001"]


@pytest.mark.parametrize("value", ["1.5", "-0.1", "all"])
def test_min_coverage_must_be_a_fraction(corpus, tmp_path, value):
    root, wavs = corpus
    gen = make_generated(tmp_path / "gen", wavs, with_orphan=False)
    with pytest.raises(LipVoicerError) as e:
        run_evaluation(_cfg(root, gen, f"evaluate.min_coverage={value}"), recognizer=None)
    assert str(e.value).startswith(f"evaluate.min_coverage={value}: must be a fraction between 0 and 1")


def test_coverage_counts_the_split_videos_and_n_samples(corpus, tmp_path):
    """With the split's videos present, the clips of the split are the videos (as inference_full_test_split.py
    lists them), the first generate.n_samples of them when set."""
    root, wavs = corpus
    data = tmp_path / "data"
    shutil.copytree(root, data)
    for vid in [*TEXTS, "spk4/00001"]:                      # a 4th clip without any generated wav
        (data / "videos" / "test" / f"{vid}.mp4").parent.mkdir(parents=True, exist_ok=True)
        (data / "videos" / "test" / f"{vid}.mp4").write_bytes(b"")
    gen = make_generated(tmp_path / "gen", wavs, with_orphan=False)
    with pytest.raises(LipVoicerError) as e:
        run_evaluation(_cfg(data, gen), recognizer=None)
    assert "only 3 of 4 clips of the split 'test' of lrs3 (its videos)" in str(e.value).lower()
    assert "missing e.g. spk4/00001" in str(e.value)
    res = run_evaluation(_cfg(data, gen, "generate.n_samples=3"), recognizer=None)
    assert res["coverage"]["expected"] == 3 and res["coverage"]["fraction"] == 1.0


def test_script_refuses_partial_coverage_in_one_line(corpus, tmp_path, capsys):
    root, wavs = corpus
    gen = make_generated(tmp_path / "gen", {"spk2/00001": wavs["spk2/00001"]}, with_orphan=False)
    code = run_script_in_process("evaluate.py", [f"evaluate.generated_dir={gen}", f"dataset.root={root}",
                                                 "evaluate.recognizer=none", "evaluate.progress=false",
                                                 f"hydra.run.dir={tmp_path / 'h'}"])
    assert code == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err[-1].startswith(f"error: {gen}: only 1 of 3 clips of the ground-truth wavs in ")
    assert "evaluate.min_coverage=0" in err[-1]
