"""Progress bars over frames (tqdm on stderr), closed before any error line is printed."""
from __future__ import annotations

from tqdm import tqdm


def frame_bar(total: int | None, desc: str, progress=False) -> tqdm:
    """A tqdm bar over frames on stderr (rate in frame/s), used as a context manager so that it is
    closed (and its line ended) before any error is printed. progress: False (no bar), True, or a
    dict of tqdm options (e.g. {"leave": False, "delay": 2.0} for bars under a batch job's bar)."""
    options = dict(progress) if isinstance(progress, dict) else {}
    return tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True, disable=not progress, **options)
