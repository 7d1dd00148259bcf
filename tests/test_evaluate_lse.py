"""evaluate.py with every column: LSE-C / LSE-D (SyncNet with stand-in weights) of the generated audio and of
the ground truth on each clip's video, speaker similarity (a tiny x-vector model), WER by a tiny Whisper with
Whisper's normaliser, DNSMOS, the ground truth's own scores, intervals, the paper table, and a comparison of
two folders (one laid out as LipVoicer's published archives are). Bad clips: no face, audio shorter than 6
frames, no video; missing weights. Clips are cut from examples/synthetic_clip.mp4 (a face MediaPipe finds)."""
from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.hf_tiny import tiny_wavlm_sv, tiny_whisper
from tests.helpers import REPO_ROOT, compose_cfg, run_script_in_process, write_video
from utils.errors import LipVoicerError

SR = 16000
FRAMES = 8          # 3 SyncNet windows per clip: enough to score, cheap on a CPU
EXAMPLE = REPO_ROOT / "examples" / "synthetic_clip.mp4"
TEXTS = {"spk/00001": "HELLO WORLD", "spk/00003": "NO FACE HERE", "spk/00004": "THE COLOR OF IT"}


def speechlike(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    env = (np.sin(2 * np.pi * (4 + seed) * t) > 0).astype(np.float32)
    return (0.2 * env * np.sin(2 * np.pi * (140 + 20 * seed) * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from dataloaders.video_io.decode import read_video
    from models.syncnet import SyncNet

    base = tmp_path_factory.mktemp("lse")
    frames, _ = read_video(EXAMPLE)
    root = base / "LRS3"
    gen, pub = base / "gen", base / "published" / "LRS3_test"
    starts = {"spk/00001": 12, "spk/00004": 60}
    for i, (vid, text) in enumerate(TEXTS.items()):
        video = frames[starts[vid]:starts[vid] + FRAMES] if vid in starts else np.full((FRAMES, 128, 128, 3), 90,
                                                                                      np.uint8)
        write_video(root / "videos" / "test" / f"{vid}.mp4", video)
        (root / "videos" / "test" / f"{vid}.txt").write_text(f"Text:  {text}\nConf:  3\n")
        gt = speechlike(FRAMES * 640, i)
        (root / "audios" / "test" / vid).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / "audios" / "test" / f"{vid}.wav", gt, SR, subtype="PCM_16")
        out = gt if vid != "spk/00004" else gt[:4 * 640]                       # 4 frames: too short for SyncNet
        (gen / vid).parent.mkdir(parents=True, exist_ok=True)
        sf.write(gen / f"{vid}.wav", 0.8 * out, SR, subtype="PCM_16")
        pub.mkdir(parents=True, exist_ok=True)                                # the published archives: flat
        sf.write(pub / f"{vid.replace('/', '_')}.wav", np.roll(gt, 640) * 0.5, SR, subtype="PCM_16")
    torch.manual_seed(0)
    weights = base / "syncnet_v2.model"
    torch.save(SyncNet().state_dict(), weights)                               # stand-in weights, published keys
    return {"root": root, "gen": gen, "pub": pub, "weights": weights,
            "whisper": tiny_whisper(base / "whisper", multilingual=True, spelling={"colour": "color"}),
            "speaker": tiny_wavlm_sv(base / "sv")}


def _overrides(s, *extra):
    return [f"dataset.root={s['root']}", f"syncnet.ckpt={s['weights']}", "evaluate.progress=false",
            "evaluate.device=cpu", "evaluate.min_coverage=0", "prep.track=longest", *extra]


def test_every_column_in_csv_summary_tables(setup, tmp_path, capsys):
    s = setup
    out = tmp_path / "out"
    rc = run_script_in_process("evaluate.py", _overrides(
        s, f"evaluate.generated_dir={s['gen']}", f"evaluate.out_dir={out}", "evaluate.lse=true",
        f"evaluate.recognizer=hf:{s['whisper']}", f"evaluate.speaker_model=hf:{s['speaker']}",
        "evaluate.table=paper", "evaluate.bootstrap=200"))
    captured = capsys.readouterr()
    printed = captured.out
    assert rc is None
    # one warning line per clip that cannot be scored, naming the file and the reason
    warnings = [line for line in (captured.out + captured.err).splitlines() if "WARNING" in line]
    assert any(f"- {s['root'] / 'videos/test/spk/00003.mp4'}: no face detected in any frame" in m for m in warnings)
    assert any("spk/00004.mp4 with the generated audio: 8 video frames and 0.16 s of audio; SyncNet needs at least "
               "6 frames (0.24 s) of both" in m for m in warnings)
    with open(out / "metrics_per_clip.csv", newline="") as f:
        rows = {r["video_id"]: r for r in csv.DictReader(f)}
    for col in ("lse_c", "lse_d", "lse_offset", "gt_lse_c", "gt_lse_d", "gt_lse_offset", "speaker_sim", "gt_wer",
                "gt_dnsmos_ovrl", "dnsmos_ovrl", "wer", "gt_hypothesis"):
        assert col in rows["spk/00001"], col
    ok = rows["spk/00001"]
    assert math.isfinite(float(ok["lse_c"])) and float(ok["lse_d"]) > 0 and abs(int(float(ok["lse_offset"]))) <= 15
    assert float(ok["speaker_sim"]) > 0.9      # the same speech at another gain
    assert rows["spk/00003"]["lse_c"] == "nan" and rows["spk/00003"]["gt_lse_c"] == "nan"
    assert rows["spk/00004"]["lse_c"] == "nan" and rows["spk/00004"]["gt_lse_c"] != "nan"
    summary = json.loads((out / "metrics_summary.json").read_text())
    sync = summary["sync"]
    assert sync["n_valid"] == {"lse_c": 1, "lse_d": 1, "gt_lse_c": 2, "gt_lse_d": 2}
    assert sync["means"]["lse_c"] == pytest.approx(float(ok["lse_c"]), abs=1e-4)
    lo, hi = summary["intervals"]["gt_lse_c"]
    assert lo <= sync["means"]["gt_lse_c"] <= hi and summary["intervals"]["lse_c"] == [None, None]  # one clip
    assert summary["settings"]["lse"]["n_failed"] == 2 and "spk/00003" in summary["settings"]["lse"]["failed"]
    assert summary["settings"]["text_normalizer"].startswith("Whisper EnglishTextNormalizer")
    assert summary["speaker_similarity"]["means"]["speaker_sim"] > 0.9
    assert summary["ground_truth"]["corpus_wer"] is not None
    md = (out / "metrics.md").read_text()
    assert "| LSE-C ↑ |" in md and "(1 of 3 clips)" in md and "| LSE-D, ground truth |" in md
    assert "| speaker similarity ↑ |" in md and "| text normaliser | Whisper EnglishTextNormalizer" in md
    paper = (out / "paper_table.md").read_text()
    assert paper.splitlines()[0] == ("| system | WER (%) ↓ | STOI (intrusive) ↑ | DNSMOS OVRL ↑ | LSE-C ↑ | LSE-D ↓ | "
                                     "speaker sim. ↑ |")
    gen_row = next(line for line in paper.splitlines() if line.startswith("| gen |"))
    gt_row = next(line for line in paper.splitlines() if line.startswith("| ground truth |"))
    assert gen_row.count("—") == 0 and gen_row.count("[") == 4      # LSE of one clip: a mean without interval
    assert gt_row.count("—") == 2 and gt_row.count("[") == 4             # STOI and similarity: 1 by definition
    assert "not the STOI-Net LipVoicer reports" in paper
    assert paper in printed and "| LSE-C ↑ |" in printed
    pj = json.loads((out / "paper_table.json").read_text())
    assert pj["rows"]["gen"]["lse_c"][0] == pytest.approx(sync["means"]["lse_c"])


def test_comparison_with_the_published_layout(setup, tmp_path):
    from pipelines.compare import run_comparison

    s = setup
    cfg = compose_cfg(_overrides(s, f"evaluate.compare=[{s['gen']},{s['pub']}]", "evaluate.compare_labels=[ours,lipvoicer]",
                                 f"evaluate.compare_out={tmp_path / 'cmp'}", "evaluate.recognizer=none",
                                 "evaluate.dnsmos=false", "evaluate.table=paper", "evaluate.bootstrap=100"))
    res = run_comparison(cfg)
    assert "LSE-C" in res["table"] and "LSE-D" in res["table"]
    paper = (tmp_path / "cmp" / "paper_table.md").read_text()
    names = [line.split("|")[1].strip() for line in paper.splitlines()[2:5]]
    assert names == ["ours", "lipvoicer", "ground truth"]
    assert "| STOI (intrusive) ↑ |" in paper
    # the published audio (flat names spk_00001.wav) was matched by id and scored on the same videos
    lip = json.loads((s["pub"] / "metrics_summary.json").read_text())
    assert lip["sync"]["n_valid"]["lse_c"] == 2 and lip["n_clips"] == 3


def test_missing_weights(setup, tmp_path, capsys):
    from pipelines.evaluation import run_evaluation

    s = setup
    missing = tmp_path / "nowhere.model"
    records = []                             # (not caplog: an in-process Hydra run before may own the root logger)
    catch = logging.Handler(logging.WARNING)
    catch.emit = records.append
    logging.getLogger("pipelines.clip_sync").addHandler(catch)
    try:                                     # auto: one warning line, no LSE columns filled
        res = run_evaluation(compose_cfg([*_overrides(s, f"evaluate.generated_dir={s['gen']}",
                                                      f"evaluate.out_dir={tmp_path}", "evaluate.dnsmos=false"),
                                          f"syncnet.ckpt={missing}"]), recognizer=None)
    finally:
        logging.getLogger("pipelines.clip_sync").removeHandler(catch)
    assert [r.getMessage() for r in records] == [
        f"no LSE-C / LSE-D: SyncNet weights {missing} not found (python download_checkpoints.py --only syncnet_v2; "
        "evaluate.lse=false hides this line)"]
    assert res["settings"]["lse"] is None and res["sync"]["means"]["lse_c"] is None
    torch.save({"netcnnlip.0.weight": torch.zeros(1)}, tmp_path / "other.model")
    with pytest.raises(LipVoicerError, match=r"other.model: does not match the model; missing keys"):
        run_evaluation(compose_cfg([*_overrides(s, f"evaluate.generated_dir={s['gen']}", "evaluate.lse=true"),
                                    f"syncnet.ckpt={tmp_path / 'other.model'}"]), recognizer=None)
    # required (evaluate.lse=true): one error line naming the file and the command that fetches it, exit 1
    capsys.readouterr()
    rc = run_script_in_process("evaluate.py", [*_overrides(s, f"evaluate.generated_dir={s['gen']}",
                                                           f"evaluate.out_dir={tmp_path}", "evaluate.lse=true",
                                                           "evaluate.recognizer=none", "evaluate.dnsmos=false"),
                                               f"syncnet.ckpt={missing}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err == [f"error: {missing}: checkpoint not found; fetch it with: python download_checkpoints.py "
                               "--only syncnet_v2"]
