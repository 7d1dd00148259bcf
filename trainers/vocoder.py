"""HiFi-GAN vocoder training loop (train_vocoder.py is the command-line wrapper).

Trains the generator of `cfg.vocoder` (models/hifigan/generator.py) with the multi-period and
multi-scale discriminators of models/hifigan/discriminators.py on our own audio: every
`.wav` of the split(s) `vocoder_train.split` under `dataset.audios_dir` (or every `.wav`
under `vocoder_train.wav_dir` when that is set).

Data: each item is a random `segment_samples` window of one clip. The whole clip is
scaled to peak 1/peak_scale first, exactly as `dataloaders.audio.wav_file_to_mel` does
for the `.wav.spec` files MelGen learns from; clips shorter than a segment are padded
with zeros. On the device the batch's log-mel is computed with `log_mel`
(segment // hop + 1 frames, centred STFT): the generator gets its first
segment // hop frames (exactly segment samples out) and the mel loss compares
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
uninterrupted run). TensorBoard logs go to `<save_dir>/exp/vocoder/<name>/tensorboard`.
"""
from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dataloaders.audio import audio_params, log_mel, peak_normalise, read_wav
from dataloaders.samplers import ResumableSampler
from models.hifigan.generator import HiFiGANGenerator, generator_state_dict, save_hifigan
from models.hifigan.discriminators import (build_discriminators, discriminator_loss, feature_matching_loss,
                                           generator_adversarial_loss, mel_l1_loss)
from utils.checkpoint import atomic_torch_save, load_state_dict_strict, read_checkpoint
from utils.distributed import DistInfo, any_rank, barrier, cleanup_distributed, init_distributed
from utils.errors import LipVoicerError
from utils.seeding import all_rng_states, seed_everything, set_rng_state

log = logging.getLogger(__name__)

_G_RE = re.compile(r"^g_(\d{8,})$")
_DO_RE = re.compile(r"^do_(\d{8,})$")


# ----------------------------------------------------------------------------- folders and checkpoints
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


def resolve_vocoder_resume(exp_dir: str | Path, ckpt_iter) -> int | None:
    """The iteration to resume from: `max` (newest complete pair; none -> fresh start), -1 (fresh)
    or an iteration number (its g_ and do_ files must exist)."""
    if ckpt_iter is None or str(ckpt_iter) == "-1":
        return None
    its = list_vocoder_checkpoints(exp_dir)
    if str(ckpt_iter) == "max":
        return max(its) if its else None
    try:
        n = int(ckpt_iter)
    except ValueError:
        raise LipVoicerError(f"vocoder_train.ckpt_iter={ckpt_iter}: expected 'max', -1 or an iteration number") \
            from None
    if n not in its:
        missing = [p for p in (generator_path(exp_dir, n), state_path(exp_dir, n)) if not p.is_file()]
        raise LipVoicerError(f"{missing[0]}: checkpoint for vocoder_train.ckpt_iter={n} not found")
    return n


def prune_vocoder_checkpoints(exp_dir: str | Path, keep_last: int) -> None:
    """Delete the g_/do_ pairs of all but the newest `keep_last` iterations (0 keeps everything)."""
    if keep_last <= 0:
        return
    its = list_vocoder_checkpoints(exp_dir)
    for it in sorted(its)[:-keep_last]:
        for p in its[it]:
            p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- data
def _splits(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(s) for s in value]


def list_training_wavs(cfg) -> list[Path]:
    """The training `.wav` files, sorted: every .wav under vocoder_train.wav_dir when set, else those
    of the split(s) vocoder_train.split under dataset.audios_dir (a `{dir, list}` source reads the
    clip ids of its file list; a `{dir}` source takes every .wav below `audios_dir/dir`)."""
    v = cfg["vocoder_train"]
    if v.get("wav_dir"):
        root = Path(str(v["wav_dir"]))
        if not root.is_dir():
            raise LipVoicerError(f"{root}: audio folder not found (vocoder_train.wav_dir)")
        wavs = sorted(p for p in root.rglob("*.wav") if p.is_file())
        if not wavs:
            raise LipVoicerError(f"{root}: no .wav files found (vocoder_train.wav_dir)")
        return wavs

    ds = cfg["dataset"]
    audios = Path(str(ds["audios_dir"]))
    if not audios.is_dir():
        raise LipVoicerError(f"{audios}: audio folder not found (dataset.audios_dir)")
    wavs, looked = set(), []
    for split in _splits(v["split"]):
        if split not in ds["splits"]:
            raise LipVoicerError(f"dataset '{ds['name']}' has no split '{split}' (has: {', '.join(ds['splits'])})")
        for src in ds["splits"][split]:
            d = audios / str(src["dir"])
            looked.append(str(src["dir"]))
            if src.get("list"):
                lst = Path(str(ds["root"])) / str(src["list"])
                if not lst.is_file():
                    raise LipVoicerError(f"{lst}: file list of split '{split}' not found")
                missing = 0
                for line in lst.read_text().splitlines():
                    if line.strip():
                        p = d / f"{line.split()[0]}.wav"
                        if p.is_file():
                            wavs.add(p)
                        else:
                            missing += 1
                if missing:
                    log.warning("%d clips of %s have no .wav under %s", missing, lst, d)
            elif d.is_dir():
                wavs.update(p for p in d.rglob("*.wav") if p.is_file())
            else:
                log.warning("%s: folder of split '%s' not found; skipped", d, split)
    if not wavs:
        raise LipVoicerError(f"{audios}: no .wav files for split '{v['split']}' "
                             f"(looked in {', '.join(dict.fromkeys(looked))})")
    return sorted(wavs)


