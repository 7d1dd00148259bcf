"""Train the HiFi-GAN vocoder (generator of cfg.vocoder) on our own audio.

    python train_vocoder.py dataset=synthetic                          # one GPU (or CPU)
    torchrun --nproc_per_node 4 train_vocoder.py dataset=lrs3          # several GPUs
    python train_vocoder.py vocoder_train.wav_dir=/data/wavs vocoder_train.name=mywavs
    python train_vocoder.py dataset=synthetic vocoder_train.max_minutes=9   # time-limited chunks

Resumes from the newest checkpoint pair by default (vocoder_train.ckpt_iter=max). Use the
result with vocoder.checkpoint=<save_dir>/exp/vocoder/<name>/g_<iter:08d>. See
docs/vocoder_training.md.

A bad clip (unreadable or inconsistent files) is skipped and logged once; more than
vocoder_train.max_bad_fraction of them stops the run with one line. Data-loader workers:
vocoder_train.num_workers (auto = min(4, usable CPU cores - 1)).
"""
import logging

import hydra
from omegaconf import DictConfig

from utils.errors import exit_on_user_error
from trainers.vocoder import train


@hydra.main(version_base=None, config_path="configs", config_name="config")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    logging.getLogger().setLevel(logging.INFO)
    train(cfg)


if __name__ == "__main__":
    main()
