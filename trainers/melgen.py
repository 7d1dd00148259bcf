"""MelGen training (train_melgen.py is the command-line wrapper; the loop is trainers/base.py).

Single process on CPU or one GPU, or several GPUs with torchrun (DDP). Checkpoints
`<save_dir>/exp/<name>/<model_dir>/checkpoint/<iter>.pkl` in the published format
(+ iteration and RNG state), written atomically; `train.ckpt_iter=max` resumes from
the newest and continues exactly where the run stopped. TensorBoard logs go to
`<save_dir>/exp/<name>/<model_dir>/tensorboard`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dataloaders.lrs_dataset import MelGenTrainDataset
from models.diffusion.schedule import DiffusionSchedule, melgen_training_loss
from models.melgen.checkpoint import build_melgen, melgen_state_dict, save_melgen
from models.melgen.model import count_parameters
from trainers.base import Trainer
from utils.plotting import mel_figure


def experiment_dir(cfg) -> Path:
    t = cfg["train"]
    return Path(t["save_dir"]) / "exp" / str(t["name"]) / str(t["model_dir"])


class MelGenTrainer(Trainer):
    section, desc = "train", "train MelGen"

    def experiment_dir(self) -> Path:
        return experiment_dir(self.cfg)

    def build(self) -> None:
        self.dataset = MelGenTrainDataset(self.cfg, "train")
        self.model = build_melgen(self.cfg).to(self.info.device)
        if self.info.device.type == "cpu":
            self.model.lip_channels_last()      # faster CPU steps, same function (models/melgen/model.py)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=float(self.t["learning_rate"]))
        self.schedule = DiffusionSchedule.from_config(self.cfg["diffusion"], self.info.device)

    def summary(self) -> str:
        return f"MelGen: {count_parameters(self.model) / 1e6:.2f} M parameters, {len(self.dataset)} training clips"

    def extract_state_dict(self, ckpt, what):
        return melgen_state_dict(ckpt, what)

    def save_checkpoint(self, iteration, rng_states):
        return save_melgen(self.checkpoint_files(iteration)[0], self.model, self.optimizer, iteration,
                           {"rng_state": rng_states})

    def train_step(self, batches, it):
        self.batch = batch = next(batches)
        mel, mouth, face = (batch[k].to(self.info.device, non_blocking=True) for k in ("mel", "mouthroi", "face_image"))
        with self.autocast():
            loss = melgen_training_loss(self.net, self.schedule, mel, mouth, face,
                                        float(self.cfg["melgen"]["cond_drop_prob"]))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = self.clip_gradients(self.model)
        self.optimizer.step()
        return {"loss": loss.detach(), "grad_norm": grad_norm}

    def progress(self, scalars, rate):
        return {"loss": f"{scalars['loss']:.4f}", "samples_s": f"{rate:.1f}"}

    def log_extras(self, it):
        every = int(self.t["iters_per_image"])
        if every > 0 and it % every == 0:
            self.model.eval()
            self.log_images(it)
            self.model.train()

    @torch.no_grad()
    def log_images(self, it):
        """Ground-truth mel and the model's one-step estimate of it from x_t at t = T/2."""
        dev, sch, batch = self.info.device, self.schedule, self.batch
        mel = batch["mel"][:1].to(dev)
        t = torch.full((1,), sch.T // 2, device=dev, dtype=torch.long)
        x_t = sch.q_sample(mel, t, torch.randn_like(mel))
        eps = self.model(x_t, batch["mouthroi"][:1].to(dev), batch["face_image"][:1].to(dev), t.view(1, 1).float())
        ab = sch.alpha_bars[t].view(1, 1, 1)
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        self.writer.add_figure("mel/ground_truth", mel_figure(mel[0]), it)
        self.writer.add_figure("mel/estimate_from_t_half", mel_figure(x0[0].clamp(-1, 1)), it)


def train(cfg) -> Path | None:
    """Run training; returns the path of the last checkpoint written (rank 0) or None."""
    return MelGenTrainer(cfg).run()
