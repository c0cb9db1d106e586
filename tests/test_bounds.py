"""The boundary rule (scaling.analysis.bounds): values within the fit's resolution of a bound are the bound."""

from __future__ import annotations

import numpy as np
import pytest

from scaling.analysis import bounds, laws
from scaling.analysis.lawfit import fit_law

# what the optimiser returned for the ViT's alpha = 0 corner on three x86-64 hosts
HOST_VALUES = [1e-29, 2e-5, 1e-11]


def degenerate_columns(seed: int = 0) -> dict:
    """Larger models slightly worse at equal data (as the reference ViTs at <= 1 epoch): alpha = 0 fits best."""
    rng = np.random.default_rng(seed)
    n = np.repeat([2e5, 5e5, 1e6, 3e6], 5)
    d = np.tile([6e3, 1.2e4, 2.4e4, 4.8e4, 9.6e4], 4)
    loss = 5.0 * d**-0.1 * (n / 2e5) ** 0.01 * np.exp(rng.normal(0, 0.005, len(n)))
    return {"params": n, "examples": d, "compute": 300 * n * d, "loss": loss}


@pytest.mark.parametrize("value", HOST_VALUES)
def test_exponents_this_close_to_zero_are_zero_and_flagged(value):
    feats = laws.PARAMETRIC.features(degenerate_columns())
    tol = bounds.tolerance(("exponent", 0), feats)
    v, flag = bounds.snap_values(np.array([value, 0.05, 5.0 - value]), 0.0, 5.0, tol)
    assert v.tolist() == [0.0, 0.05, 5.0] and flag.tolist() == [-1, 0, 1]


def test_tolerance_is_the_resolution_over_the_inputs_span():
    feats = laws.PARAMETRIC.features(degenerate_columns())
    span = np.abs(feats.u[:, 0]).max()
    tol = bounds.tolerance(("exponent", 0), feats)
    assert tol == pytest.approx(bounds.RESOLUTION / span)
    # just inside the tolerance snaps, just outside does not: the rule, not a fuzz factor
    v, _ = bounds.snap_values(np.array([0.99 * tol, 1.01 * tol]), 0.0, 5.0, tol)
    assert v[0] == 0.0 and v[1] == pytest.approx(1.01 * tol)


@pytest.mark.parametrize("value", HOST_VALUES)
def test_a_floor_that_small_is_zero(value):
    law = laws.PARAMETRIC
    feats = law.features(degenerate_columns())
    bnd = law.bounds(feats)
    theta = np.array([[0.0, 0.0, feats.log_y.min() + np.log(value), 0.3, 0.3]])
    snapped, flags = bounds.snap(law, theta, feats, bnd)
    assert flags[0, 2] == -1
    assert bounds.to_public(law, snapped, flags, feats.centre)["E"][0] == 0.0


def test_a_floor_at_half_the_smallest_loss_is_kept():
    law = laws.PARAMETRIC
    feats = law.features(degenerate_columns())
    theta = np.array([[0.0, 0.0, feats.log_y.min() + np.log(0.5), 0.3, 0.3]])
    snapped, flags = bounds.snap(law, theta, feats, law.bounds(feats))
    assert not flags.any() and np.array_equal(snapped, theta)


def test_degenerate_fit_reports_the_bound_on_every_host():
    lf = fit_law("parametric", degenerate_columns(), frontier=False, n_boot=100, seed=0)
    assert lf.params["alpha"] == 0.0 and lf.params["A"] == 0.0
    assert lf.ci95()["alpha"] == [0.0, 0.0]
    at = lf.report()["at_bound"]
    assert at["alpha"]["side"] == "lower" and at["alpha"]["estimate"] and at["alpha"]["bound"] == 0.0
    reference = {k: list(v) for k, v in lf.ci95().items()}
    j, ja = (laws.PARAMETRIC.internal.index(k) for k in ("alpha", "a"))
    for value in HOST_VALUES:  # another host: the optimiser stops this far inside the bounds
        other = fit_law("parametric", degenerate_columns(), frontier=False, n_boot=100, seed=0)
        for theta, flags in ((other.fit.theta[None], other.flags), (other.boot_theta, other.boot_flags)):
            at = flags[:, j] == -1
            theta[at, j] += value
            theta[at & (flags[:, ja] == -1), ja] = np.log(value)  # a vanishing term instead of none
        other.apply_boundary_rule()
        assert {k: list(v) for k, v in other.ci95().items()} == reference
        assert other.params["alpha"] == 0.0
        beta = other.boot_params()["beta"]
        a = beta / (other.boot_params()["alpha"] + beta)  # the N* exponent: exactly 1 on every host
        assert np.all(a[np.isfinite(a)] == 1.0)


def test_interior_fit_is_untouched():
    rng = np.random.default_rng(1)
    n = np.exp(rng.uniform(np.log(1e5), np.log(1e8), 60))
    d = np.exp(rng.uniform(np.log(1e6), np.log(1e9), 60))
    loss = (0.5 + 40 / n**0.3 + 300 / d**0.35) * np.exp(rng.normal(0, 0.01, 60))
    lf = fit_law("parametric", {"params": n, "examples": d, "compute": 6 * n * d, "loss": loss}, frontier=False)
    assert lf.report()["at_bound"] == {}
    assert lf.params["alpha"] == pytest.approx(0.3, rel=0.1)
