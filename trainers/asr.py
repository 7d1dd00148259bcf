"""Training / fine-tuning the ASR guidance classifier (train_asr.py is the command-line wrapper;
the loop is trainers/base.py).

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
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dataloaders.asr_dataset import ASRDataset, collate_asr
from dataloaders.tokenizer import BPETokenizer
from models.asr.decoding import greedy_decode
from models.asr.model import asr_state_dict, build_asr, count_parameters, ctc_loss, save_asr_checkpoint
from models.diffusion.schedule import DiffusionSchedule
from trainers.base import CollateSkipping, SkipBadClips, Trainer
from utils.checkpoint import load_state_dict_strict, read_checkpoint
from utils.errors import LipVoicerError

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
    return BPETokenizer(path).check_vocab_size(cfg["asr"]["vocab_size"])


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
            losses.append(float(ctc_loss(logits, out_len, batch["tokens"].to(device),
                                         batch["token_lengths"].to(device))))
            hyps += [tokenizer.decode(ids) for ids in greedy_decode(logits, out_len)]
            refs += batch["text"]
        if refs:
            out[int(tv)] = {"wer": float(jiwer.wer(refs, hyps)), "loss": sum(losses) / len(losses),
                            "example": (refs[0], hyps[0])}
    model.train(was_training)
    return out


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
    return HeldOutBatches(DataLoader(SkipBadClips(ds, substitute=False), batch_size=int(t["batch_size_per_gpu"]),
                                     shuffle=False, num_workers=0, collate_fn=CollateSkipping(collate_asr),
                                     generator=torch.Generator().manual_seed(int(cfg["seed"]))))


class HeldOutBatches:
    """The held-out batches; a bad clip is left out and logged once with its reason."""

    def __init__(self, loader):
        self.loader = loader
        self.reported: set[int] = set()

    def __iter__(self):
        for batch, reports in self.loader:
            for index, reason in reports:
                if index not in self.reported:
                    self.reported.add(index)
                    log.warning("held-out clip left out of the WER: %s", reason)
            if batch is not None:
                yield batch


class ASRTrainer(Trainer):
    section, desc, rate_tag = "asr.train", "train ASR", None

    def experiment_dir(self) -> Path:
        return experiment_dir(self.cfg)

    def build(self) -> None:
        cfg, t = self.cfg, self.t
        T = int(cfg["diffusion"]["T"])
        self.max_t = int(t["max_t"])
        if not 0 < self.max_t <= T:
            raise LipVoicerError(f"asr.train.max_t={self.max_t}: must be in 1..diffusion.T={T}")
        if any(not 0 <= int(v) < T for v in t["eval_t"]):
            raise LipVoicerError(f"asr.train.eval_t={list(t['eval_t'])}: every step must be in "
                                 f"0..diffusion.T-1={T - 1}")
        self.tokenizer = load_tokenizer(cfg)
        # substitute=False: trainers/base.py (SkipBadClips) replaces unusable clips and reports bad ones
        self.dataset = ASRDataset(cfg, "train", self.tokenizer, int(t["max_frames"]), seed=int(cfg["seed"]),
                                  substitute=False)
        self.collate_fn = collate_asr
        self.batches_per_iter = max(1, int(t["accumulated_steps"]))
        self.model = build_asr(cfg["asr"]).to(self.info.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=float(t["learning_rate"]),
                                          betas=tuple(t["adam_betas"]), eps=float(t["adam_eps"]),
                                          weight_decay=float(t["weight_decay"]))
        self.schedule = DiffusionSchedule.from_config(cfg["diffusion"], self.info.device)

    def summary(self) -> str:
        return f"ASR: {count_parameters(self.model) / 1e6:.2f} M parameters, {len(self.dataset)} training clips"

    def extract_state_dict(self, ckpt, what):
        return asr_state_dict(ckpt, what)

    def start_fresh(self) -> None:
        if self.t["init_from"]:
            src = Path(self.t["init_from"])
            load_state_dict_strict(self.model, asr_state_dict(read_checkpoint(src), str(src)), what=str(src))
            if self.info.is_main:
                log.info("fine-tuning from %s", src)

    def save_checkpoint(self, iteration, rng_states):
        return save_asr_checkpoint(self.model, self.optimizer, iteration, self.checkpoint_files(iteration)[0],
                                   {"iteration": iteration, "rng_state": rng_states})

    def wrap(self) -> None:
        if self.info.distributed and self.info.device.type == "cuda":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.net = self.ddp(self.model)

    def before_training(self) -> None:
        self.eval_loader = _eval_loader(self.cfg, self.tokenizer) if self.info.is_main else None

    def train_step(self, batches, it):
        acc, total = self.batches_per_iter, 0.0
        for k in range(acc):
            batch = next(batches)
            # gradients are averaged across processes on the last micro-batch only
            sync = self.net.no_sync() if self.info.distributed and k < acc - 1 else contextlib.nullcontext()
            with sync:
                with self.autocast():
                    loss = training_loss(self.net, self.schedule, batch, self.max_t, self.info.device)
                (loss / acc).backward()
            total = total + loss.detach() / acc
        grad_norm = self.clip_gradients(self.model)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": total, "grad_norm": grad_norm}

    def progress(self, scalars, rate):
        return {"loss": f"{scalars['loss']:.3f}"}

    def log_extras(self, it):
        every = int(self.t["iters_per_eval"])
        if self.eval_loader is None or every <= 0 or (it % every and it != self.n_iters):
            return
        res = evaluate(self.model, self.schedule, self.eval_loader, self.tokenizer, list(self.t["eval_t"]),
                       self.info.device, self.seed)
        for tv, r in res.items():
            self.writer.add_scalar(f"eval/wer_t{tv}", r["wer"], it)
            self.writer.add_scalar(f"eval/loss_t{tv}", r["loss"], it)
            self.writer.add_text(f"eval/example_t{tv}", f"ref: {r['example'][0]}  \nhyp: {r['example'][1]}", it)
        log.info("iteration %d held-out greedy WER: %s", it,
                 ", ".join(f"t={tv}: {r['wer']:.3f}" for tv, r in res.items()))


def train(cfg) -> Path | None:
    """Run training; returns the path of the last checkpoint written (rank 0) or None."""
    return ASRTrainer(cfg).run()
