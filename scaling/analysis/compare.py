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
        }
    return out
