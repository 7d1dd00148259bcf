"""train_melgen: checkpoints, exact resume, TensorBoard logs, the command line, bad clips and leftovers."""
import logging
import shutil
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO_ROOT, compose_cfg, free_port, tiny_overrides
from trainers.melgen import experiment_dir, train
from trainers.base import find_latest_iteration, list_checkpoints, resolve_num_workers
from utils.errors import LipVoicerError


def _weights(path):
    return torch.load(path, weights_only=False)["model_state_dict"]


def test_checkpoints_and_exact_resume(tiny_corpus, tmp_path):
    straight = compose_cfg(tiny_overrides(tiny_corpus, tmp_path / "a", ["train.n_iters=4", "train.iters_per_ckpt=2"]))
    last = train(straight)
    ckpt_dir = experiment_dir(straight) / "checkpoint"
    assert sorted(list_checkpoints(ckpt_dir)) == [2, 4] and last == ckpt_dir / "4.pkl"
    assert str(ckpt_dir).endswith("exp/LRS3/wnet_h16_d2_T400_betaT0.02/checkpoint")
    assert list((experiment_dir(straight) / "tensorboard").glob("events.*"))
    assert not list(ckpt_dir.glob("*.tmp"))

    # the same run in two pieces: 2 iterations, then resume to 4
    train(compose_cfg(tiny_overrides(tiny_corpus, tmp_path / "b", ["train.n_iters=2", "train.iters_per_ckpt=2"])))
    resumed_cfg = compose_cfg(tiny_overrides(tiny_corpus, tmp_path / "b", ["train.n_iters=4", "train.iters_per_ckpt=2"]))
    train(resumed_cfg)
    a, b = _weights(ckpt_dir / "4.pkl"), _weights(experiment_dir(resumed_cfg) / "checkpoint" / "4.pkl")
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    ckpt = torch.load(ckpt_dir / "4.pkl", weights_only=False)
    assert ckpt["iteration"] == 4 and "optimizer_state_dict" in ckpt


def test_keep_last_and_fresh_start(tiny_corpus, tmp_path):
    cfg = compose_cfg(tiny_overrides(tiny_corpus, tmp_path, ["train.n_iters=3", "train.iters_per_ckpt=1",
                                                             "train.keep_last=2", "train.iters_per_image=0"]))
    train(cfg)
    d = experiment_dir(cfg) / "checkpoint"
    assert sorted(list_checkpoints(d)) == [2, 3]
    # ckpt_iter=-1 ignores the existing checkpoints and starts again
    train(compose_cfg(tiny_overrides(tiny_corpus, tmp_path, ["train.n_iters=1", "train.ckpt_iter=-1",
                                                             "train.keep_last=0", "train.iters_per_image=0"])))
    assert sorted(list_checkpoints(d)) == [1, 2, 3]


def _run(args, cwd=REPO_ROOT):
    return subprocess.run([sys.executable, "train_melgen.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_command_line_trains_and_resumes(tiny_corpus, tmp_path):
    args = tiny_overrides(tiny_corpus, tmp_path, ["train.iters_per_ckpt=2", f"hydra.run.dir={tmp_path / 'h'}"])
    r = _run([*args, "train.n_iters=2"])
    assert r.returncode == 0, r.stderr[-2000:]
    d = tmp_path / "exp" / "LRS3" / "wnet_h16_d2_T400_betaT0.02" / "checkpoint"
    assert find_latest_iteration(d) == 2
    r = _run([*args, "train.n_iters=3"])
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout + r.stderr  # Hydra logs to stdout
    assert "resumed from" in out and "(iteration 2)" in out
    assert find_latest_iteration(d) == 3


def test_command_line_errors_are_one_line(tiny_corpus, tmp_path):
    r = _run([f"dataset.root={tmp_path / 'missing'}", f"train.save_dir={tmp_path}", "train.device=cpu",
              f"hydra.run.dir={tmp_path / 'h'}"])
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'missing' / 'videos'}: videos directory not found " \
                                                f"(dataset.videos_dir)"
    r = _run(tiny_overrides(tiny_corpus, tmp_path, ["train.ckpt_iter=7", f"hydra.run.dir={tmp_path / 'h'}"]))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].endswith("7.pkl: checkpoint for train.ckpt_iter=7 not found")


