"""HiFi-GAN vocoder training (train_vocoder.py is the command-line wrapper; the loop is trainers/base.py).

Trains the generator of `cfg.vocoder` (models/hifigan/generator.py) with the multi-period and
multi-scale discriminators of models/hifigan/discriminators.py on our own audio: every
`.wav` of the split(s) `vocoder_train.split` under `dataset.audios_dir` (or every `.wav`
under `vocoder_train.wav_dir` when that is set).

Data (dataloaders/vocoder_dataset.py): each item is a random `segment_samples` window of
one clip, the whole clip scaled to peak 1/peak_scale first, exactly as
`dataloaders.audio.wav_file_to_mel` does for the `.wav.spec` files MelGen learns from;
clips shorter than a segment are padded with zeros. On the device the batch's log-mel is
computed with `log_mel` (segment // hop + 1 frames, centred STFT): the generator gets its
first segment // hop frames (exactly segment samples out) and the mel loss compares
`log_mel(generated)` with the whole log-mel of the real segment.

Optimisation (the published HiFi-GAN recipe): AdamW (lr 2e-4, betas 0.8 / 0.99, weight
decay 0.01) for the generator and for the discriminators; the learning rate is
multiplied by `lr_decay` (0.999) every `lr_decay_iters` iterations (our data has no
fixed epoch; the published recipe decays once per epoch). Per iteration: one
discriminator step on (real, generated.detach()), then one generator step on
adversarial + fm_loss_weight * feature matching + mel_loss_weight * mel L1.

Checkpoints in `<save_dir>/exp/vocoder/<name>/`, both written atomically:
`g_<iter:08d>` = `{"generator": state dict}` (the published format: `load_hifigan` reads
it, `vocoder.checkpoint=<path>` makes the inference scripts use it) and
`do_<iter:08d>` = discriminators, both optimizers and schedulers, the iteration, every
rank's RNG state and the data sampler's position. `ckpt_iter: max` resumes from the
newest iteration that has both files and continues exactly (same weights as an
uninterrupted run); a pair with an unreadable file is skipped with a warning naming it.
TensorBoard logs go to `<save_dir>/exp/vocoder/<name>/tensorboard`. An unreadable `.wav`
is skipped (logged once, counted as data/skipped_clips; trainers/base.py).
"""
from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import torch

from dataloaders.audio import log_mel
from dataloaders.vocoder_dataset import VocoderSegmentDataset, list_training_wavs
from models.hifigan.discriminators import (build_discriminators, discriminator_loss, feature_matching_loss,
                                           generator_adversarial_loss, mel_l1_loss)
from models.hifigan.generator import HiFiGANGenerator, generator_state_dict, save_hifigan
from trainers.base import Trainer
from utils.checkpoint import atomic_torch_save, load_state_dict_strict, read_checkpoint
from utils.errors import LipVoicerError
from utils.plotting import mel_figure

log = logging.getLogger(__name__)

_G_RE = re.compile(r"^g_(\d{8,})$")
_DO_RE = re.compile(r"^do_(\d{8,})$")
_STATE_KEYS = ("mpd", "msd", "optim_g", "optim_d", "sched_g", "sched_d")


def experiment_dir(cfg) -> Path:
    v = cfg["vocoder_train"]
    return Path(str(v["save_dir"])) / "exp" / "vocoder" / str(v["name"])


def generator_path(exp_dir: str | Path, iteration: int) -> Path:
    return Path(exp_dir) / f"g_{iteration:08d}"


def state_path(exp_dir: str | Path, iteration: int) -> Path:
    return Path(exp_dir) / f"do_{iteration:08d}"


def list_vocoder_checkpoints(exp_dir: str | Path) -> dict[int, tuple[Path, Path]]:
    """{iteration: (g_ path, do_ path)} for the iterations that have both files."""
    d = Path(exp_dir)
    if not d.is_dir():
        return {}
    gs, dos = {}, {}
    for p in d.iterdir():
        if not p.is_file():
            continue
        m = _G_RE.match(p.name)
        if m:
            gs[int(m.group(1))] = p
        m = _DO_RE.match(p.name)
        if m:
            dos[int(m.group(1))] = p
    return {it: (gs[it], dos[it]) for it in sorted(gs.keys() & dos.keys())}


