"""Native libraries' start-up chatter kept off the terminal.

MediaPipe 0.10 (TensorFlow Lite, absl) writes 3-4 lines to stderr from C++ when a graph starts
(`INFO: Created TensorFlow Lite XNNPACK delegate ...`, `W0000 ... inference_feedback_manager.cc`),
whatever GLOG_minloglevel / TF_CPP_MIN_LOG_LEVEL say; they turn a one-line error into five lines.
`native_stderr_silenced()` sends file descriptor 2 to a temporary file for a block; what was
written is dropped, or written to stderr after all when the block raises (it may explain why).
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

_LOCK = threading.RLock()
QUIET_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3", "ABSL_MIN_LOG_LEVEL": "2"}


def quiet_native_logging() -> None:
    """glog / TensorFlow / absl: errors only (call before importing them; the user's own settings win)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    with _LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to protect
            yield
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            failed = True
            try:
                yield
                failed = False
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                if failed:
                    sink.seek(0)
                    os.write(2, sink.read())
