"""The training loop shared by MelGen, the ASR guidance classifier and the HiFi-GAN vocoder.

`Trainer.run()` does everything the three have in common: the process group (one process
on CPU / one GPU, or torchrun with DistributedDataParallel), seeding, finding the checkpoint
to resume from and restoring the weights, optimizer(s) and every rank's exact RNG state,
the resumable data loader, bf16 autocast, TensorBoard (rank 0), the progress bar, the time
budget, atomic checkpoints with pruning, and the loop itself (iterate, log every
`iters_per_logging`, save every `iters_per_ckpt`, at the end and when out of time).

Every trainer reads the same keys from its config section (`section`):

    name, save_dir                 the experiment folder (see each trainer's experiment_dir)
    ckpt_iter                      max (resume from the newest), -1 (start fresh) or an iteration
    n_iters, iters_per_ckpt, iters_per_logging
    batch_size_per_gpu, bf16, grad_clip (0 = off), device (auto | cpu | cuda)
    num_workers                    data-loader worker processes per training process: a number, or
                                   auto = min(4, CPU cores this process may use (os.sched_getaffinity),
                                   shared among torchrun's processes on the machine, - 1), at least 0
    keep_last                      keep the newest N checkpoints (0 = all)
    max_minutes                    stop with a checkpoint after this long (0 = no limit)
    max_bad_fraction               bad clips are skipped (logged once each, counted in TensorBoard as
                                   data/skipped_clips); more than this fraction of the training set stops
                                   the run with one line
    seed                           optional; the top-level `seed` otherwise

Bad clips: a dataset item that raises LipVoicerError (an unreadable or inconsistent file) is
replaced by the next clip with the same augmentation seed (SkipBadClips), so the data stream stays
a function of the sampler position and the files: a resumed run skips exactly what an
uninterrupted one skips. Errors raised in DataLoader workers reach the user as one line.

Checkpoints: temporaries left by a checkpoint write that was killed (`.<name>.*.tmp*`) are removed
at the next start; with ckpt_iter=max an unreadable newest checkpoint is skipped with a warning
naming it, and the run resumes from the newest readable one.

Subclasses fill in small hooks:

    experiment_dir()                          the run's folder
    build()                                   dataset, model(s), optimizer(s): self.dataset, self.model,
                                              self.optimizer (its learning rate is logged)
    summary()                                 one line for the log ("MelGen: 1.2 M parameters, ...")
    train_step(batches, it) -> {name: value}  one iteration; draws its batch(es) with next(batches);
                                              the values (None = skip) go to TensorBoard as train/<name>
    progress(scalars, rate) -> dict           the progress bar's postfix
    extract_state_dict(ckpt, what)            model weights of a `<iter>.pkl` checkpoint
    save_checkpoint(iteration, rng_states)    write the checkpoint(s); returns the main file
    load_checkpoint(iteration, files, ckpts)  restore from the files' loaded contents; returns the iteration
    start_fresh(), wrap(), before_training(), log_extras(it), finish()   optional

The default checkpoint layout is `<experiment_dir>/checkpoint/<iter>.pkl` (one file holding
`model_state_dict`, `optimizer_state_dict`, `iteration`, `rng_state`); a trainer with another
layout overrides checkpoint_dir / checkpoints / checkpoint_files / is_checkpoint_name / load_checkpoint.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from dataloaders.samplers import ResumableSampler
from utils.checkpoint import load_state_dict_strict, read_checkpoint
from utils.distributed import DistInfo, any_rank, barrier, cleanup_distributed, init_distributed
from utils.errors import LipVoicerError
from utils.seeding import all_rng_states, seed_everything, set_rng_state

log = logging.getLogger(__name__)

_CKPT_RE = re.compile(r"^(\d+)\.pkl$")
# utils.files.atomic_write's temporaries: `.<final name>.<random>.tmp[<suffix>]`
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp(\.[^.]+)?$")


def list_checkpoints(ckpt_dir: str | Path) -> dict[int, Path]:
    """{iteration: path} of the `<iter>.pkl` files in a folder (temporary files are ignored)."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return {}
    out = {}
    for p in d.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_file():
            out[int(m.group(1))] = p
    return out


