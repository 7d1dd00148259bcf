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

from tests.helpers import compose_cfg, free_port, run_script_in_process
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
    (["generate.lock_stale_minutes=0"], "generate.lock_stale_minutes=0: must be a positive number of minutes"),
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
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
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


# ----------------------------------------------------------------------------- issue 14, items 3 and 10
def _spec(run: Path, vid: str) -> torch.Tensor:
    return torch.load(run / f"{vid}.wav.spec")


def _copy_corpus(corpus: Path, dst: Path) -> Path:
    shutil.copytree(corpus, dst, ignore=shutil.ignore_patterns("pretrain", "trainval"))
    return dst


def test_failed_clips_end_with_a_summary_and_exit_1(prepared, tmp_path, capsys):
    """A corrupt .npz and a missing mouth-crop file: the other clips are generated, the summary names both
    with their reasons, and the script exits 1 with one line (it used to exit 0 after "2 failed of 4")."""
    from pipelines.split_generation import generate_split, split_failure

    _, assets, corpus = prepared
    data = _copy_corpus(corpus, tmp_path / "data")
    ids = _test_ids(data)
    bad, gone = (data / "mouth_rois" / "test" / f"{v}.npz" for v in ids[:2])
    bad.write_bytes(b"not an npz")
    gone.unlink()
    cfg = compose_cfg(_overrides(assets, data, tmp_path / "o", "generate.n_samples=3"))
    s = generate_split(cfg)
    assert [c.split("/", 1)[1] for c in s.failed] == ids[:2] and len(s.generated) == 1
    assert s.reasons[f"test/{ids[0]}"] == f"{bad}: mouth crops unreadable (not an .npz archive)"
    assert s.reasons[f"test/{ids[1]}"] == f"{gone}: mouth crops not found"
    report = s.report().splitlines()
    assert report[0].startswith("rank 0/1: 1 generated, 0 already done, 0 done by another process, "
                                "0 without lip-read text, 2 failed, 0 missing of 3 (")
    assert report[1:] == [f"  not generated: test/{ids[0]}: {bad}: mouth crops unreadable (not an .npz archive)",
                          f"  not generated: test/{ids[1]}: {gone}: mouth crops not found"]
    run = _run_dir(tmp_path / "o")
    assert split_failure(s) == (f"{run}: 2 of 3 clips not generated; first: test/{ids[0]}: {bad}: mouth crops "
                                "unreadable (not an .npz archive) (re-running the same command retries them)")
    # the script: the summary on stdout, one error line, exit status 1
    code = run_script_in_process("inference_full_test_split.py",
                                 [*_overrides(assets, data, tmp_path / "o2", "generate.n_samples=2"),
                                  f"hydra.run.dir={tmp_path / 'h'}"])
    assert code == 1
    out, err = capsys.readouterr()
    assert "rank 0/1: 0 generated, 0 already done, 0 done by another process, 0 without lip-read text, 2 failed" in out
    assert f"  not generated: test/{ids[1]}: {gone}: mouth crops not found" in out
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert last.startswith(f"error: {_run_dir(tmp_path / 'o2')}: 2 of 2 clips not generated; first: test/{ids[0]}: ")


def test_missing_text_or_outputs_count_as_not_generated(prepared, tmp_path):
    from pipelines.split_generation import generate_split, split_failure

    _, assets, corpus = prepared
    ids = _test_ids(corpus)
    texts = tmp_path / "lipread"
    (texts / ids[1]).parent.mkdir(parents=True)
    (texts / f"{ids[1]}.txt").write_text("SEA SHELLS\n")
    s = generate_split(compose_cfg(_overrides(assets, corpus, tmp_path / "o", f"generate.lipread_text_dir={texts}",
                                              "generate.n_samples=2")))
    assert len(s.generated) == 1 and split_failure(s).endswith(
        f"first: test/{ids[0]}: {texts / ids[0]}.txt: no lip-read text (re-running the same command retries them)")


def _equal_length_corpus(corpus: Path, dst: Path, n: int = 3) -> list[str]:
    """n copies of one test clip under new ids: clips of equal length, so batching them changes nothing."""
    src = _test_ids(corpus)[0]
    for i in range(n):
        for sub, suffixes in (("videos", (".mp4", ".txt")), ("audios", (".wav", ".wav.spec")), ("mouth_rois", (".npz",))):
            for suffix in suffixes:
                out = dst / sub / "test" / "eq" / f"{i:05d}{suffix}"
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(corpus / sub / "test" / f"{src}{suffix}", out)
    return [f"eq/{i:05d}" for i in range(n)]


