"""Matplotlib figures of a fitted study: one colour per family, shared log axes.

Every compute axis states its unit and the FLOP convention (design.md).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from scaling.analysis import allocation, bootstrap
from scaling.analysis.frontier import frontier_mask

X_LABELS = {
    "accelerator_hours": "accelerator-hours (compile + train + eval)",
    "train_flops": "training FLOPs (2×MAC, fwd+bwd)",
    "compute": "compute (CSV 'compute' column)",
}


def x_label(x: str) -> str:
    return X_LABELS.get(x, x)


def _colours(results):
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {r.name: cycle[i % len(cycle)] for i, r in enumerate(results)}


def _grid(results, extend: float | None = None):
    lo = min(r.columns["compute"].min() for r in results)
    hi = max(r.columns["compute"].max() for r in results)
    hi = max(hi, extend or hi)
    return np.logspace(np.log10(lo), np.log10(hi), 200)


def loss_vs_compute(results, x: str, extend: float | None = None, ax=None):
    """Runs (each model size joined across epoch budgets), frontier, law with 95% band."""
    ax = ax or plt.subplots(figsize=(7, 5))[1]
    colours = _colours(results)
    for r in results:
        c, col = r.columns, colours[r.name]
        model = c["model"] if "model" in c and c["model"].dtype == object else c.get("params")
        if model is not None:
            for m in np.unique(model):
                sel = model == m
                o = np.argsort(c["compute"][sel])
                ax.plot(c["compute"][sel][o], c["loss"][sel][o], "-", color=col, alpha=0.25, lw=0.8)
        ax.scatter(c["compute"], c["loss"], s=10, color=col, alpha=0.4)
        branch = c.get("branch_step")
        if branch is not None and branch.dtype != object and np.any(branch > 0):
            sel = branch > 0  # WSD cooldown branches (nan compares False)
            ax.scatter(c["compute"][sel], c["loss"][sel], s=36, marker="D", facecolors="none", edgecolors=col,
                       label=f"{r.name} WSD branches (one stem, cooled down at each budget)")
        f = frontier_mask(c["compute"], c["loss"])
        o = np.argsort(c["compute"][f])
        ax.plot(c["compute"][f][o], c["loss"][f][o], "o", mfc=col, mec="k", ms=6, label=f"{r.name} frontier")
        lf = r.frontier_law
        if lf is not None:
            g = _grid([r], extend)
            cols = {"compute": g}
            ax.plot(g, np.exp(lf.log_predict(cols)), "-", color=col, lw=2, label=f"{r.name}: {_law_text(lf)}")
            if lf.boot_theta is not None:
                lo, hi = bootstrap.percentile_band(np.exp(lf.log_predict(cols, boot=True)))
                ax.fill_between(g, lo, hi, color=col, alpha=0.15)
    ax.set(xscale="log", yscale="log", xlabel=x_label(x), ylabel="validation loss (nats)")
    ax.set_title("Loss vs compute: runs (lines join a model's epoch budgets), frontier, law ±95% CI", fontsize=9)
    ax.legend(fontsize=7)
    return ax


def _law_text(lf) -> str:
    p = lf.params
    if lf.law.name == "power":
        return f"L = {p['a']:.3g}·C^{p['b']:.3f}"
    return f"L = {p['E']:.3g} + {p['A']:.3g}·C^-{p['alpha']:.3f}"


def _tag(r, what: str, method: str) -> str:
    """' (not identified)' when the report labels this estimate so (scaling.analysis.identify)."""
    key = "optimal_params" if what == "params" else "optimal_epochs"
    o = (r.report.get(key) or {}).get("by_method", {}).get(method, {})
    return "" if o.get("identified", True) else " (NOT IDENTIFIED)"


def optimal_vs_compute(results, x: str, what: str = "params", ax=None):
    """IsoFLOP vertices with their log-log line, and the parametric-law optimum, ±95% bands.

    The shaded band per family is the range that was sampled (sizes or epochs);
    estimates the fit does not identify say so in the legend.
    """
    ax = ax or plt.subplots(figsize=(7, 5))[1]
    colours = _colours(results)
    g = _grid(results)
    for r in results:
        col = colours[r.name]
        sampled = r.columns.get(what)
        if sampled is not None and sampled.dtype != object and np.isfinite(sampled).any():
            ax.axhspan(np.nanmin(sampled), np.nanmax(sampled), color=col, alpha=0.08, label=f"{r.name} sampled {what}")
        prof = r.profiles
        if prof is not None and len(prof.log_c):
            ys = prof.log_n if what == "params" else prof.log_e
            ax.plot(np.exp(prof.log_c), np.exp(ys), "s", color=col, label=f"{r.name} IsoFLOP vertices")
            line = allocation.profile_line(prof, ys)
            if line is not None and r.isoflop_boot is not None:
                ax.plot(g, line(g), "--", color=col, label=f"{r.name} IsoFLOP fit: exponent {line.exponent:.2f}{_tag(r, what, 'isoflop')}")
                b = r.isoflop_boot[0 if what == "params" else 1]
                b = b[np.isfinite(b).all(1)]
                if len(b):
                    lo, hi = bootstrap.percentile_band(np.exp(b[:, :1] + b[:, 1:] * np.log(g)))
                    ax.fill_between(g, lo, hi, color=col, alpha=0.1)
        pf = r.parametric
        if pf is not None and (what == "params" or r.train_size):
            n_pt, d_pt = allocation.parametric_optimum(pf.params, g, r.cost_k)
            y = n_pt if what == "params" else d_pt / r.train_size
            p = pf.params
            expo = p["beta"] / (p["alpha"] + p["beta"])
            expo = expo if what == "params" else 1 - expo
            with np.errstate(invalid="ignore", divide="ignore"):
                ok = np.isfinite(y) & (y > 0)
            ax.plot(g[ok.ravel()], y.ravel()[ok.ravel()], "-", color=col,
                    label=f"{r.name} parametric law: exponent {expo:.2f}{_tag(r, what, 'parametric')}")
            if pf.boot_theta is not None:
                nb, db = allocation.parametric_optimum(pf.boot_params(), g, r.cost_k)
                lo, hi = bootstrap.percentile_band(nb if what == "params" else db / r.train_size)
                ax.fill_between(g, lo, hi, color=col, alpha=0.15)
    ylabel = "compute-optimal parameters N*" if what == "params" else "compute-optimal epochs E*"
    ax.set(xscale="log", yscale="log", xlabel=x_label(x), ylabel=ylabel)
    ax.set_title(f"{ylabel} vs compute (bands: 95% bootstrap over runs)", fontsize=9)
    ax.legend(fontsize=7)
    return ax


def residuals(results, x: str, ax=None):
    """log residuals of the frontier law (filled) and of the parametric law (open)."""
    ax = ax or plt.subplots(figsize=(7, 4))[1]
    colours = _colours(results)
    for r in results:
        col = colours[r.name]
        if r.frontier_law is not None:
            lf = r.frontier_law
            on = lf.weights > 0
            ax.plot(r.columns["compute"][on], lf.fit.log_residuals()[on], "o", color=col, label=f"{r.name} {lf.law.name} (frontier)")
        if r.parametric is not None:
            ax.plot(r.columns["compute"], r.parametric.fit.log_residuals(), "o", mfc="none", color=col, alpha=0.6, label=f"{r.name} parametric (all runs)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel=x_label(x), ylabel="log(observed loss) − log(fitted loss)")
    ax.set_title("Residuals in log space", fontsize=9)
    ax.legend(fontsize=7)
    return ax


def save_all(results, x: str, out: str | Path, formats=("png",), extend: float | None = None) -> list[Path]:
    """Write the four figures in each format; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figs = {
        "loss_vs_compute": lambda ax: loss_vs_compute(results, x, extend, ax),
        "optimal_params": lambda ax: optimal_vs_compute(results, x, "params", ax),
        "optimal_epochs": lambda ax: optimal_vs_compute(results, x, "epochs", ax),
        "residuals": lambda ax: residuals(results, x, ax),
    }
    paths = []
    for name, draw in figs.items():
        fig, ax = plt.subplots(figsize=(7, 5))
        draw(ax)
        fig.tight_layout()
        for fmt in formats:
            p = out / f"{name}.{fmt}"
            fig.savefig(p, dpi=120)
            paths.append(p)
        plt.close(fig)
    return paths