def test_torchrun_two_processes_on_cpu(tiny_corpus, tmp_path):
    """DistributedDataParallel over 2 CPU processes (gloo): rank 0 writes the checkpoints, resume works."""
    args = tiny_overrides(tiny_corpus, tmp_path, ["train.n_iters=2", "train.iters_per_ckpt=2",
                                                  f"hydra.run.dir={tmp_path / 'h'}"])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "train_melgen.py", *args]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    d = tmp_path / "exp" / "LRS3" / "wnet_h16_d2_T400_betaT0.02" / "checkpoint"
    ckpt = torch.load(d / "2.pkl", weights_only=False)
    assert len(ckpt["rng_state"]) == 2  # one RNG state per rank
    assert not any(k.startswith("module.") for k in ckpt["model_state_dict"])
    r = subprocess.run(cmd[:-len(args)] + [a.replace("train.n_iters=2", "train.n_iters=3") for a in args],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert find_latest_iteration(d) == 3


# ----------------------------------------------------------------------------- issue 14
def _corpus_with_bad_clips(tiny_corpus, tmp_path, clips=("trainval/spk1/00001",)):
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    bad = [root / "mouth_rois" / f"{c}.npz" for c in clips]
    for p in bad:
        p.write_bytes(b"not a zip file")
    return root, bad


def _skipped_scalars(exp_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(exp_dir / "tensorboard"))
    ea.Reload()
    return [e.value for e in ea.Scalars("data/skipped_clips")]


def test_a_bad_clip_is_skipped_logged_once_and_resume_stays_exact(tiny_corpus, tmp_path, caplog):
    root, (bad,) = _corpus_with_bad_clips(tiny_corpus, tmp_path)
    extra = ["train.max_bad_fraction=0.5", "train.iters_per_image=0", "train.iters_per_ckpt=2"]
    straight = compose_cfg(tiny_overrides(root, tmp_path / "a", extra + ["train.n_iters=2"]))
    with caplog.at_level(logging.WARNING):
        train(straight)   # 2 iterations x 2 clips: one epoch, so the bad clip is drawn
    named = [r.getMessage() for r in caplog.records if str(bad) in r.getMessage()]
    assert len(named) == 1, named
    assert "bad clip skipped (1 so far of 4 clips; train.max_bad_fraction=0.5 allows 2): " in named[0]
    assert f"{bad}: not a readable mouth-crop file (" in named[0]
    assert _skipped_scalars(experiment_dir(straight))[-1] == 1.0
    # the same run in two pieces skips the same clip and ends with the same weights
    for n in (1, 2):
        resumed = compose_cfg(tiny_overrides(root, tmp_path / "b", extra + [f"train.n_iters={n}"]))
        train(resumed)
    a = _weights(experiment_dir(straight) / "checkpoint" / "2.pkl")
    b = _weights(experiment_dir(resumed) / "checkpoint" / "2.pkl")
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


def test_too_many_bad_clips_stop_with_one_line(tiny_corpus, tmp_path):
    """With a worker process (train.num_workers=1): the skip reaches the trainer, the stop is one line."""
    root, (bad,) = _corpus_with_bad_clips(tiny_corpus, tmp_path)
    args = [a for a in tiny_overrides(root, tmp_path, ["train.n_iters=2", f"hydra.run.dir={tmp_path / 'h'}"])
            if not a.startswith("train.num_workers=")] + ["train.num_workers=1"]
    r = _run(args)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1].startswith(
        "error: 1 of 4 training clips are bad, more than train.max_bad_fraction=0.05 allows (0); the first: "
        f"{bad}: not a readable mouth-crop file (")


