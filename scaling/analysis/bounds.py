"""The boundary rule: a parameter within the fit's resolution of its bound is reported as the bound.

Why: at a degenerate corner (the reference study's ViT fit, alpha = 0) the
optimiser stops a hair inside the bound, and how far inside depends on the
host's floating point (alpha came out 1e-29, 1e-11 and 2e-5 on three x86-64
CPUs), so printed intervals differed between hosts with nothing wrong.

Rule: a bounded parameter is at its bound when moving it onto the bound
changes no fitted log loss by more than ``RESOLUTION`` (1e-3, the Huber delta:
0.1% of the loss, well inside any study's noise). For an exponent multiplying
a centred log input u that change is at most |exponent - bound| * max|u|; for
the floor E it is at most |E - bound| / min L (the floor's lower bound stands
for E = 0); for the scale of a term (A in A/N^alpha, bound 0) it is the change
of the fitted log loss when the term is removed, and an exponent of a removed
term changes nothing, so it is at its bound 0 too. Such values are set exactly to the bound, in the point estimate
and in every bootstrap draw (so derived numbers such as beta/(alpha+beta)
agree on every host), and the parameter is flagged in the report.
"""

from __future__ import annotations

import numpy as np

from scaling.analysis.laws import Features, Law

RESOLUTION = 1e-3


def tolerance(kind: tuple, feats: Features) -> float:
    """How far (in the internal parameter) from its bound a value counts as at the bound."""
    if kind[0] == "exponent":
        span = float(np.abs(feats.u[:, kind[1]]).max())
        return RESOLUTION / max(span, 1e-12)
    raise ValueError(f"unknown bound kind {kind!r}")


def snap_values(values: np.ndarray, lo: float, hi: float, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Values within ``tol`` of ``lo`` or ``hi`` set onto it; flags -1 (lower), +1 (upper), 0."""
    v = np.array(values, float, copy=True)
    flag = np.zeros(v.shape, int)
    low = np.isfinite(v) & (v - lo <= tol)
    high = np.isfinite(v) & (hi - v <= tol) & ~low
    v[low], v[high] = lo, hi
    flag[low], flag[high] = -1, 1
    return v, flag


def snap(law: Law, theta: np.ndarray, feats: Features, bounds) -> tuple[np.ndarray, np.ndarray]:
    """Apply the rule to internal parameters theta (B, k); returns snapped theta and flags (B, k)."""
    theta = np.array(np.atleast_2d(theta), float, copy=True)
    flags = np.zeros(theta.shape, int)
    for name, kind in law.bound_kinds.items():
        j = law.internal.index(name)
        lo, hi = bounds[j]
        if kind[0] == "floor":  # e = log E; bounds (log min L - 20, log min L)
            # change of log L when E moves onto the bound is at most |dE| / min L
            rel = np.exp(theta[:, j] - hi)  # E / min L
            low = np.isfinite(rel) & (rel <= RESOLUTION)
            high = np.isfinite(rel) & (1 - rel <= RESOLUTION) & ~low
            theta[low, j], theta[high, j] = lo, hi
            flags[low, j], flags[high, j] = -1, 1
        elif kind[0] == "scale":  # a = log A; bound A = 0 (a = -inf): remove the term
            ok = ~np.isnan(theta).any(1)
            gone = theta.copy()
            gone[:, j] = -np.inf
            with np.errstate(invalid="ignore"):
                d = np.abs(law.predict(gone[ok], feats.u, jac=False)[0] - law.predict(theta[ok], feats.u, jac=False)[0])
            low = np.zeros(len(theta), bool)
            low[ok] = d.max(1) <= RESOLUTION
            theta[low, j], flags[low, j] = -np.inf, -1
        else:
            theta[:, j], flags[:, j] = snap_values(theta[:, j], lo, hi, tolerance(kind, feats))
            if len(kind) > 2:  # the exponent of a removed term has no effect: its lower bound
                gone = flags[:, law.internal.index(kind[2])] == -1
                theta[gone, j], flags[gone, j] = lo, -1
    return theta, flags


def to_public(law: Law, theta: np.ndarray, flags: np.ndarray, centre: np.ndarray) -> dict[str, np.ndarray]:
    """Public parameters of snapped theta; a floor at its lower bound is E = 0 exactly."""
    out = law.to_public(theta, centre)
    for name, kind in law.bound_kinds.items():
        if kind[0] == "floor":
            j = law.internal.index(name)
            pub = kind[1]
            out[pub] = np.where(flags[:, j] < 0, 0.0, out[pub])
    return out


def public_bound(law: Law, name: str, side: int, bounds) -> float:
    """The public value of internal parameter ``name`` at its lower (-1) or upper (+1) bound."""
    kind = law.bound_kinds[name]
    lo, hi = bounds[law.internal.index(name)]
    if kind[0] == "scale":
        return 0.0
    if kind[0] == "floor":
        return 0.0 if side < 0 else float(np.exp(hi))
    return float(lo if side < 0 else hi)


def report(law: Law, flags: np.ndarray, boot_flags: np.ndarray | None, bounds) -> dict:
    """{public name: {"bound", "side", "estimate", "share_of_resamples"}} for parameters at a bound.

    One side per parameter: the estimate's, else the one more resamples sit on.
    """
    out = {}
    for name, kind in law.bound_kinds.items():
        j = law.internal.index(name)
        share = {s: float(np.mean(boot_flags[:, j] == s)) if boot_flags is not None and len(boot_flags) else 0.0
                 for s in (-1, 1)}
        side = int(flags[0, j]) or max(share, key=share.get)
        if flags[0, j] == 0 and share[side] == 0:
            continue
        out[name if kind[0] == "exponent" else kind[1]] = {
            "bound": public_bound(law, name, side, bounds),
            "side": "lower" if side < 0 else "upper",
            "estimate": bool(flags[0, j] == side),
            "share_of_resamples": round(share[side], 4),
        }
    return out
