"""Access to the golden parity fixtures (../shared/parity by default).

The folder is taken from LIPVOICER_PARITY_DIR; relative paths are read from the
repository root. A test that needs a fixture calls `load_fixture(name)`, which
skips the test with a reason when the folder or the file is absent (a user's
fresh clone has no shared/ folder).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def parity_dir() -> Path:
    p = Path(os.environ.get("LIPVOICER_PARITY_DIR", "../shared/parity"))
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()


def fixture_file(name: str) -> Path:
    """The path of a file of the fixtures folder; skips the test with a reason when it is absent."""
    path = parity_dir() / name
    if not path.is_file():
        pytest.skip(f"parity fixture {path} not found (set LIPVOICER_PARITY_DIR to the fixtures folder)")
    return path


def load_fixture(name: str) -> dict:
    return torch.load(fixture_file(name), weights_only=False, map_location="cpu")


def _detweights():
    path = parity_dir() / "detweights.py"
    if not path.is_file():
        pytest.skip(f"{path} not found (set LIPVOICER_PARITY_DIR to the fixtures folder)")
    spec = importlib.util.spec_from_file_location("lipvoicer_parity_detweights", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def det_state_dict(manifest: dict, constants: dict | None = None) -> dict:
    """The stand-in state dict (official key names) that produced a fixture."""
    return _detweights().det_state_dict(manifest, constants)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64."""
    out, ref = out.detach().double(), ref.detach().double()
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-30))


def check_cases(fixture: dict, run_case, tol: dict[str, float], default_tol: float = 1e-4) -> list[str]:
    """Run `run_case(inputs) -> {name: tensor}` on every case; compare each named output.

    Returns a list of failure lines (empty when everything is within tolerance), and
    prints the measured errors so that `pytest -s` shows them.
    """
    failures = []
    for i, case in enumerate(fixture["cases"]):
        got = run_case(case["inputs"])
        for key, value in got.items():
            ref = case["outputs"][key]
            if tuple(value.shape) != tuple(ref.shape):
                failures.append(f"case {i} {key}: shape {tuple(value.shape)} != {tuple(ref.shape)}")
                continue
            err = rel_err(value, ref)
            print(f"[parity] {fixture.get('component', '?')} case {i} {key}: rel_err={err:.3e}")
            if not err <= tol.get(key, default_tol):
                failures.append(f"case {i} {key}: rel_err {err:.3e} > {tol.get(key, default_tol):.0e}")
    return failures
