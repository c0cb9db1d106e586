"""Fit the committed reference study and write its README block and figures.

    python experiments/cifar10_reference/report.py            # refit, redraw, rewrite the block
    python experiments/cifar10_reference/report.py --check    # refit; exit 1 if README disagrees

Runs ``python -m scaling.fit results --out figures`` exactly as a user would
(default law selection, 200 bootstrap resamples, seed 0), then renders the
numbers between the ``reference-study`` markers of the top-level README.
``--check`` (used by the test suite) refits and compares every number in
that block with the fresh fit.
"""

from __future__ import annotations

import argparse
import json
import math
import re
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
FIT_CMD = ["-m", "scaling.fit", str(RESULTS.relative_to(REPO)), "--law", "power", "--bootstrap", "200", "--seed", "0",
           "--json"]
REL_TOL = 0.03  # numbers are printed to 3 significant digits
# Numbers this close to zero are a fit's boundary (e.g. the degenerate ViT
# alpha = 0): the optimiser stops at 1e-29 on one CPU and 1e-11 on another.
ABS_TOL = 1e-6


def fit(out: Path | None, x: str | None = None) -> dict:
    cmd = [sys.executable, *FIT_CMD] + (["--out", str(out)] if out else []) + (["--x", x] if x else [])
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"scaling.fit failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


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
    lines += ["", "Compute-optimal allocation from the parametric law L(N, D) = E + A/N^alpha + B/D^beta "
              "fitted to all runs (N* ~ C^a, epochs* ~ C^b):", ""]
    for fam, g in doc["groups"].items():
        par = g.get("parametric") or {}
        pp, pci = par.get("params", {}), par.get("ci95", {})
        parts = []
        for key, label in (("optimal_params", "N*"), ("optimal_epochs", "epochs*")):
            o = g.get(key)
            if o and o.get("exponent") is not None:
                ci = o["ci95"]
                flat = ci and ci[0] is not None and abs(ci[1] - ci[0]) < 1e-6
                parts.append(f"{label} exponent {_g(o['exponent'])}, {_ci(ci)}" + (" (degenerate)" if flat else ""))
        lines.append(f"- {fam}: " + "; ".join(parts) + f" (alpha {_g(pp.get('alpha', float('nan')))}, "
                     f"{_ci(pci.get('alpha'))}; beta {_g(pp.get('beta', float('nan')))}, {_ci(pci.get('beta'))})")
    for label, d in (("accelerator-hours", doc), ("training FLOPs", flops_doc)):
        for name, c in (d.get("comparison") or {}).items():
            a, b = name.split("_vs_")
            lines += ["", f"At validation loss {_g(c['loss'])}, {a} needs {_g(c['multiplier'])}x the "
                      f"{label} of {b} ({_ci(c['ci95'])})."]
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
    args = p.parse_args()
    if args.check:
        fresh, committed = block(fit(None), fit(None, "train_flops"), records()), current_block()
        a, b = numbers(fresh), numbers(committed)
        bad = len(a) != len(b) or any(abs(x - y) > max(REL_TOL * max(abs(x), abs(y)), ABS_TOL) for x, y in zip(a, b))
        if bad:
            print("README reference-study block disagrees with a fresh fit:\n" + fresh, file=sys.stderr)
            return 1
        print(f"README agrees with a fresh fit ({len(a)} numbers)")
        return 0
    new = block(fit(FIGURES), fit(None, "train_flops"), records())
    text = README.read_text()
    text = text[: text.index(BEGIN)] + new + text[text.index(END) + len(END) :] if BEGIN in text else text + "\n" + new + "\n"
    README.write_text(text)
    print(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