class VocoderSegmentDataset(Dataset):
    """Random fixed-length segments of peak-normalised clips: item -> float32 (segment_samples,).

    Index with an int or with (int, seed); the seed fixes the segment position (used by the
    resumable sampler, so that a resumed run sees the same segments)."""

    def __init__(self, files: list[Path], segment_samples: int, audio_cfg=None):
        self.files = [Path(f) for f in files]
        self.segment = int(segment_samples)
        self.audio = audio_params(audio_cfg)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        rng = random.Random(seed)
        wav = read_wav(self.files[index], int(self.audio["sampling_rate"]))
        wav = peak_normalise(wav, float(self.audio["peak_scale"]))  # the whole clip, as wav_file_to_mel
        n = self.segment
        if wav.shape[0] >= n:
            start = rng.randint(0, wav.shape[0] - n)
            wav = wav[start:start + n]
        else:
            wav = np.pad(wav, (0, n - wav.shape[0]))
        return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))


# ----------------------------------------------------------------------------- helpers
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
    for key in ("batch_size_per_gpu", "iters_per_ckpt", "lr_decay_iters"):
        if int(v[key]) <= 0:
            raise LipVoicerError(f"vocoder_train.{key}={v[key]}: must be positive")


def _make_loader(cfg, dataset, info: DistInfo, position: int) -> DataLoader:
    v = cfg["vocoder_train"]
    seed = int(v["seed"])
    sampler = ResumableSampler(len(dataset), seed, info.rank, info.world_size, start=position)
    workers = int(v["num_workers"])
    # A private generator: starting the loader must not draw from the global RNG (exact resume).
    gen = torch.Generator().manual_seed(seed + info.rank)
    return DataLoader(dataset, batch_size=int(v["batch_size_per_gpu"]), sampler=sampler, num_workers=workers,
                      generator=gen, pin_memory=info.device.type == "cuda", drop_last=True,
                      persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)


def _log_audio(writer, y, y_hat, mel, it: int, sampling_rate: int, audio_cfg) -> None:
    from utils.plotting import mel_figure

    writer.add_audio("audio/ground_truth", y[0].detach().float().cpu().clamp(-1, 1), it, sample_rate=sampling_rate)
    writer.add_audio("audio/generated", y_hat[0, 0].detach().float().cpu().clamp(-1, 1), it,
                     sample_rate=sampling_rate)
    with torch.no_grad():
        gen_mel = log_mel(y_hat[0, 0].detach().float(), audio_cfg)
    writer.add_figure("mel/ground_truth", mel_figure(mel[0]), it)
    writer.add_figure("mel/generated", mel_figure(gen_mel), it)


