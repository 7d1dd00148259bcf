"""The layering of the code: every import goes downwards, utils/ stays a small leaf.

    utils/ -> dataloaders/ -> models/ -> {trainers/, pipelines/} -> scripts, recipes/, benchmarks/

Imports are read from the source (also those inside function bodies), so this test fails on
any upward or sideways import, and on any import of tests/ from outside the tests.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("utils", "dataloaders", "models", "trainers", "pipelines", "recipes", "benchmarks", "tests")
# what each layer may import from the project (itself included)
ALLOWED = {
    "utils": {"utils"},
    "dataloaders": {"utils", "dataloaders"},
    "models": {"utils", "dataloaders", "models"},
    "trainers": {"utils", "dataloaders", "models", "trainers"},
    "pipelines": {"utils", "dataloaders", "models", "pipelines"},
    "recipes": {"utils", "dataloaders", "models", "trainers", "pipelines", "recipes"},
    "benchmarks": {"utils", "dataloaders", "models", "trainers", "pipelines", "benchmarks"},
    "scripts": {"utils", "dataloaders", "models", "trainers", "pipelines"},
}


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level project package) of every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                found.append((node.lineno, top))
    return found


def layer_of(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 and rel.parts[0] in PACKAGES else "scripts"


def python_files():
    skip = {".git", ".whl", ".gl", "outputs", "exp", "generated", "checkpoints", "data"}
    for p in sorted(REPO_ROOT.rglob("*.py")):
        rel = p.relative_to(REPO_ROOT)
        if not set(rel.parts) & skip:
            yield rel


def test_every_import_goes_downwards():
    bad = []
    for rel in python_files():
        layer = layer_of(rel)
        if layer == "tests":
            continue
        for line, top in project_imports(REPO_ROOT / rel):
            if top not in ALLOWED[layer]:
                bad.append(f"{rel}:{line}: {layer} imports {top}")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_utils_is_a_small_leaf():
    lines = sum(len((REPO_ROOT / rel).read_text().splitlines()) for rel in python_files() if layer_of(rel) == "utils")
    assert lines < 1000, f"utils/ has {lines} lines; it should hold only small generic helpers"


@pytest.mark.parametrize("source, expected", [
    ("import utils.errors\nfrom models.melgen import model\n", ["utils", "models"]),
    ("def f():\n    from trainers.base import Trainer\n", ["trainers"]),
    ("import numpy\nfrom . import x\n", []),
])
def test_the_import_reader_sees_every_form(tmp_path, source, expected):
    f = tmp_path / "m.py"
    f.write_text(source)
    assert [top for _, top in project_imports(f)] == expected
