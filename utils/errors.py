"""One exception type for problems a user can fix (bad input, missing files).

Scripts catch it at the top level, print one line `error: <message>` and exit
with a non-zero code; everything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import functools
import sys


class LipVoicerError(Exception):
    """A user-facing error; its message is one line naming the file and the reason."""


def close_progress_bars() -> None:
    """Close every open tqdm bar, so that what is printed next starts on a fresh line of its own."""
    tqdm_mod = sys.modules.get("tqdm")  # only when something has imported tqdm (no import cost otherwise)
    bar_class = getattr(tqdm_mod, "tqdm", None)
    for bar in list(getattr(bar_class, "_instances", None) or []):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a bar that cannot be closed must not hide the error
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass


def exit_on_user_error(fn):
    """Decorator for script entry points: LipVoicerError -> one line on stderr (one per line of a
    message listing several problems), on a fresh line after any progress bar; exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LipVoicerError as e:
            close_progress_bars()
            for line in str(e).splitlines() or [""]:  # several problems: one `error:` line each
                print(f"error: {line}", file=sys.stderr, flush=True)
            sys.exit(1)

    return wrapper
