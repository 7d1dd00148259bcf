"""The published assets (checkpoints, tokenizers, LMs, lip-reader files) and where they live.

The table is `cfg.assets` (configs/assets/published.yaml); each entry names a file, or
a folder for unpacked archives, relative to `paths.checkpoints_dir` (`root:
checkpoints`) or to the working directory (`root: workdir`, the MelGen checkpoints
that `generate.ckpt_path` points to). download_checkpoints.py fetches them; scripts
use `asset_path` to find one and `missing_asset_error` / `require_asset` to stop with
one line naming the file and the command that fetches it.

"Complete" is judged without loading the file into a model (see `check_file`): a
downloaded file never sits under its final name before it passes these checks.
"""
from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from utils.errors import LipVoicerError

ROOTS = ("checkpoints", "workdir")
SOURCES = ("gdrive", "url")
CHECKS = ("torch", "spm", "arpa", "npy", "lines", "files")
MISSING = "not found"
DEFAULT_CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class Asset:
    name: str
    description: str
    source: str
    path: str
    root: str = "checkpoints"
    check: str = "torch"
    id: str | None = None
    url: str | None = None
    unpack: bool = False
    members: tuple[str, ...] = ()
    shape: tuple[int, ...] | None = None
    lines: int | None = None
    default: bool = True

    @property
    def remote(self) -> str:
        """Where the asset comes from, as a link a person can open."""
        if self.source == "gdrive":
            return f"https://drive.google.com/uc?id={self.id}"
        return str(self.url)


def _as_list(v) -> list:
    if v is None:
        return []
    if isinstance(v, Sequence) and not isinstance(v, str):
        return list(v)
    return [v]


def _parse_entry(name: str, entry) -> Asset:
    where = f"configs/assets (cfg.assets.{name})"
    try:
        get = entry.get
    except AttributeError:
        raise LipVoicerError(f"{where}: an asset entry must be a mapping") from None
    source, root, check = get("source", "gdrive"), get("root", "checkpoints"), get("check", "torch")
    if source not in SOURCES:
        raise LipVoicerError(f"{where}: source must be one of {', '.join(SOURCES)}, got {source!r}")
    if root not in ROOTS:
        raise LipVoicerError(f"{where}: root must be one of {', '.join(ROOTS)}, got {root!r}")
    if check not in CHECKS:
        raise LipVoicerError(f"{where}: check must be one of {', '.join(CHECKS)}, got {check!r}")
    if not get("path"):
        raise LipVoicerError(f"{where}: no path")
    if source == "gdrive" and not get("id"):
        raise LipVoicerError(f"{where}: a Google Drive asset needs an id")
    if source == "url" and not get("url"):
        raise LipVoicerError(f"{where}: a url asset needs a url")
    if check == "npy" and get("shape") is None:
        raise LipVoicerError(f"{where}: check npy needs a shape")
    if check == "lines" and get("lines") is None:
        raise LipVoicerError(f"{where}: check lines needs a line count")
    unpack = bool(get("unpack", False))
    if unpack and check != "files":
        raise LipVoicerError(f"{where}: an unpacked archive must use check: files")
    shape = get("shape")
    return Asset(
        name=name,
        description=str(get("description", name)),
        source=source,
        path=str(get("path")),
        root=root,
        check=check,
        id=None if get("id") is None else str(get("id")),
        url=None if get("url") is None else str(get("url")),
        unpack=unpack,
        members=tuple(str(m) for m in _as_list(get("members"))),
        shape=None if shape is None else tuple(int(s) for s in _as_list(shape)),
        lines=None if get("lines") is None else int(get("lines")),
        default=bool(get("default", True)),
    )


def asset_table(cfg) -> dict[str, Asset]:
    """All assets of cfg.assets, by name, in table order."""
    table = cfg.get("assets") if hasattr(cfg, "get") else None
    if not table:
        raise LipVoicerError("configs/assets: the asset table (cfg.assets) is empty or missing")
    return {str(name): _parse_entry(str(name), entry) for name, entry in table.items()}


def get_asset(cfg, name: str) -> Asset:
    table = asset_table(cfg)
    if name not in table:
        raise LipVoicerError(f"unknown asset {name!r}; known assets: {', '.join(table)}")
    return table[name]


def checkpoints_dir(cfg) -> Path:
    paths = cfg.get("paths") or {}
    return Path(str(paths.get("checkpoints_dir") or DEFAULT_CHECKPOINTS_DIR))


def asset_path(cfg, name: str | Asset) -> Path:
    """Where an asset lives (a file, or the folder of an unpacked archive)."""
    asset = name if isinstance(name, Asset) else get_asset(cfg, name)
    base = checkpoints_dir(cfg) if asset.root == "checkpoints" else Path(".")
    return base / asset.path


def fetch_command(cfg, name: str | Asset) -> str:
    """The command that fetches one asset to where this config looks for it."""
    asset = name if isinstance(name, Asset) else get_asset(cfg, name)
    cmd = f"python download_checkpoints.py --only {asset.name}"
    ckdir = checkpoints_dir(cfg)
    if asset.root == "checkpoints" and ckdir != Path(DEFAULT_CHECKPOINTS_DIR):
        cmd += f" --dest {ckdir}"
    return cmd


def find_asset_for_path(cfg, path) -> Asset | None:
    """The asset whose file is `path` (or whose unpacked folder contains `path`), if any."""
    target = Path(path).resolve()
    for asset in asset_table(cfg).values():
        p = asset_path(cfg, asset).resolve()
        if target == p or (asset.unpack and p in target.parents):
            return asset
    return None


