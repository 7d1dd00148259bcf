"""The synthetic-corpus recipe, tiny version on CPU: every stage runs and the results table is written."""
from __future__ import annotations

import json
from pathlib import Path
import random
import runpy
import subprocess
import sys

import pytest

from tests.parity_utils import REPO_ROOT
from tests.tiny_generation import mean_face_source
from recipes import synthetic_settings, synthetic_training
from recipes.synthetic_conditions import GROUND_TRUTH, WAYS, corrupt_text
from recipes.synthetic_recipe import STAGE_FUNCS, STAGES, run_recipe
from recipes.synthetic_settings import RecipeSettings
from utils.errors import LipVoicerError


def test_corrupt_text_replaces_the_requested_fraction():
    rng = random.Random(0)
    vocab = "alpha beta gamma delta epsilon zeta eta theta".split()
    text = "one two three four five six seven eight nine ten"
    out = corrupt_text(text, 0.2, vocab, rng)
    changed = [a != b for a, b in zip(text.split(), out.split())]
    assert len(out.split()) == 10 and sum(changed) == 2
    assert corrupt_text("hello", 0.2, vocab, rng) != "hello"       # at least one word
    assert corrupt_text(text, 0.0, vocab, rng) == text


def test_parallel_training_lanes_share_the_cores(tmp_path):
    """--parallel: MelGen in its own lane, the recognisers (and vocoder) one after another in the other;
    with --threads 1 on 2 cores each lane's chunks get 1 thread, and 2 once the other lane has ended."""
    from recipes.synthetic_training import CoreShare, training_lanes
    assert training_lanes(["judge", "asr", "melgen", "vocoder"]) == [["melgen"], ["judge", "asr", "vocoder"]]
    assert training_lanes(["asr"]) == [["asr"]]
    # the lip reader before the guidance ASR, which takes what --train_minutes leaves
    assert training_lanes(["judge", "asr", "melgen", "vocoder", "lipreader"]) == [
        ["melgen"], ["judge", "lipreader", "asr", "vocoder"]]
    share = CoreShare(cores=2)
    s = RecipeSettings(tmp_path, threads=1, parallel=True)
    share.enter(), share.enter()
    assert share.threads(s) == 1
    share.leave()
    assert share.threads(s) == 2
    assert share.threads(RecipeSettings(tmp_path, threads=1)) == 1          # not --parallel: as asked
    assert share.threads(RecipeSettings(tmp_path, parallel=True)) is None   # no --threads: torch's default


def test_train_in_chunks_finds_its_folder_after_the_first_chunk(tmp_path, monkeypatch):
    """MelGen's checkpoint folder (named by the sizes) is found after the first chunk, which counts toward
    train_minutes and gets CoreShare's threads; a chunk that writes nothing stops the stage in one line."""
    from recipes.synthetic_training import train_in_chunks
    calls = []
    folder = tmp_path / "exp" / "wnet" / "checkpoint"

    def fake_run(s, args, what, threads=None):
        calls.append((args[-1], threads))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{2 * len(calls)}.pkl").write_bytes(b"")

    monkeypatch.setattr(synthetic_settings, "run_script", fake_run)
    s = RecipeSettings(tmp_path, threads=1, chunk_minutes=10.0)
    find = lambda: folder if folder.is_dir() else None   # noqa: E731
    assert train_in_chunks(s, "train_melgen.py", [], 4, None, "melgen", find_dir=find) == folder / "4.pkl"
    assert calls == [("train.max_minutes=10.00", 1), ("train.max_minutes=10.00", 1)]
    monkeypatch.setattr(synthetic_settings, "run_script", lambda *a, **k: None)
    with pytest.raises(LipVoicerError) as e:
        train_in_chunks(s, "train_melgen.py", [], 4, None, "melgen", find_dir=lambda: None)
    assert str(e.value) == "recipe stage 'melgen': no progress (checkpoints in no checkpoint folder was written)"


def test_grid_grammar_sentences():
    from dataloaders.synthetic.corpus import make_sentences

    grid = make_sentences(200, seed=3, grammar="grid")
    assert len(set(grid)) == 200 and all(len(s.split()) == 6 for s in grid)
    assert len({w for s in grid for w in s.split()}) <= 51
    assert grid == make_sentences(200, seed=3, grammar="grid")
    assert make_sentences(5, seed=3) != make_sentences(5, seed=3, grammar="grid")   # free is the default
    with pytest.raises(LipVoicerError, match="unknown grammar"):
        make_sentences(5, seed=0, grammar="klingon")


