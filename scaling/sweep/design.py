"""The design tool: what a planned study will tell you, before it is run.

``python -m scaling.sweep ... --dry-run`` simulates the planned study: every
trial the planner would run (lr trials, seeds, an adaptive second wave) is
"run" on a known law with seed noise, in the order the sweep would run it, and
the simulated records are refitted with the toolkit's own fitter
(``scaling.analysis.study.analyse_group``, parametric law, bootstrap). Over a
few replicates this gives the expected 95% interval width of the compute-optimal
exponents (N* ~ C^a; the parametric law's epochs* exponent is 1 - a, so its
interval has the same width) with its Monte-Carlo error, and whether the
optimum lies inside the sampled sizes and epochs. ``--target-width W``
searches budgets (factor-2 steps, through the planner) for the first whose
expected width is at most W, and prices that study on a named accelerator
from the peak-FLOP table (``scaling.compute.PEAK_FLOPS``) at an assumed MFU.

The law: each family's parametric law fitted to the study's finished records
when the fit has no shape parameter at a bound, else ``PRIOR`` (the toolkit's
synthetic law, ``scaling.analysis.synthetic.FAMILIES``: alpha 0.31-0.33, beta
0.36-0.38, near Epoch AI's Chinchilla refit 0.35 / 0.37; families without an
entry use the NFNet one). The seed noise: the median std of log loss over the
records' replicated cells (at least ``MIN_NOISE_CELLS``), else ``DEFAULT_NOISE`` (1%, what the simulations
behind issue 26 used). Simulation assumptions, stated in the output: costs as
predicted by the cost model; a trial's loss is the law times
exp(LR_CURVATURE * log2(lr / lr_opt)^2) times log-normal noise, lr_opt the
family's base lr.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from scaling.errors import UserError
from scaling.sweep import lr as lrrule
from scaling.sweep import placement, planner

DEFAULT_NOISE = 0.01
MIN_NOISE_CELLS = 3  # replicated cells needed before the records' seed noise replaces the default
LR_CURVATURE = 0.01  # log-loss penalty per squared factor-2 lr step away from the optimum
REPLICATES = 8
N_BOOT = 100
MAX_DOUBLINGS = 12  # --target-width searches up to 4096x the budget
DEFAULT_MFU = 0.01  # tiny CIFAR ladders on an H100: ~0.1% of peak per run, ~1% ten side by side (README)


def prior_law(family: str) -> dict[str, float]:
    from scaling.analysis.synthetic import FAMILIES

    law = FAMILIES.get(family, FAMILIES["nfnet"])
    return {k: float(law[k]) for k in ("E", "A", "B", "alpha", "beta")}


def loss(law: dict, params, examples) -> np.ndarray:
    return law["E"] + law["A"] / np.asarray(params) ** law["alpha"] + law["B"] / np.asarray(examples) ** law["beta"]


@dataclasses.dataclass
class Setting:
    """What a simulated study is drawn from (per family), and where each part came from."""

    laws: dict[str, dict]
    law_source: dict[str, str]
    noise: float
    noise_source: str
    lr_opt: dict[str, float]


def setting(ctx: planner.Context, results: dict[str, dict]) -> Setting:
    """The law (fitted to ``results`` where identified, else the prior) and the seed noise."""
    laws, src = {}, {}
    for fam in ctx.cfg.families:
        rows = [r for r in results.values() if r.get("family") == fam]
        ff = placement.fit_family(rows, n_boot=0) if rows else None
        shape = ff.lawfit.at_bound() if ff is not None else {"none": 1}
        if ff is not None and not any(k in shape for k in ("A", "alpha", "B", "beta")):
            laws[fam] = {k: float(v) for k, v in ff.lawfit.params.items()}
            src[fam] = f"parametric law fitted to the study's {len(rows)} records"
        else:
            laws[fam] = prior_law(fam)
            src[fam] = ("prior (toolkit synthetic law, literature exponents)" if ff is None else
                        "prior (the records' fit has a shape parameter at a bound)")
    noise, nsrc = DEFAULT_NOISE, f"default {DEFAULT_NOISE:g}"
    rows = [r for r in results.values() if placement.usable(r)]
    if rows:
        from scaling.analysis import cells

        sn = cells.seed_noise(placement.cells_of(rows))
        if (sn and sn["cells_with_replicates"] >= MIN_NOISE_CELLS and math.isfinite(sn["median_log_loss_std"])
                and sn["median_log_loss_std"] > 0):
            noise = sn["median_log_loss_std"]
            nsrc = f"measured over {sn['cells_with_replicates']} replicated cells"
    return Setting(laws, src, noise, nsrc, dict(ctx.base_lr))


def simulate(ctx: planner.Context, budget: float, spent0: float, st: Setting, rng: np.random.Generator,
             train_size: float) -> dict[str, dict]:
    """Run the planned study on the law: trial id -> a result record, in the sweep's order."""
    results: dict[str, dict] = {}
    spent, adapt = spent0, 0.0
    while True:
        c = dataclasses.replace(ctx, future_of=lambda i: 0.0 if i in results else None, results=results,
                                adapt_hours=adapt)
        p = placement.plan_study(c, budget, spent, [], started=bool(results))
        if not p.feasible:
            return results
        ran = 0
        for t in p.trials:  # one plan serves until nothing in it can run (its costs do not change)
            if t.id in results:
                continue
            lr = lrrule.resolve(t.lr_rule, results)
            if lr is None or spent + t.predicted_hours > budget:
                continue
            n, ex = ctx.params[t.model], t.epochs * train_size
            law = st.laws[t.family]
            pen = LR_CURVATURE * math.log2(lr / st.lr_opt[t.family]) ** 2
            val = float(loss(law, n, ex)) * math.exp(pen + rng.normal(0, st.noise))
            results[t.id] = dict(family=t.family, model=t.model, params=n, epochs=t.epochs, examples_seen=ex,
                                 lr=lr, seed=t.seed, status="done", val_loss=val,
                                 accelerator_hours=t.predicted_hours, role=t.role, trial=t.to_json())
            spent += t.predicted_hours
            adapt += t.predicted_hours if placement.is_adaptive(t) else 0.0
            ran += 1
        if not ran:
            return results


