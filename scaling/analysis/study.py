"""From a table of runs to the reported numbers, per group (family by default).

For each group: the loss-vs-compute law on the Pareto frontier (power and
saturating are both fitted and the one with the lower leave-largest-compute-out
extrapolation error is selected, unless ``law`` names one), the parametric
law L(N, D) on all runs where params and examples are known, IsoFLOP profiles,
the compute-optimal exponents of model size and epochs with bootstrap
intervals, and optionally a prediction at a target budget. Everything is a
plain dict (the ``--json`` document) plus the fitted objects for plots.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from scaling.analysis import allocation, bootstrap, cells, identify, intervals, lawfit
from scaling.analysis.compare import compute_multiplier
from scaling.analysis.frontier import frontier_mask
from scaling.analysis.lawfit import LawFit, extrapolation_error, fit_law, resampling_unit
from scaling.analysis.records import Table
from scaling.errors import UserError

FRONTIER_LAWS = ("power", "saturating")
ALL_LAWS = ("power", "saturating", "parametric", "isoflop", "data-constrained")
EXTRAPOLATION_WARN = 10.0
MIN_CLUSTERS = lawfit.MIN_CLUSTERS


@dataclasses.dataclass
class GroupResult:
    name: str
    columns: dict[str, np.ndarray]
    report: dict
    frontier_law: LawFit | None = None
    parametric: LawFit | None = None
    profiles: allocation.Profiles | None = None
    isoflop_boot: tuple | None = None  # (B,2) N* lines, (B,2) E* lines
    cost_k: float | None = None
    train_size: float | None = None


def _num(table: Table, name: str) -> bool:
    """A numeric column known (finite, positive) for every run of the group."""
    col = table.columns.get(name)
    return col is not None and col.dtype != object and bool(np.all(np.isfinite(col) & (col > 0)))


def _exponent_report(exponent, boot, method, extra=None) -> dict:
    out = {"exponent": float(exponent), "ci95": list(bootstrap.percentile_ci(boot)), "method": method}
    return {**out, **(extra or {})}


def clusters_of(table: Table, resample: str) -> tuple[np.ndarray | None, str]:
    """Cluster id per run for the bootstrap, and what was resampled (for the report).

    ``"models"``: runs of one model (the ``model`` column, else its ``params``) are
    resampled together (scaling.analysis.bootstrap); ``"runs"``: each run alone;
    ``"auto"`` (default): models when the parametric law's residuals cluster by
    model, else runs (scaling.analysis.lawfit.resampling_unit).
    """
    if resample in ("models", "auto"):
        for col in ("model", "params"):
            if table.has(col):
                ids = np.array([str(v) for v in table.columns[col]], dtype=object)
                if len(set(ids)) < len(ids):
                    if resample == "auto" and _num(table, "params") and _num(table, "examples"):
                        return resampling_unit(table.columns, ids)
                    return ids, f"models ({len(set(ids))} clusters, by {col!r})"
    return None, "runs"


def _isoflop(cols, has_epochs, n_boot, seed):
    lc, ln, loss = np.log(cols["compute"]), np.log(cols["params"]), cols["loss"]
    le = np.log(cols["epochs"]) if has_epochs else None
    levels = allocation.isoflop_levels(lc, ln)
    prof = allocation.isoflop_profiles(lc, ln, loss, le, levels)
    if len(prof.log_c) < 3:
        return prof, None, levels
    boot = allocation.isoflop_bootstrap(prof, n_boot, seed + 1)
    return prof, boot, levels


def analyse_group(
    name: str,
    table: Table,
    *,
    law: str | None = None,
    n_boot: int = 200,
    predict: float | None = None,
    seed: int = 0,
    resample: str = "auto",
) -> GroupResult:
    cols = {k: v for k, v in table.columns.items()}
    n = len(table)
    if n < 3:
        raise UserError(f"group {name!r}: {n} usable run(s); at least 3 are needed to fit a law")
    warnings: list[str] = []
    clusters, resampled = clusters_of(table, resample)
    report: dict = {"n_points": n, "bootstrap_resamples": resampled}
    if clusters is None and "too few to resample" in resampled:
        warnings.append(f"bootstrap over {resampled}")
    if clusters is not None and n_boot and len(set(clusters)) < MIN_CLUSTERS:
        warnings.append(
            f"the bootstrap resamples {len(set(clusters))} models: with fewer than {MIN_CLUSTERS} its "
            "intervals are rough (too narrow or too wide), read them as orders of magnitude"
        )
    res = GroupResult(name, cols, report)
    t0 = time.perf_counter()

    # --- loss vs compute on the frontier -----------------------------------
    front = frontier_mask(cols["compute"], cols["loss"])
    report["n_frontier"] = int(front.sum())
    if law in (None, *FRONTIER_LAWS):
        if front.sum() < 3:
            raise UserError(f"group {name!r}: only {int(front.sum())} frontier point(s); at least 3 are needed")
        cands = {}
        for form in FRONTIER_LAWS if law is None else (law,):
            err = extrapolation_error(form, cols, frontier=True)
            cands[form] = err
        usable = {k: v for k, v in cands.items() if v is not None}
        chosen = law or (min(usable, key=usable.get) if usable else "power")
        lf = fit_law(chosen, cols, frontier=True, n_boot=n_boot, seed=seed, clusters=clusters)
        res.frontier_law = lf
        report["law"] = {**lf.report(), "extrapolation_error": cands[chosen]}
        if law is None:
            report["law"]["selected_by"] = "lowest leave-largest-compute-out extrapolation error (log-RMSE)"
            report["candidates"] = {k: {"extrapolation_error": v} for k, v in cands.items()}
        if not lf.fit.converged:
            warnings.append(f"{chosen} fit did not converge ({lf.fit.message})")
        warnings += _bound_warnings(chosen, lf)

    # --- parametric L(N, D) ------------------------------------------------
    has_nd = _num(table, "params") and _num(table, "examples")
    has_epochs = _num(table, "epochs")
    if law == "parametric" and not has_nd:
        raise UserError("the parametric law needs 'params' and 'examples' (examples_seen / tokens) columns")
    if has_nd and n >= 6:
        pf = fit_law("parametric", cols, frontier=False, n_boot=n_boot, seed=seed, clusters=clusters)
        res.parametric = pf
        k, k_spread = allocation.cost_constant(cols["compute"], cols["params"], cols["examples"])
        res.cost_k = k
        if has_epochs:
            res.train_size = float(np.median(cols["examples"] / cols["epochs"]))
        p, bp = pf.params, pf.boot_params()
        a = p["beta"] / (p["alpha"] + p["beta"])
        a_boot = bp["beta"] / (bp["alpha"] + bp["beta"]) if bp else np.array([])
        assumption = {
            "cost_model": "C = k*N*D, k = geometric mean of compute/(params*examples)",
            "k": k,
            "k_log_spread": k_spread,
        }
        by = {"parametric": _exponent_report(a, a_boot, "parametric", assumption)}
        by_e = {"parametric": _exponent_report(1 - a, 1 - a_boot, "parametric", assumption)}
        if k_spread > 0.5:
            warnings.append(
                f"compute per parameter per example varies (std of log k = {k_spread:.2f}); "
                "the parametric allocation assumes it constant"
            )
        if law == "parametric":
            ext = extrapolation_error("parametric", cols, frontier=False)
            report["law"] = {**pf.report(), "extrapolation_error": ext}
        else:
            report["parametric"] = pf.report()
        if not pf.fit.converged:
            warnings.append(f"parametric fit did not converge ({pf.fit.message})")
        warnings += _bound_warnings("parametric", pf)
    else:
        by, by_e = {}, {}
        if law == "parametric":
            raise UserError(f"group {name!r}: the parametric law needs at least 6 runs, have {n}")

    if law == "data-constrained":
        report["law"] = _data_constrained(name, table, cols, n_boot, seed, warnings, clusters)

    # --- IsoFLOP profiles --------------------------------------------------
    if _num(table, "params"):
        t_iso = time.perf_counter()
        prof, boot, levels = _isoflop(cols, has_epochs, n_boot, seed)
        t_iso = round(time.perf_counter() - t_iso, 3)
        res.profiles = prof
        if boot is not None:
            res.isoflop_boot = boot
            line_n = allocation.profile_line(prof, prof.log_n)
            extra = {
                "levels": int(len(prof.log_c)),
                "window": prof.window,
                "weights": "1 / bootstrap variance of each level's log N*",
                "interval": "wild bootstrap of the window residuals, one sign per model size",
                "coefficient": float(np.exp(line_n.intercept)),
                "bootstrap": {"resamples": n_boot, "seconds": t_iso},
            }
            by["isoflop"] = _exponent_report(line_n.exponent, boot[0][:, 1], "isoflop", extra)
            line_e = allocation.profile_line(prof, prof.log_e) if has_epochs else None
            if line_e is not None:
                extra_e = {"levels": int(len(prof.log_c)), "coefficient": float(np.exp(line_e.intercept))}
                by_e["isoflop"] = _exponent_report(line_e.exponent, boot[1][:, 1], "isoflop", extra_e)
            if law == "isoflop":
                report["law"] = _isoflop_law(prof, boot, line_n, line_e)
        elif law == "isoflop":
            raise UserError(
                f"group {name!r}: IsoFLOP profiles need at least 3 compute levels with an interior "
                f"minimum over >= 3 model sizes; found {len(prof.log_c)}"
            )
    elif law == "isoflop":
        raise UserError("IsoFLOP profiles need a 'params' column")

    _label_identification(res, by, by_e, levels if _num(table, "params") else None, has_epochs, warnings)

    # Headline estimator: IsoFLOP when asked for, else the parametric law when it could be fitted.
    # On sizes x epochs grids the IsoFLOP levels often have their minimum near the edge of the
    # sampled sizes (few usable levels; on the synthetic study it over-estimated the N* exponent
    # by ~0.1 where the parametric law was within 0.01); both are always reported in by_method.
    primary = "isoflop" if law == "isoflop" or "parametric" not in by else "parametric"
    for key, d in (("optimal_params", by), ("optimal_epochs", by_e)):
        if d:
            best = d.get(primary) or next(iter(d.values()))
            report[key] = {**best, "by_method": d}
    if predict is not None:
        report["prediction"] = _predict(res, predict, primary, warnings)
        for key, est in (("params", "optimal_params"), ("epochs", "optimal_epochs")):
            pr = report["prediction"].get(key)
            o = (report.get(est) or {}).get("by_method", {}).get(pr["method"]) if pr else None
            if pr and o is not None:
                pr["identified"] = o["identified"]
        loss = report["prediction"].get("loss")
        if loss and loss["law"] == "parametric" and "params" in report["prediction"]:
            # the loss at the parametric optimum is only as identified as that optimum
            loss["identified"] = report["prediction"]["params"].get("identified", True)
    report["fit_seconds"] = round(time.perf_counter() - t0, 3)
    report["warnings"] = warnings
    return res


def _data_constrained(name: str, table: Table, cols: dict, n_boot: int, seed: int, warnings: list, clusters) -> dict:
    """Muennighoff et al.'s law on all runs; U = unique_examples, else the records' train_size."""
    for col in ("params", "examples"):
        if not _num(table, col):
            raise UserError(f"the data-constrained law needs a positive {col!r} column for every run")
    if _num(table, "unique_examples"):
        source = "unique_examples"
    elif _num(table, "train_size"):
        source = "train_size"
        cols["unique_examples"] = np.minimum(cols["train_size"], cols["examples"])
    else:
        raise UserError(
            "the data-constrained law needs a 'unique_examples' column (unique examples seen; "
            "or 'train_size' in run records) for every run"
        )
    if len(table) < 8:
        raise UserError(f"group {name!r}: the data-constrained law needs at least 8 runs, have {len(table)}")
    lf = fit_law("data-constrained", cols, frontier=False, n_boot=n_boot, seed=seed, clusters=clusters)
    if not lf.fit.converged:
        warnings.append(f"data-constrained fit did not converge ({lf.fit.message})")
    warnings += _bound_warnings("data-constrained", lf)
    ext = extrapolation_error("data-constrained", cols, frontier=False)
    return {**lf.report(), "extrapolation_error": ext, "unique_examples_from": source,
            "allocation": "from the parametric law (the data-constrained optimum is not computed yet)"}


def _bound_warnings(form: str, lf: LawFit) -> list[str]:
    at = {k: v for k, v in lf.at_bound().items() if v["estimate"]}
    if not at:
        return []
    what = ", ".join(f"{k} = {v['bound']:g}" for k, v in at.items())
    return [f"{form} law: {what} at {'its bound' if len(at) == 1 else 'their bounds'} (scaling.analysis.bounds)"]


def _label_identification(res: GroupResult, by: dict, by_e: dict, levels, has_epochs: bool, warnings: list) -> None:
    """Mark every allocation estimate identified or not (scaling.analysis.identify), and warn about the latter."""
    reasons = {"parametric": identify.parametric(res)}
    if levels is not None and res.profiles is not None:
        reasons["isoflop"] = identify.isoflop(res.profiles, len(levels), res.columns, has_epochs)
        if "isoflop" not in by and reasons["isoflop"]["optimal_params"]:
            warnings.append("no IsoFLOP estimate: " + reasons["isoflop"]["optimal_params"][0])
    for key, d in (("optimal_params", by), ("optimal_epochs", by_e)):
        for method in list(d):
            why = reasons.get(method, {}).get(key, [])
            d[method] = identify.label(d[method], why)
            for w in why:
                msg = f"not identified: {w}"
                if msg not in warnings:
                    warnings.append(msg)


def _isoflop_law(prof, boot, line_n, line_e) -> dict:
    """The IsoFLOP result as a law: N* = coefficient * C^exponent; extrapolation on the top level."""
    err = None
    if len(prof.log_c) >= 4:
        w = None if prof.weight is None else prof.weight[:-1]
        held = allocation.loglog_line(prof.log_c[:-1], prof.log_n[:-1], w)
        err = float(abs(prof.log_n[-1] - (held.intercept + held.exponent * prof.log_c[-1])))
    params = {"coefficient": float(np.exp(line_n.intercept)), "exponent": line_n.exponent}
    ci = {
        "coefficient": list(bootstrap.percentile_ci(np.exp(boot[0][:, 0]))),
        "exponent": list(bootstrap.percentile_ci(boot[0][:, 1])),
    }
    if line_e is not None:
        params["epochs_exponent"] = line_e.exponent
        ci["epochs_exponent"] = list(bootstrap.percentile_ci(boot[1][:, 1]))
    return {
        "form": "isoflop",
        "params": params,
        "ci95": ci,
        "levels": int(len(prof.log_c)),
        "extrapolation_error": err,
        "extrapolation_error_units": "|log N*| error at the largest level, line fitted on the others",
    }


def _predict(res: GroupResult, budget: float, primary: str, warnings: list) -> dict:
    out: dict = {"budget": budget}
    cmax = float(res.columns["compute"].max())
    out["beyond_largest_observed"] = budget / cmax
    if budget > EXTRAPOLATION_WARN * cmax:
        warnings.append(
            f"target budget {budget:g} is {budget / cmax:.0f}x the largest observed compute "
            f"({cmax:g}); extrapolating more than {EXTRAPOLATION_WARN:g}x is unreliable"
        )
    c = {"compute": np.array([budget])}
    lf = res.frontier_law
    if lf is not None:
        log_point = lf.log_predict(c)
        boot = lf.log_predict(c, boot=True)[:, :1] if lf.boot_theta is not None else np.zeros((0, 1))
        err, ratio = _backtest(res)
        lo, hi = intervals.calibrated(log_point, boot, err, ratio, [budget / cmax])
        out["loss"] = {
            "value": float(np.exp(log_point[0])),
            "ci95": [float(lo[0]), float(hi[0])],
            "ci95_bootstrap": list(bootstrap.percentile_ci(np.exp(boot[:, 0]))),
            "interval": "bootstrap band widened by the law's leave-largest-compute-out error, grown with "
                        "log(budget / largest compute) (scaling.analysis.intervals)",
            "law": lf.law.name,
        }
    if primary == "isoflop" and res.isoflop_boot is not None:
        prof = res.profiles
        for key, ys, boot in (("params", prof.log_n, res.isoflop_boot[0]), ("epochs", prof.log_e, res.isoflop_boot[1])):
            line = allocation.profile_line(prof, ys)
            if line is None:
                continue
            vals = np.exp(boot[:, 0] + boot[:, 1] * np.log(budget))
            out[key] = {"value": float(line(budget)), "ci95": list(bootstrap.percentile_ci(vals)), "method": "isoflop"}
    elif res.parametric is not None:
        pf = res.parametric
        n_pt, d_pt = allocation.parametric_optimum(pf.params, budget, res.cost_k)
        bp = pf.boot_params()
        n_b, d_b = allocation.parametric_optimum(bp, budget, res.cost_k) if bp else (np.array([]), np.array([]))
        if lf is None:  # loss at the compute-optimal allocation of the parametric law
            out["loss"] = {
                "value": float(_parametric_loss(pf.params, n_pt, d_pt).ravel()[0]),
                "ci95": list(bootstrap.percentile_ci(np.ravel(_parametric_loss(bp, n_b, d_b)) if bp else [])),
                "law": "parametric",
            }
        out["params"] = {
            "value": float(n_pt.ravel()[0]),
            "ci95": list(bootstrap.percentile_ci(np.ravel(n_b))),
            "method": "parametric",
        }
        if res.train_size:
            out["epochs"] = {
                "value": float(d_pt.ravel()[0] / res.train_size),
                "ci95": list(bootstrap.percentile_ci(np.ravel(d_b) / res.train_size)),
                "method": "parametric",
            }
    return out


def _backtest(res: GroupResult) -> tuple[float | None, float | None]:
    """The frontier law's leave-largest-compute-out log error and the extrapolation ratio it was made at."""
    law = res.report.get("law") or {}
    err = law.get("extrapolation_error")
    c = res.columns["compute"][frontier_mask(res.columns["compute"], res.columns["loss"])]
    xs = np.sort(c)
    n_out = max(1, int(round(0.2 * len(xs))))
    early = xs[: len(xs) - n_out]
    if err is None or not len(early):
        return None, None
    return float(err), float(xs.max() / early.max())


