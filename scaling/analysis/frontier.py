"""Pareto frontier of loss against compute: the runs no cheaper run beats.

The compute-optimal envelope (Kaplan et al. 2020; ConvNets-match, Smith et al.
2023) is the set of runs whose loss is lower than that of every run with less
(or equal) compute. Laws of loss against compute are fitted to it.
"""

from __future__ import annotations

import numpy as np


def frontier_mask(x: np.ndarray, loss: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of frontier runs; vectorised over a batch of subsets.

    ``present`` (B, n) marks the runs in each subset (bootstrap resample);
    the result has its shape. Ties in compute keep only the lowest loss.
    """
    x = np.asarray(x, float)
    loss = np.asarray(loss, float)
    batched = present is not None and np.ndim(present) == 2
    pres = np.ones((1, len(x)), bool) if present is None else np.atleast_2d(present).astype(bool)
    order = np.lexsort((loss, x))  # by compute, then loss (ties: best first)
    l_sorted = np.where(pres[:, order], loss[order], np.inf)
    best_before = np.minimum.accumulate(l_sorted, axis=1)
    best_before = np.concatenate([np.full((len(pres), 1), np.inf), best_before[:, :-1]], 1)
    on = np.isfinite(l_sorted) & (l_sorted < best_before)
    out = np.empty_like(on)
    out[:, order] = on
    return out if batched else out[0]
