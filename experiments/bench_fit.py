"""Benchmark: time to fit the laws to 10,000 runs (no bootstrap), and the bootstrap cost.

Runs are synthetic (drawn from scaling.analysis.synthetic's known laws, 2 families x
sizes x epoch budgets) and built in memory, so the time is the fitting alone:
frontier laws with law selection, the parametric law with its full start grid,
and IsoFLOP profiles. Run on a quiet machine: ``flock /tmp/scaling-cpu.lock
python experiments/bench_fit.py``.
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np

from scaling.analysis import records, study, synthetic


def make_table(n_runs: int, seed: int = 0) -> records.Table:
    rng = np.random.default_rng(seed)
    per_family = n_runs // len(synthetic.FAMILIES)
    sizes = 50
    epochs = np.logspace(0, 2, per_family // sizes)
    cols = collections.defaultdict(list)
    for fam_name, fam in synthetic.FAMILIES.items():
        for i, n in enumerate(np.logspace(5, 8, sizes)):
            d = epochs * synthetic.TRAIN_SIZE
            loss = synthetic.loss_of(fam, n, d) * np.exp(rng.normal(0, 0.01, len(d)))
            cols["family"] += [fam_name] * len(d)
            cols["model"] += [f"{fam_name}-{i}"] * len(d)
            cols["params"] += [n] * len(d)
            cols["epochs"] += list(epochs)
            cols["examples"] += list(d)
            cols["loss"] += list(loss)
            cols["compute"] += list(fam["k"] * n * d * fam["hours_per_flop"])
    arrays = {k: np.array(v, dtype=object if k in ("family", "model") else float) for k, v in cols.items()}
    return records.Table(arrays, collections.Counter(), {"csv"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--bootstrap", type=int, default=200, help="resamples for the second, bootstrap timing")
    args = ap.parse_args()
    table = make_table(args.runs)
    t0 = time.perf_counter()
    doc, _ = study.analyse(table, n_boot=0)
    t_fit = time.perf_counter() - t0
    print(f"fit {len(table)} runs, no bootstrap: {t_fit:.2f} s")
    for name, g in doc["groups"].items():
        print(f"  {name}: law {g['law']['form']} converged={g['law']['converged']}; "
              f"parametric converged={g['parametric']['converged']}; "
              f"N* exponents: " + ", ".join(f"{m} {o['exponent']:.3f}" for m, o in g['optimal_params']['by_method'].items()))
    if args.bootstrap:
        t0 = time.perf_counter()
        study.analyse(table, n_boot=args.bootstrap)
        print(f"fit {len(table)} runs with {args.bootstrap} bootstrap resamples: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
