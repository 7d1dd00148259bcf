"""Issue 14 (reliability), items 5, 7, 8, 11, 12: settings checked before heavy work, numbers spelled
out, write failures named by the output path, no orphaned workers, only the needed assets fetched,
positional video paths, one-line errors, umask-honouring modes, worker counts."""
from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import compose_cfg, write_video
from tests.parity_utils import REPO_ROOT
from utils.errors import LipVoicerError


def _script(script: str, args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _stderr_lines(res: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny random checkpoints (tests/tiny_generation.py) and one synthetic talking-face clip."""
    from tests.tiny_generation import make_synthetic_clips, make_tiny_assets

    root = tmp_path_factory.mktemp("reliability")
    assets = make_tiny_assets(root / "assets")
    corpus = make_synthetic_clips(root / "corpus", n_clips=1)
    return assets, sorted((corpus / "videos").rglob("*.mp4"))[0]


def _fast(assets: Path, *extra: str) -> list[str]:
    """generation_overrides with 4 diffusion steps and no ASR: seconds on a CPU."""
    from tests.tiny_generation import generation_overrides

    return generation_overrides(assets, ["diffusion.T=4", "generate.asr_start=2", "generate.w_asr=0", *extra])


# ============================================================================ 5. settings
BAD_SETTINGS = [
    ("generate.w_asr=-1", "generate.w_asr=-1: must be a number >= 0 (0 turns ASR guidance off)"),
    ("generate.w_video=-0.5", "generate.w_video=-0.5: must be a number >= 0"),
    ("generate.asr_start=400", "generate.asr_start=400: must be between 0 and 399 (diffusion.T=400 steps"),
    ("generate.asr_start=-1", "generate.asr_start=-1: must be between 0 and 399"),
    ("generate.sampler=euler", "generate.sampler='euler': must be one of ancestral, ddim, dpm_solver"),
    ("generate.eta=-1", "generate.eta=-1: must be a number >= 0"),
    ("generate.seed=1.5", "generate.seed=1.5: must be an integer"),
    ("generate.min_seconds=0", "generate.min_seconds=0: must be a number of seconds > 0"),
    ("generate.max_seconds=-3", "generate.max_seconds=-3: must be a number of seconds > 0"),
    ("generate.batch_size=0", "generate.batch_size=0: must be an integer >= 1"),
    ("generate.device=tpu", "generate.device='tpu': must be auto, cpu, cuda or cuda:N"),
    ("generate.progress=maybe", "generate.progress='maybe': must be true or false"),
    ("generate.n_samples=0", "generate.n_samples=0: must be null (every clip) or an integer >= 1"),
]


@pytest.mark.parametrize("override,line", BAD_SETTINGS, ids=[b[0] for b in BAD_SETTINGS])
def test_each_bad_generation_setting_is_one_line(override, line):
    from pipelines.settings import generation_problems

    problems = generation_problems(compose_cfg([override]))
    assert len(problems) == 1 and problems[0].startswith(line), problems


def test_steps_of_the_fast_samplers_and_good_defaults():
    from pipelines.settings import check_generation_settings, generation_problems

    check_generation_settings(compose_cfg())                                     # the defaults pass
    check_generation_settings(compose_cfg(["generate.w_asr=0", "generate.asr_start=9999"]))  # unused when off
    assert generation_problems(compose_cfg(["generate.sampler=ddim", "generate.steps=0"])) == [
        "generate.steps=0: the ddim sampler needs an integer between 1 and diffusion.T=400"]
    assert generation_problems(compose_cfg(["generate.sampler=dpm_solver", "generate.steps=401"])) == [
        "generate.steps=401: the dpm_solver sampler needs an integer between 1 and diffusion.T=400"]
    assert generation_problems(compose_cfg(["generate.steps=0"])) == []          # ancestral: steps unused
    many = generation_problems(compose_cfg(["generate.w_asr=-1", "generate.w_video=-1", "generate.batch_size=0"]))
    assert len(many) == 3
    with pytest.raises(LipVoicerError) as e:
        check_generation_settings(compose_cfg(["generate.w_asr=-1", "generate.batch_size=0"]))
    assert str(e.value).splitlines() == ["generate.w_asr=-1: must be a number >= 0 (0 turns ASR guidance off)",
                                         "generate.batch_size=0: must be an integer >= 1"]


def test_settings_are_checked_before_the_video_or_a_model(tmp_path, monkeypatch):
    """A bad setting stops generate_for_video / generate_split before anything is read: the video is not a
    video and no checkpoint exists, and still the settings line is what the user gets."""
    import pipelines.video_to_speech as v2s
    from pipelines.split_generation import generate_split

    def boom(*a, **k):
        raise AssertionError("heavy work started before the settings were checked")

    monkeypatch.setattr(v2s, "analyse_segments", boom)
    monkeypatch.setattr(v2s, "generation_files", boom)
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("no video")
    cfg = compose_cfg([f"generate.video_path={not_a_video}", f"generate.save_dir={tmp_path / 'o'}",
                       "generate.w_asr=-1", f"paths.checkpoints_dir={tmp_path / 'none'}"])
    with pytest.raises(LipVoicerError, match=r"^generate\.w_asr=-1: must be a number >= 0"):
        v2s.generate_for_video(cfg)
    cfg = compose_cfg([f"dataset.root={tmp_path / 'no_dataset'}", f"generate.save_dir={tmp_path / 'o'}",
                       "generate.asr_start=400", "generate.device=cpu"])
    with pytest.raises(LipVoicerError, match=r"^generate\.asr_start=400: must be between 0 and 399"):
        generate_split(cfg)
    assert not (tmp_path / "o").exists()


def test_bad_setting_on_the_command_line_is_one_line(tmp_path):
    res = _script("inference_real_video.py", ["generate.video_path=x.mp4", "generate.w_asr=-1",
                                               f"hydra.run.dir={tmp_path / 'h'}"], tmp_path)
    assert res.returncode == 1
    assert _stderr_lines(res) == ["error: generate.w_asr=-1: must be a number >= 0 (0 turns ASR guidance off)"]


# ---------------------------------------------------------------------------- numbers and characters
@pytest.mark.parametrize("text,words", [
    ("call 911 at 10:30", "call nine hundred and eleven at ten thirty"),
    ("It's 9:00, not 10:05.", "it's nine o'clock not ten oh five"),
    ("born in 1999, back in 2024 and 2009", "born in nineteen ninety nine back in twenty twenty four and two "
                                            "thousand and nine"),
    ("50% of 1,000,000", "fifty percent of one million"),
    ("the 1st and the 22nd", "the first and the twenty second"),
    ("pi is 3.14", "pi is three point one four"),
    ("agent 007", "agent zero zero seven"),
    ("12 apples", "twelve apples"),
    ("Straße", "strasse"),
    ("WE DON'T {LG} KNOW.", "we don't know"),
])
def test_numbers_are_spelled_as_words(text, words):
    from dataloaders.text import normalize_text

    assert normalize_text(text) == words


@pytest.fixture(scope="module")
def letters_tokenizer(tmp_path_factory):
    """A BPE tokenizer trained on a corpus of every letter but q and z."""
    from dataloaders.tokenizer import BPETokenizer, train_bpe

    words = ("the cat sat on a mat we know what it is about she sells sea shells by the shore call nine hundred "
             "and eleven at ten thirty jumping fox over lazy dog brown vexed wily king").replace("z", "s").split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 8)) for _ in range(300)]
    path = train_bpe(texts, tmp_path_factory.mktemp("tok") / "tok.model", vocab_size=60)
    return BPETokenizer(path)


def test_digits_reach_the_tokenizer_as_words(letters_tokenizer):
    ids = letters_tokenizer.encode("call 911 at 10:30")
    assert 0 not in ids
    assert letters_tokenizer.decode(ids) == "call nine hundred and eleven at ten thirty"


def test_unencodable_characters_are_named_and_left_out(letters_tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="dataloaders.tokenizer"):
        ids = letters_tokenizer.encode("quiz the cat ж")
        again = letters_tokenizer.encode("quiz")          # warned once per character
    assert 0 not in ids and 0 not in again                # no CTC blank among the targets
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "cannot encode 'q', 'z', 'ж'" in warnings[0] and "quiz the cat" in warnings[0]
    assert "tok.model" in warnings[0]


# ============================================================================ 7. disk full and other write errors
def _enospc(_tmp):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _dot_tmp(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_disk_full_names_the_output_and_keeps_the_old_file(tmp_path):
    from utils.files import atomic_text, atomic_write

    target = tmp_path / "out" / "result.txt"
    atomic_text(target, "previous\n")
    with pytest.raises(LipVoicerError) as e:
        atomic_write(target, _enospc)
    assert str(e.value) == f"{target}: no space left on device"
    assert target.read_text() == "previous\n" and _dot_tmp(target.parent) == []


def test_wrapped_torch_error_on_a_full_disk(tmp_path, monkeypatch):
    """torch.save to a path reports ENOSPC only as `unexpected pos ...` (a RuntimeError)."""
    import utils.files as files

    target = tmp_path / "mel.wav.spec"
    writer = lambda tmp: torch.save(torch.zeros(100_000), "/dev/full")   # noqa: E731 - a real ENOSPC
    monkeypatch.setattr(files, "disk_full", lambda folder: True)
    with pytest.raises(LipVoicerError) as e:
        files.atomic_write(target, writer)
    assert str(e.value) == f"{target}: no space left on device"
    monkeypatch.setattr(files, "disk_full", lambda folder: False)
    with pytest.raises(LipVoicerError) as e:
        files.atomic_write(target, writer)
    assert str(e.value).startswith(f"{target}: write failed (RuntimeError: ") and "unexpected pos" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    import builtins

    import utils.checkpoint as ckpt

    path = tmp_path / "checkpoint" / "100.pkl"
    ckpt.atomic_torch_save({"iteration": 100}, path)
    real_open = builtins.open
    # the checkpoint's bytes go to /dev/full, which fails every write with ENOSPC, like a full disk
    monkeypatch.setattr(ckpt, "open", lambda p, mode="r", *a, **k: real_open("/dev/full", mode) if "w" in mode
                        else real_open(p, mode, *a, **k), raising=False)
    with pytest.raises(LipVoicerError) as e:
        ckpt.atomic_torch_save({"iteration": 200, "w": torch.zeros(100_000)}, path)
    assert str(e.value) == f"{path}: no space left on device"
    assert torch.load(path)["iteration"] == 100 and _dot_tmp(path.parent) == []


def test_read_only_and_permission_errors_are_named_too(tmp_path):
    from utils.files import atomic_write

    def erofs(_tmp):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    with pytest.raises(LipVoicerError, match=r"x\.wav: read-only file system$"):
        atomic_write(tmp_path / "x.wav", erofs)
    with pytest.raises(ValueError):                      # not a write failure: a bug keeps its traceback
        atomic_write(tmp_path / "y.wav", lambda p: (_ for _ in ()).throw(ValueError("bug")))


def _av_writes_to_dev_full(monkeypatch):
    """Every PyAV output container writes into /dev/full (ENOSPC), as on a full disk."""
    import av

    real_open = av.open

    def open_(file, mode="r", *a, **k):
        return real_open("/dev/full" if mode == "w" else file, mode, *a, **k)

    monkeypatch.setattr(av, "open", open_)


def test_mux_on_a_full_disk_blames_the_output_not_the_input(tmp_path, monkeypatch):
    from dataloaders.video_io.mux import mux_audio

    video = tmp_path / "in.mp4"
    write_video(video, np.random.default_rng(0).integers(0, 255, (50, 64, 64, 3), dtype=np.uint8))
    _av_writes_to_dev_full(monkeypatch)
    out = tmp_path / "out" / "out.mp4"
    with pytest.raises(LipVoicerError) as e:
        mux_audio(video, np.zeros(32000, np.float32), 16000, out)
    assert str(e.value) == f"{out}: no space left on device"
    assert _dot_tmp(out.parent) == []


def test_inference_on_a_full_disk_names_the_output_folder(tiny, tmp_path, monkeypatch):
    from pipelines.video_to_speech import generate_for_video

    assets, video = tiny
    cfg = compose_cfg(_fast(assets, f"generate.video_path={video}", f"generate.save_dir={tmp_path / 'gen'}",
                            "generate.text=hello", "generate.save_mouth_video=false"))
    _av_writes_to_dev_full(monkeypatch)
    with pytest.raises(LipVoicerError) as e:
        generate_for_video(cfg)
    assert str(e.value) == f"{tmp_path / 'gen' / video.stem}: no space left on device"
    assert list((tmp_path / "gen").iterdir()) == []     # no temporary folder left


# ============================================================================ 12. modes honour the umask
def test_written_files_and_folders_honour_the_umask(tmp_path):
    from utils.checkpoint import atomic_torch_save
    from utils.files import atomic_dir, atomic_text

    old = os.umask(0o022)
    try:
        f = atomic_text(tmp_path / "a.txt", "x")
        c = atomic_torch_save({"a": 1}, tmp_path / "c.pkl")
        with atomic_dir(tmp_path / "folder") as d:
            (d / "inside.txt").write_text("y")
        os.umask(0o077)
        private = atomic_text(tmp_path / "p.txt", "x")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(f) == 0o644 and mode(c) == 0o644 and mode(tmp_path / "folder") == 0o755
    assert mode(private) == 0o600


# ============================================================================ 12. errors start on a fresh line
def test_error_line_is_not_glued_to_a_progress_bar(capsys):
    from tqdm import tqdm

    from utils.errors import exit_on_user_error

    @exit_on_user_error
    def job():
        bar = tqdm(total=10, desc="work")
        bar.update(3)
        raise LipVoicerError("clip.mp4: broken")

    with pytest.raises(SystemExit):
        job()
    err = capsys.readouterr().err
    assert "\nerror: clip.mp4: broken\n" in err and err.endswith("error: clip.mp4: broken\n")


def test_bad_input_run_prints_exactly_one_stderr_line(tiny, tmp_path):
    """A video without a face goes through MediaPipe; its C++ start-up lines must not show."""
    assets, _ = tiny
    wall = tmp_path / "wall.mp4"
    ramp = np.linspace(40, 200, 128, dtype=np.float32)
    write_video(wall, np.stack([np.broadcast_to((ramp[None, :, None] + i).astype(np.uint8), (128, 128, 3))
                                for i in range(30)]))
    res = _script("inference_real_video.py", [str(wall), f"generate.save_dir={tmp_path / 'o'}", "generate.text=hi",
                                              *_fast(assets), f"hydra.run.dir={tmp_path / 'h'}"], tmp_path)
    assert res.returncode == 1
    assert _stderr_lines(res) == [f"error: {wall}: no face detected in any frame"], res.stderr


def test_native_stderr_is_silenced_but_kept_on_failure(capfd):
    from utils.native_output import native_stderr_silenced

    with native_stderr_silenced():
        os.write(2, b"chatter\n")
    with pytest.raises(RuntimeError):
        with native_stderr_silenced():
            os.write(2, b"why it failed\n")
            raise RuntimeError("x")
    err = capfd.readouterr().err
    assert "chatter" not in err and "why it failed" in err


# ============================================================================ 12. worker counts
def test_auto_workers_is_min_4_and_usable_cores(monkeypatch):
    import utils.processes as proc

    monkeypatch.setattr(proc.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert proc.resolve_workers("auto") == 2 and proc.resolve_workers(None) == 2 and proc.resolve_workers(3) == 3
    monkeypatch.setattr(proc.os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert proc.resolve_workers("auto") == 4
    with pytest.raises(LipVoicerError, match=r"^prep\.num_workers=0: must be auto"):
        proc.resolve_workers(0, "prep.num_workers")
    cfg = compose_cfg()
    assert cfg.prep.num_workers == "auto" and cfg.wav2mel.num_workers == "auto"


# ============================================================================ 8. no orphaned workers
def _children(pid: int) -> set[int]:
    kids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.add(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_mouth_crop_job_leaves_no_workers(tmp_path):
    from tests.tiny_generation import mean_face_source

    rng = np.random.default_rng(0)
    for i in range(6):   # no face in noise: each video keeps a worker busy with both detector ranges
        write_video(tmp_path / "videos" / "test" / "spk" / f"{i:05d}.mp4",
                    rng.integers(0, 255, (200, 96, 96, 3), dtype=np.uint8))
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "dataloaders/extract_mouthcrops.py"), "--ds_dir",
                             str(tmp_path / "videos"), "--out_dir", str(tmp_path / "rois"), "--workers", "2",
                             f"prep.mean_face_path={mean_face_source()}", "prep.progress=false"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(workers) < 3:   # 2 workers + the resource tracker
            workers = _children(proc.pid)
            time.sleep(0.2)
        assert len(workers) >= 3, "the job did not start its workers"
        time.sleep(1.0)
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 8
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        survivors = [p for p in workers if _alive(p)]
        assert survivors == [], f"workers {survivors} outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in workers:   # only what this test started, should a worker have survived
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_worker_whose_parent_is_gone_exits(monkeypatch):
    import utils.processes as proc

    exits = []
    monkeypatch.setattr(proc.os, "_exit", lambda code: exits.append(code))
    proc.die_with_parent(parent_pid=os.getppid() + 1 if os.getppid() != 1 else 2)
    assert exits == [1]


# ============================================================================ 11. only the assets a run needs
@pytest.mark.parametrize("overrides,expected", [
    ([], ["melgen_lrs3", "asr_lrs3", "tokenizer_bpe256", "hifigan", "vsr_lrs3", "vsr_lm", "mean_face", "vsr_units"]),
    (["generate.text=hello"], ["melgen_lrs3", "asr_lrs3", "tokenizer_bpe256", "hifigan", "mean_face"]),
    (["generate.text=hello", "generate.w_asr=0"], ["melgen_lrs3", "hifigan", "mean_face"]),
    (["dataset=lrs2", "vsr.lm_weight=0"], ["melgen_lrs2", "asr_lrs2", "tokenizer_bpe256", "hifigan", "vsr_lrs3",
                                           "mean_face", "vsr_units"]),
])
def test_needed_assets_for_overrides(overrides, expected):
    import download_checkpoints as dl

    names, notes = dl.inference_assets(compose_cfg(overrides))
    assert names == expected and notes == []
    assert "asr_lm" not in names and "tokenizer_bpe1024" not in names and "ngram_lm" not in names


def test_own_checkpoint_is_noted_not_fetched(tmp_path):
    import download_checkpoints as dl

    names, notes = dl.inference_assets(compose_cfg([f"generate.ckpt_path={tmp_path / 'mine.pkl'}",
                                                    "generate.text=hi"]))
    assert "melgen_lrs3" not in names
    assert notes == [f"MelGen (generate.ckpt_path): {tmp_path / 'mine.pkl'} not found (not a published asset: "
                     "put your file there or change the setting)"]


def test_for_inference_fetches_only_what_the_run_needs(tmp_path, monkeypatch, capsys):
    import download_checkpoints as dl

    fetched = []
    monkeypatch.setattr(dl, "fetch_asset", lambda cfg, asset, force=False, log=print:
                        fetched.append(asset.name) or dl.Result(asset.name, "present", Path("x")))
    assert dl.main(["--for-inference", "generate.text=hi", "generate.w_asr=0"]) == 0
    assert fetched == ["melgen_lrs3", "hifigan", "mean_face"]
    assert "this inference run needs: melgen_lrs3, hifigan, mean_face" in capsys.readouterr().out


def test_unused_assets_are_not_defaults():
    from utils.assets import asset_table

    table = asset_table(compose_cfg())
    assert not table["asr_lm"].default and not table["tokenizer_bpe1024"].default
    assert table["ngram_lm"].default   # evaluate.py's beam search uses it


# ============================================================================ 11. positional video paths
@pytest.mark.parametrize("path", ["my clip (1).mp4", "dir with space/it's [a], {b}.mp4", "C:\\odd\\", "a=b.mp4"])
def test_positional_path_becomes_a_quoted_override(path, tmp_path, monkeypatch):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from utils.cli import positional_to_override

    monkeypatch.chdir(tmp_path)
    if "=" in path:
        Path(path).write_text("x")       # an existing file whose name has '=' is still a path
    argv = positional_to_override(["prog.py", path, "generate.seed=3"], "generate.video_path")
    assert argv[2] == "generate.seed=3"
    override = OverridesParser.create().parse_override(argv[1])
    assert override.key_or_group == "generate.video_path" and override.value() == path


def test_positional_helper_leaves_options_and_overrides_alone():
    from utils.cli import positional_to_override

    argv = ["p", "--cfg", "job", "generate.seed=1", "-m"]
    assert positional_to_override(argv, "k") == argv
    import lipread
    assert lipread._positional_input_to_override(["lipread.py", "a b.npz"]) == ["lipread.py", "vsr.input='a b.npz'"]


def test_positional_path_reaches_the_pipeline_unchanged(tiny, tmp_path):
    """Fast: Hydra accepts the positional path and the pipeline gets it verbatim (it is not a video)."""
    odd = tmp_path / "dir with space" / "it's (1) [a].mp4"
    odd.parent.mkdir()
    odd.write_text("not a video")
    res = _script("inference_real_video.py", [str(odd), "generate.text=hi", *_fast(tiny[0]),
                                              f"generate.save_dir={tmp_path / 'o'}", f"hydra.run.dir={tmp_path / 'h'}"],
                  tmp_path)
    assert res.returncode == 1
    lines = _stderr_lines(res)
    assert len(lines) == 1 and lines[0].startswith(f"error: {odd}: "), res.stderr


@pytest.mark.slow
def test_positional_path_with_spaces_and_parentheses_end_to_end(tiny, tmp_path):
    assets, video = tiny
    odd = tmp_path / "dir with space" / "my clip (1).mp4"
    odd.parent.mkdir()
    odd.write_bytes(video.read_bytes())
    from utils.cli import hydra_quote

    # the positional path needs no quoting; an override value with parentheses needs Hydra's inner quotes
    res = _script("inference_real_video.py", [str(odd), f"generate.save_dir={hydra_quote(str(tmp_path / 'gen (x)'))}",
                                              "generate.text=hello", *_fast(assets, "generate.save_mouth_video=false"),
                                              f"hydra.run.dir={tmp_path / 'h'}"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    out = tmp_path / "gen (x)" / "my clip (1)"
    assert (out / "my clip (1).wav").is_file() and (out / "my clip (1).mp4").is_file()


# ============================================================================ 12. the recipe from a fresh clone
def test_recipe_fetches_a_missing_mean_face(tmp_path, monkeypatch):
    from recipes import synthetic_settings
    from recipes.synthetic_settings import RecipeSettings
    from recipes.synthetic_training import ensure_mean_face
    from tests.tiny_generation import mean_face_source

    calls = []

    def fake_run_script(s, args, what):
        calls.append(args)
        dest = Path(args[args.index("--dest") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "20words_mean_face.npy").write_bytes(mean_face_source().read_bytes())

    monkeypatch.setattr(synthetic_settings, "run_script", fake_run_script)
    s = RecipeSettings(work_dir=tmp_path / "w", mean_face=tmp_path / "ck" / "20words_mean_face.npy")
    assert ensure_mean_face(s) == s.mean_face and s.mean_face.is_file()
    assert calls == [["download_checkpoints.py", "--only", "mean_face", "--dest", str(tmp_path / "ck")]]
    assert ensure_mean_face(s) == s.mean_face and len(calls) == 1          # present: nothing fetched

    def offline(s, args, what):
        raise LipVoicerError("recipe stage 'fetch mean face' failed (exit code 1)")

    monkeypatch.setattr(synthetic_settings, "run_script", offline)
    s2 = RecipeSettings(work_dir=tmp_path / "w", mean_face=tmp_path / "none" / "20words_mean_face.npy")
    with pytest.raises(LipVoicerError, match="mean face not found and could not be fetched"):
        ensure_mean_face(s2)
    s3 = RecipeSettings(work_dir=tmp_path / "w", mean_face=tmp_path / "my_face.npy")
    with pytest.raises(LipVoicerError, match=r"my_face\.npy: mean face not found \(--mean_face <file>"):
        ensure_mean_face(s3)


def test_every_recipe_flag_has_help():
    res = subprocess.run([sys.executable, "recipes/synthetic.py", "--help"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0
    import argparse

    import recipes.synthetic as rs
    captured = {}
    real_parse = argparse.ArgumentParser.parse_known_args

    def grab(self, args=None, namespace=None):
        captured["parser"] = self
        raise SystemExit(0)

    argparse.ArgumentParser.parse_known_args = grab
    try:
        with pytest.raises(SystemExit):
            rs.main(["--help"])
    finally:
        argparse.ArgumentParser.parse_known_args = real_parse
    actions = [a for a in captured["parser"]._actions if a.option_strings and a.dest != "help"]
    assert actions and all(a.help for a in actions), [a.dest for a in actions if not a.help]