def test_griffin_lim_inverts_a_mel():
    """The vocoder that needs no training: a tone's log-mel back to a waveform whose mel is close."""
    import numpy as np
    import torch

    from dataloaders.audio import log_mel

    t = np.arange(16000) / 16000.0
    wav = torch.from_numpy((0.5 * np.sin(2 * np.pi * 440 * t) * np.minimum(1, 4 * t)).astype(np.float32))
    mel = log_mel(wav)
    from models.griffin_lim import griffin_lim

    out = griffin_lim(mel, n_iter=16)
    assert out.shape == (mel.shape[1] * 160,) and np.isfinite(out).all() and 0.85 < np.abs(out).max() < 0.95
    again = log_mel(torch.from_numpy(out))[:, :mel.shape[1]]   # one frame more: F * hop samples, as HiFi-GAN gives
    loud = mel > mel.max() - 6
    assert float((again - mel)[loud].abs().mean()) < 1.0


def test_unknown_stage_or_size_is_an_error(tmp_path):
    with pytest.raises(LipVoicerError, match="unknown recipe stage"):
        run_recipe(RecipeSettings(work_dir=tmp_path), ["train_everything"])
    with pytest.raises(LipVoicerError, match="unknown size 'huge'"):
        run_recipe(RecipeSettings(work_dir=tmp_path, size="huge"), ["texts"])
    with pytest.raises(LipVoicerError, match="unknown vocoder"):
        run_recipe(RecipeSettings(work_dir=tmp_path, vocoder="wavenet"), ["texts"])


def test_every_stage_has_one_function():
    """The stage list of synthetic_recipe.py against the stage tables of the modules that hold the stages: each
    stage in exactly one of them (a name in two would silently run only one), none without a function."""
    from recipes import (synthetic_conditions, synthetic_lip_reader, synthetic_listening, synthetic_publish,
                         synthetic_scoring)

    tables = [synthetic_training.STAGE_FUNCS, synthetic_lip_reader.STAGE_FUNCS, synthetic_conditions.STAGE_FUNCS,
              synthetic_listening.STAGE_FUNCS,
              synthetic_scoring.STAGE_FUNCS, synthetic_publish.STAGE_FUNCS]
    names = [name for table in tables for name in table]
    assert sorted(names) == sorted(STAGES) and set(STAGE_FUNCS) == set(STAGES)
    assert set(synthetic_training.TRAINING_STAGES) <= {*synthetic_training.STAGE_FUNCS, *synthetic_lip_reader.STAGE_FUNCS}


@pytest.mark.slow
def test_tiny_recipe_runs_every_stage(tmp_path):
    work = tmp_path / "recipe"
    cmd = [sys.executable, "recipes/synthetic.py", "--work_dir", str(work), "--size", "tiny", "--n_clips", "14",
           "--melgen_iters", "2", "--asr_iters", "2", "--judge_iters", "2", "--vocoder_iters", "2",
           "--device", "cpu", "--workers", "1", "--batch_size", "4", "--vocab_size", "64",
           "--mean_face", str(mean_face_source()), "diffusion.T=20", "generate.asr_start=12"]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    results = json.loads((work / "results.json").read_text())
    assert set(results["results"]) == {"ground_truth", "no_guidance", "true_text", "corrupted_text"}
    for way, summary in results["results"].items():
        assert summary["n_clips"] >= 1, way
        assert summary["corpus_wer"] is not None and summary["means"]["stoi"] is not None
    table = (work / "results.md").read_text()
    assert "judge WER (%)" in table and "corrupted text" in table
    # each way used its own guidance: true-text runs read the true transcripts
    gen = work / "generated"
    txt = sorted((gen / "true_text").rglob("*.txt"))[0].read_text().splitlines()
    assert txt[1] == "lipread: " + txt[0][4:]
    bad = sorted((gen / "corrupted_text").rglob("*.txt"))
    assert any(t.read_text().splitlines()[1][9:] != t.read_text().splitlines()[0][4:] for t in bad)
    assert not list((gen / "no_guidance").rglob("w1=2_w2=1.5*"))
    assert len(STAGES) == 14


