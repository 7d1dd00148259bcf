"""train_melgen: checkpoints, exact resume, TensorBoard logs, the command line."""
import subprocess
import sys

import torch

from tests.helpers import REPO_ROOT, compose_cfg, tiny_overrides
from trainers.melgen import experiment_dir, train
from trainers.base import find_latest_iteration, list_checkpoints


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
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
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