def realized(results: dict[str, dict], family: str, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """What ``scaling.fit --law parametric`` would report for one family of ``results``."""
    from scaling.analysis.study import analyse_group

    rows = [r for r in results.values() if r.get("family") == family and placement.usable(r)]
    out = {"width": math.inf, "identified": False, "cells": 0}
    if not rows:
        return out
    table = placement.cells_of(rows)
    out["cells"] = len(table)
    c = table.columns
    if len(table) < 6 or len(np.unique(c["params"])) < 2 or len(np.unique(c["epochs"])) < 2:
        return out
    try:
        rep = analyse_group(family, table, law="parametric", n_boot=n_boot, seed=seed).report
    except UserError:
        return out
    est = (rep.get("optimal_params") or {}).get("by_method", {}).get("parametric")
    if est is None:
        return out
    lo, hi = est["ci95"]
    width = hi - lo if math.isfinite(lo) and math.isfinite(hi) else math.inf
    return {"width": width, "exponent": est["exponent"], "ci95": [lo, hi], "identified": est["identified"],
            "cells": len(table)}


def _inside(results: dict, family: str, law: dict, train_size: float) -> dict:
    """Where the law's optimum at the study's largest compute lies against the sampled sizes / epochs."""
    from scaling.analysis import allocation

    rows = [r for r in results.values() if r.get("family") == family]
    if not rows:
        return {}
    n = np.array([r["params"] for r in rows])
    e = np.array([r["epochs"] for r in rows])
    c = np.array([r["accelerator_hours"] for r in rows])
    k, _ = allocation.cost_constant(c, n, e * train_size)
    ns, ds = allocation.parametric_optimum(law, float(c.max()), k)
    ns, es = float(ns.ravel()[0]), float(ds.ravel()[0]) / train_size

    def where(v, lo, hi):
        return "inside" if lo <= v <= hi else (f"{lo / v:.3g}x below" if v < lo else f"{v / hi:.3g}x above")

    return {"n_star": ns, "epochs_star": es, "sizes": [float(n.min()), float(n.max())],
            "epochs": [float(e.min()), float(e.max())], "n_star_where": where(ns, n.min(), n.max()),
            "epochs_star_where": where(es, e.min(), e.max())}


def predict(ctx: planner.Context, budget: float, spent0: float, st: Setting, *, replicates: int = REPLICATES,
            n_boot: int = N_BOOT, seed: int = 0, train_size: float = 45_000.0) -> dict:
    """Expected interval widths at ``budget``: per family the mean width over replicates, its
    Monte-Carlo standard error, the share of replicates whose fit is identified, and the optimum's place."""
    per: dict[str, list] = {f: [] for f in ctx.cfg.families}
    where: dict[str, dict] = {}
    trials = []
    for r in range(replicates):
        res = simulate(ctx, budget, spent0, st, np.random.default_rng([seed, r]), train_size)
        trials.append(len(res))
        for fam in ctx.cfg.families:
            per[fam].append(realized(res, fam, n_boot, seed=1000 * r + 7))
            if r == 0:
                where[fam] = _inside(res, fam, st.laws[fam], train_size)
    out = {"budget": budget, "replicates": replicates, "trials": float(np.mean(trials)) if trials else 0.0,
           "families": {}}
    for fam, reps in per.items():
        w = np.array([x["width"] for x in reps], float)
        fin = w[np.isfinite(w)]
        mean = float(fin.mean()) if len(fin) == len(w) and len(w) else math.inf
        mc = float(fin.std(ddof=1) / math.sqrt(len(fin))) if len(fin) > 1 and math.isfinite(mean) else math.nan
        out["families"][fam] = {
            "n_star_width": mean, "epochs_star_width": mean, "mc_error": mc,
            "identified_share": float(np.mean([x["identified"] for x in reps])) if reps else 0.0,
            "cells": float(np.mean([x["cells"] for x in reps])) if reps else 0.0,
            "optimum": where.get(fam, {}),
        }
    out["worst_width"] = max((v["n_star_width"] for v in out["families"].values()), default=math.inf)
    return out


def budget_for_width(target: float, evaluate: Callable[[float], dict], budget: float) -> dict:
    """The first budget on the factor-2 grid through ``budget`` whose worst family width is <= ``target``.

    Walks up from ``budget`` while the width is above the target (down while it is at or below);
    ``evaluate(b)`` is ``predict`` at b, deterministic, so the answer is monotone in the target.
    Gives up (``reachable: False``) after MAX_DOUBLINGS or when two doublings add no cell and
    narrow the width by less than 2% (the config's grid is exhausted: only seeds are left to add;
    Monte-Carlo noise alone never stops the walk while the plan still grows).
    """
    seen = {}

    def w(b):
        if b not in seen:
            seen[b] = evaluate(b)
        return seen[b]["worst_width"]

    b = budget
    if w(b) <= target:
        while b / 2 >= budget / 2 ** MAX_DOUBLINGS and w(b / 2) <= target:
            b /= 2
        return {"target": target, "reachable": True, "budget": b, "width": w(b), "evaluated": _trace(seen)}
    def cells(b):
        return sum(v["cells"] for v in seen[b]["families"].values())

    history = [b]
    for _ in range(MAX_DOUBLINGS):
        b *= 2
        history.append(b)
        if w(b) <= target:
            return {"target": target, "reachable": True, "budget": b, "width": w(b), "evaluated": _trace(seen)}
        if len(history) >= 3:  # the grid is exhausted: no new cells and the width no longer falls
            b0 = history[-3]
            if cells(b) <= cells(b0) and math.isfinite(w(b0)) and w(b) > 0.98 * w(b0):
                break
    return {"target": target, "reachable": False, "budget": b, "width": history[-1], "evaluated": _trace(seen)}


def _trace(seen: dict) -> list:
    return [[b, seen[b]["worst_width"]] for b in sorted(seen)]


def accelerator_hours(plan: planner.Plan, cm, peak: float, mfu: float) -> float:
    """The planned trials' hours on an accelerator of ``peak`` FLOP/s at ``mfu``: training and
    evaluation FLOPs at that speed, plus this machine's measured fixed costs per trial (start-up,
    set-up, compile; an assumption: they are of the same order on an accelerator)."""
    total = 0.0
    for t in plan.trials:
        parts = cm.parts(t.model, t.epochs, **t.work())
        m = cm.calibration["models"][t.model]
        eval_examples = parts["eval"] / max(m["eval_seconds_per_example"], 1e-30)
        flops = t.train_flops + eval_examples * m["flops_per_example"] / 3
        fixed = parts["compile"] + parts["other"] + cm.startup()
        total += flops / (peak * mfu) / 3600 + fixed / 3600
    return total


def accelerator_peak(name: str) -> tuple[str, float]:
    """(name as in the table, dense bf16 peak) for ``--accelerator``; unknown names are user errors."""
    from scaling.compute import PEAK_FLOPS, peak_flops

    peak = peak_flops(name)
    if not name.strip() or peak is None:
        known = ", ".join(sorted({k.lower().replace(" ", "-") for k, _ in PEAK_FLOPS}))
        raise UserError(f"unknown accelerator {name!r}; known: {known}")
    return name, peak


def lines(pred: dict, st: Setting, target: dict | None, accel: dict | None, device: str) -> list[str]:
    """The two sentences a user acts on: what this budget buys, and what to change."""
    fams = pred["families"]
    parts = []
    for f, v in fams.items():
        w = v["n_star_width"]
        ws = f"{w:.2f} +- {v['mc_error']:.2f}" if math.isfinite(w) else "unbounded (too few cells to fit)"
        parts.append(f"{f} {ws}")
    first = (f"design: at {pred['budget']:g} h the N* and epochs* exponents' 95% intervals will be about "
             f"{'; '.join(parts)} wide (mean of {pred['replicates']} simulated studies +- Monte-Carlo error; "
             f"law: {', '.join(f'{f} {s}' for f, s in st.law_source.items())}; seed noise {st.noise:.3g}, "
             f"{st.noise_source})")
    outside = [f"{f}: N* {v['optimum']['n_star_where']} the sampled sizes" for f, v in fams.items()
               if v["optimum"] and v["optimum"]["n_star_where"] != "inside"]
    outside += [f"{f}: epochs* {v['optimum']['epochs_star_where']} the sampled epochs" for f, v in fams.items()
                if v["optimum"] and v["optimum"]["epochs_star_where"] != "inside"]
    if target is not None:
        if target["reachable"]:
            second = f"for width <= {target['target']:g}: about {target['budget']:.3g} h on this {device}"
            if accel:
                second += (f", about {accel['hours']:.3g} h on one {accel['name']} "
                           f"(peak {accel['peak']:.3g} FLOP/s at an assumed {accel['mfu']:.0%} MFU)")
        else:
            second = (f"width {target['target']:g} is out of reach with this config's sizes and epochs: it levels off "
                      f"near {target['width']:.2f} by {target['budget']:.3g} h; add sizes or epoch budgets to the study")
    elif outside:
        second = ("the optimum lies outside what the study trains (" + "; ".join(outside) +
                  "): extend the ladder or epoch budgets before spending more")
    else:
        second = "widths shrink with budget; --target-width W gives the budget for width W"
    if target is not None and outside:
        second += "; note " + "; ".join(outside)
    return [first, second]
