"""Fit scaling laws to a study's runs: ``python -m scaling.fit PATH... [options]``.

PATH is a study workdir (any tree of result.json files, e.g. from
``python -m scaling.sweep``) or a CSV file with columns compute, loss and
optionally params, examples (alias tokens), unique_examples, epochs, family. Prints a readable
summary, or with --json exactly one JSON document; --out writes the plots.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from scaling.errors import OneLineParser, UserError
from scaling.platform.entrypoint import entrypoint

LAWS = ("power", "saturating", "parametric", "isoflop", "data-constrained")


def _parser() -> OneLineParser:
    p = OneLineParser(
        prog="python -m scaling.fit",
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Runs with status != done are excluded and counted; per cell (model, size, epochs, data, ...) "
            "seeds are averaged and the LR with the lowest validation loss is kept (the LR is tuned per "
            "epoch budget). Intervals are 95%% percentile bootstrap intervals over runs or models (--resample)."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="study workdir (tree of result.json) or CSV file")
    p.add_argument("--x", default=None, metavar="COLUMN",
                   help="compute column: default accelerator_hours for studies, compute for CSV "
                        "(train_flops = training FLOPs, 2xMAC, fwd+bwd)")
    p.add_argument("--law", default=None, metavar="LAW",
                   help=f"one of {', '.join(LAWS)}; default: power and saturating on the frontier, "
                        "selected by leave-largest-compute-out extrapolation error")
    p.add_argument("--group-by", default="family", metavar="COLUMN",
                   help="column to fit separately (default family; 'none' for one group)")
    p.add_argument("--predict", type=float, default=None, metavar="BUDGET",
                   help="predict loss, model size and epochs at this compute (units of --x)")
    p.add_argument("--emit-config", metavar="PATH",
                   help="with --predict: write the training config of the predicted optimum "
                        "(run it with python -m scaling.train --config PATH)")
    p.add_argument("--family", help="with --emit-config: the family whose optimum to write")
    p.add_argument("--out", default=None, metavar="DIR", help="write plots (and fit.json) here")
    p.add_argument("--format", default="png", metavar="FMTS", help="plot formats, comma separated (png,svg,pdf)")
    p.add_argument("--bootstrap", type=int, default=200, metavar="N", help="bootstrap resamples (0: none)")
    p.add_argument("--resample", default="auto", metavar="UNIT",
                   help="bootstrap unit: models (all runs of a model together, by the model column, else params), "
                        "runs, or auto (default: models when the parametric law's residuals cluster by model)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the summary")
    return p


def _clean(obj):
    """JSON-safe: numpy scalars to Python, non-finite floats to null."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _ci(ci) -> str:
    if not ci or any(not isinstance(v, (int, float)) or math.isnan(v) for v in ci):
        return "[no interval]"
    return f"[{ci[0]:.4g}, {ci[1]:.4g}]"


def _g(v, fmt: str = ".4g") -> str:
    """A number for the summary; n/a for a missing (non-finite) one, never a crash."""
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"


def _estimate(label: str, o: dict, method: str) -> str:
    """One allocation estimate: the answer, or 'not identified' with its reasons and the fitted numbers."""
    nums = f"{label} ~ C^{_g(o.get('exponent'), '.3f')}  95% CI {_ci(o.get('ci95'))}  ({method})"
    if o.get("identified", True):
        return nums
    return f"{label} exponent ({method}): NOT IDENTIFIED ({'; '.join(o['not_identified_because'])}); fitted {nums}"


