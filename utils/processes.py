"""Worker processes: how many (`auto` = min(4, usable cores)), and that none outlives its parent.

    ProcessPoolExecutor(resolve_workers(cfg.prep.num_workers), initializer=die_with_parent,
                        initargs=(os.getpid(),))

A pool's workers are not told when their parent is killed (SIGKILL, a crash): they keep running
with parent PID 1. die_with_parent asks Linux to send the worker SIGTERM when its parent dies
(prctl PR_SET_PDEATHSIG); elsewhere a daemon thread checks the parent every second.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

from utils.errors import LipVoicerError

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container's or taskset's limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_workers(value, setting: str = "num_workers", most: int = 4) -> int:
    """`auto` (or null) -> min(most, usable cores); an integer >= 1 as is; else a one-line error."""
    if value is None or str(value).strip().lower() == "auto":
        return min(most, usable_cores())
    n = int(value) if not isinstance(value, bool) and str(value).strip().isdigit() else 0
    if n < 1:
        raise LipVoicerError(f"{setting}={value}: must be auto (= min({most}, usable cores)) or an integer >= 1")
    return n


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)  # the parent is gone: nobody collects this worker's results


def die_with_parent(parent_pid: int | None = None) -> None:
    """Pool initializer (initargs=(os.getpid(),) in the parent): end this worker when its parent dies."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
        except (OSError, AttributeError):
            pass
    parent = os.getppid() if parent_pid is None else parent_pid
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the request above took effect
    elif not armed:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
