"""Model sets: the checkpoints one generation uses, chosen together with `models=<name>`.

    models=published   (default) LipVoicer's published checkpoints (configs/assets/published.yaml), fetched
                       by download_checkpoints.py into checkpoints/ and exp/
    models=synthetic   the small models trained by the synthetic recipe (`recipes/synthetic.py --publish`),
                       shipped in this repository under model_sets/synthetic/ and usable offline; they know
                       only the synthetic corpus's language and faces

A shipped set is a folder with `manifest.json` (its files with their sizes and SHA-256, how they were made,
and a one-line notice) and a config group file `configs/models/<name>.yaml` that points every setting at
it (`${model_set.dir}/...`) and sets the sizes its models were trained with.

    info = resolve_model_set(cfg)   # None for the published set; else the manifest, files checked, and
                                    # cfg.model_set.dir made absolute (so any working directory works)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from utils.errors import LipVoicerError
from utils.files import atomic_text

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "manifest.json"
PUBLISHED = "published"


def _section(cfg) -> dict:
    try:
        sec = cfg["model_set"]
    except (KeyError, TypeError):
        return {}
    return sec if sec is not None else {}


def model_set_name(cfg) -> str:
    return str(_section(cfg).get("name") or PUBLISHED)


def has_lip_reader(cfg) -> bool:
    """Whether the model set reads lips when no text is given (model_set.lip_reader; a set without one takes
    the transcript beside the video)."""
    value = _section(cfg).get("lip_reader", True)
    return True if value is None else bool(value)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def model_set_dir(cfg) -> Path | None:
    """The set's folder: model_set.dir as given when it exists from the working directory, else relative to
    the repository root (the shipped sets live there); None for the published set."""
    folder = _section(cfg).get("dir")
    if model_set_name(cfg) == PUBLISHED or not folder:
        return None
    folder = Path(str(folder))
    if folder.is_absolute() or folder.is_dir():
        return folder.resolve()
    return (REPO_ROOT / folder).resolve()


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise LipVoicerError(f"{path}: model set manifest not found (the set's folder is incomplete; "
                             f"restore it with git checkout -- {folder.name} or rebuild it with the recipe)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LipVoicerError(f"{path}: not a readable model set manifest ({e})") from None
    if not isinstance(manifest.get("files"), dict):
        raise LipVoicerError(f"{path}: model set manifest without a 'files' table")
    return manifest


_CHECKED: dict[tuple, dict] = {}   # (folder, every file's size and mtime) -> manifest: hashed once per process


def _stamp(folder: Path) -> tuple:
    return (str(folder),) + tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                  for p in sorted(folder.iterdir()) if p.is_file())


def check_model_set(folder: Path) -> dict:
    """Every file of the manifest present with its size and SHA-256; the manifest, or LipVoicerError naming
    the first file that is missing or differs (an unchanged folder is hashed once per process)."""
    stamp = _stamp(folder) if folder.is_dir() else None
    if stamp in _CHECKED:
        return _CHECKED[stamp]
    manifest = read_manifest(folder)
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise LipVoicerError(f"{path}: file of the '{manifest.get('name', folder.name)}' model set is missing")
        size = path.stat().st_size
        if size != int(entry["bytes"]):
            raise LipVoicerError(f"{path}: {size} bytes where the model set's manifest says {entry['bytes']} "
                                 f"(a partial or changed file; a Git LFS pointer?)")
        if sha256_file(path) != entry["sha256"]:
            raise LipVoicerError(f"{path}: SHA-256 differs from the model set's manifest (a changed or damaged file)")
    _CHECKED[stamp] = manifest
    return manifest


def resolve_model_set(cfg) -> dict | None:
    """For a shipped model set: its folder made absolute in cfg (model_set.dir, which the set's other
    settings interpolate), its files checked; returns the manifest. None for the published set."""
    folder = model_set_dir(cfg)
    if folder is None:
        return None
    manifest = check_model_set(folder)
    try:
        cfg["model_set"]["dir"] = str(folder)
    except Exception:  # noqa: BLE001 - a read-only config: the relative path still works from the repository root
        pass
    return manifest


def notice(manifest: dict | None) -> str | None:
    """The set's one-line notice (what its models can and cannot do), None for the published set."""
    if manifest is None:
        return None
    return str(manifest.get("notice") or f"using the '{manifest.get('name')}' model set")


def write_manifest(folder: Path, name: str, notice_line: str, info: dict) -> Path:
    """manifest.json for every file in `folder` (sizes and SHA-256), with `info` (how the set was made)."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}
    manifest = {"name": name, "notice": notice_line, "files": files, **info}
    return atomic_text(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