# ------------------------------------------------------------------ completeness checks
def _head(path: Path, n: int = 512) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _tail(path: Path, n: int = 256) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - n))
        return f.read()


def _is_web_page(head: bytes) -> bool:
    h = head.lstrip().lower()
    return h.startswith(b"<!doctype html") or h.startswith(b"<html")


def _check_torch(path: Path) -> str | None:
    head = _head(path, 8)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                if not z.namelist():
                    return "empty PyTorch archive"
        except (zipfile.BadZipFile, OSError):
            return "truncated or damaged (the checkpoint's archive index cannot be read)"
        return None
    if head[:1] == b"\x80":  # legacy (pre-1.6) torch.save pickle: no cheap completeness test
        return None
    return "not a PyTorch checkpoint"


def _check_spm(path: Path) -> str | None:
    # ModelProto: field 1 (repeated SentencePiece `pieces`), wire type 2 -> first byte 0x0a.
    return None if _head(path, 1) == b"\x0a" else "not a SentencePiece model"


def _check_arpa(path: Path) -> str | None:
    head = _head(path, 4096).decode("utf-8", "replace")
    first = next((ln.strip() for ln in head.splitlines() if ln.strip()), "")
    if first != "\\data\\":
        return "not an ARPA language model (no \\data\\ header)"
    if not _tail(path).rstrip().endswith(b"\\end\\"):
        return "truncated (no \\end\\ line at the end)"
    return None


def _check_npy(path: Path, shape) -> str | None:
    import numpy as np

    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any failure means the file is not what we need
        return f"not a readable NumPy array ({type(e).__name__})"
    if shape is not None and tuple(arr.shape) != tuple(shape):
        return f"array of shape {tuple(arr.shape)}, expected {tuple(shape)}"
    return None


def _check_lines(path: Path, lines: int | None) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return "not a UTF-8 text file"
    n = sum(1 for ln in text.splitlines() if ln.strip())
    if lines is not None and n != lines:
        return f"{n} lines, expected {lines}"
    return None


def _check_member(path: Path) -> str | None:
    if not path.is_file():
        return f"{path.name} {MISSING}"
    if path.stat().st_size == 0:
        return f"{path.name} is empty"
    if path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return f"{path.name} is not valid JSON"
    if path.suffix in (".pth", ".pt", ".ckpt"):
        reason = _check_torch(path)
        if reason:
            return f"{path.name}: {reason}"
    return None


def check_folder(path: Path, members: Sequence[str]) -> str | None:
    """None when the folder holds every member (or, with no members listed, any file)."""
    if not path.is_dir():
        return MISSING if not path.exists() else "is a file, expected a folder"
    if not members:
        return None if any(p.is_file() for p in path.rglob("*")) else "empty folder"
    for m in members:
        reason = _check_member(path / m)
        if reason:
            return reason
    return None


def check_file(path, asset: Asset) -> str | None:
    """None when `path` is a complete copy of `asset` (a file asset), else the reason."""
    path = Path(path)
    if not path.exists():
        return MISSING
    if path.is_dir():
        return "is a folder, expected a file"
    if path.stat().st_size == 0:
        return "empty file"
    if _is_web_page(_head(path)):
        return "a web page, not the file (Google Drive sends one when its download quota is exceeded)"
    if asset.check == "torch":
        return _check_torch(path)
    if asset.check == "spm":
        return _check_spm(path)
    if asset.check == "arpa":
        return _check_arpa(path)
    if asset.check == "npy":
        return _check_npy(path, asset.shape)
    if asset.check == "lines":
        return _check_lines(path, asset.lines)
    return None


def check_asset(cfg, name: str | Asset, path=None) -> str | None:
    """None when the asset is present and complete at `path` (default: where cfg looks), else the reason."""
    asset = name if isinstance(name, Asset) else get_asset(cfg, name)
    path = Path(path) if path is not None else asset_path(cfg, asset)
    if asset.unpack:
        return check_folder(path, asset.members)
    return check_file(path, asset)


# ------------------------------------------------------------------ messages for scripts
def missing_asset_error(cfg, name_or_path, reason: str | None = None) -> LipVoicerError:
    """The one-line error a script raises when a published asset is missing or damaged.

    `name_or_path`: an asset name from cfg.assets, or a path (matched against the table;
    a path that is no published asset gets a generic hint).
    """
    table = asset_table(cfg)
    if str(name_or_path) in table:
        asset = table[str(name_or_path)]
        path = asset_path(cfg, asset)
    else:
        path = Path(name_or_path)
        asset = find_asset_for_path(cfg, path)
    if reason is None and asset is not None:
        reason = check_asset(cfg, asset)
    if reason is None:
        reason = MISSING if not path.exists() else "could not be used"
    what = MISSING if reason == MISSING else f"incomplete or damaged ({reason})"
    if asset is None:
        return LipVoicerError(f"{path}: {what}; it is not one of the published assets "
                              f"(python download_checkpoints.py --list shows them)")
    verb = "fetch it with" if what == MISSING else "fetch it again with"
    return LipVoicerError(f"{path}: {what}; {verb}: {fetch_command(cfg, asset)}")


def require_asset(cfg, name: str) -> Path:
    """The asset's path when it is present and complete; otherwise raise missing_asset_error."""
    asset = get_asset(cfg, name)
    reason = check_asset(cfg, asset)
    if reason is not None:
        raise missing_asset_error(cfg, name, reason)
    return asset_path(cfg, asset)
