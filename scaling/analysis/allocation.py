"""Compute-optimal allocation: N*(C) ~ C^a and epochs*(C) ~ C^b.

Two estimators, as in Chinchilla:

IsoFLOP profiles (Approach 2). At each compute level, every model size that
has runs around that compute contributes its loss there (its own run when one
lies within 0.01 decades, else interpolation of log loss against log C
between its runs on either side, which is exact for a power law in C; never
extrapolation). A parabola of loss in log N is fitted per level over a local
window: the ``WINDOW`` (7) sizes nearest in log N to the size with the
level's lowest loss, as Porian et al. fit locally around the minimum (a wide
window lets the profile's asymmetry, alpha != beta, move the vertex; Czech et
al. 2026). Its vertex is N*. Levels with fewer than 3 sizes, the lowest loss
at the smallest or largest size present, a non-convex parabola or a vertex
outside the window are discarded (fitting-methods.md section 9.7). Levels:
the distinct budgets when runs were laid out on an IsoFLOP grid, else
``n_levels`` log-spaced levels across the observed range. The optimal epochs
at a level are read off the same window: log epochs is regressed on log N
and evaluated at N*. Finally log N* and log E* are regressed on log C by
weighted least squares, each level weighted by 1/var of its vertex over the
bootstrap (``isoflop_bootstrap``; Porian et al.).

The bootstrap keeps the design and resamples the noise: a wild bootstrap of
each window's parabola residuals (leverage-corrected), one random sign per
model size shared by all levels, so that a model's offset from the law moves
every level it appears in together (the same correlation the bootstrap over
models respects for the parametric law). Resampling runs instead deletes a
third of each level's points per draw, which moves vertices far more than
the noise does (issue 22: intervals 3.6-17x wider than published ones).

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
from scipy.stats import norm
from scipy.stats import t as student_t

_TOL = 0.01 * np.log(10)  # 0.01 decades, in natural log
WINDOW = 7  # sizes per level's parabola, nearest the level's lowest loss


@dataclasses.dataclass
class Profiles:
    """IsoFLOP vertices: one row per usable compute level."""

    log_c: np.ndarray
    log_n: np.ndarray
    log_e: np.ndarray  # nan where epochs unknown
    points: list  # per level: (log_n array, loss array) of its window, for plots and the bootstrap
    discarded: dict = dataclasses.field(default_factory=dict)  # reason -> number of levels
    weight: np.ndarray | None = None  # per level: 1 / bootstrap variance of log N* (set by isoflop_bootstrap)
    log_e_points: list = dataclasses.field(default_factory=list)  # per level: log epochs of the window
    window: str = f"the {WINDOW} sizes nearest in log N to the size with the level's lowest loss"


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
        return float(np.exp(np.interp(t, c, np.log(l)))), np.interp(t, c, e)
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
    out_c, out_n, out_e, pts, epts = [], [], [], [], []
    dropped = {"fewer than 3 sizes": 0, "no minimum (not convex)": 0, "minimum at the edge of the sizes": 0}
    for t in levels:
        near = np.flatnonzero((lo <= t) & (t <= hi))  # only these models can contribute
        rows = [(curves[i][0], *v) for i in near if (v := _at_level(curves[i], t)) is not None]
        if len(rows) < 3:
            dropped["fewer than 3 sizes"] += 1
            continue
        z, lz, ez = (np.array(col) for col in zip(*rows))
        o = np.argsort(z)
        z, lz, ez = z[o], lz[o], ez[o]
        best = int(np.argmin(lz))
        if best in (0, len(z) - 1):
            dropped["minimum at the edge of the sizes"] += 1
            continue
        keep = np.sort(np.argsort(np.abs(z - z[best]), kind="stable")[:WINDOW])
        z, lz, ez = z[keep], lz[keep], ez[keep]
        v = _vertex(z, lz)
        if v is None or not np.isfinite(v):
            dropped["no minimum (not convex)" if v is None else "minimum at the edge of the sizes"] += 1
            continue
        out_c.append(t)
        out_n.append(v)
        out_e.append(_epochs_at(z, ez, v))
        pts.append((z, lz))
        epts.append(ez)
    return Profiles(np.array(out_c), np.array(out_n), np.array(out_e), pts, dropped, log_e_points=epts)


def _vertex(z: np.ndarray, lz: np.ndarray) -> float | None:
    """Vertex of the parabola of loss in log N; None if not convex, nan if outside the window."""
    zc = z - z.mean()
    c2, c1, _ = np.polyfit(zc, lz, 2)
    if c2 <= 0:
        return None
    vertex = -c1 / (2 * c2)
    return vertex + z.mean() if zc.min() < vertex < zc.max() else float("nan")


def _epochs_at(z: np.ndarray, ez: np.ndarray, zstar: float) -> float:
    if not np.all(np.isfinite(ez)):
        return float("nan")
    slope, icpt = np.polyfit(z, ez, 1)
    return float(icpt + slope * zstar)


@dataclasses.dataclass
class PowerFit:
    """log y = intercept + exponent * log C (a log-log line)."""

    exponent: float
    intercept: float

    def __call__(self, c):
        return np.exp(self.intercept + self.exponent * np.log(c))


def loglog_line(log_c: np.ndarray, log_y: np.ndarray, weights: np.ndarray | None = None) -> PowerFit | None:
    """Least-squares line of log y on log C (weighted: ``weights`` are 1/variance)."""
    log_c, log_y = np.asarray(log_c, float), np.asarray(log_y, float)
    ok = np.isfinite(log_y)
    if weights is not None:
        ok &= np.isfinite(weights) & (np.asarray(weights) > 0)
    if ok.sum() < 2 or np.ptp(log_c[ok]) == 0:
        return None
    w = None if weights is None else np.sqrt(np.asarray(weights, float)[ok])
    slope, icpt = np.polyfit(log_c[ok], log_y[ok], 1, w=w)
    return PowerFit(float(slope), float(icpt))


def profile_line(prof: Profiles, log_y: np.ndarray) -> PowerFit | None:
    """The reported line through a profile's vertices (weighted when the bootstrap set weights)."""
    return loglog_line(prof.log_c, log_y, prof.weight)