def test_errors_in_loader_workers_are_one_line(tiny_corpus, tmp_path):
    clips = ("pretrain/spk0/00001", "pretrain/spk0/00002", "trainval/spk1/00001", "trainval/spk1/00002")
    root, bad = _corpus_with_bad_clips(tiny_corpus, tmp_path, clips)
    cfg = compose_cfg(tiny_overrides(root, tmp_path, ["train.n_iters=1", "train.num_workers=1",
                                                      "train.max_bad_fraction=1"]))
    with pytest.raises(LipVoicerError) as e:
        train(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("none of the 4 training clips can be used; the first bad one: ")
    assert "not a readable mouth-crop file" in msg


def test_stale_temporaries_go_and_an_unreadable_newest_checkpoint_falls_back(tiny_corpus, tmp_path, caplog):
    def cfg(n):
        return compose_cfg(tiny_overrides(tiny_corpus, tmp_path, [f"train.n_iters={n}", "train.iters_per_ckpt=1",
                                                                  "train.iters_per_image=0"]))

    train(cfg(2))
    d = experiment_dir(cfg(2)) / "checkpoint"
    stale = [d / ".3.pkl.k2j4h5g6.tmp.pkl", d / ".2.pkl.abcdefgh.tmp"]   # a kill -9 during torch.save
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    unrelated = d / ".notes.tmp"
    unrelated.write_text("kept")
    newest = d / "2.pkl"
    newest.write_bytes(newest.read_bytes()[:1000])    # the newest checkpoint is unreadable
    with caplog.at_level(logging.INFO):
        last = train(cfg(3))
    assert not any(p.exists() for p in stale) and unrelated.exists()
    messages = [r.getMessage() for r in caplog.records]
    warn = [m for m in messages if m.startswith(f"{newest}: ")]
    assert len(warn) == 1 and "not a readable PyTorch checkpoint" in warn[0], messages
    assert warn[0].endswith("; resuming from the newest readable checkpoint before it instead")
    assert any(m.startswith(f"resumed from {d / '1.pkl'} (iteration 1)") for m in messages), messages
    assert any("removed 2 temporary file(s) left by an interrupted checkpoint write" in m for m in messages)
    assert last == d / "3.pkl" and torch.load(last, weights_only=False)["iteration"] == 3
    # an explicit iteration does not fall back; none readable: one line
    for p in d.glob("*.pkl"):
        p.write_bytes(b"garbage")
    with pytest.raises(LipVoicerError, match=r"2\.pkl: not a readable PyTorch checkpoint"):
        train(compose_cfg(tiny_overrides(tiny_corpus, tmp_path, ["train.n_iters=4", "train.ckpt_iter=2"])))
    with pytest.raises(LipVoicerError) as e:
        train(cfg(4))
    assert str(e.value).startswith(f"{d}: none of the 3 checkpoints can be read (the newest: {d / '3.pkl'}: "
                                   "not a readable PyTorch checkpoint (")
    assert str(e.value).endswith("); start afresh with train.ckpt_iter=-1") and "\n" not in str(e.value)


def test_num_workers_auto(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for cores, expected in ((1, 0), (2, 1), (3, 2), (16, 4)):
        monkeypatch.setattr("os.sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert resolve_num_workers("auto") == expected
        assert resolve_num_workers(None) == expected
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")          # torchrun: 4 processes share 16 cores
    assert resolve_num_workers("auto") == 3
    assert resolve_num_workers(2) == 2 and resolve_num_workers("0") == 0
    for bad in ("-1", "many"):
        with pytest.raises(LipVoicerError, match=rf"^train\.num_workers={bad}: expected auto or a number"):
            resolve_num_workers(bad)
    cfg = compose_cfg([])
    assert cfg.train.num_workers == cfg.asr.train.num_workers == cfg.vocoder_train.num_workers == "auto"
    assert cfg.train.max_bad_fraction == cfg.asr.train.max_bad_fraction == cfg.vocoder_train.max_bad_fraction == 0.05


class _KillsItsWorker(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, key):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_loader_worker_is_one_line():
    from torch.utils.data import DataLoader

    from trainers.base import BadClipLog, CollateSkipping, SkipBadClips, Trainer

    trainer = Trainer.__new__(Trainer)
    trainer.section, trainer.bad_clips = "train", BadClipLog(4, 0.05)
    loader = DataLoader(SkipBadClips(_KillsItsWorker()), batch_size=2, num_workers=1, collate_fn=CollateSkipping())
    with pytest.raises(LipVoicerError) as e:
        next(trainer._batches(loader))
    msg = str(e.value)
    assert msg.startswith("a data-loader worker stopped (DataLoader worker (pid") and "\n" not in msg
    assert msg.endswith("); out of memory? lower train.num_workers or batch_size_per_gpu"), msg
