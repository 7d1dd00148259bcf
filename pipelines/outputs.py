"""Where batch generation writes: the run folder of a setting and the output files of one clip.

Outputs of one clip live under
`<save_dir>/generated_mels/<DATASET>/w1=<w_video>_w2=<w_asr>_asr_start=<asr_start>/<video_id>`
as `.wav`, `.wav.spec`, `.png`, `_gt.png`, `.txt` (and optionally `.mp4`). Each file is
written under a temporary name and renamed; a clip is finished when all exist.

While a process generates a clip it holds the clip's lock file `.<name>.lock` beside the
outputs (ClipClaims): created with O_CREAT | O_EXCL, so of several processes working on one
save_dir exactly one gets it; it records the owner's pid, host and a random token, and its
modification time is refreshed every few seconds while it is held. A lock is stale (and is
taken over) when its pid is dead on this host, or when it has not been refreshed for
`stale_seconds` (a process killed on another host, or hung).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)


def _fmt(v) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else str(v)


def run_dir(save_dir, dataset_name: str, w_video, w_asr, asr_start) -> Path:
    return (Path(save_dir) / "generated_mels" / str(dataset_name).upper()
            / f"w1={_fmt(w_video)}_w2={_fmt(w_asr)}_asr_start={int(asr_start)}")


class ClipOutputs:
    """The output files of one clip."""

    SUFFIXES = (".wav", ".wav.spec", ".png", "_gt.png", ".txt")

    def __init__(self, run_directory: Path, video_id: str, with_video: bool = False):
        self.base = Path(run_directory) / video_id
        self.with_video = with_video

    def path(self, suffix: str) -> Path:
        return self.base.with_name(self.base.name + suffix)

    def expected(self) -> list[Path]:
        return [self.path(s) for s in self.SUFFIXES + ((".mp4",) if self.with_video else ())]

    def is_done(self) -> bool:
        return all(p.is_file() for p in self.expected())

    def lock_path(self) -> Path:
        return self.base.with_name(f".{self.base.name}.lock")


# ----------------------------------------------------------------------------- lock files
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists but belongs to another user
        return True
    return True


def _read_lock(path: Path) -> dict | None:
    """The owner recorded in a lock file (None when it is empty or unreadable, e.g. still being written)."""
    try:
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


class ClipClaims:
    """The lock files this process holds: claim(out) -> True when this process now owns the clip.

    A background thread refreshes the held locks' modification times every `refresh_seconds`
    (default: stale_seconds / 4, at most 30 s); use as a context manager, or call close().
    """

    def __init__(self, stale_seconds: float = 600.0, refresh_seconds: float | None = None):
        self.stale_seconds = float(stale_seconds)
        self.refresh_seconds = float(refresh_seconds if refresh_seconds is not None
                                     else min(30.0, max(self.stale_seconds / 4, 0.05)))
        self.host = socket.gethostname()
        self.held: dict[Path, str] = {}           # lock path -> our token
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- who owns a lock
    def judge(self, path: Path) -> tuple[bool, str | None]:
        """(stale, token) of a lock: stale when its pid is dead on this host, or it was not refreshed
        for stale_seconds (the owner recorded is read before the time, so a lock created in between
        is never judged by another's age)."""
        info = _read_lock(path) or {}
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True, info.get("token")
        if age > self.stale_seconds:
            return True, info.get("token")
        if info.get("host") == self.host and isinstance(info.get("pid"), int):
            return not _pid_alive(info["pid"]), info.get("token")
        return False, info.get("token")

    def owner(self, out) -> str:
        """`pid <pid> on <host>` of a clip's lock (for messages)."""
        info = _read_lock(out.lock_path()) or {}
        return f"pid {info.get('pid', '?')} on {info.get('host', '?')}"

    # --- claiming and releasing
    def _create(self, path: Path) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        token = uuid.uuid4().hex
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": self.host, "token": token, "created": time.time()}, f)
        with self._mutex:
            self.held[path] = token
        self._start_refreshing()
        return True

    def _break(self, path: Path, seen: str | None) -> None:
        """Remove the stale lock `seen` without removing one another process has just created in its
        place: move it aside (atomic), and put it back when what was moved is not the lock judged stale."""
        aside = path.with_name(f"{path.name}.stale.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        moved = (_read_lock(aside) or {}).get("token")
        if moved != seen:
            try:
                os.link(aside, path)       # fails when yet another lock exists: that one wins
            except OSError:
                pass
        else:
            log.warning("%s: stale lock (%s) taken over", path, json.dumps(_read_lock(aside)))
        aside.unlink(missing_ok=True)

    def claim(self, out) -> bool:
        """Take the clip's lock: False when another live process holds it."""
        path = out.lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create(path):
                return True
            stale, token = self.judge(path)
            if not stale:
                return False
            self._break(path, token)
        return False

    def release(self, out) -> None:
        """Remove the clip's lock if it is still ours."""
        path = out.lock_path()
        with self._mutex:
            token = self.held.pop(path, None)
        if token is not None and (_read_lock(path) or {}).get("token") == token:
            path.unlink(missing_ok=True)

    # --- keeping held locks fresh
    def _start_refreshing(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._refresh, name="clip-lock-refresh", daemon=True)
            self._thread.start()

    def _refresh(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            with self._mutex:
                paths = list(self.held)
            for p in paths:
                try:
                    os.utime(p)
                except OSError:
                    pass

    def close(self) -> None:
        """Release every held lock and stop refreshing."""
        with self._mutex:
            held = dict(self.held)
            self.held.clear()
        for path, token in held.items():
            if (_read_lock(path) or {}).get("token") == token:
                path.unlink(missing_ok=True)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "ClipClaims":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
