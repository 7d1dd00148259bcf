"""Shared test fixtures (a tiny corpus in the LRS3 layout); plain helpers are in tests/helpers.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

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
