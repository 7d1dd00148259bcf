"""Parity with the original LipVoicer implementation (golden fixtures in ../shared/parity).

Each test rebuilds the stand-in weights the fixture was made with (official key
names), loads them through the project's own checkpoint loader, runs every case
and compares in float32. Sections are added per component.
"""
import pytest
import torch

from tests.parity_utils import check_cases, det_state_dict, load_fixture, rel_err  # noqa: F401
