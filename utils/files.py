"""Writing files so that nothing half-written is ever seen under a final name.

    atomic_write(path, lambda tmp: np.save(tmp, a))   # any writer that takes a path
    atomic_text(path, "hello\n")
    with atomic_dir(final_folder) as tmp: ...           # a whole folder, renamed into place when complete

The temporary file lives in the destination folder (a rename there is atomic), starts
with '.' (hidden from the folder walkers) and keeps the destination's extension (some
writers choose the format from it).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from utils.errors import LipVoicerError


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], object], fsync: bool = False) -> Path:
    """Call writer(tmp_path), then rename tmp_path over `path`; on any failure the temporary goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-1:])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def publish_dir(tmp_dir: Path, final: Path) -> None:
    """Move a finished temporary folder to its final name (replacing an older result)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp_dir, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A hidden temporary folder beside `final`, renamed to `final` when the block succeeds, removed otherwise."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        publish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_writable(directory: str | os.PathLike) -> None:
    """Create `directory` if needed and make sure a file can be written there (else a one-line error)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as e:
        raise LipVoicerError(f"{directory}: output directory cannot be written ({e.strerror or e})") from None