def _parametric_loss(p: dict, n, d) -> np.ndarray:
    g = {k: np.asarray(v, float).reshape(-1, 1) for k, v in p.items()}
    return g["E"] + g["A"] / np.asarray(n) ** g["alpha"] + g["B"] / np.asarray(d) ** g["beta"]


def analyse(
    table: Table,
    *,
    group_by: str | None = "family",
    law: str | None = None,
    n_boot: int = 200,
    predict: float | None = None,
    seed: int = 0,
    resample: str = "auto",
) -> tuple[dict, list[GroupResult]]:
    if law is not None and law not in ALL_LAWS:
        raise UserError(f"unknown law {law!r}; choose one of {', '.join(ALL_LAWS)}")
    if len(table) < 3:
        raise UserError(f"{len(table)} usable run(s); at least 3 are needed to fit a law")
    if group_by and table.has(group_by):
        keys = np.array([str(v) for v in table.columns[group_by]], dtype=object)
    elif group_by and group_by != "family":
        raise UserError(f"no column {group_by!r} to group by")
    else:
        keys = np.full(len(table), "all", dtype=object)
    results = [
        # distinct seeds: the groups' resamples must be independent for the comparison
        analyse_group(k, table.subset(keys == k), law=law, n_boot=n_boot, predict=predict, seed=seed + 1000 * i,
                      resample=resample)
        for i, k in enumerate(sorted(set(keys)))
    ]
    doc: dict = {
        "groups": {r.name: r.report for r in results},
        "excluded": dict(table.excluded),
        "lr_trials_dropped": table.lr_duplicates,
        "seeds_averaged": cells.seed_noise(table),
        **({"unreadable": list(table.unreadable)} if table.unreadable else {}),
        "selection": "per cell (every design column: model, params, epochs, examples, data, ...) seeds are "
        "averaged (geometric mean, variance of log loss kept) and the lr with the lowest loss is kept",
    }
    comps = compute_multiplier([r for r in results if r.frontier_law is not None])
    if comps:
        doc["comparison"] = comps
    return doc, results
