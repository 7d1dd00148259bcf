"""Speech for a silent talking-face video.

    python download_checkpoints.py                                   # once: the published models
    python inference_real_video.py generate.video_path=clip.mp4      # -> generated/clip/
    python inference_real_video.py generate.video_path=clip.mp4 generate.text="'what was said'" \
        dataset=lrs2 generate.w_asr=1.5 generate.device=cuda      # LRS2 MelGen and ASR fine-tune

Writes into <generate.save_dir>/<video name>/: <name>.wav (16 kHz), <name>.mp4 (the video
with the new speech), <name>.wav.spec (log-mel) and <name>.png, <name>_mouth.mp4 (mouth
crops), <name>.txt (the text used for guidance) and <name>.json (settings, timings, versions).
"""
import logging

import hydra
from omegaconf import DictConfig

from pipelines.video_to_speech import generate_for_video
from utils.errors import exit_on_user_error


@hydra.main(version_base=None, config_path="configs", config_name="config")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    logging.getLogger().setLevel(logging.INFO)
    out = generate_for_video(cfg)
    print(f"output: {out}")


if __name__ == "__main__":
    main()
