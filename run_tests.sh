#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it (CPU; no GPU needed).
#   bash run_tests.sh            # default suite
#   bash run_tests.sh -m slow    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")"
bash install.sh --tests
exec python3 -m pytest "$@"
