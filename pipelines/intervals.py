"""95 % intervals of per-clip means for the summaries of evaluate.py: percentile bootstrap over clips.

    low, high = mean_interval(values)                        # NaNs left out; (nan, nan) below 2 values
    low, high = ratio_interval(errors, words)                # corpus WER: sum(errors) / sum(words), resampled

Resamples: `n` (evaluate.bootstrap, 2000 by default) draws of as many clips with replacement, numpy's
generator with a fixed seed (0), so a summary is reproducible; the interval is the 2.5th and 97.5th
percentile of the resampled statistic (the same method as pipelines/compare.py).
"""
from __future__ import annotations

import math

import numpy as np

SEED = 0


def _draws(n_items: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_items, size=(int(n), n_items))


def mean_interval(values, n: int = 2000, seed: int = SEED) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of the finite values (nan, nan with fewer than 2)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) < 2 or n < 1:
        return math.nan, math.nan
    means = v[_draws(len(v), n, seed)].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def ratio_interval(numerators, denominators, n: int = 2000, seed: int = SEED) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of sum(numerators) / sum(denominators) over resampled items."""
    a, b = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    if len(a) < 2 or n < 1 or b.sum() <= 0:
        return math.nan, math.nan
    idx = _draws(len(a), n, seed)
    den = b[idx].sum(axis=1)
    ratios = a[idx].sum(axis=1)[den > 0] / den[den > 0]
    if not len(ratios):
        return math.nan, math.nan
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)
