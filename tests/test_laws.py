"""Scaling-law fitting: definitions, optimiser behaviour, and interval coverage on known laws."""

from __future__ import annotations

import numpy as np
import pytest

from scaling.analysis import allocation, bootstrap, fitting, laws
from scaling.analysis.frontier import frontier_mask
from scaling.analysis.lawfit import extrapolation_error, fit_law

N_SEEDS = 50
N_BOOT = 200

TRUTH = {
    "power": {"a": 5.0, "b": -0.1},
    "saturating": {"E": 0.5, "A": 1.5, "alpha": 0.4},
    "parametric": {"E": 0.5, "A": 40.0, "B": 300.0, "alpha": 0.3, "beta": 0.35},
}


def draw(law: str, seed: int, sigma: float) -> dict:
    """Points from a known law with multiplicative log-normal noise of std sigma."""
    rng = np.random.default_rng(seed)
    t = TRUTH[law]
    if law == "power":
        x = np.exp(rng.uniform(np.log(1e-2), np.log(1e2), 30))
        cols, loss = {"compute": x}, t["a"] * x ** t["b"]
    elif law == "saturating":
        x = np.exp(rng.uniform(np.log(1e-1), np.log(1e3), 40))
        cols, loss = {"compute": x}, t["E"] + t["A"] * x ** -t["alpha"]
    else:
        n = np.exp(rng.uniform(np.log(1e5), np.log(1e8), 60))
        d = np.exp(rng.uniform(np.log(1e6), np.log(1e9), 60))
        cols = {"params": n, "examples": d, "compute": 6 * n * d}
        loss = t["E"] + t["A"] / n ** t["alpha"] + t["B"] / d ** t["beta"]
    cols["loss"] = loss * np.exp(rng.normal(0, sigma, len(loss)))
    return cols


# ---- definitions ---------------------------------------------------------------


def test_huber_is_quadratic_inside_delta_and_linear_outside():
    d = fitting.HUBER_DELTA
    r = np.array([0.0, 0.5 * d, -d, 3 * d, -10 * d])
    expected = [0.0, 0.5 * (0.5 * d) ** 2, 0.5 * d**2, d * (3 * d - 0.5 * d), d * (10 * d - 0.5 * d)]
    np.testing.assert_allclose(fitting.huber(r), expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["power", "saturating", "parametric"])
def test_objective_gradient_matches_finite_differences(name):
    law = laws.LAWS[name]
    feats = law.features(draw(name, 0, 0.05))
    rng = np.random.default_rng(1)
    theta = law.grid(feats)[rng.integers(len(law.grid(feats)))] + rng.normal(0, 0.05, len(law.internal))
    f, g = fitting.objective(law, theta[None], feats)
    eps = 1e-6
    num = [
        (fitting.objective(law, (theta + eps * e)[None], feats)[0] - fitting.objective(law, (theta - eps * e)[None], feats)[0])[0]
        / (2 * eps)
        for e in np.eye(len(theta))
    ]
    np.testing.assert_allclose(g[0], num, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("name", ["power", "saturating", "parametric"])
def test_public_parameters_reproduce_internal_predictions(name):
    law = laws.LAWS[name]
    cols = draw(name, 2, 0.0)
    f = fitting.fit(law, cols, n_polish=2)
    internal = law.predict(f.theta[None], f.feats.u)[0][0]
    public = law.log_predict_public(f.params, cols)[0]
    np.testing.assert_allclose(internal, public, rtol=1e-10)
    for k, v in TRUTH[name].items():  # noiseless data: exact recovery
        assert f.params[k] == pytest.approx(v, rel=1e-3), k


def test_frontier_keeps_runs_no_cheaper_run_beats():
    x = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 5.0])
    loss = np.array([5.0, 4.0, 3.0, 3.5, 2.0, 2.5])
    assert frontier_mask(x, loss).tolist() == [True, False, True, False, True, False]
    present = np.array([[1, 1, 0, 1, 1, 1], [0, 0, 0, 0, 0, 1]], bool)
    batched = frontier_mask(x, loss, present)
    for b in range(2):
        sub = frontier_mask(x[present[b]], loss[present[b]])
        assert batched[b][present[b]].tolist() == sub.tolist()
        assert not batched[b][~present[b]].any()


def test_batched_bootstrap_refit_matches_individual_lbfgs_fits():
    cols = draw("parametric", 3, 0.02)
    f0 = fitting.fit(laws.PARAMETRIC, cols, n_polish=4)
    counts = bootstrap.resample_counts(len(cols["loss"]), 8, seed=0)
    theta, ok = fitting.refit_batch(f0, counts)
    assert ok.mean() >= 0.75  # the flag is strict: Huber's kinks leave small gradients
    for b in range(len(counts)):
        single = fitting.fit(laws.PARAMETRIC, cols, weights=counts[b], starts=f0.theta, n_polish=1)
        fb = fitting.objective(laws.PARAMETRIC, theta[b][None], f0.feats, counts[b])[0][0]
        assert fb <= single.objective * (1 + 1e-4)


