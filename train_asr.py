"""Train or fine-tune the ASR guidance classifier on noisy mels x_t (t < asr.train.max_t).

    python train_asr.py dataset=lrs3                                   # one GPU (or CPU)
    torchrun --nproc_per_node 4 train_asr.py dataset=lrs2              # several GPUs
    python train_asr.py dataset=lrs3 asr.train.init_from=checkpoints/checkpoints_ft_lrs3.ckpt
    python train_asr.py dataset=synthetic asr.train.tokenizer=checkpoints/synthetic_bpe256.model

Resumes from the newest checkpoint of the experiment by default (asr.train.ckpt_iter=max).
See docs/asr.md.

A bad clip (unreadable or inconsistent files) is skipped and logged once; more than
asr.train.max_bad_fraction of them stops the run with one line. Data-loader workers:
asr.train.num_workers (auto = min(4, usable CPU cores - 1)).
"""
import logging

import hydra
from omegaconf import DictConfig

from trainers.asr import train
from utils.errors import exit_on_user_error


@hydra.main(version_base=None, config_path="configs", config_name="config")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    logging.getLogger().setLevel(logging.INFO)
    train(cfg)


if __name__ == "__main__":
    main()