def _check_config(cfg, generator: HiFiGANGenerator) -> None:
    v = cfg["vocoder_train"]
    hop = int(cfg["audio"]["hop_length"])
    if generator.hop_length != hop:
        raise LipVoicerError(f"vocoder: the generator makes {generator.hop_length} samples per mel frame but "
                             f"audio.hop_length is {hop}")
    seg = int(v["segment_samples"])
    if seg <= 0 or seg % hop:
        raise LipVoicerError(f"vocoder_train.segment_samples={seg}: must be a positive multiple of "
                             f"audio.hop_length={hop}")
    if seg < 4 * hop:
        raise LipVoicerError(f"vocoder_train.segment_samples={seg}: too short (at least {4 * hop})")
    if int(v["lr_decay_iters"]) <= 0:   # the common keys are checked by trainers/base.py
        raise LipVoicerError(f"vocoder_train.lr_decay_iters={v['lr_decay_iters']}: must be positive")


def _log_audio(writer, y, y_hat, mel, it: int, sampling_rate: int, audio_cfg) -> None:
    writer.add_audio("audio/ground_truth", y[0].detach().float().cpu().clamp(-1, 1), it, sample_rate=sampling_rate)
    writer.add_audio("audio/generated", y_hat[0, 0].detach().float().cpu().clamp(-1, 1), it,
                     sample_rate=sampling_rate)
    with torch.no_grad():
        gen_mel = log_mel(y_hat[0, 0].detach().float(), audio_cfg)
    writer.add_figure("mel/ground_truth", mel_figure(mel[0]), it)
    writer.add_figure("mel/generated", mel_figure(gen_mel), it)


