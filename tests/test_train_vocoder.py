"""train_vocoder: discriminators and losses, checkpoints in the published format, exact resume,
learning, torchrun, errors. Tiny generator and discriminators on CPU."""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from models.hifigan.generator import load_hifigan, vocode
from models.hifigan.discriminators import (build_discriminators, discriminator_loss, feature_matching_loss,
                                           generator_adversarial_loss, mel_l1_loss)
from tests.helpers import REPO_ROOT, compose_cfg, free_port
from utils.errors import LipVoicerError
from dataloaders.vocoder_dataset import VocoderSegmentDataset, list_training_wavs
from trainers.vocoder import experiment_dir, list_vocoder_checkpoints, train

TINY_D = ["vocoder_train.mpd_channels=[4,8,8,8,8]", "vocoder_train.msd_channels=[4,8,8,8,8,8,8]"]


def tiny_overrides(corpus, save_dir, extra=None):
    return [f"dataset.root={corpus}", f"vocoder_train.save_dir={save_dir}", "vocoder.upsample_initial_channel=16",
            *TINY_D, "vocoder_train.batch_size_per_gpu=2", "vocoder_train.segment_samples=3200",
            "vocoder_train.num_workers=0", "vocoder_train.device=cpu", "vocoder_train.iters_per_logging=1",
            "vocoder_train.iters_per_audio=0", *(extra or [])]


def _scalars(exp_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(exp_dir / "tensorboard"))
    ea.Reload()
    return [e.value for e in ea.Scalars(tag)]


# ----------------------------------------------------------------------------- discriminators and losses
def test_discriminator_layout_and_losses():
    d = build_discriminators(OmegaConf.create({"mpd_channels": [4, 8, 8, 8, 8],
                                               "msd_channels": [4, 8, 8, 8, 8, 8, 8]}))
    assert [m.period for m in d.mpd.discriminators] == [2, 3, 5, 7, 11]
    assert len(d.msd.discriminators) == 3
    # spectral norm on the first scale only, weight norm everywhere else
    names = [n for n, _ in d.named_parameters()]
    assert any(n.startswith("msd.discriminators.0.") and "weight.original" in n and "original0" not in n
               for n in names)
    assert not any(n.startswith("msd.discriminators.1.") and n.endswith("weight.original") for n in names)
    assert any(n.startswith("mpd.discriminators.0.") and n.endswith("weight.original1") for n in names)
    x = torch.randn(2, 1, 3203)  # not a multiple of any period: reflect padding
    outs, fmaps = d(x)
    assert len(outs) == len(fmaps) == 8
    assert all(o.shape[0] == 2 and o.dim() == 2 for o in outs)
    assert all(len(f) == 6 for f in fmaps[:5]) and all(len(f) == 8 for f in fmaps[5:])
    assert fmaps[5][0].shape[-1] == 3203 and fmaps[6][0].shape[-1] == 1602  # x1, x1/2 average-pooled

    ones, zeros = [torch.ones(2, 5)], [torch.zeros(2, 5)]
    assert float(discriminator_loss(ones, zeros)[0]) == 0.0
    assert float(discriminator_loss(zeros, ones)[0]) == pytest.approx(2.0)
    assert float(generator_adversarial_loss(ones)) == 0.0
    assert float(generator_adversarial_loss(zeros * 2)) == pytest.approx(2.0)
    assert float(feature_matching_loss([[torch.ones(3)]], [[torch.zeros(3)]])) == pytest.approx(1.0)

    from dataloaders.audio import log_mel
    y = 0.3 * torch.sin(torch.arange(3200) / 5.0).repeat(2, 1)
    assert float(mel_l1_loss(y.unsqueeze(1), log_mel(y))) == 0.0


