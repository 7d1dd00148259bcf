"""Train MelGen.

    python train_melgen.py dataset=lrs3                          # one GPU (or CPU)
    torchrun --nproc_per_node 4 train_melgen.py dataset=lrs2     # several GPUs
    python train_melgen.py train.batch_size_per_gpu=16 train.bf16=true

Resumes from the newest checkpoint of the experiment by default (train.ckpt_iter=max).

A bad clip (unreadable or inconsistent files) is skipped and logged once; more than
train.max_bad_fraction of them stops the run with one line. Data-loader workers:
train.num_workers (auto = min(4, usable CPU cores - 1)).
"""
import logging

import hydra
from omegaconf import DictConfig

from utils.errors import exit_on_user_error
from trainers.melgen import train


@hydra.main(version_base=None, config_path="configs", config_name="config")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    logging.getLogger().setLevel(logging.INFO)
    train(cfg)


if __name__ == "__main__":
    main()
