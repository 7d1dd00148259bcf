"""The layering of the code: every import goes downwards, utils/ stays a small leaf.

    utils/ -> dataloaders/ -> models/ -> {trainers/, pipelines/} -> scripts, recipes/, benchmarks/

Imports are read from the source (also those inside function bodies), so this test fails on
any upward or sideways import, on any import of tests/ from outside the tests, and on a circle of
imports between modules (within a layer: a folder's files must import each other one way too).
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


def test_recipe_files_stay_small():
    """The recipe is split by role (settings and running, training, conditions, scoring, report, model set, the
    stage list): a file past 500 lines is a sign that a second role has moved in."""
    long = {rel.as_posix(): n for rel in python_files() if layer_of(rel) == "recipes"
            if (n := len((REPO_ROOT / rel).read_text().splitlines())) > 500}
    assert not long, f"recipes/ files over 500 lines: {long}"


@pytest.mark.parametrize("source, expected", [
    ("import utils.errors\nfrom models.melgen import model\n", ["utils", "models"]),
    ("def f():\n    from trainers.base import Trainer\n", ["trainers"]),
    ("import numpy\nfrom . import x\n", []),
])
def test_the_import_reader_sees_every_form(tmp_path, source, expected):
    f = tmp_path / "m.py"
    f.write_text(source)
    assert [top for _, top in project_imports(f)] == expected


# ----------------------------------------------------------------------------- import circles
def module_name(rel: Path) -> str:
    """recipes/synthetic.py -> recipes.synthetic; models/asr/__init__.py -> models.asr."""
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(rel: Path, modules: set[str], root: Path = REPO_ROOT) -> set[str]:
    """The project modules (of `modules`) a file imports, at module level or inside functions.
    `from a.b import c` counts as an import of a.b.c when that is a module, else of a.b; relative
    imports are resolved against the file's package."""
    tree = ast.parse((root / rel).read_text(encoding="utf-8"), filename=str(rel))
    package = module_name(rel) if rel.name == "__init__.py" else module_name(rel).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            for a in node.names:
                sub = f"{base}.{a.name}" if base else a.name
                if sub in modules:
                    found.add(sub)
                elif base in modules:
                    found.add(base)
    found.discard(module_name(rel))
    return found


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles of an import graph: its strongly connected groups of more than one module (Tarjan), each
    sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(circles)


def test_no_import_circle():
    files = {module_name(rel): rel for rel in python_files()}
    graph = {name: module_imports(rel, set(files)) for name, rel in files.items()}
    circles = import_circles(graph)
    assert not circles, "modules that import each other in a circle (make the imports run one way):\n" + \
        "\n".join(" <-> ".join(c) for c in circles)


def test_the_circle_finder_sees_a_circle(tmp_path):
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
    # the reader resolves submodules, packages and relative imports
    modules = {"recipes.x", "recipes.y", "recipes", "models.asr", "models.asr.model"}
    f = tmp_path / "recipes" / "x.py"
    f.parent.mkdir()
    f.write_text("from recipes import y\nfrom . import y as again\nfrom models.asr import build_asr\n"
                 "def f():\n    import models.asr.model\n")
    assert module_imports(f.relative_to(tmp_path), modules, tmp_path) == {"recipes.y", "models.asr", "models.asr.model"}
