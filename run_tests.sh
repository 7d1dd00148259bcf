#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it (CPU; no GPU needed).
#   bash run_tests.sh            # default suite
#   bash run_tests.sh -m slow    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")"
bash install.sh --tests
# one worker process per core, up to 4 (pytest-xdist; each test is single-threaded: tests/conftest.py); the tests
# that speak word by word with espeak-ng stay together in one worker (--dist loadgroup)
workers="${LIPVOICER_TEST_WORKERS:-$(python3 -c 'import os; print(min(len(os.sched_getaffinity(0)), 4))')}"
exec python3 -m pytest -n "$workers" --dist loadgroup "$@"
