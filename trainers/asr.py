"""Training / fine-tuning the ASR guidance classifier (train_asr.py is the command-line wrapper).

Each step draws t uniformly from [0, asr.train.max_t) per clip, noises the clean
normalised mel to x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) z with MelGen's schedule
(`diffusion` config), and minimises the CTC loss of the clip's text (batch mean, as the
reference), with gradient accumulation. Single process on CPU / one GPU, or torchrun
(DDP, synchronised batch norm on GPUs). Checkpoints
`<save_dir>/exp/asr/<name>/checkpoint/<iter>.pkl` are in the published ASR format
(`model_state_dict`, `optimizer_state_dict`, `model_step`, `is_distributed`; plus
`iteration` and RNG state for an exact resume), written atomically; `ckpt_iter=max`
resumes. TensorBoard (`.../tensorboard`): training loss, learning rate, and the greedy
WER / CTC loss on held-out clips at a few diffusion steps.
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

from dataloaders.asr_dataset import ASRDataset, collate_asr
from dataloaders.samplers import ResumableSampler
from models.asr.model import asr_state_dict, build_asr, count_parameters, ctc_loss, save_asr_checkpoint
from models.diffusion.schedule import DiffusionSchedule
from dataloaders.tokenizer import BPETokenizer
from utils.checkpoint import load_state_dict_strict, read_checkpoint
from models.asr.decoding import greedy_decode
from utils.distributed import DistInfo, any_rank, barrier, cleanup_distributed, init_distributed
from utils.errors import LipVoicerError
from trainers.checkpoints import prune_checkpoints, resolve_resume, restore_run_state
from utils.seeding import all_rng_states, seed_everything

log = logging.getLogger(__name__)


def experiment_dir(cfg) -> Path:
    t = cfg["asr"]["train"]
    return Path(t["save_dir"]) / "exp" / "asr" / str(t["name"])


def load_tokenizer(cfg) -> BPETokenizer:
    path = Path(cfg["asr"]["train"]["tokenizer"])
    if not path.is_file():
        raise LipVoicerError(
            f"{path}: tokenizer not found (asr.train.tokenizer). Fetch the published one with "
            "`python download_checkpoints.py --only tokenizer_bpe256`, or train one on your transcripts with "
            "`python -m dataloaders.tokenizer --transcripts-dir <videos_dir> --vocab-size 256 --out <file>.model`")
    tok = BPETokenizer(path)
    if tok.vocab_size != int(cfg["asr"]["vocab_size"]):
        raise LipVoicerError(f"{path}: tokenizer has {tok.vocab_size} pieces but asr.vocab_size is "
                             f"{cfg['asr']['vocab_size']}")
    return tok


def noisy_batch(schedule: DiffusionSchedule, mel: torch.Tensor, max_t: int, generator: torch.Generator | None = None,
                t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, t) with t ~ U{0, ..., max_t - 1} per clip (or the given t) and fresh Gaussian noise."""
    b = mel.shape[0]
    if t is None:
        t = torch.randint(int(max_t), (b,), generator=generator)
    noise = torch.randn(mel.shape, generator=generator)
    return schedule.q_sample(mel, t.to(mel.device), noise.to(mel.device, mel.dtype)), t.to(mel.device)


def training_loss(model, schedule: DiffusionSchedule, batch: dict, max_t: int, device,
                  generator: torch.Generator | None = None, t: torch.Tensor | None = None) -> torch.Tensor:
    mel = batch["mel"].to(device, non_blocking=True)
    x_t, steps = noisy_batch(schedule, mel, max_t, generator, t)
    logits, out_lengths = model(x_t, batch["lengths"].to(device), steps.view(-1, 1).float())
    return ctc_loss(logits, out_lengths, batch["tokens"].to(device), batch["token_lengths"].to(device))


