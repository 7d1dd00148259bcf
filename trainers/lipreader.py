"""Training a lip reader of the published architecture family (train_lipreader.py is the command-line
wrapper; the loop is trainers/base.py).

The network is models/vsr's (conv3d + ResNet front end, conformer encoder, transformer decoder, CTC),
sized by `lipreader_train.model` (configs/lipreader_train/: default = the published sizes, cpu, tiny);
the loss is the published recipe's hybrid CTC / attention loss with label smoothing
(models/vsr/training.py); AdamW with a linear warm-up and a cosine decay (a function of the
iteration, so a resumed run continues it exactly). Items are whole clips of mouth crops with their
transcripts (dataloaders/lipreading_dataset.py; random crop and flip). Units: characters of the
training transcripts, or a given units file.

Files, under `<save_dir>/exp/lipreader/<name>/`:
    checkpoint/<iter>.pkl    weights, optimizer, iteration, RNG state (exact resume; ckpt_iter=max)
    tensorboard/             train/loss, ctc, att, acc, learning rate; eval/wer and eval/cer on held-out clips
    model.pth, model.json, units.txt
                             the newest weights as the published lip reader ships (plain state dict, ESPnet
                             `[idim, odim, args]`, units file): vsr.model_path / vsr.model_conf / vsr.units_path
                             load them through models/vsr/reader.py like the published model
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from dataloaders.layout import list_split_clips
from dataloaders.lipreading_dataset import LipReadingDataset, collate_lipreading
from dataloaders.text import read_transcript
from models.vsr.beam_search import BeamSearch
from models.vsr.model import VSRModel
from models.vsr.model_json import VSRConfig, parse_vsr_json, vsr_model_json
from models.vsr.tokens import TokenList, char_units, units_file_text
from models.vsr.training import vsr_loss, write_lip_reader
from trainers.base import Trainer
from utils.checkpoint import atomic_torch_save
from utils.errors import LipVoicerError
from utils.files import atomic_text

log = logging.getLogger(__name__)

UNITS_FILE = "units.txt"


def experiment_dir(cfg) -> Path:
    t = cfg["lipreader_train"]
    return Path(t["save_dir"]) / "exp" / "lipreader" / str(t["name"])


def lr_at(it: int, peak: float, warmup: int, n_iters: int) -> float:
    """Linear warm-up to `peak` over `warmup` iterations, then cosine decay to 0 at n_iters."""
    if warmup > 0 and it <= warmup:
        return peak * it / warmup
    span = max(1, n_iters - warmup)
    progress = min(1.0, max(0.0, (it - warmup) / span))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def training_units(cfg, folder: Path, fresh: bool) -> TokenList:
    """The units: `<folder>/units.txt` of an earlier start of this run (not with a fresh start), else the
    given units file (lipreader_train.units), else the characters of the training transcripts; the result is
    written to `<folder>/units.txt` (the model's output size depends on it: a resumed run reads it back)."""
    own = folder / UNITS_FILE
    given = cfg["lipreader_train"]["units"]
    if own.is_file() and not fresh:
        return TokenList.from_units_file(own)
    if given:
        tokens = TokenList.from_units_file(Path(str(given)))
    else:
        texts = []
        for clip in list_split_clips(cfg["dataset"], "train"):
            try:
                texts.append(read_transcript(Path(cfg["dataset"]["videos_dir"]) / f"{clip}.txt"))
            except LipVoicerError:
                pass   # the dataset reports the clip when training reaches it
        if not any(texts):
            raise LipVoicerError(f"{cfg['dataset']['videos_dir']}: no training clip has a transcript with words "
                                 "(.txt beside the .mp4, first line 'Text:  <WORDS>')")
        tokens = TokenList(["<blank>", *char_units(texts), "<eos>"])
    folder.mkdir(parents=True, exist_ok=True)
    atomic_text(own, units_file_text(tokens.units))
    return tokens


def model_json(cfg, n_tokens: int) -> list:
    """The `[idim, odim, args]` of the lip reader to train (the args model.json gets)."""
    t = cfg["lipreader_train"]
    m = t["model"]
    try:
        vcfg = VSRConfig(adim=int(m["adim"]), aheads=int(m["aheads"]), eunits=int(m["eunits"]),
                         elayers=int(m["elayers"]), dunits=int(m["dunits"]), dlayers=int(m["dlayers"]),
                         mtlalpha=float(t["ctc_weight"]), cnn_module_kernel=int(m["cnn_module_kernel"]),
                         relu_type=str(m["relu_type"]), frontend_width=int(m["frontend_width"]))
    except (TypeError, ValueError) as e:
        raise LipVoicerError(f"lipreader_train.model: {e}") from None
    extra = {"lsm_weight": float(t["label_smoothing"]), "trained_by": "trainers/lipreader.py"}
    return vsr_model_json(vcfg, n_tokens, extra=extra)


def build_model(conf: list, n_tokens: int, source: str = "lipreader_train.model") -> VSRModel:
    """The network from its model.json content, through the reader's own parser (what is written is what
    loads)."""
    return VSRModel(parse_vsr_json(conf, source), n_tokens)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def evaluate(model: VSRModel, tokens: TokenList, dataset: LipReadingDataset, beam_size: int, ctc_weight: float,
             device, reported: set | None = None) -> dict | None:
    """Joint CTC / attention beam search (no LM) on each held-out clip: {wer, cer, n, example}; a bad clip is
    left out and logged once (its index added to `reported`); None when no clip could be read."""
    import jiwer

    was_training = model.training
    model.eval()
    search = BeamSearch(model, None, beam_size=beam_size, ctc_weight=ctc_weight, lm_weight=0.0)
    refs, hyps = [], []
    for i in range(len(dataset)):
        try:
            item = dataset[i]
        except LipVoicerError as e:
            if reported is not None and i not in reported:
                reported.add(i)
                log.warning("held-out clip left out of the WER: %s", e)
            continue
        best = search(model.encode(item["video"].to(device)))
        hyps.append(tokens.text(best[0].yseq) if best else "")
        refs.append(item["text"])
    model.train(was_training)
    if not refs:
        return None
    return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps)), "n": len(refs),
            "example": (refs[0], hyps[0])}