class VocoderTrainer(Trainer):
    section, desc, rate_tag = "vocoder_train", "train HiFi-GAN", "segments_per_s"

    def experiment_dir(self) -> Path:
        return experiment_dir(self.cfg)

    # g_/do_ pairs directly in the experiment folder
    def checkpoint_dir(self) -> Path:
        return self.exp_dir

    def checkpoints(self):
        return list_vocoder_checkpoints(self.ckpt_dir)

    def checkpoint_files(self, iteration):
        return generator_path(self.ckpt_dir, iteration), state_path(self.ckpt_dir, iteration)

    def is_checkpoint_name(self, name):
        return bool(_G_RE.match(name) or _DO_RE.match(name))

    def build(self) -> None:
        cfg, v, dev = self.cfg, self.t, self.info.device
        self.model = self.generator = HiFiGANGenerator(cfg["vocoder"]).to(dev)
        _check_config(cfg, self.generator)
        self.dataset = VocoderSegmentDataset(list_training_wavs(cfg), int(v["segment_samples"]), cfg["audio"])
        self.discriminators = build_discriminators(v).to(dev)
        betas = (float(v["adam_b1"]), float(v["adam_b2"]))
        lr, wd = float(v["learning_rate"]), float(v["weight_decay"])
        self.optimizer = self.optim_g = torch.optim.AdamW(self.generator.parameters(), lr, betas=betas, weight_decay=wd)
        self.optim_d = torch.optim.AdamW(self.discriminators.parameters(), lr, betas=betas, weight_decay=wd)
        self.sched_g = torch.optim.lr_scheduler.ExponentialLR(self.optim_g, gamma=float(v["lr_decay"]))
        self.sched_d = torch.optim.lr_scheduler.ExponentialLR(self.optim_d, gamma=float(v["lr_decay"]))

    def summary(self) -> str:
        n_g = sum(p.numel() for p in self.generator.parameters())
        n_d = sum(p.numel() for p in self.discriminators.parameters())
        return (f"HiFi-GAN: generator {n_g / 1e6:.2f} M, discriminators {n_d / 1e6:.2f} M parameters, "
                f"{len(self.dataset)} training files")

    def start_fresh(self) -> None:
        if self.t.get("init_from"):
            src = Path(str(self.t["init_from"]))
            load_state_dict_strict(self.generator, generator_state_dict(read_checkpoint(src), str(src)), what=str(src))
            if self.info.is_main:
                log.info("generator initialised from %s", src)

    def load_checkpoint(self, iteration, files, ckpts) -> int:
        (g_file, do_file), (g_ckpt, state) = files, ckpts
        load_state_dict_strict(self.generator, generator_state_dict(g_ckpt, str(g_file)), what=str(g_file))
        for key in _STATE_KEYS:
            if key not in state:
                raise LipVoicerError(f"{do_file}: not a vocoder training state (no '{key}' entry)")
        load_state_dict_strict(self.discriminators.mpd, state["mpd"], what=f"{do_file} (mpd)")
        load_state_dict_strict(self.discriminators.msd, state["msd"], what=f"{do_file} (msd)")
        for key in _STATE_KEYS[2:]:
            getattr(self, key).load_state_dict(state[key])
        start = int(state.get("iteration", iteration))
        sampler = state.get("sampler") or {}
        self.position = int(sampler.get("position", start * self.bs))
        if sampler.get("n_items") not in (None, len(self.dataset)) and self.info.is_main:
            log.warning("the training set had %s files when %s was written and has %d now: the data order "
                        "differs from an uninterrupted run", sampler.get("n_items"), do_file, len(self.dataset))
        if sampler.get("world_size") not in (None, self.info.world_size) and self.info.is_main:
            log.warning("resuming a run of %s processes with %d: the data order differs from an uninterrupted "
                        "run", sampler.get("world_size"), self.info.world_size)
        self.restore_rng(state.get("rng_state"))
        return start

    def save_checkpoint(self, iteration, rng_states):
        g_file, do_file = self.checkpoint_files(iteration)
        g_path = save_hifigan(g_file, self.generator)
        atomic_torch_save({
            "mpd": self.discriminators.mpd.state_dict(), "msd": self.discriminators.msd.state_dict(),
            "optim_g": self.optim_g.state_dict(), "optim_d": self.optim_d.state_dict(),
            "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
            "steps": iteration, "iteration": iteration, "rng_state": rng_states,
            "sampler": {"position": self.sampler_position(iteration), "seed": self.seed, "n_items": len(self.dataset),
                        "world_size": self.info.world_size, "batch_size": self.bs},
            "vocoder": self.generator.params,
        }, do_file)
        return g_path

    def wrap(self) -> None:
        if self.info.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed segment length: the fastest kernels are found once
        self.net_g, self.net_d = self.ddp(self.generator), self.ddp(self.discriminators)

    def train_step(self, batches, it):
        audio_cfg = self.cfg["audio"]
        y = next(batches).to(self.info.device, non_blocking=True)            # (B, segment)
        with torch.no_grad():
            mel = log_mel(y, audio_cfg)                                      # (B, n_mels, segment // hop + 1)
        with self.autocast():
            y_hat = self.net_g(mel[..., :y.shape[-1] // int(audio_cfg["hop_length"])])   # (B, 1, segment)
        y = y.unsqueeze(1)

        # discriminator step on (real, generated) in one batch
        with self.autocast():
            outs, _ = self.net_d(torch.cat([y, y_hat.detach().to(y.dtype)]))
        n = y.shape[0]
        loss_d, _ = discriminator_loss([o[:n] for o in outs], [o[n:] for o in outs])
        self.optim_d.zero_grad(set_to_none=True)
        loss_d.backward()
        grad_norm_d = self.clip_gradients(self.discriminators)
        self.optim_d.step()

        # generator step; the discriminators' gradients from it are discarded (zeroed before their next
        # step), so they need not be averaged across processes
        v = self.t
        with self.net_d.no_sync() if self.info.distributed else contextlib.nullcontext():
            with self.autocast():
                with torch.no_grad():
                    _, fmaps_real = self.net_d(y)
                outs_fake, fmaps_fake = self.net_d(y_hat)
            loss_adv = generator_adversarial_loss(outs_fake)
            loss_fm = feature_matching_loss(fmaps_real, fmaps_fake)
            loss_mel = mel_l1_loss(y_hat, mel, audio_cfg)
            loss_g = loss_adv + float(v["fm_loss_weight"]) * loss_fm + float(v["mel_loss_weight"]) * loss_mel
            self.optim_g.zero_grad(set_to_none=True)
            loss_g.backward()
        grad_norm = self.clip_gradients(self.generator)
        self.optim_g.step()
        if it % int(v["lr_decay_iters"]) == 0:
            self.sched_g.step()
            self.sched_d.step()
        self.last = (y[:, 0], y_hat.detach(), mel)
        return {"loss_mel": loss_mel.detach(), "loss_gen_all": loss_g.detach(), "loss_gen_adv": loss_adv.detach(),
                "loss_fm": loss_fm.detach(), "loss_disc": loss_d.detach(), "grad_norm": grad_norm,
                "grad_norm_disc": grad_norm_d}

    def progress(self, scalars, rate):
        return {"mel": f"{scalars['loss_mel']:.3f}", "d": f"{scalars['loss_disc']:.3f}", "seg_s": f"{rate:.1f}"}

    def log_extras(self, it):
        every = int(self.t["iters_per_audio"])
        if every > 0 and it % every == 0:
            _log_audio(self.writer, *self.last, it, int(self.cfg["audio"]["sampling_rate"]), self.cfg["audio"])

    def finish(self) -> None:
        if self.last_saved is not None:
            log.info("generator checkpoint: %s (use it with vocoder.checkpoint=%s)", self.last_saved, self.last_saved)


def train(cfg) -> Path | None:
    """Run training; returns the path of the last generator checkpoint written (rank 0) or None."""
    return VocoderTrainer(cfg).run()
