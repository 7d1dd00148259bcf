"""One exception type for problems a user can fix (bad input, missing files).

Scripts catch it at the top level, print one line `error: <message>` and exit
with a non-zero code; everything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import functools
import sys


class LipVoicerError(Exception):
    """A user-facing error; its message is one line naming the file and the reason."""


def exit_on_user_error(fn):
    """Decorator for script entry points: LipVoicerError -> one line on stderr, exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LipVoicerError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    return wrapper
