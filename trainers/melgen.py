"""MelGen training loop (train_melgen.py is the command-line wrapper).

Single process on CPU or one GPU, or several GPUs with torchrun (DDP). Checkpoints
`<save_dir>/exp/<name>/<model_dir>/checkpoint/<iter>.pkl` in the published format
(+ iteration and RNG state), written atomically; `train.ckpt_iter=max` resumes from
the newest and continues exactly where the run stopped. TensorBoard logs go to
`<save_dir>/exp/<name>/<model_dir>/tensorboard`.
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from dataloaders.lrs_dataset import MelGenTrainDataset
from dataloaders.samplers import ResumableSampler
from models.diffusion.schedule import DiffusionSchedule, melgen_training_loss
from models.melgen.model import count_parameters
from models.melgen.checkpoint import build_melgen, melgen_state_dict, save_melgen
from utils.checkpoint import load_state_dict_strict, read_checkpoint
from utils.distributed import DistInfo, any_rank, barrier, cleanup_distributed, init_distributed
from trainers.checkpoints import prune_checkpoints, resolve_resume, restore_run_state
from utils.seeding import all_rng_states, seed_everything

log = logging.getLogger(__name__)


def experiment_dir(cfg) -> Path:
    t = cfg["train"]
    return Path(t["save_dir"]) / "exp" / str(t["name"]) / str(t["model_dir"])


def _make_loader(cfg, dataset, info: DistInfo, start_iter: int) -> DataLoader:
    t = cfg["train"]
    bs = int(t["batch_size_per_gpu"])
    sampler = ResumableSampler(len(dataset), cfg["seed"], info.rank, info.world_size, start=start_iter * bs)
    workers = int(t["num_workers"])
    # A private generator: starting the loader must not draw from the global RNG (exact resume).
    gen = torch.Generator().manual_seed(int(cfg["seed"]) + info.rank)
    return DataLoader(dataset, batch_size=bs, sampler=sampler, num_workers=workers, generator=gen,
                      pin_memory=info.device.type == "cuda", drop_last=True,
                      persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)


def _log_images(writer, model, schedule, batch, it, device):
    """Ground-truth mel and the model's one-step estimate of it from x_t at t = T/2."""
    with torch.no_grad():
        mel = batch["mel"][:1].to(device)
        t = torch.full((1,), schedule.T // 2, device=device, dtype=torch.long)
        noise = torch.randn_like(mel)
        x_t = schedule.q_sample(mel, t, noise)
        eps = model(x_t, batch["mouthroi"][:1].to(device), batch["face_image"][:1].to(device), t.view(1, 1).float())
        ab = schedule.alpha_bars[t].view(1, 1, 1)
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    from utils.plotting import mel_figure
    writer.add_figure("mel/ground_truth", mel_figure(mel[0]), it)
    writer.add_figure("mel/estimate_from_t_half", mel_figure(x0[0].clamp(-1, 1)), it)


def train(cfg) -> Path | None:
    """Run training; returns the path of the last checkpoint written (rank 0) or None."""
    info = init_distributed(cfg["train"]["device"])
    t = cfg["train"]
    seed_everything(int(cfg["seed"]) + info.rank)
    ckpt_dir = experiment_dir(cfg) / "checkpoint"

    dataset = MelGenTrainDataset(cfg, "train")
    model = build_melgen(cfg).to(info.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(t["learning_rate"]))
    schedule = DiffusionSchedule.from_config(cfg["diffusion"], info.device)

    start_iter = 0
    resume = resolve_resume(ckpt_dir, t["ckpt_iter"])
    if resume is not None:
        ckpt = read_checkpoint(resume)
        load_state_dict_strict(model, melgen_state_dict(ckpt, str(resume)), what=str(resume))
        start_iter = restore_run_state(ckpt, resume, optimizer, info)
        if info.is_main:
            log.info("resumed from %s (iteration %d)", resume, start_iter)
    elif info.is_main:
        log.info("starting a new run in %s", ckpt_dir)
    if info.is_main:
        log.info("MelGen: %.2f M parameters, %d training clips, device %s, world size %d",
                 count_parameters(model) / 1e6, len(dataset), info.device, info.world_size)

    net = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None) \
        if info.distributed else model
    n_iters = int(t["n_iters"])
    if start_iter >= n_iters:
        if info.is_main:
            log.info("nothing to do: iteration %d >= train.n_iters=%d", start_iter, n_iters)
        cleanup_distributed()
        return resume

    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(experiment_dir(cfg) / "tensorboard"), purge_step=start_iter + 1)

    autocast = (torch.autocast(info.device.type, dtype=torch.bfloat16) if t["bf16"] else contextlib.nullcontext())
    loader = _make_loader(cfg, dataset, info, start_iter)
    max_seconds = float(t.get("max_minutes", 0) or 0) * 60
    t_start = time.time()
    last_saved = None
    it = start_iter
    bs = int(t["batch_size_per_gpu"]) * info.world_size
    bar = tqdm(total=n_iters, initial=start_iter, disable=not info.is_main, desc="train MelGen", unit="it",
               dynamic_ncols=True)
    window_t, window_n = time.time(), 0

    def save(iteration):
        nonlocal last_saved
        states = all_rng_states(info)
        if info.is_main:
            last_saved = save_melgen(ckpt_dir / f"{iteration}.pkl", model, optimizer, iteration,
                                     {"rng_state": states})
            prune_checkpoints(ckpt_dir, int(t["keep_last"]))
        barrier()

    model.train()
    for batch in loader:
        it += 1
        mel = batch["mel"].to(info.device, non_blocking=True)
        mouth = batch["mouthroi"].to(info.device, non_blocking=True)
        face = batch["face_image"].to(info.device, non_blocking=True)
        with autocast:
            loss = melgen_training_loss(net, schedule, mel, mouth, face, float(cfg["melgen"]["cond_drop_prob"]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = None
        if float(t["grad_clip"]) > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(t["grad_clip"]))
        optimizer.step()
        window_n += bs
        bar.update(1)

        if info.is_main and (it % int(t["iters_per_logging"]) == 0 or it == start_iter + 1):
            now = time.time()
            rate = window_n / max(now - window_t, 1e-9)
            window_t, window_n = now, 0
            lv = float(loss.detach())
            bar.set_postfix(loss=f"{lv:.4f}", samples_s=f"{rate:.1f}")
            writer.add_scalar("train/loss", lv, it)
            writer.add_scalar("train/learning_rate", optimizer.param_groups[0]["lr"], it)
            writer.add_scalar("train/samples_per_s", rate, it)
            if grad_norm is not None:
                writer.add_scalar("train/grad_norm", float(grad_norm), it)
        if info.is_main and int(t["iters_per_image"]) > 0 and it % int(t["iters_per_image"]) == 0:
            model.eval()
            _log_images(writer, model, schedule, batch, it, info.device)
            model.train()

        out_of_time = max_seconds > 0 and any_rank(time.time() - t_start > max_seconds, info)
        if it % int(t["iters_per_ckpt"]) == 0 or it >= n_iters or out_of_time:
            save(it)
        if it >= n_iters or out_of_time:
            if out_of_time and info.is_main:
                log.info("train.max_minutes reached at iteration %d; resume with train.ckpt_iter=max", it)
            break
    bar.close()
    if writer is not None:
        writer.close()
    cleanup_distributed()
    return last_saved
