"""Writing files so that nothing half-written is ever seen under a final name.

    atomic_write(path, lambda tmp: np.save(tmp, a))   # any writer that takes a path
    atomic_text(path, "hello\n")
    with atomic_dir(final_folder) as tmp: ...           # a whole folder, renamed into place when complete

The temporary lives in the destination folder (a rename there is atomic), starts with '.'
(hidden from the folder walkers) and keeps the destination's extension (some writers choose
the format from it). Files and folders get 0666 / 0777 less the umask, as `open` / `mkdir`
give, not tempfile's private 0600 / 0700. A write failure (disk full, quota, read-only file
system, no permission), also one a writer library hides behind its own exception (torch.save's
`unexpected pos ...`), is one LipVoicerError `<output path>: no space left on device`; the
temporary goes and what was under the final name stays as it was.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from utils.errors import LipVoicerError

# OS errors that mean "this output cannot be written"; FULL_ERRNOS: those reading an input never causes.
WRITE_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG, errno.EROFS,
                                     errno.EACCES, errno.EPERM, errno.EIO, errno.ENOTDIR, errno.EISDIR,
                                     errno.ENAMETOOLONG) if e is not None)
FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG, errno.EROFS)
                        if e is not None)
# Messages of writer libraries that swallow the OS error (torch.save to a path, libsndfile).
_WRITE_FAILURE = re.compile(r"unexpected pos|failed writing|PytorchStreamWriter|no space left|quota exceeded|"
                            r"system error|error writing|write error|short write", re.IGNORECASE)
FULL_BELOW_BYTES = 1 << 20  # a file system with less free space than this counts as full


# ----------------------------------------------------------------------------- modes
def current_umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    return 0o666 & ~current_umask()


def default_dir_mode() -> int:
    return 0o777 & ~current_umask()


# ----------------------------------------------------------------------------- output errors
def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def write_errno(exc: BaseException, codes=WRITE_ERRNOS) -> int | None:
    """The errno of an OS error in exc or its causes that means 'the output cannot be written' (one of
    `codes`; FULL_ERRNOS for those that reading an input can never cause), else None."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in codes:
            return e.errno
    return None


def disk_full(folder: str | os.PathLike) -> bool:
    """True when the file system of `folder` has (almost) no space left for this user."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return free * st.f_frsize < FULL_BELOW_BYTES


class OutputError(LipVoicerError):
    """An output could not be written: `<path>: <reason>`."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def _reason(code: int) -> str:
    return os.strerror(code).lower()


def output_error(exc: BaseException, path: str | os.PathLike) -> OutputError | None:
    """The one-line error for an exception raised while writing `path`, when it is a write failure
    (an OS error such as ENOSPC, possibly wrapped by the writer library, or any failure on a full
    disk; an OutputError of a file written into the folder `path` is renamed to `path`); None when
    it is something else (a LipVoicerError about the input, a bug)."""
    path = Path(path)
    if isinstance(exc, OutputError):  # a file inside the folder `path` being written: name the folder
        return OutputError(path, exc.reason)
    if isinstance(exc, LipVoicerError) or not isinstance(exc, Exception):
        return None
    code = write_errno(exc)
    if code is not None:
        return OutputError(path, _reason(code))
    looks_like_write = any(_WRITE_FAILURE.search(str(e)) or "Libsndfile" in type(e).__name__ for e in _chain(exc))
    folder = path.parent if path.parent.exists() else Path(".")
    if disk_full(folder):
        return OutputError(path, _reason(errno.ENOSPC))
    if looks_like_write:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        return OutputError(path, f"write failed ({type(exc).__name__}: {first})")
    return None


@contextmanager
def reporting_output_errors(path: str | os.PathLike) -> Iterator[None]:
    """Inside the block, a write failure (see output_error) becomes one LipVoicerError naming `path`."""
    try:
        yield
    except Exception as e:
        err = output_error(e, path)
        if err is None:
            raise
        raise err from e


# ----------------------------------------------------------------------------- writers
def atomic_write(path: str | os.PathLike, writer: Callable[[Path], object], fsync: bool = False) -> Path:
    """Call writer(tmp_path), then rename tmp_path over `path`; on any failure the temporary goes,
    and a write failure (disk full, ...) is raised as a LipVoicerError naming `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(path.suffixes[-1:])
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
        writer(Path(tmp))
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException as e:
        err = output_error(e, path)  # before the temporary goes: it may be what fills the disk
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if err is not None:
            raise err from e
        raise
    return path


def atomic_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def publish_dir(tmp_dir: Path, final: Path) -> None:
    """Move a finished temporary folder to its final name (replacing an older result)."""
    tmp_dir, final = Path(tmp_dir), Path(final)
    with reporting_output_errors(final):
        os.chmod(tmp_dir, default_dir_mode())  # mkdtemp makes it 0700
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp_dir, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A hidden temporary folder beside `final`, renamed to `final` when the block succeeds, removed otherwise
    (a write failure inside the block is raised as a LipVoicerError naming `final`)."""
    final = Path(final)
    with reporting_output_errors(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        with reporting_output_errors(final):
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