def find_latest_iteration(ckpt_dir: str | Path) -> int | None:
    its = list_checkpoints(ckpt_dir)
    return max(its) if its else None


def make_loader(dataset, batch_size: int, num_workers: int, seed: int, info: DistInfo, start: int = 0,
                collate_fn=None) -> DataLoader:
    """An endless loader of this rank's share of `dataset` from sampler position `start`."""
    sampler = ResumableSampler(len(dataset), seed, info.rank, info.world_size, start=start)
    # A private generator: starting the loader must not draw from the global RNG (exact resume).
    gen = torch.Generator().manual_seed(int(seed) + info.rank)
    return DataLoader(dataset, batch_size=int(batch_size), sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_fn, generator=gen, pin_memory=info.device.type == "cuda", drop_last=True,
                      persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None)


def resolve_num_workers(value, key: str = "train.num_workers") -> int:
    """`auto` (or null) -> min(4, usable cores - 1), at least 0, where the usable cores are those this
    process may run on (os.sched_getaffinity) shared among the training processes of this machine
    (torchrun's LOCAL_WORLD_SIZE); a number >= 0 is taken as it is."""
    if value is None or str(value).strip().lower() == "auto":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        return max(0, min(4, per_process - 1))
    try:
        n = int(str(value).strip())
    except ValueError:
        n = -1
    if n < 0:
        raise LipVoicerError(f"{key}={value}: expected auto or a number of worker processes >= 0")
    return n


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class SkipBadClips(Dataset):
    """A training dataset that survives bad clips: item `key` -> (item, [(index, reason), ...]).

    `key` is what ResumableSampler yields ((index, seed)) or a plain index. When reading clip i
    raises LipVoicerError (an unreadable or inconsistent file), clips i+1, i+2, ... are tried with
    the same seed and each failure is reported with its reason; an item None (the dataset's own
    "not usable", e.g. an ASR clip longer than max_frames) is replaced the same way without a
    report. The item is thus a function of the key and the files only: a resumed run skips exactly
    what an uninterrupted one skips. With substitute=False nothing is replaced: a bad clip gives
    (None, [report]).
    """

    def __init__(self, dataset, substitute: bool = True):
        self.dataset = dataset
        self.substitute = substitute

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (int(key), None)
        n = len(self.dataset)
        bad = []
        for k in range(n if self.substitute else 1):
            j = (index + k) % n
            try:
                item = self.dataset[(j, seed) if seed is not None else j]
            except LipVoicerError as e:
                bad.append((j, _one_line(e)))
                continue
            if item is not None or not self.substitute:
                return item, bad
        if not self.substitute:
            return None, bad
        if bad:
            raise LipVoicerError(f"none of the {n} training clips can be used; the first bad one: {bad[0][1]}")
        raise LipVoicerError(getattr(self.dataset, "unusable_message", f"none of the {n} training clips can be used"))


class CollateSkipping:
    """Collate SkipBadClips' (item, reports) pairs: (collate_fn(items), all reports)."""

    def __init__(self, collate_fn=None):
        self.collate_fn = collate_fn

    def __call__(self, pairs):
        items = [item for item, _ in pairs]
        reports = [r for _, rs in pairs for r in rs]
        return (self.collate_fn or default_collate)(items), reports


