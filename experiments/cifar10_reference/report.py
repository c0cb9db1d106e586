"""Fit the committed reference study and write its README block and figures.

    python experiments/cifar10_reference/report.py            # refit, redraw, rewrite the block
    python experiments/cifar10_reference/report.py --print    # refit; print the block, write nothing
    python experiments/cifar10_reference/report.py --check    # refit; exit 1 if README disagrees

Runs the ``python -m scaling.fit`` commands that the block itself prints
(``COMMANDS``: the power law on the frontier, 200 bootstrap resamples, seed 0;
once more with ``--x train_flops``) and renders their numbers between the
``reference-study`` markers of the top-level README. ``--check`` (used by the
test suite) runs the commands as printed in the committed README block, and
compares every number of that block with the fresh fit: the block is
reproduced by the command it prints.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "results"
FIGURES = HERE / "figures"
README = REPO / "README.md"
BEGIN, END = "<!-- reference-study:begin -->", "<!-- reference-study:end -->"
# A power law on each family's frontier: with 6-7 frontier points spanning about
# one decade of compute, a saturating law's floor E is not identified (its
# interval spans 0.06-1.7), so the README reports the two-parameter law.
RESULTS_ARG = str(RESULTS.relative_to(REPO))
COMMANDS = {
    "hours": f"python -m scaling.fit {RESULTS_ARG} --law power --out {FIGURES.relative_to(REPO)}",
    "flops": f"python -m scaling.fit {RESULTS_ARG} --law power --x train_flops --json",
}
REL_TOL = 0.03  # numbers are printed to 3 significant digits; numbers at a bound are exact (scaling.analysis.bounds)


def fit(command: str, write_figures: bool = False) -> dict:
    """Run a printed ``python -m scaling.fit`` command; its JSON document.

    ``--out`` is kept only when writing the figures (a check must not touch
    the committed ones); the document is the same with or without it.
    """
    args = shlex.split(command)
    if args[:3] != ["python", "-m", "scaling.fit"]:
        raise SystemExit(f"not a scaling.fit command: {command}")
    args = args[3:]
    if "--out" in args and not write_figures:
        i = args.index("--out")
        del args[i : i + 2]
    if "--json" not in args:
        args.append("--json")
    r = subprocess.run([sys.executable, "-m", "scaling.fit", *args], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{command} failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def printed_commands(block_text: str) -> dict:
    """The scaling.fit commands a README block prints, by role (the --x train_flops one is 'flops')."""
    cmds = [ln.strip() for ln in block_text.splitlines() if ln.strip().startswith("python -m scaling.fit")]
    return {("flops" if "train_flops" in c else "hours"): c for c in cmds}


def records() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RESULTS.rglob("result.json"))]


def _g(v: float) -> str:
    return f"{v:.3g}"


def _ci(ci) -> str:
    if not ci or ci[0] is None or any(isinstance(v, float) and math.isnan(v) for v in ci):
        return "no interval"
    return f"95% CI [{_g(ci[0])}, {_g(ci[1])}]"


def block(doc: dict, flops_doc: dict, recs: list[dict]) -> str:
    done = [r for r in recs if r.get("status") == "done"]
    hours = json.loads((RESULTS / "summary.json").read_text())
    lines = [
        BEGIN,
        "Numbers from (`--check` runs these commands as printed here):",
        "",
        "```bash",
        *COMMANDS.values(),
        "```",
        "",
        f"Budget {hours['budget']:g} accelerator-hours on a 2-core CPU; spent {hours['spent']:.3f} "
        f"({hours['spent'] / hours['budget']:.1%}, calibration included); {len(done)} finished runs. "
        f"x = accelerator-hours, y = validation loss.",
        "",
        "| family | runs | sizes | epoch budgets | best test accuracy (model, epochs) | law on the frontier |",
        "|---|---|---|---|---|---|",
    ]
    for fam, g in doc["groups"].items():
        runs = [r for r in done if r["family"] == fam]
        best = max(runs, key=lambda r: r["test_accuracy"])
        law = g.get("law") or {}
        if law.get("form") == "power":
            p = law["params"]
            form = f"L = {_g(p['a'])} C^({_g(p['b'])}), exponent {_ci(law['ci95']['b'])}"
        elif law.get("form") == "saturating":
            p = law["params"]
            form = (f"L = {_g(p['E'])} + {_g(p['A'])} C^-{_g(p['alpha'])} "
                    f"(E {_ci(law['ci95']['E'])}; alpha {_ci(law['ci95']['alpha'])})")
        else:
            form = "no law (too few frontier points)"
        lines.append(
            f"| {fam} | {len(runs)} | {len({r['model'] for r in runs})} | "
            f"{len({r['config']['epochs'] for r in runs})} | {best['test_accuracy']:.1%} "
            f"({best['model']}, {best['config']['epochs']:g} ep) | {form} |"
        )
    lines.append("")
    for fam, g in doc["groups"].items():
        lines.append(f"Intervals ({fam}): 95% bootstrap over {g.get('bootstrap_resamples', 'runs')}.")
    lines += ["", "Compute-optimal allocation from the parametric law L(N, D) = E + A/N^alpha + B/D^beta "
              "fitted to all runs (N* ~ C^a, epochs* ~ C^b); an exponent is reported as an answer only "
              "where the fit identifies it (`scaling/analysis/identify.py`):", ""]
    for fam, g in doc["groups"].items():
        par = g.get("parametric") or {}
        pp, pci, at = par.get("params", {}), par.get("ci95", {}), par.get("at_bound", {})
        shape = []
        for k in ("alpha", "beta"):
            flag = " (at its bound)" if at.get(k, {}).get("estimate") else ""
            shape.append(f"{k} {_g(pp.get(k, float('nan')))}{flag}, {_ci(pci.get(k))}")
        lines.append(f"- {fam} ({'; '.join(shape)}):")
        for key, label in (("optimal_params", "N*"), ("optimal_epochs", "epochs*")):
            o = g.get(key)
            if not o or o.get("exponent") is None:
                continue
            nums = f"{_g(o['exponent'])}, {_ci(o['ci95'])}"
            if o.get("identified", True):
                lines.append(f"  - {label} exponent {nums}")
            else:
                lines.append(f"  - {label} exponent **not identified** (fitted {nums}): "
                             + "; ".join(o["not_identified_because"]))
    for label, d in (("accelerator-hours", doc), ("training FLOPs", flops_doc)):
        for name, c in (d.get("comparison") or {}).items():
            a, b = name.split("_vs_")
            lines += ["", f"At validation loss {_g(c['loss'])}, {a} needs {_g(c['multiplier'])}x the "
                      f"{label} of {b} ({_ci(c['ci95'])})."]
            ex = c.get("exponents") or {}
            if "p_value" in ex:
                lines[-1] += (f" Loss exponents {_g(ex['slopes'][0])} ({a}) and {_g(ex['slopes'][1])} ({b}): "
                              + ("not distinguishable" if ex["same_exponent"] else "different")
                              + f" (F test, p = {_g(ex['p_value'])}).")
    lines.append(END)
    return "\n".join(lines)


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def numbers(text: str) -> list[float]:
    return [float(x) for x in NUMBER.findall(text)]


def current_block() -> str:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README} has no {BEGIN} ... {END} block")
    return text[text.index(BEGIN) : text.index(END) + len(END)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="refit and compare with the README instead of writing")
    p.add_argument("--print", dest="print_only", action="store_true",
                   help="refit and print the block (with the commands that made it); write nothing")
    args = p.parse_args()
    if args.print_only:
        print(block(fit(COMMANDS["hours"]), fit(COMMANDS["flops"]), records()))
        return 0
    if args.check:
        committed = current_block()
        printed = printed_commands(committed)
        if printed != COMMANDS:
            print(f"README block prints {printed}, report.py runs {COMMANDS}", file=sys.stderr)
            return 1
        fresh = block(fit(printed["hours"]), fit(printed["flops"]), records())
        a, b = numbers(fresh), numbers(committed)
        bad = len(a) != len(b) or any(abs(x - y) > REL_TOL * max(abs(x), abs(y)) for x, y in zip(a, b))
        if bad:
            print("README reference-study block disagrees with a fresh fit:\n" + fresh, file=sys.stderr)
            return 1
        print(f"README agrees with a fresh fit of the commands it prints ({len(a)} numbers)")
        return 0
    new = block(fit(COMMANDS["hours"], write_figures=True), fit(COMMANDS["flops"]), records())
    text = README.read_text()
    text = text[: text.index(BEGIN)] + new + text[text.index(END) + len(END) :] if BEGIN in text else text + "\n" + new + "\n"
    README.write_text(text)
    print(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
