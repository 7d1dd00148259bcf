"""inference_full_test_split.py on CPU: a synthetic test split with tiny random checkpoints.

Generates, skips finished clips on a re-run, finishes an interrupted run, shards over two
ranks (torchrun, gloo) with every clip produced exactly once, skips clips without lip-read
text, and evaluate.py on the ground truth itself gives WER 0 and STOI near 1.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import compose_cfg
from tests.parity_utils import REPO_ROOT
from tests.tiny_generation import generation_overrides, make_synthetic_clips, make_tiny_assets
from utils.errors import LipVoicerError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A synthetic corpus whose test split has at least 4 clips, with audio, mels and mouth crops."""
    from dataloaders.extract_audio_from_video import main as extract_audio
    from dataloaders.extract_mouthcrops import main as extract_crops
    from dataloaders.prep.wav2mel import convert_tree

    root = tmp_path_factory.mktemp("split")
    assets = make_tiny_assets(root / "assets")
    corpus = make_synthetic_clips(root / "corpus", n_clips=10)
    vids = corpus / "videos"
    test = sorted((vids / "test").rglob("*.mp4"))
    others = sorted(p for p in vids.rglob("*.mp4") if "test" not in p.relative_to(vids).parts[0])
    for i, src in enumerate(others[:4 - len(test)] if len(test) < 4 else []):  # at least 4 test clips
        dst = vids / "test" / "spkx" / f"{i:05d}.mp4"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        shutil.copy(src.with_suffix(".txt"), dst.with_suffix(".txt"))
    mean_face = assets / "checkpoints" / "20words_mean_face.npy"
    assert extract_audio(["--ds_dir", str(vids), "--split", "test", "--out_dir", str(corpus / "audios"),
                          "prep.progress=false"]) == 0
    assert extract_crops(["--ds_dir", str(vids), "--split", "test", "--out_dir", str(corpus / "mouth_rois"),
                          f"prep.mean_face_path={mean_face}", "prep.progress=false"]) == 0
    convert_tree(corpus / "audios", dict(compose_cfg([]).audio), num_workers=1)
    return root, assets, corpus


def _overrides(assets, corpus, save_dir, *extra):
    return generation_overrides(assets, [f"dataset.root={corpus}", f"generate.save_dir={save_dir}",
                                         "generate.lipread_text_dir=ground_truth", "generate.batch_size=2",
                                         *extra])


def _test_ids(corpus: Path) -> list[str]:
    vids = corpus / "videos" / "test"
    return sorted(str(p.relative_to(vids).with_suffix("")) for p in vids.rglob("*.mp4"))


def _run_dir(save_dir: Path) -> Path:
    return save_dir / "generated_mels" / "LRS3" / "w1=2_w2=1.5_asr_start=25"


def _finished(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run))[:-len(".txt")] for p in run.rglob("*.txt"))


def test_generates_every_clip_then_skips_them(prepared, tmp_path):
    from pipelines.split_generation import generate_split

    _, assets, corpus = prepared
    cfg = compose_cfg(_overrides(assets, corpus, tmp_path))
    s = generate_split(cfg)
    ids = _test_ids(corpus)
    assert len(ids) >= 4 and sorted(video for video in (c.split("/", 1)[1] for c in s.generated)) == ids
    run = _run_dir(tmp_path)
    assert _finished(run) == ids
    for vid in ids:
        for suffix in (".wav", ".wav.spec", ".png", "_gt.png", ".txt"):
            assert (run / f"{vid}{suffix}").is_file()
        txt = (run / f"{vid}.txt").read_text().splitlines()
        assert txt[0].startswith("gt: ") and txt[1] == "lipread: " + txt[0][4:]
        mel = torch.load(run / f"{vid}.wav.spec")
        gt = torch.load(corpus / "audios" / "test" / f"{vid}.wav.spec")
        assert mel.shape[0] == 80 and abs(mel.shape[1] - gt.shape[1]) <= 4
    assert not [p for p in run.rglob(".*")], "temporary files left behind"
    again = generate_split(cfg)
    assert again.generated == [] and again.already_done == len(ids)


