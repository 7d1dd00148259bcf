"""Train a lip reader of the published architecture family on mouth crops and transcripts.

    python train_lipreader.py dataset=lrs3                                  # the published sizes (GPU)
    python train_lipreader.py lipreader_train=cpu dataset=synthetic dataset.root=data/synthetic melgen=cpu
    torchrun --nproc_per_node 4 train_lipreader.py dataset=lrs3 lipreader_train.batch_size_per_gpu=8

Resumes from the newest checkpoint of the experiment by default (lipreader_train.ckpt_iter=max). The newest
model is also written as the published lip reader ships (model.pth, model.json, units.txt in
<save_dir>/exp/lipreader/<name>/), for vsr.model_path / vsr.model_conf / vsr.units_path. See docs/training.md.

A bad clip (mouth crops missing or unreadable, an empty transcript, a character the units do not cover) is
skipped and logged once; more than lipreader_train.max_bad_fraction of them stops the run with one line.
"""
import logging

import hydra
from omegaconf import DictConfig

from trainers.lipreader import train
from utils.errors import exit_on_user_error


@hydra.main(version_base=None, config_path="configs", config_name="config")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    logging.getLogger().setLevel(logging.INFO)
    train(cfg)


if __name__ == "__main__":
    main()
