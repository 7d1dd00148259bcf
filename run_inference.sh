#!/usr/bin/env bash
# Install, fetch the published checkpoints this run needs that are missing, and generate speech for one video.
#   bash run_inference.sh clip.mp4                                  # -> generated/clip/
#   bash run_inference.sh "my clip (1).mp4" dataset=lrs2 generate.device=cuda
#   bash run_inference.sh clip.mp4 generate.text="'what was said'"  # no lip reader: its files are not fetched
# Extra key=value arguments are overrides of configs/config.yaml (see README); a value with spaces,
# commas, brackets or parentheses needs Hydra's inner quotes: key="'value with spaces'".
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: bash run_inference.sh VIDEO [key=value ...]" >&2
  exit 2
fi
video="$(realpath -m -- "$1")"; shift
cd "$(dirname "$0")"
bash install.sh
# only the assets this run needs (MelGen + ASR of dataset.name, HiFi-GAN, mean face, the lip reader
# when no generate.text is given); present ones are skipped
python3 download_checkpoints.py --for-inference "$@"
# the video as a positional argument: inference_real_video.py quotes it for Hydra
exec python3 inference_real_video.py "$video" "$@"
