"""Speech for a silent talking-face video.

    python download_checkpoints.py --for-inference                   # once: the published models this run needs
    python inference_real_video.py clip.mp4                          # -> generated/clip/
    python inference_real_video.py "my clip (1).mp4" generate.seed=3 # a positional path needs no Hydra quoting
    python inference_real_video.py generate.video_path="'my clip (1).mp4'"   # as an override it does
    python inference_real_video.py generate.video_path=clip.mp4 generate.text="'what was said'" \
        dataset=lrs2 generate.w_asr=1.5 generate.device=cuda      # LRS2 MelGen and ASR fine-tune

Writes into <generate.save_dir>/<video name>/: <name>.wav (16 kHz), <name>.mp4 (the video
with the new speech), <name>.wav.spec (log-mel) and <name>.png, <name>_mouth.mp4 (mouth
crops), <name>.txt (the text used for guidance) and <name>.json (settings, timings, versions).
"""
import logging
import sys

import hydra
from omegaconf import DictConfig

from utils.native_output import quiet_native_logging

quiet_native_logging()  # before MediaPipe / TensorFlow Lite are imported

from pipelines.video_to_speech import generate_for_video  # noqa: E402
from utils.cli import positional_to_override  # noqa: E402
from utils.errors import exit_on_user_error  # noqa: E402


@hydra.main(version_base=None, config_path="configs", config_name="config")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    logging.getLogger().setLevel(logging.INFO)
    out = generate_for_video(cfg)
    print(f"output: {out}")


if __name__ == "__main__":
    sys.argv = positional_to_override(sys.argv, "generate.video_path")
    main()
