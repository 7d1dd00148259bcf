#!/usr/bin/env bash
# Install, fetch the published checkpoints that are missing, and generate speech for one video.
#   bash run_inference.sh clip.mp4                                  # -> generated/clip/
#   bash run_inference.sh clip.mp4 generate.dataset=lrs2 generate.device=cuda
# Extra key=value arguments are overrides of configs/config.yaml (see README).
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: bash run_inference.sh VIDEO [key=value ...]" >&2
  exit 2
fi
video="$(realpath -m "$1")"; shift
cd "$(dirname "$0")"
bash install.sh
python3 download_checkpoints.py            # skips every asset already present and complete
exec python3 inference_real_video.py generate.video_path="$video" "$@"