class BadClipLog:
    """The bad clips a training process skipped: each logged once with its reason; more than
    `max_fraction` of the `n_items` clips is a LipVoicerError (one line)."""

    def __init__(self, n_items: int, max_fraction: float, key: str = "train.max_bad_fraction"):
        self.n, self.max_fraction, self.key = int(n_items), float(max_fraction), key
        self.reasons: dict[int, str] = {}

    @property
    def allowed(self) -> int:
        return int(self.max_fraction * self.n + 1e-9)

    def add(self, reports) -> None:
        for index, reason in reports:
            if index in self.reasons:
                continue
            self.reasons[index] = reason
            log.warning("bad clip skipped (%d so far of %d clips; %s=%g allows %d): %s", len(self.reasons), self.n,
                        self.key, self.max_fraction, self.allowed, reason)
        self.check(len(self.reasons))

    def check(self, count: int) -> None:
        if count > self.allowed:
            first = next(iter(self.reasons.values()), None)
            raise LipVoicerError(f"{count} of {self.n} training clips are bad, more than {self.key}="
                                 f"{self.max_fraction:g} allows ({self.allowed})"
                                 + (f"; the first: {first}" if first else " (see the other processes' logs)"))

    def global_count(self, info: DistInfo) -> int:
        """Distinct bad clips over every process (a collective call under torchrun)."""
        if not info.distributed:
            return len(self.reasons)
        gathered = [None] * info.world_size
        dist.all_gather_object(gathered, sorted(self.reasons))
        return len(set().union(*map(set, gathered)))


def worker_error_line(e: BaseException) -> str:
    """A LipVoicerError re-raised by the DataLoader from a worker carries "Caught ... Original
    Traceback ..."; its original one-line message is the last line."""
    text = str(e).strip()
    if text.startswith("Caught ") and "Traceback" in text:
        last = text.splitlines()[-1]
        return _one_line(last.split("LipVoicerError: ", 1)[-1])
    return _one_line(text)


def remove_stale_temporaries(folder: str | Path, is_checkpoint_name) -> list[Path]:
    """Delete the temporaries an interrupted checkpoint write left in `folder`
    (`.<checkpoint name>.<random>.tmp[<suffix>]`); returns them."""
    d = Path(folder)
    if not d.is_dir():
        return []
    removed = []
    for p in sorted(d.iterdir()):
        m = _TMP_RE.match(p.name)
        if m and p.is_file() and is_checkpoint_name(m.group("name")):
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            removed.append(p)
    return removed