def test_published_discriminator_sizes():
    d = build_discriminators(None)
    mpd0 = d.mpd.discriminators[0]
    assert [c.out_channels for c in mpd0.convs] == [32, 128, 512, 1024, 1024]
    assert [c.stride for c in mpd0.convs] == [(3, 1)] * 4 + [(1, 1)]
    s = d.msd.discriminators[1]
    assert [c.out_channels for c in s.convs] == [128, 128, 256, 512, 1024, 1024, 1024]
    assert [c.groups for c in s.convs] == [1, 4, 16, 16, 16, 16, 1]
    assert [c.kernel_size[0] for c in s.convs] == [15, 41, 41, 41, 41, 41, 5]


# ----------------------------------------------------------------------------- data
def test_training_files_and_segments(tiny_corpus, tmp_path):
    cfg = compose_cfg(tiny_overrides(tiny_corpus, tmp_path))
    wavs = list_training_wavs(cfg)
    assert [str(w.relative_to(tiny_corpus / "audios")) for w in wavs] == [
        "pretrain/spk0/00001.wav", "pretrain/spk0/00002.wav", "trainval/spk1/00001.wav", "trainval/spk1/00002.wav"]
    both = compose_cfg(tiny_overrides(tiny_corpus, tmp_path, ["vocoder_train.split=[train,test]"]))
    assert len(list_training_wavs(both)) == 6
    anywhere = compose_cfg(tiny_overrides(tmp_path, tmp_path, [f"vocoder_train.wav_dir={tiny_corpus / 'audios'}"]))
    assert len(list_training_wavs(anywhere)) == 6
    ds = VocoderSegmentDataset(wavs, 3200, cfg.audio)
    a, b = ds[(0, 123)], ds[(0, 123)]
    assert a.shape == (3200,) and a.dtype == torch.float32 and torch.equal(a, b)
    long = VocoderSegmentDataset(wavs[:1], 16000 * 3, cfg.audio)[(0, 1)]  # longer than the clip: zero-padded
    assert long.shape == (48000,) and float(long[-1000:].abs().max()) == 0.0
    assert float(long.abs().max()) == pytest.approx(1 / 1.1, rel=1e-5)  # the clip is peak-normalised


def test_no_wavs_is_a_one_line_error(tmp_path):
    (tmp_path / "empty" / "audios" / "pretrain").mkdir(parents=True)
    cfg = compose_cfg(tiny_overrides(tmp_path / "empty", tmp_path))
    with pytest.raises(LipVoicerError) as e:
        list_training_wavs(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path / 'empty' / 'audios'}: no .wav files")
    with pytest.raises(LipVoicerError, match="wav_dir"):
        list_training_wavs(compose_cfg(tiny_overrides(tmp_path, tmp_path, [f"vocoder_train.wav_dir={tmp_path}"])))


