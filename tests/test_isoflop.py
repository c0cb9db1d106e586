"""IsoFLOP profiles done well: local window, minima weighted by their variance, a bootstrap that keeps the design.

Two designs, both deterministic (fixed seeds):
- a Chinchilla-like IsoFLOP grid with known exponent (tests/test_laws.draw_isoflop:
  6 budgets x 9 sizes, 1% noise), 100 replications: coverage of the 95% interval,
  and its median width against the oracle's (the 2.5-97.5 percentile range of
  the estimate over the 100 fresh data sets);
- the toolkit's generator (scaling.analysis.synthetic.draw_cells: sizes x epochs,
  no IsoFLOP grid, levels interpolated) with 12 sizes and 1% independent noise,
  60 replications: coverage and median bias of the N* exponent.
Binomial standard error of a 0.95 coverage: 0.022 at 100, 0.028 at 60 replications.
"""

from __future__ import annotations

import numpy as np

from scaling.analysis import allocation, bootstrap, synthetic
from test_laws import ISO_EXPONENT, draw_isoflop


def _estimate(lc, ln, loss, le, seed, n_boot=200):
    prof = allocation.isoflop_profiles(lc, ln, loss, le, allocation.isoflop_levels(lc, ln))
    if len(prof.log_c) < 3:
        return prof, np.nan, (np.nan, np.nan)
    boot_n, _ = allocation.isoflop_bootstrap(prof, n_boot, seed)
    return prof, allocation.profile_line(prof, prof.log_n).exponent, bootstrap.percentile_ci(boot_n[:, 1])


def test_window_is_local_and_levels_are_weighted():
    lc, ln, loss, ld = draw_isoflop(0, 0.01)
    prof, _, _ = _estimate(lc, ln, loss, ld, 0)
    assert all(len(z) == allocation.WINDOW for z, _ in prof.points)  # 7 of the 9 sizes
    for z, lz in prof.points:  # the window is centred on the level's lowest loss
        best = int(np.argmin(lz))
        assert 0 < best < len(z) - 1
    assert prof.weight is not None and np.all(prof.weight > 0) and np.ptp(prof.weight) > 0
    w = allocation.loglog_line(prof.log_c, prof.log_n, prof.weight)
    u = allocation.loglog_line(prof.log_c, prof.log_n)
    assert w.exponent != u.exponent  # the weights enter the reported line


def test_interval_covers_and_is_at_most_one_and_a_half_oracle_widths():
    est, widths, hits = [], [], 0
    for seed in range(100):
        _, a, (lo, hi) = _estimate(*draw_isoflop(seed, 0.01), seed)
        est.append(a)
        widths.append(hi - lo)
        hits += lo <= ISO_EXPONENT <= hi
    oracle = np.diff(np.percentile(est, [2.5, 97.5]))[0]
    print(f"IsoFLOP grid: coverage {hits / 100}, median width {np.median(widths):.4f}, oracle width {oracle:.4f}, "
          f"median error {np.median(est) - ISO_EXPONENT:+.4f}")
    assert 0.88 <= hits / 100 <= 0.99
    assert np.median(widths) <= 1.5 * oracle
    assert abs(np.median(est) - ISO_EXPONENT) < 0.01


def test_coverage_and_bias_on_the_toolkits_generator():
    fam = synthetic.FAMILIES["vit"]
    truth = fam["beta"] / (fam["alpha"] + fam["beta"])
    est, hits = [], 0
    for r in range(60):
        c = synthetic.draw_cells(fam, np.random.default_rng(1000 + r), sizes=12, noise=0.01)
        _, a, (lo, hi) = _estimate(np.log(c["compute"]), np.log(c["params"]), c["loss"], np.log(c["epochs"]), r)
        est.append(a)
        hits += lo <= truth <= hi
    print(f"generator: coverage {hits / 60:.3f}, median {np.nanmedian(est):.4f} (true {truth:.4f})")
    assert hits / 60 >= 0.85
    assert abs(np.nanmedian(est) - truth) < 0.02