def test_resumed_and_rebatched_runs_give_the_same_audio(prepared, tmp_path, monkeypatch):
    """Each clip's noise is seeded from generate.seed and its id: an interrupted-then-resumed run and a
    run with another batch size give the .wav.spec of an uninterrupted run (the resumed clips used to
    differ: one random stream per process)."""
    import pipelines.split_generation as sg

    _, assets, corpus = prepared
    ids = _equal_length_corpus(corpus, tmp_path / "data")

    def run(save, *extra):
        return sg.generate_split(compose_cfg(_overrides(assets, tmp_path / "data", tmp_path / save, "generate.w_asr=0",
                                                        *extra)))

    straight = run("a", "generate.batch_size=1")
    assert len(straight.generated) == len(ids)
    a = {v: _spec(tmp_path / "a" / "generated_mels" / "LRS3" / "w1=2_w2=0_asr_start=25", v) for v in ids}
    assert not torch.equal(a[ids[0]], a[ids[1]])          # the same input, another id: other noise

    real, calls = sg.write_clip, {"n": 0}

    def killed_after_one(out, **kw):
        if calls["n"] == 1:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(out, **kw)

    monkeypatch.setattr(sg, "write_clip", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        run("b", "generate.batch_size=1")
    monkeypatch.setattr(sg, "write_clip", real)
    resumed = run("b", "generate.batch_size=1")
    assert resumed.already_done == 1 and len(resumed.generated) == len(ids) - 1
    rebatched = run("c", f"generate.batch_size={len(ids)}")
    assert len(rebatched.generated) == len(ids)
    b = {v: _spec(tmp_path / "b" / "generated_mels" / "LRS3" / "w1=2_w2=0_asr_start=25", v) for v in ids}
    c = {v: _spec(tmp_path / "c" / "generated_mels" / "LRS3" / "w1=2_w2=0_asr_start=25", v) for v in ids}
    assert [v for v in ids if not torch.equal(b[v], a[v])] == []      # same batch composition: identical
    assert [v for v in ids if not torch.allclose(c[v], a[v], rtol=0, atol=1e-3)] == []   # equal lengths


def test_a_clip_another_process_holds_is_not_generated(prepared, tmp_path, monkeypatch):
    """A live lock (this pid: alive) makes the run wait instead of generating the clip; when the holder
    finishes, the clip counts as done by another process. A dead holder's lock is taken over."""
    import json
    import os
    import socket

    import pipelines.split_generation as sg
    from pipelines.outputs import ClipOutputs

    _, assets, corpus = prepared
    ids = _test_ids(corpus)
    cfg = compose_cfg(_overrides(assets, corpus, tmp_path, "generate.n_samples=2", "generate.w_asr=0"))
    run = tmp_path / "generated_mels" / "LRS3" / "w1=2_w2=0_asr_start=25"
    held = ClipOutputs(run, ids[0])
    held.lock_path().parent.mkdir(parents=True)
    held.lock_path().write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": "t"}))
    waits = []

    def other_process_finishes(seconds):
        waits.append(seconds)
        for p in held.expected():
            p.write_bytes(b"written by the other process")
        held.lock_path().unlink()

    monkeypatch.setattr(sg, "wait_for_others", other_process_finishes)
    s = sg.generate_split(cfg)
    assert len(waits) == 1 and s.done_elsewhere == [f"test/{ids[0]}"] and s.generated == [f"test/{ids[1]}"]
    assert held.path(".wav").read_bytes() == b"written by the other process"
    assert sg.split_failure(s) is None and not list(run.rglob(".*"))

    # the holder was killed (dead pid on this host): its lock is taken over at once
    for p in held.expected():
        p.unlink()
    from tests.test_batch_generation import _dead_pid

    held.lock_path().write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "token": "t"}))
    s = sg.generate_split(cfg)
    assert s.generated == [f"test/{ids[0]}"] and len(waits) == 1 and not list(run.rglob(".*"))


def test_two_concurrent_runs_share_the_clips(prepared, tmp_path, monkeypatch):
    """Two runs at once on one save_dir (two threads here, so both hold live locks of one pid): every clip
    is generated exactly once, and both runs end with the whole split done (they used to generate every
    clip twice)."""
    import threading

    import pipelines.split_generation as sg

    _, assets, corpus = prepared
    monkeypatch.setattr(sg, "POLL_SECONDS", 0.05)
    cfg = compose_cfg(_overrides(assets, corpus, tmp_path, "generate.batch_size=1", "generate.w_asr=0"))
    results, errors = {}, []

    def work(name):
        try:
            results[name] = sg.generate_split(cfg)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and set(results) == {"a", "b"}
    a, b = results["a"], results["b"]
    assert set(a.generated).isdisjoint(b.generated)
    assert sorted(a.generated + b.generated) == sorted(f"test/{v}" for v in _test_ids(corpus))
    assert sg.split_failure(a) is None and sg.split_failure(b) is None
    assert sorted(a.generated + a.done_elsewhere) == sorted(b.generated + b.done_elsewhere) == sorted(a.generated + b.generated)
    run = tmp_path / "generated_mels" / "LRS3" / "w1=2_w2=0_asr_start=25"
    assert _finished(run) == _test_ids(corpus) and not list(run.rglob(".*"))


@pytest.mark.slow
def test_two_concurrent_processes_share_the_clips(prepared, tmp_path):
    """The same with two real processes started together."""
    _, assets, corpus = prepared
    args = _overrides(assets, corpus, tmp_path, "generate.batch_size=1", "generate.w_asr=0")
    procs = [subprocess.Popen([sys.executable, "inference_full_test_split.py", *args,
                               f"hydra.run.dir={tmp_path / f'h{i}'}"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    counts = [int(next(ln for ln in o[0].splitlines() if ln.startswith("rank ")).split(": ")[1].split()[0])
              for o in outs]
    assert sum(counts) == len(_test_ids(corpus))           # each clip generated once, by one of the two