def _run_script_in_process(s, args, what, threads=None, partial_ok=False):
    """The recipe's run_script without a new interpreter per call: `python <script> args` (or
    `python -m <module> args`) runs as __main__ inside this process; a non-zero exit stops the recipe
    (exit 1 with partial_ok too: every clip of the tiny corpus must prepare)."""
    old_argv = sys.argv
    try:
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(args)
            runpy.run_path(str(REPO_ROOT / args[0]), run_name="__main__")
    except SystemExit as e:
        if e.code not in (0, None):
            raise LipVoicerError(f"recipe stage '{what}' failed (exit code {e.code})") from e
    finally:
        sys.argv = old_argv


@pytest.mark.espeak_words   # its corpus is the homophene grammar's
def test_tiny_recipe_in_process(tmp_path, monkeypatch):
    """The recipe's command line and every stage, with the smallest settings and each script run in-process
    (the default-run counterpart of the slow test above), on the homophene grammar with audio-only
    utterances for the recognisers, and --publish into a temporary folder (report, samples, model set)."""
    from recipes.synthetic import main

    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(synthetic_settings, "run_script", _run_script_in_process)
    work, pub = tmp_path / "recipe", tmp_path / "published"
    assert main(["--work_dir", str(work), "--size", "tiny", "--grammar", "homophene", "--n_clips", "6",
                 "--audio_clips", "3", "--melgen_iters", "1", "--asr_iters", "1", "--judge_iters", "1", "--lipreader_iters", "1",
                 "--vocoder", "griffinlim", "--device", "cpu", "--workers", "1", "--batch_size", "4",
                 "--vocab_size", "40", "--n_test", "1", "--asr_max_t", "5", "--publish", "--publish_root", str(pub),
                 "--mean_face", str(mean_face_source()), "prep.synthetic.frame_size=128", "diffusion.T=8",
                 "generate.asr_start=4"]) == 0
    assert list((work / "exp" / "synthetic").glob("wnet_h16_d2_T8_*/checkpoint/1.pkl"))   # melgen=tiny
    assert (work / "data" / "audio_guidance.list").read_text().split() and (work / "data" / "audio_judge.list").is_file()
    results = json.loads((work / "results.json").read_text())
    assert results["meta"]["size"] == "tiny" and results["meta"]["grammar"] == "homophene"
    ways = {GROUND_TRUTH, *WAYS, "lipread_text", "corrupted_homophene", "corrupted_other"}
    assert set(results["results"]) == ways
    for way, summary in results["results"].items():
        assert summary["n_clips"] == 1, way
        assert summary["corpus_wer"] is not None, way
    table = (work / "results.md").read_text()
    assert "judge WER (%)" in table and "guidance-ASR CTC loss, true text" in table and "Wall time per stage" in table
    assert (work / "figure.png").is_file()
    guidance = results["diagnostics"]["guidance_asr"]
    assert guidance["true_text"]["ctc_guidance_text"] is not None and guidance["no_guidance"]["ctc_true_text"] > 0
    # the full report, as --publish puts it into the repository (here: the temporary folder)
    report = json.loads((pub / "docs" / "results" / "synthetic_homophene_tiny.json").read_text())
    assert report == json.loads((work / "results_full.json").read_text())
    assert {"date", "machine", "command", "wall_minutes", "stage_minutes", "lip_only_chance_wer",
            "identical_mouth_track_fraction", "guidance_asr_wer", "conditions", "sweep", "samplers"} <= set(report)
    assert all(n <= total and total > 0 for n, total in report["clips_without_mouth_crops"].values())
    assert report["identical_mouth_track_fraction"] == 1.0 and report["lip_only_chance_wer"] == pytest.approx(66.67)
    assert set(report["guidance_asr_wer"]) == {"clean", "t=1", "t=4", "t=6"}
    assert set(report["conditions"]) == ways and "--grammar homophene" in report["command"]
    samples = pub / "docs" / "samples" / "synthetic_homophene"
    assert len(list(samples.rglob("*.flac"))) == 4 and (samples / "texts.csv").read_text().startswith("clip,condition")
    from pipelines.listener import listener_available

    if listener_available():   # the independent listener heard every condition and the corpus's own audio
        heard = json.loads((work / "results" / "listener.json").read_text())["conditions"]
        assert set(heard) == ways | {"corpus_audio"} and all(h["n_clips"] == 1 for h in heard.values())
        assert "listener WER (%) [95 % CI]" in table and "STOI 95 % CI" in table
        assert report["conditions"]["true_text"]["listener"] == heard["true_text"]
        assert report["listener_corpus_audio"] == heard["corpus_audio"]
        assert heard["corrupted_homophene"]["substituted_words"]["homophene"]["replaced"] >= 1
        assert 0 <= heard["no_guidance"]["words"]["right_group_pct"] <= 100
    manifest = json.loads((pub / "model_sets" / "synthetic" / "manifest.json").read_text())
    assert manifest["vocoder"] == "griffinlim" and manifest["example"]["clip"].startswith("test/")
    assert manifest["example"]["chosen"].startswith("the first generated test clip")
    # the lip reader (stage lipreader): trained, scored on the test clip, shipped in the set, which then reads lips
    scores = json.loads((work / "lip_reader" / "scores.json").read_text())
    assert scores["test_clips"] == 1 and scores["iterations"] == 1 and "right_group_pct" in scores
    assert {"lipreader.pth", "lipreader.json", "lipreader_units.txt"} <= set(manifest["files"])
    assert manifest["lip_reader"]["wer_pct"] == scores["wer_pct"] and manifest["lip_reader"]["stage_minutes"] >= 0
    config = (pub / "configs" / "models" / "synthetic.yaml").read_text()
    assert "lip_reader: true" in config and "model_path: ${model_set.dir}/lipreader.pth" in config
    assert (pub / "examples" / "synthetic_clip.mp4").is_file() and (pub / "configs" / "models" / "synthetic.yaml").is_file()