class LipReaderTrainer(Trainer):
    section, desc = "lipreader_train", "train lip reader"

    def experiment_dir(self) -> Path:
        return experiment_dir(self.cfg)

    def build(self) -> None:
        cfg, t = self.cfg, self.t
        for key in ("ctc_weight", "label_smoothing"):
            if not 0.0 <= float(t[key]) <= 1.0:
                raise LipVoicerError(f"lipreader_train.{key}={t[key]}: must be in 0..1")
        if float(t["ctc_weight"]) >= 1.0:
            raise LipVoicerError("lipreader_train.ctc_weight=1: the decoder would not be trained (use < 1)")
        fresh = str(t["ckpt_iter"]) == "-1"
        self.tokens = training_units(cfg, self.exp_dir, fresh)
        self.model_json = model_json(cfg, len(self.tokens))
        self.model = build_model(self.model_json, len(self.tokens)).to(self.info.device)
        self.dataset = LipReadingDataset(cfg, "train", encode=self.tokens.encode, train=True)
        self.collate_fn = collate_lipreading
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=float(t["learning_rate"]),
                                           betas=tuple(float(b) for b in t["adam_betas"]),
                                           weight_decay=float(t["weight_decay"]))

    def summary(self) -> str:
        return (f"lip reader: {count_parameters(self.model) / 1e6:.2f} M parameters, {len(self.tokens.units)} units, "
                f"{len(self.dataset)} training clips")

    def extract_state_dict(self, ckpt, what):
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model_state_dict"), dict):
            raise LipVoicerError(f"{what}: not a lip-reader training checkpoint (no model_state_dict)")
        return ckpt["model_state_dict"]

    def save_checkpoint(self, iteration, rng_states):
        path = self.checkpoint_files(iteration)[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"model_state_dict": self.model.state_dict(),
                           "optimizer_state_dict": self.optimizer.state_dict(), "iteration": iteration,
                           "rng_state": rng_states, "model_json": self.model_json}, path)
        write_lip_reader(self.exp_dir, self.model, self.model_json, self.tokens.units)
        return path

    def before_training(self) -> None:
        t = self.t
        self.eval_set = None
        self.eval_reported: set[int] = set()
        if self.info.is_main and int(t["iters_per_eval"]) > 0 and t["eval_split"]:
            if t["eval_split"] not in self.cfg["dataset"]["splits"]:
                log.warning("dataset '%s' has no split '%s': no held-out WER", self.cfg["dataset"]["name"],
                            t["eval_split"])
            else:
                self.eval_set = LipReadingDataset(self.cfg, str(t["eval_split"]), max_clips=int(t["eval_max_clips"]),
                                                  seed=self.seed)

    def train_step(self, batches, it):
        t = self.t
        lr = lr_at(it, float(t["learning_rate"]), int(t["warmup_iters"]), self.n_iters)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = next(batches)
        dev = self.info.device
        with self.autocast():
            out = vsr_loss(self.model, batch["video"].to(dev, non_blocking=True), batch["lengths"].to(dev),
                           batch["tokens"].to(dev), batch["token_lengths"].to(dev), float(t["ctc_weight"]),
                           float(t["label_smoothing"]), net=self.net)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        out["grad_norm"] = self.clip_gradients(self.model)
        self.optimizer.step()
        out["loss"] = out["loss"].detach()
        return out

    def progress(self, scalars, rate):
        return {"loss": f"{scalars['loss']:.3f}", "acc": f"{scalars.get('acc', 0.0):.3f}"}

    def log_extras(self, it):
        every = int(self.t["iters_per_eval"])
        if self.eval_set is None or every <= 0 or (it % every and it != self.n_iters):
            return
        res = evaluate(self.model, self.tokens, self.eval_set, int(self.t["eval_beam_size"]),
                       float(self.t["ctc_weight"]), self.info.device, self.eval_reported)
        if res is None:
            return
        self.writer.add_scalar("eval/wer", res["wer"], it)
        self.writer.add_scalar("eval/cer", res["cer"], it)
        self.writer.add_text("eval/example", f"ref: {res['example'][0]}  \nhyp: {res['example'][1]}", it)
        log.info("iteration %d held-out WER %.3f, CER %.3f (%d clips)", it, res["wer"], res["cer"], res["n"])

    def finish(self) -> None:
        if self.last_saved is not None:
            d = self.exp_dir
            log.info("lip reader written as the published one ships: vsr.model_path=%s vsr.model_conf=%s "
                     "vsr.units_path=%s vsr.lm_weight=0", d / "model.pth", d / "model.json", d / UNITS_FILE)


def train(cfg) -> Path | None:
    """Run training; returns the path of the last checkpoint written (rank 0) or None."""
    return LipReaderTrainer(cfg).run()
