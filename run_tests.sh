#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian/Ubuntu machine, then run it.
#   bash run_tests.sh            # default suite (CPU, no GPU needed)
#   bash run_tests.sh -m slow    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")"

# System packages: espeak-ng (synthetic corpus speech), ffmpeg (command-line video tools in tests),
# libgl1 and libglib2.0-0 (OpenCV and MediaPipe shared libraries).
need=()
for pkg in espeak-ng ffmpeg libgl1 libglib2.0-0; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

python3 -m pip install -q --disable-pip-version-check -r requirements.txt
exec python3 -m pytest "$@"