@torch.no_grad()
def evaluate(model, schedule: DiffusionSchedule, loader, tokenizer, t_values, device, seed: int = 0) -> dict:
    """Greedy WER (jiwer) and mean CTC loss on the held-out clips at each diffusion step in t_values."""
    import jiwer

    was_training = model.training
    model.eval()
    out = {}
    for tv in t_values:
        g = torch.Generator().manual_seed(int(seed) + int(tv))
        refs, hyps, losses = [], [], []
        for batch in loader:
            if batch is None:
                continue
            b = batch["mel"].shape[0]
            mel = batch["mel"].to(device)
            x_t, steps = noisy_batch(schedule, mel, 1, g, torch.full((b,), int(tv), dtype=torch.long))
            logits, out_len = model(x_t, batch["lengths"].to(device), steps.view(-1, 1).float())
            losses.append(float(ctc_loss(logits, out_len, batch["tokens"].to(device), batch["token_lengths"].to(device))))
            hyps += [tokenizer.decode(ids) for ids in greedy_decode(logits, out_len)]
            refs += batch["text"]
        if refs:
            out[int(tv)] = {"wer": float(jiwer.wer(refs, hyps)), "loss": sum(losses) / len(losses),
                            "example": (refs[0], hyps[0])}
    model.train(was_training)
    return out


def _make_loader(cfg, dataset, info: DistInfo, start: int) -> DataLoader:
    t = cfg["asr"]["train"]
    workers = int(t["num_workers"])
    sampler = ResumableSampler(len(dataset), int(cfg["seed"]), info.rank, info.world_size, start=start)
    gen = torch.Generator().manual_seed(int(cfg["seed"]) + info.rank)
    return DataLoader(dataset, batch_size=int(t["batch_size_per_gpu"]), sampler=sampler, num_workers=workers,
                      collate_fn=collate_asr, generator=gen, pin_memory=info.device.type == "cuda", drop_last=True,
                      persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)


def _eval_loader(cfg, tokenizer) -> DataLoader | None:
    t = cfg["asr"]["train"]
    split = t["eval_split"]
    if not split or int(t["iters_per_eval"]) <= 0:
        return None
    if split not in cfg["dataset"]["splits"]:
        log.warning("dataset '%s' has no split '%s': no held-out WER", cfg["dataset"]["name"], split)
        return None
    ds = ASRDataset(cfg, split, tokenizer, int(t["max_frames"]), int(t["eval_max_clips"]), int(cfg["seed"]),
                    substitute=False)
    # a private generator: evaluating must not draw from the global RNG (training stays reproducible)
    return DataLoader(ds, batch_size=int(t["batch_size_per_gpu"]), shuffle=False, num_workers=0,
                      collate_fn=collate_asr, generator=torch.Generator().manual_seed(int(cfg["seed"])))


