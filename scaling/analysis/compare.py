"""Family comparison: how much more compute one family needs for the same loss.

Each family's frontier law is inverted, C_f(L), at a loss both families
actually reached (the larger of their best frontier losses, so neither law
is extrapolated in loss). The multiplier C_f(L) / C_ref(L) is the compute
family f needs relative to the reference (``vit`` when present, else the
first group). Its interval pairs the two families' independent bootstrap
draws.
"""

from __future__ import annotations

import numpy as np

from scaling.analysis import bootstrap
from scaling.analysis.frontier import frontier_mask


def shared_exponent_test(a, b) -> dict:
    """Do two families' frontier laws share their loss exponent? A nested F test on the frontier points.

    Power law: log L = a_f + b_f log C is linear, so "separate exponents" vs
    "one shared exponent, separate scales" is an exact analysis-of-covariance F
    test (1 and n - 4 degrees of freedom) under Gaussian log residuals. Saturating
    law: the same test on log(L - E_f), each family's floor E_f fixed at its own
    fit (approximate: E_f's own uncertainty is ignored). p < 0.05: the exponents
    differ, and a compute multiplier then depends on the loss at which it is read.
    """
    xs, ys, gs = [], [], []
    for j, r in enumerate((a, b)):
        lf = r.frontier_law
        c, loss = r.columns["compute"], r.columns["loss"]
        m = frontier_mask(c, loss)
        y = np.log(loss[m])
        if lf.law.name == "saturating":
            gap = loss[m] - lf.params["E"]
            if np.any(gap <= 0):
                return {"test": "not computed (a frontier point at or below the fitted floor)"}
            y = np.log(gap)
        xs.append(np.log(c[m]))
        ys.append(y)
        gs.append(np.full(m.sum(), j))
    x, y, g = (np.concatenate(v) for v in (xs, ys, gs))
    n = len(y)
    if n < 6 or min(np.bincount(g)) < 3:
        return {"test": "not computed (fewer than 3 frontier points in a family)"}
    one = np.stack([g == 0, g == 1, x], 1).astype(float)
    two = np.stack([g == 0, g == 1, x * (g == 0), x * (g == 1)], 1).astype(float)
    rss = [float(np.sum((y - X @ np.linalg.lstsq(X, y, rcond=None)[0]) ** 2)) for X in (one, two)]
    from scipy.stats import f as f_dist

    dof = n - 4
    F = (rss[0] - rss[1]) / (rss[1] / dof) if rss[1] > 0 else float("inf")
    slopes = np.linalg.lstsq(two, y, rcond=None)[0][2:]
    return {
        "test": "F test, shared vs separate loss exponents on the frontier"
                + (" (log(L - E), E fixed per family)" if a.frontier_law.law.name == "saturating" else ""),
        "F": float(F), "dof": [1, dof], "p_value": float(f_dist.sf(F, 1, dof)),
        "slopes": [float(slopes[0]), float(slopes[1])],
        "same_exponent": bool(f_dist.sf(F, 1, dof) >= 0.05),
    }


def compute_for_loss(form: str, p: dict, loss: float) -> np.ndarray:
    """Compute at which the law reaches ``loss`` (nan where it never does)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if form == "power":
            return (loss / np.asarray(p["a"])) ** (1 / np.asarray(p["b"]))
        if form == "saturating":
            gap = loss - np.asarray(p["E"])
            return np.where(gap > 0, (gap / np.asarray(p["A"])) ** (-1 / np.asarray(p["alpha"])), np.nan)
    raise ValueError(f"no inverse for law {form!r}")


def compute_multiplier(results: list, reference: str = "vit") -> dict:
    """{"<f>_vs_<ref>": {"loss", "multiplier", "ci95"}} for every non-reference group."""
    if len(results) < 2:
        return {}
    names = [r.name for r in results]
    ref = results[names.index(reference)] if reference in names else results[0]
    out = {}
    for r in results:
        if r is ref:
            continue
        lf_r, lf_ref = r.frontier_law, ref.frontier_law
        level = max(r.columns["loss"].min(), ref.columns["loss"].min())
        c_r = compute_for_loss(lf_r.law.name, lf_r.params, level)
        c_ref = compute_for_loss(lf_ref.law.name, lf_ref.params, level)
        bp_r, bp_ref = lf_r.boot_params(), lf_ref.boot_params()
        ci = [float("nan"), float("nan")]
        if bp_r and bp_ref:
            m = min(len(next(iter(bp_r.values()))), len(next(iter(bp_ref.values()))))
            draws = compute_for_loss(lf_r.law.name, {k: v[:m] for k, v in bp_r.items()}, level) / compute_for_loss(
                lf_ref.law.name, {k: v[:m] for k, v in bp_ref.items()}, level
            )
            ci = list(bootstrap.percentile_ci(draws))
        out[f"{r.name}_vs_{ref.name}"] = {
            "loss": float(level),
            "multiplier": float(np.ravel(c_r)[0] / np.ravel(c_ref)[0]),
            "ci95": ci,
            "meaning": f"compute {r.name} needs relative to {ref.name} to reach this validation loss",
            "exponents": shared_exponent_test(r, ref) if lf_r.law.name == lf_ref.law.name else
            {"test": "not computed (the families' frontier laws differ in form)"},
        }
    return out