# ----------------------------------------------------------------------------- training
def test_checkpoints_load_and_exact_resume(tiny_corpus, tmp_path):
    straight = compose_cfg(tiny_overrides(tiny_corpus, tmp_path / "a", [
        "vocoder_train.n_iters=4", "vocoder_train.iters_per_ckpt=2", "vocoder_train.iters_per_audio=2",
        "vocoder_train.lr_decay_iters=1"]))
    last = train(straight)
    d = experiment_dir(straight)
    assert str(d).endswith("exp/vocoder/LRS3")
    assert sorted(list_vocoder_checkpoints(d)) == [2, 4] and last == d / "g_00000004"
    assert not list(d.glob(".*tmp"))
    assert list((d / "tensorboard").glob("events.*"))

    # the generator file is the published format: load_hifigan reads it strictly and vocodes
    g = torch.load(last, weights_only=False)
    assert list(g) == ["generator"] and "conv_pre.weight_g" in g["generator"]
    gen = load_hifigan(last, straight.vocoder)
    assert not gen.is_weight_normed
    audio = vocode(gen, torch.randn(80, 10) - 5)
    assert audio.shape == (1600,) and torch.isfinite(audio).all()

    state = torch.load(d / "do_00000004", weights_only=False)
    for key in ("mpd", "msd", "optim_g", "optim_d", "sched_g", "sched_d", "rng_state", "sampler"):
        assert key in state, key
    assert state["iteration"] == 4 and state["sampler"]["position"] == 8
    assert state["optim_g"]["param_groups"][0]["lr"] == pytest.approx(2e-4 * 0.999 ** 4)

    # the same run in two pieces: 2 iterations, then resume to 4
    train(compose_cfg(tiny_overrides(tiny_corpus, tmp_path / "b", [
        "vocoder_train.n_iters=2", "vocoder_train.iters_per_ckpt=2", "vocoder_train.lr_decay_iters=1"])))
    resumed = compose_cfg(tiny_overrides(tiny_corpus, tmp_path / "b", [
        "vocoder_train.n_iters=4", "vocoder_train.iters_per_ckpt=2", "vocoder_train.lr_decay_iters=1"]))
    train(resumed)
    a = g["generator"]
    b = torch.load(experiment_dir(resumed) / "g_00000004", weights_only=False)["generator"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"generator {k} differs after resume"
    sb = torch.load(experiment_dir(resumed) / "do_00000004", weights_only=False)
    for part in ("mpd", "msd"):
        for k in state[part]:
            assert torch.equal(state[part][k], sb[part][k]), f"{part} {k} differs after resume"

    # nothing to do past n_iters; keep_last prunes whole pairs
    assert train(resumed) == experiment_dir(resumed) / "g_00000004"
    train(compose_cfg(tiny_overrides(tiny_corpus, tmp_path / "b", [
        "vocoder_train.n_iters=5", "vocoder_train.iters_per_ckpt=1", "vocoder_train.keep_last=1"])))
    assert sorted(p.name for p in experiment_dir(resumed).glob("*_0*")) == ["do_00000005", "g_00000005"]


def test_max_minutes_and_init_from(tiny_corpus, tmp_path):
    # out of time after the first iteration: stops there with a checkpoint
    cfg = compose_cfg(tiny_overrides(tiny_corpus, tmp_path / "a", [
        "vocoder_train.n_iters=100", "vocoder_train.iters_per_ckpt=50", "vocoder_train.max_minutes=1e-9"]))
    last = train(cfg)
    assert last == experiment_dir(cfg) / "g_00000001" and sorted(list_vocoder_checkpoints(experiment_dir(cfg))) == [1]
    # a fresh run starts its generator from init_from (learning rate 0: the weights stay as loaded)
    cfg2 = compose_cfg(tiny_overrides(tiny_corpus, tmp_path / "b", [
        "vocoder_train.n_iters=1", f"vocoder_train.init_from={last}", "vocoder_train.learning_rate=0"]))
    out = train(cfg2)
    a = torch.load(last, weights_only=False)["generator"]
    b = torch.load(out, weights_only=False)["generator"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mel_loss_decreases(tiny_corpus, tmp_path):
    cfg = compose_cfg(tiny_overrides(tiny_corpus, tmp_path, [
        "vocoder_train.n_iters=24", "vocoder_train.iters_per_ckpt=100", "vocoder_train.learning_rate=5e-3",
        "vocoder_train.split=test"]))
    train(cfg)
    mel = _scalars(experiment_dir(cfg), "train/loss_mel")
    assert len(mel) == 24
    first, last = sum(mel[:4]) / 4, sum(mel[-4:]) / 4
    assert last < 0.5 * first, mel
    assert len(_scalars(experiment_dir(cfg), "train/loss_disc")) == 24


# ----------------------------------------------------------------------------- command line
def _run(args):
    return subprocess.run([sys.executable, "train_vocoder.py", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def test_command_line_errors_are_one_line(tmp_path):
    (tmp_path / "empty" / "audios" / "trainval").mkdir(parents=True)
    r = _run(tiny_overrides(tmp_path / "empty", tmp_path, [f"hydra.run.dir={tmp_path / 'h'}"]))
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {tmp_path / 'empty' / 'audios'}: no .wav files for split 'train'"), r.stderr


def test_torchrun_two_processes_on_cpu(tiny_corpus, tmp_path):
    args = tiny_overrides(tiny_corpus, tmp_path, ["vocoder_train.n_iters=2", "vocoder_train.iters_per_ckpt=2",
                                                  "vocoder_train.max_minutes=30", f"hydra.run.dir={tmp_path / 'h'}"])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "train_vocoder.py", *args]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    d = tmp_path / "exp" / "vocoder" / "LRS3"
    assert sorted(list_vocoder_checkpoints(d)) == [2]
    state = torch.load(d / "do_00000002", weights_only=False)
    assert len(state["rng_state"]) == 2 and state["sampler"]["world_size"] == 2
    g = torch.load(d / "g_00000002", weights_only=False)["generator"]
    assert not any(k.startswith("module.") for k in g)
    load_hifigan(d / "g_00000002", compose_cfg(args[:-1]).vocoder)


# ----------------------------------------------------------------------------- issue 14
def test_an_unreadable_wav_is_skipped_and_resume_stays_exact(tiny_corpus, tmp_path, caplog):
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    for w in ("pretrain/spk0/00001", "pretrain/spk0/00002", "trainval/spk1/00001"):
        shutil.copy(tiny_corpus / "audios" / f"{w}.wav", wavs / f"{w.replace('/', '_')}.wav")
    bad = wavs / "broken.wav"
    bad.write_bytes(b"RIFF but not really a wav file")
    extra = [f"vocoder_train.wav_dir={wavs}", "vocoder_train.max_bad_fraction=0.5", "vocoder_train.iters_per_ckpt=2"]
    cfg = compose_cfg(tiny_overrides(tmp_path, tmp_path / "a", extra + ["vocoder_train.n_iters=2"]))
    with caplog.at_level(logging.WARNING):
        straight = train(cfg)   # 2 iterations x 2 segments: one epoch of the 4 files
    named = [r.getMessage() for r in caplog.records if str(bad) in r.getMessage()]
    assert len(named) == 1 and f"vocoder_train.max_bad_fraction=0.5 allows 2): {bad}: not a readable audio file" \
        in named[0], named
    assert _scalars(experiment_dir(cfg), "data/skipped_clips")[-1] == 1.0
    for n in (1, 2):
        resumed = train(compose_cfg(tiny_overrides(tmp_path, tmp_path / "b", extra + [f"vocoder_train.n_iters={n}"])))
    a = torch.load(straight, weights_only=False)["generator"]
    b = torch.load(resumed, weights_only=False)["generator"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(LipVoicerError, match=rf"^1 of 4 training clips are bad, more than vocoder_train\."
                                             rf"max_bad_fraction=0\.05 allows \(0\); the first: {bad}: "):
        train(compose_cfg(tiny_overrides(tmp_path, tmp_path / "c", [f"vocoder_train.wav_dir={wavs}",
                                                                      "vocoder_train.n_iters=2"])))


def test_unreadable_newest_pair_falls_back_and_temporaries_go(tiny_corpus, tmp_path, caplog):
    def cfg(n):
        return compose_cfg(tiny_overrides(tiny_corpus, tmp_path, [f"vocoder_train.n_iters={n}",
                                                                  "vocoder_train.iters_per_ckpt=1"]))

    train(cfg(2))
    d = experiment_dir(cfg(2))
    stale = d / ".do_00000003.x1y2z3w4.tmp"
    stale.write_bytes(b"half")
    bad = d / "do_00000002"
    bad.write_bytes(bad.read_bytes()[:2000])
    caplog.clear()
    with caplog.at_level(logging.INFO):
        last = train(cfg(3))
    messages = [r.getMessage() for r in caplog.records]
    assert not stale.exists()
    warn = [m for m in messages if m.startswith(f"{bad}: not a readable PyTorch checkpoint")]
    assert len(warn) == 1 and warn[0].endswith("; resuming from the newest readable checkpoint before it instead")
    assert any(m.startswith(f"resumed from {d / 'g_00000001'} and {d / 'do_00000001'} (iteration 1)")
               for m in messages), messages
    assert last == d / "g_00000003"