def test_train_minutes_caps_a_parallel_lane_not_each_stage(tmp_path, monkeypatch):
    """--parallel --train_minutes: the stages of one lane (judge, then guidance ASR) share the cap, so the lanes end
    together; the recipe's wall time counts the longest lane, not the sum of the overlapping stages."""
    from recipes.synthetic_training import _LANE, train_in_chunks, wall_seconds

    asked = []
    folder = tmp_path / "ck"

    def fake_run(s, args, what, threads=None):
        asked.append(float(args[-1].split("=")[1]))
        clock[0] += 60.0 * asked[-1]              # the chunk takes the minutes it is given
        folder.mkdir(exist_ok=True)
        (folder / f"{len(asked)}.pkl").write_bytes(b"")

    monkeypatch.setattr(synthetic_settings, "run_script", fake_run)
    s = RecipeSettings(tmp_path, parallel=True, train_minutes=30.0, chunk_minutes=10.0)
    clock = [1000.0]
    monkeypatch.setattr(synthetic_training.time, "time", lambda: clock[0])
    _LANE.start = 1000.0 - 25 * 60.0          # the lane's first stage took 25 minutes
    try:
        train_in_chunks(s, "train_asr.py", [], 99, folder, "guidance")
    finally:
        _LANE.start = None
    assert asked == [pytest.approx(5.0)]       # what is left of the lane's 30 minutes, not a fresh 30
    times = {"corpus": 60.0, "judge": 600.0, "asr": 1200.0, "melgen": 1700.0, "generate": 100.0}
    assert wall_seconds(s, times) == pytest.approx(60 + 1800 + 100)
    assert wall_seconds(RecipeSettings(tmp_path), times) == pytest.approx(sum(times.values()))


def test_lip_read_texts_become_a_condition(tmp_path):
    """With a lip reader (--lipreader_iters), its reads of the test clips guide a condition of their own,
    lipread_text, between no guidance and the true text; without one there is none."""
    from recipes.synthetic_conditions import conditions, write_lipread_texts

    s = RecipeSettings(work_dir=tmp_path, grammar="homophene", lipreader_iters=5)
    assert [c.name for c in conditions(s)][:3] == ["no_guidance", "lipread_text", "true_text"]
    assert "lipread_text" not in [c.name for c in conditions(RecipeSettings(work_dir=tmp_path, grammar="homophene"))]
    with pytest.raises(LipVoicerError, match=r"lip_reader/reads\.csv: no lip-read texts \(run the lipreader stage"):
        write_lipread_texts(s)
    reads = tmp_path / "lip_reader" / "reads.csv"
    reads.parent.mkdir()
    reads.write_text("video_id,reference,hypothesis\nspk00/00001,bat tip,pat tip\nspk01/00002,fan dug,\n")
    assert write_lipread_texts(s) == 2
    assert (s.texts_dir("lipread_text") / "spk00" / "00001.txt").read_text() == "pat tip\n"
    assert (s.texts_dir("lipread_text") / "spk01" / "00002.txt").read_text() == "\n"