def test_interrupted_run_finishes_the_rest(prepared, tmp_path, monkeypatch):
    import pipelines.split_generation as sg

    _, assets, corpus = prepared
    cfg = compose_cfg(_overrides(assets, corpus, tmp_path, "generate.batch_size=1"))
    real = sg.write_clip
    calls = {"n": 0}

    def flaky(out, **kw):
        if calls["n"] == 2:
            # killed half-way through a clip's files: a temporary name and one final file exist
            out.path(".wav").parent.mkdir(parents=True, exist_ok=True)
            out.path(".wav").write_bytes(b"partial")
            (out.base.parent / f".{out.base.name}.wav.abc.tmp.wav").write_bytes(b"partial")
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(out, **kw)

    monkeypatch.setattr(sg, "write_clip", flaky)
    with pytest.raises(KeyboardInterrupt):
        sg.generate_split(cfg)
    run = _run_dir(tmp_path)
    first = _finished(run)
    assert len(first) == 2
    stamps = {v: (run / f"{v}.wav.spec").stat().st_mtime_ns for v in first}
    monkeypatch.setattr(sg, "write_clip", real)
    s = sg.generate_split(cfg)
    assert s.already_done == 2 and len(s.generated) == len(_test_ids(corpus)) - 2
    assert _finished(run) == _test_ids(corpus)
    assert {v: (run / f"{v}.wav.spec").stat().st_mtime_ns for v in first} == stamps
    assert not [p for p in run.rglob(".*")]
    assert all((run / f"{v}.wav").stat().st_size > 1000 for v in _test_ids(corpus))


def test_missing_lipread_text_is_logged_and_skipped(prepared, tmp_path, caplog):
    from pipelines.split_generation import generate_split

    _, assets, corpus = prepared
    ids = _test_ids(corpus)
    texts = tmp_path / "lipread"
    for vid in ids[1:]:
        (texts / vid).parent.mkdir(parents=True, exist_ok=True)
        (texts / f"{vid}.txt").write_text("SEA SHELLS\n")
    cfg = compose_cfg(_overrides(assets, corpus, tmp_path / "o", f"generate.lipread_text_dir={texts}",
                                 "generate.n_samples=3"))
    s = generate_split(cfg)
    assert [c.split("/", 1)[1] for c in s.no_text] == [ids[0]]
    assert len(s.generated) == 2
    assert f"{ids[0]}" in caplog.text and "no lip-read text" in caplog.text
    run = _run_dir(tmp_path / "o")
    assert (run / f"{ids[1]}.txt").read_text().splitlines()[1] == "lipread: sea shells"


@pytest.mark.parametrize("extra, needle", [
    (["generate.lipread_text_dir=null"], "generate.lipread_text_dir"),
    (["generate.lipread_text_dir=/no/such/dir"], "/no/such/dir: lip-read text folder not found"),
    (["generate.split=dev"], "has no split 'dev'"),
])
def test_bad_settings_are_one_line_errors(prepared, tmp_path, extra, needle):
    from pipelines.split_generation import generate_split

    _, assets, corpus = prepared
    with pytest.raises(LipVoicerError) as e:
        generate_split(compose_cfg(_overrides(assets, corpus, tmp_path, *extra)))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_two_ranks_produce_every_clip_once_and_evaluate(prepared, tmp_path):
    _, assets, corpus = prepared
    args = _overrides(assets, corpus, tmp_path, "generate.w_asr=0", "generate.save_video=true",
                      f"hydra.run.dir={tmp_path / 'h'}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "inference_full_test_split.py", *args]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("rank ")]
    assert len(lines) == 2
    ids = _test_ids(corpus)
    run = tmp_path / "generated_mels" / "LRS3" / "w1=2_w2=0_asr_start=25"
    assert _finished(run) == ids
    assert sorted(str(p.relative_to(run))[:-4] for p in run.rglob("*.mp4")) == ids
    n_generated = sum(int(ln.split(": ")[1].split()[0]) for ln in lines)
    assert n_generated == len(ids)  # each clip exactly once

    # evaluate.py with the ground truth standing in for the generated audio
    from pipelines.evaluation import run_evaluation

    gt_run = tmp_path / "gt_as_generated"
    for vid in ids:
        dst = gt_run / f"{vid}.wav"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(corpus / "audios" / "test" / f"{vid}.wav", dst)
    import numpy as np
    import soundfile as sf

    refs = {vid: (sf.read(corpus / "audios" / "test" / f"{vid}.wav")[0],
                  (corpus / "videos" / "test" / f"{vid}.txt").read_text().splitlines()[0][5:].strip())
            for vid in ids}

    def oracle(wavs):  # recognises a ground-truth wav as its transcript
        return [next(t for w, t in refs.values() if len(w) == len(x) and np.allclose(w, x, atol=1e-3))
                for x in wavs]

    cfg = compose_cfg(generation_overrides(assets, [f"dataset.root={corpus}", f"evaluate.generated_dir={gt_run}",
                                                     "evaluate.progress=false"]))
    res = run_evaluation(cfg, recognizer=oracle)
    assert res["corpus_wer"] == 0 and res["n_clips"] == len(ids)
    assert res["means"]["stoi"] > 0.99
