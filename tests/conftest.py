"""Shared test fixtures (a tiny corpus in the LRS3 layout); plain helpers are in tests/helpers.py.

The suite runs one CPU thread per process (OMP_NUM_THREADS / MKL_NUM_THREADS = 1 unless already set, inherited
by the scripts the tests start): its models are tiny, so a second thread gains little, while several processes
(torchrun's two ranks, a script beside pytest) or a machine shared with other jobs make two-thread processes
wait on each other's spinning threads. Measured on the shared 2-core machine: bench_sampling.py --tiny took
117 s with two threads and 21.5 s with one.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if "torch" in sys.modules:   # imported before this file (a plugin): set its pool too
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))



def pytest_collection_modifyitems(session, config, items):
    """Tests marked espeak_words run first, in their order. espeak-ng speaks each word in a forked child
    (dataloaders/synthetic/espeak.py, isolated=True), and a fork costs with the size of the forking process:
    about 10 ms from a fresh interpreter, about 100 ms from one that has allocated 1.6 GB in small pieces, as
    the test process has after a few hundred tests. The homophene grammar speaks 618 words to group them (cached
    for the rest of the session): 16 s at the start of a run, 125 s near its end."""
    first = [item for item in items if item.get_closest_marker("espeak_words")]
    if first:
        items[:] = first + [item for item in items if not item.get_closest_marker("espeak_words")]
    # with pytest-xdist (run_tests.sh: -n auto --dist loadgroup) they stay together in one worker, which groups
    # the homophene words once for all of them
    for item in first:
        item.add_marker(pytest.mark.xdist_group("espeak_words"))


REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers import make_clip  # noqa: E402


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """4 training clips (pretrain/trainval) and 2 test clips, 0.8 to 1.6 s long."""
    root = tmp_path_factory.mktemp("lrs3_tiny")
    specs = [("pretrain/spk0/00001", 30), ("pretrain/spk0/00002", 40), ("trainval/spk1/00001", 28),
             ("trainval/spk1/00002", 25), ("test/spk2/00001", 20), ("test/spk2/00002", 36)]
    for i, (clip, n) in enumerate(specs):
        make_clip(root, clip, n, seed=i, text=f"clip number {i}")
    return root