def test_a_batch_script_that_went_on_past_failed_files_does_not_stop_the_recipe(tmp_path, caplog):
    """Mouth cropping exits 1 when some clips had no usable face (it names them and goes on): with partial_ok
    the recipe warns and goes on; any other failure, or exit 1 without partial_ok, stops it naming the stage."""
    s = RecipeSettings(tmp_path)
    with caplog.at_level("WARNING"):
        synthetic_settings.run_script(s, ["-c", "raise SystemExit(1)"], "prep mouth crops test", partial_ok=True)
    assert "[prep mouth crops test] some files failed" in caplog.text
    with pytest.raises(LipVoicerError, match="recipe stage 'prep mouth crops test' failed \\(exit code 1\\)"):
        synthetic_settings.run_script(s, ["-c", "raise SystemExit(1)"], "prep mouth crops test")
    with pytest.raises(LipVoicerError, match="exit code 2"):
        synthetic_settings.run_script(s, ["-c", "raise SystemExit(2)"], "prep", partial_ok=True)


def test_the_test_clips_are_the_first_n_that_have_mouth_crops(tmp_path, monkeypatch):
    """--n_test N: generation and the lip reader get the first N test clips that data preparation could crop
    (one without a usable face has no crops), all N of them and the same ones, through test_clips.list."""
    from dataloaders.layout import list_split_clips
    from utils.config import compose_config

    s = RecipeSettings(tmp_path / "run", n_test=2)
    for clip in ("spk0/00001", "spk0/00002", "spk0/00003", "spk1/00001"):
        video = s.data / "videos" / "test" / f"{clip}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        video.write_bytes(b"")
        if clip != "spk0/00002":   # no usable face: no crops
            crops = s.data / "mouth_rois" / "test" / f"{clip}.npz"
            crops.parent.mkdir(parents=True, exist_ok=True)
            crops.write_bytes(b"")
    over = synthetic_settings.test_split_overrides(s)
    assert (s.data / "test_clips.list").read_text() == "spk0/00001\nspk0/00003\n"
    dataset = compose_config([*synthetic_settings.common(s), *over])["dataset"]
    assert list_split_clips(dataset, "test") == ["test/spk0/00001", "test/spk0/00003"]
    assert synthetic_settings.test_split_overrides(RecipeSettings(tmp_path / "run")) == []   # all clips

    # the judge scores the same clips (evaluate.py's coverage check counts the split's clips): found once as
    # a run whose evaluation expected the first N listed, clips without crops among them
    from recipes.synthetic_scoring import score_condition
    seen = []

    def fake_run(s_, args, what, threads=None, partial_ok=False):
        seen.append(args)
        out = Path(next(a for a in args if a.startswith("evaluate.out_dir=")).split("=", 1)[1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics_summary.json").write_text(json.dumps({"n_clips": 2}))

    gdir = tmp_path / "gen"
    for clip in ("spk0/00001", "spk0/00003"):
        (gdir / f"{clip}.wav.spec").parent.mkdir(parents=True, exist_ok=True)
        (gdir / f"{clip}.wav.spec").write_bytes(b"")
    monkeypatch.setattr(synthetic_settings, "run_script", fake_run)
    assert score_condition(s, "true_text", gdir, tmp_path / "judge.pkl") == {"n_clips": 2}
    assert over[0] in seen[0] and "generate.n_samples=2" in seen[0]
    (s.data / "mouth_rois").rename(tmp_path / "elsewhere")
    with pytest.raises(LipVoicerError, match="no test clip has mouth crops"):
        synthetic_settings.test_split_overrides(s)


def test_the_example_is_a_clip_the_lip_reader_read_in_the_right_groups(tmp_path):
    """The shipped example is the first generated clip whose scored reading has every word in its right homophene
    group (reads.csv); a wrong group, a word too few or a word outside the grammar rules a clip out."""
    from dataloaders.synthetic.homophenes import homophene_slots
    from recipes.synthetic_lip_reader import well_read_clips

    (g1, g2), (h1, _) = homophene_slots()[0][:2], homophene_slots()[1][:2]
    work = tmp_path / "work"
    (work / "lip_reader").mkdir(parents=True)
    rows = [("spk00/00001", f"{g1[0]} {h1[0]}", f"{g2[0]} {h1[0]}"),     # first word in another group
            ("spk00/00002", f"{g1[0]} {h1[0]}", f"{g1[1]} {h1[-1]}"),    # members differ, groups right
            ("spk00/00003", f"{g1[0]} {h1[0]}", f"{g1[0]}"),              # a word too few
            ("spk00/00004", f"{g1[0]} {h1[0]}", f"{g1[0]} zebra"),        # not a word of the grammar
            ("spk01/00005", f"{g1[0]} {h1[0]}", f"{g1[0]} {h1[0]}")]
    (work / "lip_reader" / "reads.csv").write_text(
        "video_id,reference,hypothesis\n" + "".join(f"test/{i},{r},{h}\n" for i, r, h in rows))
    assert well_read_clips(RecipeSettings(work_dir=work, grammar="homophene")) == ["spk00/00002", "spk01/00005"]
    assert well_read_clips(RecipeSettings(work_dir=work, grammar="grid")) == []
    assert well_read_clips(RecipeSettings(work_dir=tmp_path / "none", grammar="homophene")) == []


def test_the_report_counts_clips_left_without_mouth_crops(tmp_path):
    from recipes.synthetic_publish import clips_without_crops

    s = RecipeSettings(work_dir=tmp_path / "work", grammar="homophene")
    for split, clip, crop in (("test", "spk00/00001", True), ("test", "spk00/00002", False),
                              ("trainval", "spk01/00003", True), ("audio_only", "spk02/00004", False)):
        (s.data / "videos" / split / clip).parent.mkdir(parents=True, exist_ok=True)
        (s.data / "videos" / split / f"{clip}.mp4").write_bytes(b"")
        if crop:
            (s.data / "mouth_rois" / split / clip).parent.mkdir(parents=True, exist_ok=True)
            (s.data / "mouth_rois" / split / f"{clip}.npz").write_bytes(b"")
    assert clips_without_crops(s) == {"test": [1, 2], "trainval": [0, 1]}


def test_generation_time_is_recorded_for_a_generation_that_stopped_and_one_resumed(tmp_path, monkeypatch):
    """generation_seconds.json: a generation that exits non-zero after making clips still records their time,
    and a resumed one adds its clips and seconds (it recorded nothing unless one call made every clip)."""
    from types import SimpleNamespace

    from recipes import synthetic_conditions as sc

    s = RecipeSettings(work_dir=tmp_path / "work", grammar="homophene", n_test=4)
    s.work_dir.mkdir(parents=True)
    folder = tmp_path / "gen"
    monkeypatch.setattr(sc, "condition_dir", lambda *a: folder)
    calls = []

    def fake_run(settings, argv, label):
        calls.append(label)
        folder.mkdir(exist_ok=True)
        for k in range(len(calls) * 2 - 1, len(calls) * 2 + 1):
            (folder / f"{k:05d}.wav.spec").write_bytes(b"")
        if len(calls) == 1:
            raise LipVoicerError("generate no_guidance: exit 1")

    monkeypatch.setattr(sc.settings, "run_script", fake_run)
    cond = SimpleNamespace(name="no_guidance", sweep=False, texts=None, overrides=lambda: [])
    with pytest.raises(LipVoicerError, match="exit 1"):
        sc.generate_conditions(s, [], {"generate": {}}, [cond])
    first = json.loads((s.work_dir / "generation_seconds.json").read_text())["no_guidance"]
    assert first["clips"] == 2
    sc.generate_conditions(s, [], {"generate": {}}, [cond])
    again = json.loads((s.work_dir / "generation_seconds.json").read_text())["no_guidance"]
    assert again["clips"] == 4 and again["seconds"] >= first["seconds"]