def train(cfg) -> Path | None:
    """Run training; returns the path of the last checkpoint written (rank 0) or None."""
    t = cfg["asr"]["train"]
    info = init_distributed(t["device"])
    seed_everything(int(cfg["seed"]) + info.rank)
    ckpt_dir = experiment_dir(cfg) / "checkpoint"
    max_t = int(t["max_t"])
    if not 0 < max_t <= int(cfg["diffusion"]["T"]):
        raise LipVoicerError(f"asr.train.max_t={max_t}: must be in 1..diffusion.T={cfg['diffusion']['T']}")
    bad_t = [int(v) for v in t["eval_t"] if not 0 <= int(v) < int(cfg["diffusion"]["T"])]
    if bad_t:
        raise LipVoicerError(f"asr.train.eval_t={list(t['eval_t'])}: every step must be in "
                             f"0..diffusion.T-1={int(cfg['diffusion']['T']) - 1}")

    tokenizer = load_tokenizer(cfg)
    dataset = ASRDataset(cfg, "train", tokenizer, int(t["max_frames"]), seed=int(cfg["seed"]))
    model = build_asr(cfg["asr"]).to(info.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(t["learning_rate"]), betas=tuple(t["adam_betas"]),
                                 eps=float(t["adam_eps"]), weight_decay=float(t["weight_decay"]))
    schedule = DiffusionSchedule.from_config(cfg["diffusion"], info.device)

    start_iter = 0
    resume = resolve_resume(ckpt_dir, t["ckpt_iter"])
    if resume is not None:
        ckpt = read_checkpoint(resume)
        load_state_dict_strict(model, asr_state_dict(ckpt, str(resume)), what=str(resume))
        start_iter = restore_run_state(ckpt, resume, optimizer, info)
        if info.is_main:
            log.info("resumed from %s (iteration %d)", resume, start_iter)
    elif t["init_from"]:
        src = Path(t["init_from"])
        load_state_dict_strict(model, asr_state_dict(read_checkpoint(src), str(src)), what=str(src))
        if info.is_main:
            log.info("fine-tuning from %s", src)
    if info.is_main:
        log.info("ASR: %.2f M parameters, %d training clips, device %s, world size %d",
                 count_parameters(model) / 1e6, len(dataset), info.device, info.world_size)

    n_iters = int(t["n_iters"])
    if start_iter >= n_iters:
        if info.is_main:
            log.info("nothing to do: iteration %d >= asr.train.n_iters=%d", start_iter, n_iters)
        cleanup_distributed()
        return resume

    if info.distributed:
        if info.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    else:
        net = model

    eval_loader = _eval_loader(cfg, tokenizer) if info.is_main else None
    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(experiment_dir(cfg) / "tensorboard"), purge_step=start_iter + 1)

    acc = max(1, int(t["accumulated_steps"]))
    bs = int(t["batch_size_per_gpu"])
    loader = iter(_make_loader(cfg, dataset, info, start_iter * acc * bs))
    autocast = torch.autocast(info.device.type, dtype=torch.bfloat16) if t.get("bf16", False) \
        else contextlib.nullcontext()
    max_seconds = float(t["max_minutes"] or 0) * 60
    t_start = time.time()
    last_saved = None
    bar = tqdm(total=n_iters, initial=start_iter, disable=not info.is_main, desc="train ASR", unit="it",
               dynamic_ncols=True)

    def save(iteration):
        nonlocal last_saved
        states = all_rng_states(info)
        if info.is_main:
            last_saved = save_asr_checkpoint(model, optimizer, iteration, ckpt_dir / f"{iteration}.pkl",
                                             {"iteration": iteration, "rng_state": states})
            prune_checkpoints(ckpt_dir, int(t["keep_last"]))
        barrier()

    def run_eval(iteration):
        if eval_loader is None:
            return
        res = evaluate(model, schedule, eval_loader, tokenizer, list(t["eval_t"]), info.device, int(cfg["seed"]))
        for tv, r in res.items():
            writer.add_scalar(f"eval/wer_t{tv}", r["wer"], iteration)
            writer.add_scalar(f"eval/loss_t{tv}", r["loss"], iteration)
            writer.add_text(f"eval/example_t{tv}", f"ref: {r['example'][0]}  \nhyp: {r['example'][1]}", iteration)
        log.info("iteration %d held-out greedy WER: %s", iteration,
                 ", ".join(f"t={tv}: {r['wer']:.3f}" for tv, r in res.items()))

    net.train()
    it = start_iter
    while it < n_iters:
        it += 1
        total = 0.0
        for k in range(acc):
            batch = next(loader)
            sync = contextlib.nullcontext() if (k == acc - 1 or not info.distributed) else net.no_sync()
            with sync:
                with autocast:
                    loss = training_loss(net, schedule, batch, max_t, info.device)
                (loss / acc).backward()
            total += float(loss.detach()) / acc
        grad_norm = None
        if float(t["grad_clip"]) > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(t["grad_clip"]))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)

        if info.is_main and (it % int(t["iters_per_logging"]) == 0 or it == start_iter + 1):
            bar.set_postfix(loss=f"{total:.3f}")
            writer.add_scalar("train/loss", total, it)
            writer.add_scalar("train/learning_rate", optimizer.param_groups[0]["lr"], it)
            if grad_norm is not None:
                writer.add_scalar("train/grad_norm", float(grad_norm), it)
        if info.is_main and int(t["iters_per_eval"]) > 0 and (it % int(t["iters_per_eval"]) == 0 or it == n_iters):
            run_eval(it)
        out_of_time = max_seconds > 0 and any_rank(time.time() - t_start > max_seconds, info)
        if it % int(t["iters_per_ckpt"]) == 0 or it >= n_iters or out_of_time:
            save(it)
        if out_of_time:
            if info.is_main:
                log.info("asr.train.max_minutes reached at iteration %d; resume with asr.train.ckpt_iter=max", it)
            break
    bar.close()
    if writer is not None:
        writer.close()
    cleanup_distributed()
    return last_saved
