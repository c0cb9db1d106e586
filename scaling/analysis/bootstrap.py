"""Non-parametric bootstrap over runs, and percentile intervals.

Resampling whole runs (not points derived from them) is what the intervals
must reflect (fitting-methods.md section 9.4). Resamples are drawn as
multinomial count vectors, so a refit is a weighted fit and a batch of
resamples is one (B, n) array that the vectorised solvers consume at once.
"""

from __future__ import annotations

import numpy as np


def resample_counts(n: int, n_boot: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """(n_boot, n) counts of each run in each resample (rows sum to n)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the bootstrap samples, nan (unusable resamples) left out.

    Infinite draws (an optimum at infinity, e.g. D* of a law without a model-size
    term) are outcomes and stay in: the percentiles are then taken without
    interpolation, so an interval reaching them ends at +-inf ((nan, nan) if no draws).
    """
    s = np.asarray(samples, float)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return (float("nan"), float("nan"))
    tail = 100 * (1 - level) / 2
    method = "linear" if np.isfinite(s).all() else "inverted_cdf"
    lo, hi = np.percentile(s, [tail, 100 - tail], method=method)
    return (float(lo), float(hi))


def percentile_band(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of (B, m) bootstrap curves."""
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(samples, [tail, 100 - tail], axis=0)
    return lo, hi