# ----------------------------------------------------------------------------- training
def train(cfg) -> Path | None:
    """Run training; returns the path of the last generator checkpoint written (rank 0) or None."""
    v = cfg["vocoder_train"]
    info = init_distributed(v["device"])
    seed = int(v["seed"])
    seed_everything(seed + info.rank)
    exp_dir = experiment_dir(cfg)
    audio_cfg = cfg["audio"]
    sr = int(audio_cfg["sampling_rate"])
    hop = int(audio_cfg["hop_length"])

    generator = HiFiGANGenerator(cfg["vocoder"]).to(info.device)
    _check_config(cfg, generator)
    dataset = VocoderSegmentDataset(list_training_wavs(cfg), int(v["segment_samples"]), audio_cfg)
    discriminators = build_discriminators(v).to(info.device)

    betas = (float(v["adam_b1"]), float(v["adam_b2"]))
    lr, wd = float(v["learning_rate"]), float(v["weight_decay"])
    optim_g = torch.optim.AdamW(generator.parameters(), lr, betas=betas, weight_decay=wd)
    optim_d = torch.optim.AdamW(discriminators.parameters(), lr, betas=betas, weight_decay=wd)
    sched_g = torch.optim.lr_scheduler.ExponentialLR(optim_g, gamma=float(v["lr_decay"]))
    sched_d = torch.optim.lr_scheduler.ExponentialLR(optim_d, gamma=float(v["lr_decay"]))
    decay_every = int(v["lr_decay_iters"])
    bs = int(v["batch_size_per_gpu"])

    start_iter, position = 0, 0
    resume = resolve_vocoder_resume(exp_dir, v["ckpt_iter"])
    if resume is not None:
        g_file, do_file = generator_path(exp_dir, resume), state_path(exp_dir, resume)
        load_state_dict_strict(generator, generator_state_dict(read_checkpoint(g_file), str(g_file)), what=str(g_file))
        state = read_checkpoint(do_file)
        for key in ("mpd", "msd", "optim_g", "optim_d", "sched_g", "sched_d"):
            if key not in state:
                raise LipVoicerError(f"{do_file}: not a vocoder training state (no '{key}' entry)")
        load_state_dict_strict(discriminators.mpd, state["mpd"], what=f"{do_file} (mpd)")
        load_state_dict_strict(discriminators.msd, state["msd"], what=f"{do_file} (msd)")
        optim_g.load_state_dict(state["optim_g"])
        optim_d.load_state_dict(state["optim_d"])
        sched_g.load_state_dict(state["sched_g"])
        sched_d.load_state_dict(state["sched_d"])
        start_iter = int(state.get("iteration", resume))
        sampler_state = state.get("sampler") or {}
        position = int(sampler_state.get("position", start_iter * bs))
        if sampler_state.get("n_items") not in (None, len(dataset)) and info.is_main:
            log.warning("the training set had %s files when %s was written and has %d now: the data order "
                        "differs from an uninterrupted run", sampler_state.get("n_items"), do_file, len(dataset))
        if sampler_state.get("world_size") not in (None, info.world_size) and info.is_main:
            log.warning("resuming a run of %s processes with %d: the data order differs from an uninterrupted "
                        "run", sampler_state.get("world_size"), info.world_size)
        states = state.get("rng_state") or []
        if info.rank < len(states):
            set_rng_state(states[info.rank])
        if info.is_main:
            log.info("resumed from %s and %s (iteration %d)", g_file, do_file, start_iter)
    else:
        if v.get("init_from"):
            src = Path(str(v["init_from"]))
            load_state_dict_strict(generator, generator_state_dict(read_checkpoint(src), str(src)), what=str(src))
            if info.is_main:
                log.info("generator initialised from %s", src)
        if info.is_main:
            log.info("starting a new run in %s", exp_dir)
    if info.is_main:
        n_g = sum(p.numel() for p in generator.parameters())
        n_d = sum(p.numel() for p in discriminators.parameters())
        log.info("HiFi-GAN: generator %.2f M, discriminators %.2f M parameters, %d training files, device %s, "
                 "world size %d", n_g / 1e6, n_d / 1e6, len(dataset), info.device, info.world_size)

    n_iters = int(v["n_iters"])
    if start_iter >= n_iters:
        if info.is_main:
            log.info("nothing to do: iteration %d >= vocoder_train.n_iters=%d", start_iter, n_iters)
        cleanup_distributed()
        return generator_path(exp_dir, resume) if resume is not None else None

    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed segment length: the fastest kernels are found once
    if info.distributed:
        ids = [info.device.index] if info.device.type == "cuda" else None
        net_g = DistributedDataParallel(generator, device_ids=ids)
        net_d = DistributedDataParallel(discriminators, device_ids=ids)
    else:
        net_g, net_d = generator, discriminators

    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(exp_dir / "tensorboard"), purge_step=start_iter + 1)

    use_bf16 = bool(v.get("bf16", False))
    autocast = (lambda: torch.autocast(info.device.type, dtype=torch.bfloat16)) if use_bf16 \
        else contextlib.nullcontext
    mel_w, fm_w = float(v["mel_loss_weight"]), float(v["fm_loss_weight"])
    loader = _make_loader(cfg, dataset, info, position)
    max_seconds = float(v.get("max_minutes", 0) or 0) * 60
    t_start = time.time()
    last_saved = None
    it = start_iter
    bar = tqdm(total=n_iters, initial=start_iter, disable=not info.is_main, desc="train HiFi-GAN", unit="it",
               dynamic_ncols=True)
    window_t, window_n = time.time(), 0

    def save(iteration):
        nonlocal last_saved
        states = all_rng_states(info)
        if info.is_main:
            g_path = save_hifigan(generator_path(exp_dir, iteration), generator)
            atomic_torch_save({
                "mpd": discriminators.mpd.state_dict(), "msd": discriminators.msd.state_dict(),
                "optim_g": optim_g.state_dict(), "optim_d": optim_d.state_dict(),
                "sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(),
                "steps": iteration, "iteration": iteration, "rng_state": states,
                "sampler": {"position": position + (iteration - start_iter) * bs, "seed": seed,
                            "n_items": len(dataset), "world_size": info.world_size, "batch_size": bs},
                "vocoder": generator.params,
            }, state_path(exp_dir, iteration))
            last_saved = g_path
            prune_vocoder_checkpoints(exp_dir, int(v["keep_last"]))
        barrier()

    generator.train()
    discriminators.train()
    for y in loader:
        it += 1
        y = y.to(info.device, non_blocking=True)                      # (B, segment)
        with torch.no_grad():
            mel = log_mel(y, audio_cfg)                                # (B, n_mels, segment // hop + 1)
        with autocast():
            y_hat = net_g(mel[..., :y.shape[-1] // hop])               # (B, 1, segment)
        y = y.unsqueeze(1)

        # discriminator step on (real, generated) in one batch
        with autocast():
            outs, _ = net_d(torch.cat([y, y_hat.detach().to(y.dtype)]))
        loss_d, _ = discriminator_loss([o[:y.shape[0]] for o in outs], [o[y.shape[0]:] for o in outs])
        optim_d.zero_grad(set_to_none=True)
        loss_d.backward()
        optim_d.step()

        # generator step; the discriminators' gradients from it are discarded (zeroed before their next
        # step), so they need not be averaged across processes
        sync = net_d.no_sync() if info.distributed else contextlib.nullcontext()
        with sync:
            with autocast():
                with torch.no_grad():
                    _, fmaps_real = net_d(y)
                outs_fake, fmaps_fake = net_d(y_hat)
            loss_adv = generator_adversarial_loss(outs_fake)
            loss_fm = feature_matching_loss(fmaps_real, fmaps_fake)
            loss_mel = mel_l1_loss(y_hat, mel, audio_cfg)
            loss_g = loss_adv + fm_w * loss_fm + mel_w * loss_mel
            optim_g.zero_grad(set_to_none=True)
            loss_g.backward()
        optim_g.step()
        if it % decay_every == 0:
            sched_g.step()
            sched_d.step()
        window_n += y.shape[0] * info.world_size
        bar.update(1)

        if info.is_main and (it % int(v["iters_per_logging"]) == 0 or it == start_iter + 1):
            now = time.time()
            rate = window_n / max(now - window_t, 1e-9)
            window_t, window_n = now, 0
            scalars = {"loss_mel": float(loss_mel.detach()), "loss_gen_all": float(loss_g.detach()),
                       "loss_gen_adv": float(loss_adv.detach()), "loss_fm": float(loss_fm.detach()),
                       "loss_disc": float(loss_d.detach())}
            bar.set_postfix(mel=f"{scalars['loss_mel']:.3f}", d=f"{scalars['loss_disc']:.3f}",
                            seg_s=f"{rate:.1f}")
            for k, val in scalars.items():
                writer.add_scalar(f"train/{k}", val, it)
            writer.add_scalar("train/learning_rate", optim_g.param_groups[0]["lr"], it)
            writer.add_scalar("train/segments_per_s", rate, it)
        if info.is_main and int(v["iters_per_audio"]) > 0 and it % int(v["iters_per_audio"]) == 0:
            _log_audio(writer, y[:, 0], y_hat, mel, it, sr, audio_cfg)

        out_of_time = any_rank(max_seconds > 0 and time.time() - t_start > max_seconds, info) \
            if max_seconds > 0 else False
        if it % int(v["iters_per_ckpt"]) == 0 or it >= n_iters or out_of_time:
            save(it)
        if it >= n_iters or out_of_time:
            if out_of_time and info.is_main:
                log.info("vocoder_train.max_minutes reached at iteration %d; resume with vocoder_train.ckpt_iter=max",
                         it)
            break
    bar.close()
    if writer is not None:
        writer.close()
    if info.is_main and last_saved is not None:
        log.info("generator checkpoint: %s (use it with vocoder.checkpoint=%s)", last_saved, last_saved)
    cleanup_distributed()
    return last_saved
