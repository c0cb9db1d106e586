"""Prediction intervals that include the law's own extrapolation error.

A bootstrap band only says how much the fitted curve moves with the noise of
the points it was fitted to. Beyond the data the larger error is usually the
law's shape (curves flatten sooner or later than the form allows), and points
along one learning curve are correlated, so the band covered only about a
quarter of held-out points on public vision curves (issue 22).

The calibrated interval adds, in quadrature on the log scale, a term measured
on the data themselves: refit on the early part, predict the later part
(leave-last-points-out), and take the RMS log error ``backtest_err`` made at
an extrapolation of ``backtest_ratio`` (last fitted x over last x of the
early part). The error is assumed to grow linearly with the extrapolation
distance in log x, so at a target ratio rho (target x over the largest
fitted x) it is ``backtest_err * log(rho) / log(backtest_ratio)`` (no less
than the back-test's own error). Half-width on log L: sqrt(h_boot^2 + (z s)^2).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm


def misspecification_sd(backtest_err: float | None, backtest_ratio: float | None, target_ratio) -> np.ndarray:
    """Log-scale sd of the law's own extrapolation error at ``target_ratio`` (0 without a back-test)."""
    rho = np.asarray(target_ratio, float)
    if not backtest_err or not backtest_ratio or not np.isfinite(backtest_err) or backtest_ratio <= 1:
        return np.zeros_like(rho)
    grow = np.maximum(np.log(np.maximum(rho, 1.0)) / np.log(backtest_ratio), 1.0)
    return backtest_err * grow


def calibrated(log_pred, boot_log_pred, backtest_err, backtest_ratio, target_ratio, level: float = 0.95):
    """(lo, hi) of L: the bootstrap percentile band widened by the misspecification term.

    ``log_pred`` (m,), ``boot_log_pred`` (B, m) bootstrap log predictions (may be empty).
    """
    log_pred = np.atleast_1d(np.asarray(log_pred, float))
    b = np.asarray(boot_log_pred, float).reshape(-1, len(log_pred)) if np.size(boot_log_pred) else None
    tail = 100 * (1 - level) / 2
    if b is not None and np.isfinite(b).any():
        lo_b, hi_b = np.nanpercentile(b, [tail, 100 - tail], axis=0)
    else:
        lo_b = hi_b = log_pred
    z = float(norm.ppf(0.5 + level / 2))
    s = z * misspecification_sd(backtest_err, backtest_ratio, target_ratio)
    lo = log_pred - np.sqrt((log_pred - lo_b) ** 2 + s**2)
    hi = log_pred + np.sqrt((hi_b - log_pred) ** 2 + s**2)
    return np.exp(lo), np.exp(hi)