def _summary(doc: dict, x: str) -> str:
    lines = [f"x = {x}; y = validation loss"]
    exc = doc.get("excluded") or {}
    lines.append(
        "excluded runs: " + (", ".join(f"{v} {k}" for k, v in sorted(exc.items())) if exc else "none")
    )
    for path in doc.get("unreadable") or []:
        lines.append(f"unreadable record (excluded): {path}")
    lines.append(f"LR trials dropped: {doc['lr_trials_dropped']} ({doc['selection']})")
    seeds = doc.get("seeds_averaged")
    if seeds:
        lines.append(
            f"seeds averaged: {seeds['cells_with_replicates']} cell(s), {seeds['replicates_averaged']} extra run(s); "
            f"median seed std of log loss {_g(seeds['median_log_loss_std'], '.3g')}"
        )
    for name, g in doc["groups"].items():
        lines.append(f"\n== {name}: {g['n_points']} runs, {g.get('n_frontier', '?')} on the frontier ==")
        if g.get("bootstrap_resamples"):
            lines.append(f"bootstrap resamples {g['bootstrap_resamples']}")
        law = g.get("law")
        if law:
            lines.append(f"law {law['form']}" + (f" ({law['fitted_to']}, {law['n_fitted']} points)" if "fitted_to" in law else ""))
            at = law.get("at_bound") or {}
            for k, v in law["params"].items():
                flag = f"  (at its {at[k]['side']} bound)" if k in at and at[k]["estimate"] else ""
                lines.append(f"  {k:>12} = {_g(v, '.5g')}  95% CI {_ci(law['ci95'].get(k))}{flag}")
            ext = law.get("extrapolation_error")
            lines.append(f"  extrapolation error (leave-largest-compute-out): {_g(ext)}")
            if "converged" in law:
                s = law["starts"]
                lines.append(
                    f"  converged: {law['converged']} (grad {_g(law['grad_norm'], '.1e')}); "
                    f"{s['at_optimum']}/{s['polished']} polished starts of a {s['grid']}-point grid reached the optimum"
                )
            if "bootstrap" in law:
                b = law["bootstrap"]
                lines.append(f"  bootstrap: {b['resamples']} resamples, {b['converged']} converged, {b['seconds']} s")
        for cname, c in (g.get("candidates") or {}).items():
            lines.append(f"  candidate {cname}: extrapolation error {_g(c['extrapolation_error'])}")
        par = g.get("parametric")
        if par and "bootstrap" in par:
            b, pp = par["bootstrap"], par["params"]
            lines.append(
                f"parametric L(N,D) on all runs: alpha={_g(pp['alpha'], '.3f')}, beta={_g(pp['beta'], '.3f')}, "
                f"E={_g(pp['E'])}; converged {par['converged']}; "
                f"bootstrap {b['resamples']} resamples, {b['converged']} converged, {b['seconds']} s"
            )
        iso = (g.get("optimal_params", {}).get("by_method") or {}).get("isoflop")
        if iso:
            lines.append(f"IsoFLOP profiles: {iso['levels']} levels; window {iso.get('window', 'all sizes')}; bootstrap {iso['bootstrap']['seconds']} s")
        for key, label in (("optimal_params", "N*"), ("optimal_epochs", "epochs*")):
            for m, o in (g.get(key, {}).get("by_method") or {}).items():
                lines.append(_estimate(label, o, m))
        pr = g.get("prediction")
        if pr:
            lines.append(f"prediction at {x} = {_g(pr['budget'], 'g')} ({_g(pr['beyond_largest_observed'], '.1f')}x the largest observed):")
            for k in ("loss", "params", "epochs"):
                if k in pr:
                    tag = "" if pr[k].get("identified", True) else "  NOT IDENTIFIED (see the warnings)"
                    lines.append(f"  {k:>7} = {_g(pr[k]['value'])}  95% CI {_ci(pr[k]['ci95'])}{tag}")
        lines.append(f"fit time {g['fit_seconds']} s (bootstrap included)")
        for w in g.get("warnings", []):
            lines.append(f"WARNING: {w}")
    for name, c in (doc.get("comparison") or {}).items():
        lines.append(f"\n{name}: x{_g(c['multiplier'], '.3g')} compute for loss {_g(c['loss'])}, 95% CI {_ci(c['ci95'])}")
        ex = c.get("exponents") or {}
        if "p_value" in ex:
            verdict = "the same" if ex["same_exponent"] else "different (the multiplier depends on the loss)"
            lines.append(f"  loss exponents {_g(ex['slopes'][0], '.3g')} vs {_g(ex['slopes'][1], '.3g')}: {verdict}; "
                         f"{ex['test']}: F = {_g(ex['F'], '.3g')}, p = {_g(ex['p_value'], '.2g')}")
        elif ex:
            lines.append(f"  loss exponents: {ex['test']}")
    return "\n".join(lines)


def _check_out(out: str) -> None:
    """--out must be a directory or creatable as one; checked before anything is read or written."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out {out}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {parent} is not writable")


def _check_args(args) -> list[str]:
    """Every flag validated before any input is read or output written; returns the plot formats."""
    if args.law is not None and args.law not in LAWS:
        raise UserError(f"unknown law {args.law!r}; choose one of {', '.join(LAWS)}")
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad or not formats:
        raise UserError(f"unknown plot format {(bad or [args.format])[0]!r}; choose from png, svg, pdf")
    if args.resample not in ("auto", "models", "runs"):
        raise UserError(f"unknown --resample {args.resample!r}; choose auto, models or runs")
    if args.bootstrap < 0:
        raise UserError("--bootstrap must be >= 0")
    if args.emit_config and args.predict is None:
        raise UserError("--emit-config needs --predict BUDGET")
    if args.emit_config and Path(args.emit_config).is_dir():
        raise UserError(f"--emit-config {args.emit_config} is a directory; give a file path")
    if args.predict is not None and not (math.isfinite(args.predict) and args.predict > 0):
        raise UserError(f"--predict {args.predict:g}: the budget must be a finite positive number (units of --x)")
    if args.out is not None:
        _check_out(args.out)
    return formats


@entrypoint
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    formats = _check_args(args)

    from scaling.analysis import records, study

    table = records.load(args.paths)
    table, x = records.select_x(table, args.x)
    table = records.best_per_cell(table)
    group_by = None if args.group_by.lower() == "none" else args.group_by
    doc, results = study.analyse(
        table, group_by=group_by, law=args.law, n_boot=args.bootstrap, predict=args.predict, seed=args.seed,
        resample=args.resample,
    )
    doc = _clean({"x": x, **doc})
    if args.emit_config:
        from scaling.analysis import recipe

        emitted = recipe.emit(doc, table, args.emit_config, args.family)
        doc["emitted_config"] = {"path": args.emit_config, "model": emitted["model"], "epochs": emitted["epochs"],
                                 "lr": emitted["lr"], **{k: emitted["_prediction"][k] for k in ("identified", "notes")}}
    text = None if args.json else _summary(doc, x)  # rendered before anything is written
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        from scaling.analysis import plots

        try:
            paths = plots.save_all(results, x, args.out, formats, extend=args.predict)
            (Path(args.out) / "fit.json").write_text(json.dumps(doc, indent=2))
        except OSError as e:
            raise UserError(f"--out {args.out}: cannot write ({e.strerror or e})") from None
        doc["plots"] = [str(p) for p in paths]
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(text)
        if args.emit_config:
            e = doc["emitted_config"]
            tag = "" if e["identified"] else " (NOT IDENTIFIED: a guess, see _prediction)"
            print(f"\nwrote {e['path']}: {e['model']}, {e['epochs']:g} epochs, lr {e['lr']:.3g}{tag}; "
                  f"run it with python -m scaling.train --config {e['path']} --workdir DIR")
            for n in e["notes"]:
                print(f"  note: {n}")
        if args.out:
            print(f"\nwrote {len(doc['plots'])} plot file(s) and fit.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
