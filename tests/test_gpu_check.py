"""benchmarks/gpu_check.sh in its tiny CPU mode: every stage runs and one dated table comes out."""
from __future__ import annotations

import json
import subprocess

from tests.helpers import REPO_ROOT


def test_gpu_check_tiny_mode(tmp_path):
    out = tmp_path / "check"
    r = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--tiny", str(out)], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    summary = json.loads((out / "summary.json").read_text())
    names = {run["benchmark"] for run in summary["runs"]}
    assert names == {"sampling_1x3s", "sampling_1x8s", "sampling_32x3s", "buckets", "train"}
    for run in summary["runs"]:
        assert run["rows"] and all(row["median_s"] > 0 for row in run["rows"] if "median_s" in row)
    md = (out / "summary.md").read_text()
    assert md.startswith("# GPU check, ") and "| path |" in md and "dpm_solver++ 2M (fp32)" in md
    assert "| what | unpadded | padded | ratio |" in md
    assert not (out / "corpus").exists()


def test_gpu_check_without_a_gpu_says_so_in_one_line(tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = tmp_path / "check"
    r = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out)], cwd=REPO_ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "error: benchmarks/gpu_check.sh: needs a CUDA GPU (PyTorch sees none here); 'bash benchmarks/gpu_check.sh "
        "--tiny' runs the same checks on CPU with tiny models"]
    assert not out.exists()
