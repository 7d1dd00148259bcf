"""Train MelGen.

    python train_melgen.py dataset=lrs3                          # one GPU (or CPU)
    torchrun --nproc_per_node 4 train_melgen.py dataset=lrs2     # several GPUs
    python train_melgen.py train.batch_size_per_gpu=16 train.bf16=true

Resumes from the newest checkpoint of the experiment by default (train.ckpt_iter=max).
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
