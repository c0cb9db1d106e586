"""Identifiability: does the fitted allocation say something the sampled runs support?

A compute-optimal model size or epoch budget that lies far outside the sizes
and epochs that were trained, an exponent from a law with a parameter at its
bound (scaling.analysis.bounds), or an IsoFLOP exponent from few levels is not an
answer, whatever its interval says. Each check returns plain sentences; an
estimate with any of them is labelled "not identified" in the JSON, the
printout, the plots and the README (issue 22, fitting-methods.md section 9).
"""

from __future__ import annotations

import numpy as np

from scaling.analysis import allocation

MIN_ISOFLOP_LEVELS = 5  # fitting-methods.md 9.7: with 3-4 levels one level moves the line
WHAT = {"optimal_params": ("N*", "model", "params"), "optimal_epochs": ("epochs*", "epoch budget", "epochs")}


def outside(value: float, lo: float, hi: float) -> tuple[str, float] | None:
    """("below"|"above", factor) when ``value`` lies outside [lo, hi]; ("unusable", nan) if not positive."""
    if not (np.isfinite(value) and value > 0):
        return "unusable", float("nan")
    if value < lo:
        return "below", float(lo / value)
    if value > hi:
        return "above", float(value / hi)
    return None


def range_sentence(key: str, method: str, at_c: dict, lo: float, hi: float) -> str | None:
    """A sentence when the estimate at the largest observed compute lies outside [lo, hi].

    ``at_c``: {compute: value}, smallest and largest observed compute (the sentence gives both factors).
    """
    label, noun, _ = WHAT[key]
    (c_lo, v_lo), (c_hi, v_hi) = sorted(at_c.items())
    where = outside(v_hi, lo, hi)
    if where is None:
        return None
    side, factor = where
    if side == "unusable":
        return f"{label} ({method}) is {v_hi:.3g} at the largest observed compute {c_hi:.3g}: not a usable {noun}"
    edge = f"the smallest {noun} trained ({lo:.3g})" if side == "below" else f"the largest {noun} trained ({hi:.3g})"
    s = f"{label} ({method}) is {v_hi:.3g} at the largest observed compute {c_hi:.3g}: {factor:.3g}x {side} {edge}"
    other = outside(v_lo, lo, hi)
    if other is not None and other[0] == side:
        s += f" ({other[1]:.3g}x at the smallest compute {c_lo:.3g})"
    return s


def parametric(res) -> dict[str, list[str]]:
    """Reasons the parametric allocation is not identified, per estimate key."""
    out: dict[str, list[str]] = {"optimal_params": [], "optimal_epochs": []}
    pf = res.parametric
    if pf is None:
        return out
    at = {k: v for k, v in pf.at_bound().items() if v["estimate"]}
    shape = [k for k in ("A", "alpha", "B", "beta") if k in at]
    if shape:
        what = ", ".join(f"{k} = {at[k]['bound']:g}" for k in shape)
        sentence = f"the parametric law has {what} at a bound (a degenerate fit)"
        if "A" in at or "alpha" in at:
            sentence += ": it puts no weight on model size"
        if "B" in at or "beta" in at:
            sentence += ": it puts no weight on examples seen"
        for v in out.values():
            v.append(sentence)
    c = res.columns
    cs = np.array([c["compute"].min(), c["compute"].max()], float)
    n_star, d_star = allocation.parametric_optimum(pf.params, cs, res.cost_k)
    if not shape:
        s = range_sentence("optimal_params", "parametric", dict(zip(cs, n_star.ravel())), c["params"].min(), c["params"].max())
        out["optimal_params"] += [s] if s else []
        if res.train_size and "epochs" in c:
            e = d_star.ravel() / res.train_size
            s = range_sentence("optimal_epochs", "parametric", dict(zip(cs, e)), c["epochs"].min(), c["epochs"].max())
            out["optimal_epochs"] += [s] if s else []
    for k, v in {"n": len(np.unique(c["params"])), "epochs": len(np.unique(c.get("epochs", [])))}.items():
        if 0 < v < 3:
            noun = "model sizes" if k == "n" else "epoch budgets"
            for lst in out.values():
                lst.append(f"only {v} {noun} sampled: the parametric law's exponents are not separable")
    return out


def isoflop(prof, n_levels_tried: int, columns: dict, has_epochs: bool) -> dict[str, list[str]]:
    """Reasons the IsoFLOP allocation is not identified (levels too few, minima outside the sizes)."""
    used = len(prof.log_c)
    why = []
    if used < MIN_ISOFLOP_LEVELS:
        drop = ", ".join(f"{v} {k}" for k, v in sorted(prof.discarded.items()) if v) or "none discarded"
        why.append(
            f"{used} of {n_levels_tried} IsoFLOP compute levels have an interior minimum over >= 3 sizes "
            f"(the others: {drop}); an exponent needs at least {MIN_ISOFLOP_LEVELS}"
        )
    out = {"optimal_params": list(why), "optimal_epochs": list(why) if has_epochs else []}
    if used >= 2:
        cs = np.array([columns["compute"].min(), columns["compute"].max()], float)
        for key, ys, col in (("optimal_params", prof.log_n, "params"), ("optimal_epochs", prof.log_e, "epochs")):
            line = allocation.profile_line(prof, ys)
            if line is None or col not in columns:
                continue
            s = range_sentence(key, "isoflop", dict(zip(cs, line(cs))), columns[col].min(), columns[col].max())
            out[key] += [s] if s else []
    return out


def label(estimate: dict, reasons: list[str]) -> dict:
    """The estimate with ``identified`` and ``not_identified_because`` set."""
    return {**estimate, "identified": not reasons, "not_identified_because": list(reasons)}
