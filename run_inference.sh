#!/usr/bin/env bash
# Install, fetch the published checkpoints this run needs that are missing, and generate speech for one video.
#   bash run_inference.sh                                           # no video: the bundled example clip through
#                                                                   # the shipped synthetic model set, offline
#   bash run_inference.sh clip.mp4                                  # -> generated/clip/
#   bash run_inference.sh "my clip (1).mp4" dataset=lrs2 generate.device=cuda
#   bash run_inference.sh clip.mp4 generate.text="'what was said'"  # no lip reader: its files are not fetched
# Extra key=value arguments are overrides of configs/config.yaml (docs/configuration.md); a value with spaces,
# commas, brackets or parentheses needs Hydra's inner quotes: key="'value with spaces'".
# LIPVOICER_NO_INSTALL=1 skips install.sh (everything is installed already).
set -euo pipefail
video=""
if [ $# -ge 1 ] && [[ "$1" != *=* ]]; then
  video="$(realpath -m -- "$1")"; shift
fi
cd "$(dirname "$0")"
[ "${LIPVOICER_NO_INSTALL:-0}" = "1" ] || bash install.sh
if [ -z "$video" ]; then
  # no video: examples/synthetic_clip.mp4 with models=synthetic (model_sets/synthetic/, in this repository):
  # nothing to fetch, no network; the set's lip reader reads its words (examples/synthetic_clip.txt holds the
  # true ones, for comparison: a set with a lip reader reads the lips whenever no generate.text is given)
  exec python3 inference_real_video.py examples/synthetic_clip.mp4 models=synthetic "$@"
fi
# only the assets this run needs (MelGen + ASR of dataset.name, HiFi-GAN, mean face, the lip reader
# when no generate.text is given); present ones are skipped
python3 download_checkpoints.py --for-inference "$@"
# the video as a positional argument: inference_real_video.py quotes it for Hydra
exec python3 inference_real_video.py "$video" "$@"