def _wild_signs(z_all: np.ndarray, n_boot: int, seed) -> tuple[np.ndarray, np.ndarray]:
    """Rademacher signs (n_boot, n_sizes), one per model size shared across levels, and the sizes."""
    sizes = np.unique(np.round(z_all, 9))
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=(n_boot, len(sizes))), sizes


def isoflop_bootstrap(prof: Profiles, n_boot: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap (B, 2) [intercept, exponent] of the N* and E* lines; sets ``prof.weight``.

    Wild bootstrap of each level's window residuals (see the module docstring):
    loss* = fit + sign(model) * residual / sqrt(1 - leverage). A window of
    exactly 3 sizes has no residual degrees of freedom; its points take the
    pooled residual scale of the other levels. The lines of the draws use the
    same weights as the point estimate (1 / bootstrap variance of each level's
    log N*).
    """
    res_n = np.full((n_boot, 2), np.nan)
    res_e = np.full((n_boot, 2), np.nan)
    L = len(prof.log_c)
    if L == 0 or n_boot == 0:
        return res_n, res_e
    fits, scales = [], []
    ss, dof = 0.0, 0
    for z, lz in prof.points:
        zc = z - z.mean()
        X = np.stack([zc**2, zc, np.ones_like(zc)], 1)
        coef, *_ = np.linalg.lstsq(X, lz, rcond=None)
        fit = X @ coef
        h = np.einsum("ij,jk,ik->i", X, np.linalg.pinv(X.T @ X), X)
        r = (lz - fit) / np.sqrt(np.clip(1 - h, 1e-6, None))
        fits.append(fit)
        scales.append(r)
        ss += float(((lz - fit) ** 2).sum())
        dof += len(z) - 3
    pooled = np.sqrt(ss / dof) if dof > 0 else 0.0
    scales = [r if len(r) > 3 else np.full(len(r), pooled) for r in scales]
    z_all = np.concatenate([z for z, _ in prof.points])
    signs, sizes = _wild_signs(z_all, n_boot, seed)
    vert_n = np.full((n_boot, L), np.nan)
    vert_e = np.full((n_boot, L), np.nan)
    for j, ((z, _), fit, r, ez) in enumerate(zip(prof.points, fits, scales, prof.log_e_points)):
        col = np.searchsorted(sizes, np.round(z, 9))
        lz_b = fit[None, :] + signs[:, col] * r[None, :]
        zc = z - z.mean()
        # batched parabola fits: the same design matrix for every draw
        coef = np.linalg.lstsq(np.stack([zc**2, zc, np.ones_like(zc)], 1), lz_b.T, rcond=None)[0]
        c2, c1 = coef[0], coef[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            v = -c1 / (2 * c2)
        ok = (c2 > 0) & (v > zc.min()) & (v < zc.max())
        vert_n[ok, j] = v[ok] + z.mean()
        if np.all(np.isfinite(ez)):
            slope, icpt = np.polyfit(z, ez, 1)
            vert_e[:, j] = icpt + slope * vert_n[:, j]
    var = np.nanvar(vert_n, axis=0)
    floor = 1e-12 + 1e-6 * np.nanmedian(var) if np.isfinite(var).any() else 1.0
    prof.weight = 1.0 / np.maximum(np.where(np.isfinite(var), var, np.inf), floor)
    for b in range(n_boot):
        for res, y in ((res_n, vert_n[b]), (res_e, vert_e[b])):
            if np.isfinite(y).sum() >= 3 and (line := loglog_line(prof.log_c, y, prof.weight)) is not None:
                res[b] = line.intercept, line.exponent
    prof.birge = 1.0
    for res, y in ((res_n, prof.log_n), (res_e, prof.log_e)):
        line = loglog_line(prof.log_c, y, prof.weight)
        ok = np.isfinite(y) & (prof.weight > 0)
        if line is None or ok.sum() < 3:
            continue
        chi2 = float(np.sum(prof.weight[ok] * (y[ok] - line.intercept - line.exponent * prof.log_c[ok]) ** 2))
        dof = int(ok.sum()) - 2
        k = np.sqrt(max(1.0, chi2 / dof)) * float(student_t.ppf(0.975, dof) / norm.ppf(0.975))
        if res is res_n:
            prof.birge = k
        res[:] = np.array([line.intercept, line.exponent]) + k * (res - np.array([line.intercept, line.exponent]))
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