class Trainer:
    section = "train"              # dotted path of the config section with the common keys
    desc = "train"                 # progress-bar label
    rate_tag: str | None = "samples_per_s"   # throughput scalar (train/<rate_tag>); None: not logged

    def __init__(self, cfg):
        self.cfg = cfg
        t = cfg
        for key in self.section.split("."):
            t = t[key]
        self.t = t
        self.seed = int(t["seed"] if "seed" in t else cfg["seed"])
        self.bs = int(t["batch_size_per_gpu"])
        self.n_iters = int(t["n_iters"])
        self.grad_clip = float(t["grad_clip"] or 0)
        self.bf16 = bool(t["bf16"])
        self.num_workers = resolve_num_workers(t["num_workers"] if "num_workers" in t else "auto",
                                               f"{self.section}.num_workers")
        raw = t["max_bad_fraction"] if "max_bad_fraction" in t else 0.05
        try:
            self.max_bad_fraction = float(raw)
        except (TypeError, ValueError):
            self.max_bad_fraction = -1.0
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise LipVoicerError(f"{self.section}.max_bad_fraction={raw}: must be a fraction in 0..1")
        self.bad_clips: BadClipLog | None = None
        self.exp_dir = Path(self.experiment_dir())
        self.ckpt_dir = Path(self.checkpoint_dir())
        self.batches_per_iter = 1   # batches drawn per iteration (gradient accumulation)
        self.collate_fn = None
        self.info: DistInfo | None = None
        self.start_iter = 0
        self.position: int | None = None   # this rank's sampler position at start_iter (a resume may set it)
        self.last_saved: Path | None = None
        self.writer = None

    # ------------------------------------------------------------------ hooks
    def experiment_dir(self) -> Path:
        raise NotImplementedError

    def build(self) -> None:
        raise NotImplementedError

    def summary(self) -> str:
        raise NotImplementedError

    def train_step(self, batches, it: int) -> dict:
        raise NotImplementedError

    def progress(self, scalars: dict, rate: float) -> dict:
        return {"loss": f"{scalars['loss']:.4f}"}

    def extract_state_dict(self, ckpt: dict, what: str) -> dict:
        raise NotImplementedError

    def save_checkpoint(self, iteration: int, rng_states: list) -> Path:
        raise NotImplementedError

    def start_fresh(self) -> None:
        """Nothing to resume from (e.g. load `init_from` weights)."""

    def wrap(self) -> None:
        """DistributedDataParallel wrapping (a no-op in a single process)."""
        self.net = self.ddp(self.model)

    def before_training(self) -> None:
        """After wrap() and the TensorBoard writer, before the first iteration."""

    def log_extras(self, it: int) -> None:
        """Rank 0, after every iteration: periodic evaluation / pictures / audio."""

    def finish(self) -> None:
        """Rank 0, after the loop."""

    # ------------------------------------------------------------------ checkpoint layout
    def checkpoint_dir(self) -> Path:
        return self.exp_dir / "checkpoint"

    def checkpoints(self) -> dict[int, tuple[Path, ...]]:
        """{iteration: files} of the complete checkpoints; the first file is the one train() returns."""
        return {it: (p,) for it, p in list_checkpoints(self.ckpt_dir).items()}

    def checkpoint_files(self, iteration: int) -> tuple[Path, ...]:
        return (self.ckpt_dir / f"{iteration}.pkl",)

    def is_checkpoint_name(self, name: str) -> bool:
        """Whether a file name in checkpoint_dir() is one of this trainer's checkpoint files."""
        return bool(_CKPT_RE.match(name))

    def read_checkpoint_files(self, files: tuple[Path, ...]) -> list:
        """Load every file of one checkpoint; an unreadable one is a LipVoicerError naming it."""
        return [read_checkpoint(p) for p in files]

    def load_checkpoint(self, iteration: int, files: tuple[Path, ...], ckpts: list) -> int:
        """Restore the model, the optimizer and this rank's RNG state from the loaded `ckpts` (one per
        file); returns the iteration."""
        path, ckpt = files[0], ckpts[0]
        load_state_dict_strict(self.model, self.extract_state_dict(ckpt, str(path)), what=str(path))
        if ckpt.get("optimizer_state_dict"):
            self.optimizer.load_state_dict(ckpt["optimizer_state_dict"])
        self.restore_rng(ckpt.get("rng_state"))
        return int(ckpt.get("iteration", iteration))

    def resolve_resume(self) -> list[tuple[int, tuple[Path, ...]]]:
        """The checkpoints to try resuming from, in order: `max` -> every complete one, newest first
        (none -> a fresh start), -1 -> none, N -> that one."""
        ckpt_iter = self.t["ckpt_iter"]
        if ckpt_iter is None or str(ckpt_iter) == "-1":
            return []
        its = self.checkpoints()
        if str(ckpt_iter) == "max":
            return [(it, its[it]) for it in sorted(its, reverse=True)]
        try:
            n = int(ckpt_iter)
        except ValueError:
            raise LipVoicerError(f"{self.section}.ckpt_iter={ckpt_iter}: expected 'max', -1 or an iteration "
                                 "number") from None
        if n not in its:
            files = self.checkpoint_files(n)
            missing = [p for p in files if not p.is_file()] or list(files)
            raise LipVoicerError(f"{missing[0]}: checkpoint for {self.section}.ckpt_iter={n} not found")
        return [(n, its[n])]

    def read_resume(self) -> tuple[int, tuple[Path, ...], list] | None:
        """(iteration, files, loaded contents) to resume from, or None for a fresh start. With
        ckpt_iter=max an unreadable checkpoint is skipped with a warning naming it (a run killed
        while the file system lost the newest one, a disk error); if none can be read, one line."""
        candidates = self.resolve_resume()
        unreadable = []
        for it, files in candidates:
            try:
                return it, files, self.read_checkpoint_files(files)
            except LipVoicerError as e:
                if str(self.t["ckpt_iter"]) != "max":
                    raise
                unreadable.append(str(e))
                if self.info.is_main:
                    log.warning("%s; resuming from the newest readable checkpoint before it instead", e)
        if unreadable:
            raise LipVoicerError(f"{self.ckpt_dir}: none of the {len(unreadable)} checkpoints can be read (the newest: "
                                 f"{unreadable[0]}); start afresh with {self.section}.ckpt_iter=-1")
        return None

    def prune(self) -> None:
        """Delete all but the newest `keep_last` checkpoints (0 keeps everything)."""
        keep = int(self.t["keep_last"])
        if keep <= 0:
            return
        its = self.checkpoints()
        for it in sorted(its)[:-keep]:
            for p in its[it]:
                p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ helpers for the hooks
    def restore_rng(self, states) -> None:
        if states and self.info.rank < len(states):
            set_rng_state(states[self.info.rank])

    def ddp(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.info.distributed:
            return module
        return DistributedDataParallel(module, device_ids=[self.info.device.index]
                                       if self.info.device.type == "cuda" else None)

    def autocast(self):
        """bf16 autocast on the training device when `bf16` is set, else a no-op context."""
        if self.bf16:
            return torch.autocast(self.info.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def clip_gradients(self, module: torch.nn.Module):
        """The gradient norm after clipping to `grad_clip`; None when clipping is off."""
        if self.grad_clip <= 0:
            return None
        return torch.nn.utils.clip_grad_norm_(module.parameters(), self.grad_clip)

    def sampler_position(self, iteration: int) -> int:
        """This rank's data position after `iteration` iterations of this run."""
        return self.position + (iteration - self.start_iter) * self.batches_per_iter * self.bs

    def save(self, iteration: int) -> None:
        states = all_rng_states(self.info)   # a collective call under torchrun: every rank takes part
        if self.info.is_main:
            self.last_saved = self.save_checkpoint(iteration, states)
            self.prune()
        barrier()

    # ------------------------------------------------------------------ the run
    def _check_common(self) -> None:
        for key in ("batch_size_per_gpu", "iters_per_ckpt", "iters_per_logging"):
            if int(self.t[key]) <= 0:
                raise LipVoicerError(f"{self.section}.{key}={self.t[key]}: must be positive")

    def _remove_stale_temporaries(self) -> None:
        """Rank 0, before anything is written: the temporaries of a checkpoint write that was killed."""
        removed = remove_stale_temporaries(self.ckpt_dir, self.is_checkpoint_name)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted checkpoint write: %s", len(removed),
                     ", ".join(p.name for p in removed))

    def run(self) -> Path | None:
        """Train; returns the main file of the last checkpoint written (rank 0) or None."""
        self.info = info = init_distributed(self.t["device"])
        self._check_common()
        seed_everything(self.seed + info.rank)
        if info.is_main:
            self._remove_stale_temporaries()
        self.build()

        found = self.read_resume()
        resume = None
        if found is not None:
            resume, files, ckpts = found
            self.start_iter = self.load_checkpoint(resume, files, ckpts)
            del ckpts
            if info.is_main:
                log.info("resumed from %s (iteration %d)", " and ".join(map(str, files)), self.start_iter)
        else:
            self.start_fresh()
            if info.is_main:
                log.info("starting a new run in %s", self.ckpt_dir)
        if self.position is None:
            self.position = self.start_iter * self.batches_per_iter * self.bs
        if info.is_main:
            log.info("%s, device %s, world size %d, data-loader workers: %d", self.summary(), info.device,
                     info.world_size, self.num_workers)

        if self.start_iter >= self.n_iters:
            if info.is_main:
                log.info("nothing to do: iteration %d >= %s.n_iters=%d", self.start_iter, self.section, self.n_iters)
            cleanup_distributed()
            return files[0] if resume is not None else None

        self.wrap()
        if info.is_main:
            from torch.utils.tensorboard import SummaryWriter  # heavy: only when training

            self.writer = SummaryWriter(str(self.exp_dir / "tensorboard"), purge_step=self.start_iter + 1)
        self.before_training()
        self._loop()
        if self.writer is not None:
            self.writer.close()
        if self.bad_clips is not None and self.bad_clips.reasons:
            log.warning("%d bad clip(s) of %d skipped by %s (each logged above with its reason)",
                        len(self.bad_clips.reasons), len(self.dataset),
                        f"rank {info.rank}" if info.distributed else "this run")
        if info.is_main:
            self.finish()
        cleanup_distributed()
        return self.last_saved

    def _batches(self, loader):
        """The loader's batches; bad clips' reports go to self.bad_clips, errors of workers become one line."""
        stream = iter(loader)
        while True:
            try:
                batch, reports = next(stream)
            except LipVoicerError as e:
                raise LipVoicerError(worker_error_line(e)) from None
            except RuntimeError as e:
                if "DataLoader worker" not in str(e):
                    raise
                raise LipVoicerError(f"a data-loader worker stopped ({_one_line(e)}); out of memory? lower "
                                     f"{self.section}.num_workers or batch_size_per_gpu") from None
            if reports:
                self.bad_clips.add(reports)
            yield batch

    def _loop(self) -> None:
        info, t = self.info, self.t
        self.bad_clips = BadClipLog(len(self.dataset), self.max_bad_fraction, f"{self.section}.max_bad_fraction")
        batches = self._batches(make_loader(SkipBadClips(self.dataset), self.bs, self.num_workers, self.seed, info,
                                            self.position, CollateSkipping(self.collate_fn)))
        max_seconds = float(t["max_minutes"] or 0) * 60
        log_every, ckpt_every = int(t["iters_per_logging"]), int(t["iters_per_ckpt"])
        per_iter = self.batches_per_iter * self.bs * info.world_size
        bar = tqdm(total=self.n_iters, initial=self.start_iter, disable=not info.is_main, desc=self.desc, unit="it",
                   dynamic_ncols=True)
        t_start = window_t = time.time()
        window_n = 0
        self.model.train()
        it = self.start_iter
        while it < self.n_iters:
            it += 1
            scalars = self.train_step(batches, it)
            window_n += per_iter
            bar.update(1)
            if it % log_every == 0 or it == self.start_iter + 1:
                n_bad = self.bad_clips.global_count(info)   # every rank: a collective call under torchrun
                self.bad_clips.check(n_bad)
                if info.is_main:
                    now = time.time()
                    rate = window_n / max(now - window_t, 1e-9)
                    window_t, window_n = now, 0
                    self._log_scalars(it, scalars, rate, bar)
                    self.writer.add_scalar("data/skipped_clips", n_bad, it)
            if info.is_main:
                self.log_extras(it)
            out_of_time = max_seconds > 0 and any_rank(time.time() - t_start > max_seconds, info)
            if it % ckpt_every == 0 or it >= self.n_iters or out_of_time:
                self.save(it)
            if out_of_time:
                if info.is_main:
                    log.info("%s.max_minutes reached at iteration %d; resume with %s.ckpt_iter=max",
                             self.section, it, self.section)
                break
        bar.close()

    def _log_scalars(self, it: int, scalars: dict, rate: float, bar) -> None:
        values = {k: float(v.detach()) if torch.is_tensor(v) else float(v)
                  for k, v in scalars.items() if v is not None}
        bar.set_postfix(**self.progress(values, rate))
        for k, v in values.items():
            self.writer.add_scalar(f"train/{k}", v, it)
        self.writer.add_scalar("train/learning_rate", self.optimizer.param_groups[0]["lr"], it)
        if self.rate_tag:
            self.writer.add_scalar(f"train/{self.rate_tag}", rate, it)
