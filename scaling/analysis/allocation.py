"""Compute-optimal allocation: N*(C) ~ C^a and epochs*(C) ~ C^b.

Two estimators, as in Chinchilla:

IsoFLOP profiles (Approach 2). At each compute level, every model size that
has runs around that compute contributes its loss there (its own run when one
lies within 0.01 decades, else linear interpolation of loss against log C
between its runs on either side; never extrapolation). A parabola of loss in
log N is fitted per level; its vertex is N*. Levels with fewer than 3 sizes,
a non-convex parabola or a vertex outside the sampled sizes are discarded
(fitting-methods.md section 9.7). Levels: the distinct budgets when runs were
laid out on an IsoFLOP grid, else ``n_levels`` log-spaced levels across the
observed range. The optimal epochs at a level are read off the same profile:
log epochs is regressed on log N across the level's points and evaluated at
N* (with C = k N D and k constant, log E is linear in log N along a level).
Finally log N* and log E* are regressed on log C.

Parametric (Approach 3). For L = E + A/N^alpha + B/D^beta under C = k N D,
N* = G (C/k)^(beta/(alpha+beta)), D* = (C/k)^(alpha/(alpha+beta)) / G with
G = (alpha A / (beta B))^(1/(alpha+beta)). LM work assumes k = 6; for vision
models the cost per parameter per example varies with resolution and
architecture, so k is fitted per group as the geometric mean of
C / (N D) over its runs (and its spread is reported: the closed form is exact
only if k is constant within the family). Epochs* = D* / train set size.
"""

from __future__ import annotations

import dataclasses

import numpy as np

_TOL = 0.01 * np.log(10)  # 0.01 decades, in natural log


@dataclasses.dataclass
class Profiles:
    """IsoFLOP vertices: one row per usable compute level."""

    log_c: np.ndarray
    log_n: np.ndarray
    log_e: np.ndarray  # nan where epochs unknown
    points: list  # per level: (log_n array, loss array) for plots
    discarded: dict = dataclasses.field(default_factory=dict)  # reason -> number of levels


def isoflop_levels(log_c: np.ndarray, log_n: np.ndarray, n_levels: int = 8) -> np.ndarray:
    """Compute levels (natural log) at which profiles are taken."""
    keys = np.round(log_c / np.log(10), 2)
    exact = [k for k in np.unique(keys) if len(np.unique(log_n[keys == k])) >= 3]
    if len(exact) >= 3:
        return np.array([log_c[keys == k].mean() for k in exact])
    lo, hi = log_c.min(), log_c.max()
    return np.linspace(lo, hi, n_levels + 2)[1:-1]


def _model_curves(log_c, log_n, loss, log_e, present):
    curves = []
    for n in np.unique(log_n[present]):
        m = present & (log_n == n)
        o = np.argsort(log_c[m])
        curves.append((n, log_c[m][o], loss[m][o], log_e[m][o]))
    return curves


def _at_level(curve, t):
    n, c, l, e = curve
    d = np.abs(c - t)
    if d.min() <= _TOL:
        near = d <= _TOL
        return l[near].mean(), e[near].mean()
    if c[0] < t < c[-1]:
        return np.interp(t, c, l), np.interp(t, c, e)
    return None


def isoflop_profiles(
    log_c: np.ndarray,
    log_n: np.ndarray,
    loss: np.ndarray,
    log_e: np.ndarray | None,
    levels: np.ndarray,
    present: np.ndarray | None = None,
) -> Profiles:
    """Parabola vertices N* (and E*) at each level, from the runs marked ``present``."""
    present = np.ones(len(loss), bool) if present is None else np.asarray(present, bool)
    log_e = np.full(len(loss), np.nan) if log_e is None else log_e
    curves = _model_curves(log_c, log_n, loss, log_e, present)
    lo = np.array([cv[1][0] for cv in curves]) - _TOL
    hi = np.array([cv[1][-1] for cv in curves]) + _TOL
    out_c, out_n, out_e, pts = [], [], [], []
    dropped = {"fewer than 3 sizes": 0, "no minimum (not convex)": 0, "minimum at the edge of the sizes": 0}
    for t in levels:
        near = np.flatnonzero((lo <= t) & (t <= hi))  # only these models can contribute
        rows = [(curves[i][0], *v) for i in near if (v := _at_level(curves[i], t)) is not None]
        if len(rows) < 3:
            dropped["fewer than 3 sizes"] += 1
            continue
        z, lz, ez = (np.array(col) for col in zip(*rows))
        zc = z - z.mean()
        c2, c1, _ = np.polyfit(zc, lz, 2)
        if c2 <= 0:
            dropped["no minimum (not convex)"] += 1
            continue
        vertex = -c1 / (2 * c2)
        if not (zc.min() < vertex < zc.max()):
            dropped["minimum at the edge of the sizes"] += 1
            continue  # minimum on the edge of the sampled sizes
        zstar = vertex + z.mean()
        if np.all(np.isfinite(ez)):
            slope, icpt = np.polyfit(z, ez, 1)
            estar = icpt + slope * zstar
        else:
            estar = np.nan
        out_c.append(t)
        out_n.append(zstar)
        out_e.append(estar)
        pts.append((z, lz))
    return Profiles(np.array(out_c), np.array(out_n), np.array(out_e), pts, dropped)


@dataclasses.dataclass
class PowerFit:
    """log y = intercept + exponent * log C (a log-log line)."""

    exponent: float
    intercept: float

    def __call__(self, c):
        return np.exp(self.intercept + self.exponent * np.log(c))


def loglog_line(log_c: np.ndarray, log_y: np.ndarray) -> PowerFit | None:
    ok = np.isfinite(log_y)
    if ok.sum() < 2 or np.ptp(log_c[ok]) == 0:
        return None
    slope, icpt = np.polyfit(log_c[ok], log_y[ok], 1)
    return PowerFit(float(slope), float(icpt))


def isoflop_bootstrap(log_c, log_n, loss, log_e, levels, counts) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap (B, 2) [intercept, exponent] of N* and of E* from run-resample counts."""
    res_n = np.full((len(counts), 2), np.nan)
    res_e = np.full((len(counts), 2), np.nan)
    for b, w in enumerate(counts):
        p = isoflop_profiles(log_c, log_n, loss, log_e, levels, present=w > 0)
        for res, y in ((res_n, p.log_n), (res_e, p.log_e)):
            if len(p.log_c) >= 3 and (line := loglog_line(p.log_c, y)) is not None:
                res[b] = line.intercept, line.exponent
    return res_n, res_e


def cost_constant(compute, params, examples) -> tuple[float, float]:
    """k in C = k N D (geometric mean over runs) and the std of log k (its spread)."""
    log_k = np.log(compute) - np.log(params) - np.log(examples)
    return float(np.exp(log_k.mean())), float(log_k.std())


def parametric_optimum(p: dict, compute, k: float) -> tuple[np.ndarray, np.ndarray]:
    """N*(C), D*(C) minimising E + A/N^alpha + B/D^beta subject to k N D = C.

    ``p`` holds arrays (B,) or floats; compute broadcasts against them.
    """
    A, B, al, be = (np.asarray(p[n], float)[..., None] for n in ("A", "B", "alpha", "beta"))
    s = al + be
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        G = (al * A / (be * B)) ** (1 / s)
        base = np.asarray(compute, float) / k
        n_star = G * base ** (be / s)
        d_star = base ** (al / s) / G
    return n_star, d_star