# ---- the optimiser: summed vs averaged Huber ---------------------------------------


def test_mean_reduced_huber_stops_early_where_summed_converges():
    """Besiroglu et al. 2024: averaging makes L-BFGS stop near the start (SciPy defaults)."""
    cols = draw("parametric", 0, 0.01)
    law = laws.PARAMETRIC
    start = np.array([0.0, 0.0, np.log(0.2), 0.5, 0.5])
    scipy_defaults = {"ftol": 2.220446049250313e-09, "gtol": 1e-05, "maxcor": 10}
    fits = {
        red: fitting.fit(law, cols, reduction=red, starts=start, n_polish=1, options=scipy_defaults)
        for red in ("sum", "mean")
    }
    summed = {red: fitting.objective(law, f.theta[None], f.feats)[0][0] for red, f in fits.items()}
    assert summed["mean"] > 1.5 * summed["sum"]  # far worse objective
    assert fits["mean"].n_iter < fits["sum"].n_iter
    assert abs(fits["mean"].params["E"] / 0.5 - 1) > 0.2  # far from the truth
    for k, v in TRUTH["parametric"].items():
        assert fits["sum"].params[k] == pytest.approx(v, rel=0.1), k


# ---- coverage and accuracy on known laws ---------------------------------------------


@pytest.mark.parametrize("name", ["power", pytest.param("saturating", marks=pytest.mark.slow),
                                  pytest.param("parametric", marks=pytest.mark.slow)])
def test_bootstrap_interval_coverage_and_low_noise_accuracy(name):
    hits = {k: 0 for k in TRUTH[name]}
    for seed in range(N_SEEDS):
        lf = fit_law(name, draw(name, seed, 0.02), frontier=False, n_boot=N_BOOT, seed=seed)
        ci = lf.ci95()
        for k, v in TRUTH[name].items():
            hits[k] += ci[k][0] <= v <= ci[k][1]
    coverage = {k: h / N_SEEDS for k, h in hits.items()}
    print(name, "coverage of nominal 95% intervals:", coverage)
    assert all(c >= 0.9 for c in coverage.values()), coverage
    low = fit_law(name, draw(name, 123, 0.001), frontier=False)
    assert low.fit.converged
    for k, v in TRUTH[name].items():
        assert abs(low.params[k] / v - 1) < 0.05, (k, low.params[k], v)


ISO = {"E": 0.5, "A": 40.0, "B": 300.0, "alpha": 0.3, "beta": 0.35, "k": 6.0}
ISO_EXPONENT = ISO["beta"] / (ISO["alpha"] + ISO["beta"])


def draw_isoflop(seed: int, sigma: float):
    """An IsoFLOP grid: 6 budgets x 9 sizes spanning 1/10..10x the true N*(C)."""
    rng = np.random.default_rng(seed)
    p = ISO
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    c, n = np.meshgrid(np.logspace(15, 19, 6), np.logspace(-1, 1, 9), indexing="ij")
    c, n = c.ravel(), n.ravel() * g * (c.ravel() / p["k"]) ** ISO_EXPONENT
    d = c / (p["k"] * n)
    loss = (p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]) * np.exp(rng.normal(0, sigma, len(c)))
    return np.log(c), np.log(n), loss, np.log(d)


def test_isoflop_low_noise_accuracy():
    """Coverage and width of the IsoFLOP interval: tests/test_isoflop.py (100 replications)."""
    lc, ln, loss, ld = draw_isoflop(123, 0.001)
    prof = allocation.isoflop_profiles(lc, ln, loss, ld, allocation.isoflop_levels(lc, ln))
    assert allocation.loglog_line(prof.log_c, prof.log_n).exponent == pytest.approx(ISO_EXPONENT, rel=0.05)
    # D* = C / (k N*): its exponent is 1 - a
    assert allocation.loglog_line(prof.log_c, prof.log_e).exponent == pytest.approx(1 - ISO_EXPONENT, rel=0.05)


def test_parametric_optimum_matches_brute_force_minimum():
    p = {k: ISO[k] for k in ("A", "B", "alpha", "beta")}
    c = 1e18
    n_star, d_star = allocation.parametric_optimum(p, c, ISO["k"])
    n = np.logspace(6, 12, 20001)
    loss = p["A"] / n ** p["alpha"] + p["B"] / (c / (ISO["k"] * n)) ** p["beta"]
    assert float(n_star[0]) == pytest.approx(n[np.argmin(loss)], rel=1e-3)
    assert float(n_star[0] * d_star[0] * ISO["k"]) == pytest.approx(c, rel=1e-9)


def test_extrapolation_error_prefers_the_true_form():
    sat = draw("saturating", 5, 0.005)
    assert extrapolation_error("saturating", sat, frontier=False) < extrapolation_error("power", sat, frontier=False)
    pw = draw("power", 5, 0.005)
    assert extrapolation_error("power", pw, frontier=False) < 0.02
