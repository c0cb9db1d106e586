"""Learning-curve extrapolation on public vision curves: forms, selection and calibrated intervals.

Data: tests/data/revisiting_vision (72 image-classification few-shot error curves of
Alabdulmohsin et al. 2022; source and licence in its README). Each curve is fitted on
its "training" part and predicts its held-out later points (1.7-2.2x further in
examples seen). To keep the suite cheap the tests use every 4th curve (18 curves, a
fixed subset); the numbers over all 72 are in the analysis README.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scaling.analysis import curves, intervals

DATA = Path(__file__).parent / "data" / "revisiting_vision" / "curves.csv"


@pytest.fixture(scope="module")
def subset():
    allc = curves.load_csv(DATA)
    assert len(allc) == 72
    return dict(list(allc.items())[::4])


def test_forms_reproduce_known_curves():
    x = np.logspace(6, 9, 40)
    m4 = np.array([np.log(7000.0), 0.5, 1.0, 0.2, 1.0])  # error 0.90 -> 0.345 over three decades
    y = curves._m4_predict(m4, x)
    lhs = (y - 0.2) / (1.0 - y)
    assert np.allclose(lhs, 7000.0 * x**-0.5, rtol=1e-9)  # the root solves the M4 equation
    f = curves.fit_curve("m4", x, y)
    assert np.allclose(f.predict(x), y, rtol=1e-3)
    bn = np.array([0.05, np.log(3.0), 0.1, 0.3, np.log(1e7), 0.0])
    yb = curves._broken_predict(bn, x)
    assert np.allclose(curves.fit_curve("broken", x, yb).predict(x), yb, rtol=1e-3)
    # the broken power law's exponent moves from c0 to c0 + c1 across the break
    wide = np.logspace(3, 12, 50)
    slope = np.diff(np.log(curves._broken_predict(bn, wide) - 0.05)) / np.diff(np.log(wide))
    assert slope[0] == pytest.approx(-0.1, abs=0.02) and slope[-1] == pytest.approx(-0.4, abs=0.02)


def test_selection_rejects_the_saturating_law_on_an_m4_curve():
    x = np.logspace(6, 9, 40)
    rng = np.random.default_rng(0)
    y = curves._m4_predict(np.array([np.log(7000.0), 0.5, 1.0, 0.2, 1.0]), x) * np.exp(rng.normal(0, 0.002, 40))
    best, errs = curves.select(x, y)
    assert errs["m4"] < 0.1 * errs["saturating"], errs  # the sigmoid in log x is not a saturating power law
    assert best != "saturating"


def test_misspecification_term_grows_with_the_extrapolation():
    s = intervals.misspecification_sd(0.02, 1.5, [1.0, 1.5, 1.5**2])
    assert s == pytest.approx([0.02, 0.02, 0.04])
    lo, hi = intervals.calibrated(np.log([1.0]), np.log([[0.99], [1.01]]), 0.02, 1.5, [1.5**2])
    assert lo[0] < np.exp(-1.96 * 0.04) + 1e-9 and hi[0] > np.exp(1.96 * 0.04) - 1e-9


def test_calibrated_intervals_cover_held_out_points_where_the_bootstrap_does_not(subset):
    ev = curves.evaluate(subset, "saturating", n_boot=50)
    cov_b, cov_c = np.mean(ev["coverage_bootstrap"]), np.mean(ev["coverage_calibrated"])
    print(f"18 curves, saturating law: coverage bootstrap {cov_b:.3f}, calibrated {cov_c:.3f}, "
          f"median relative error {np.median(ev['median_rel_error']):.4f}")
    assert cov_b < 0.6  # the bootstrap over points ignores misspecification and correlated residuals
    assert cov_c >= 0.8


def test_predict_interval_includes_the_extrapolation_error(tmp_path, capsys):
    """--predict: the loss interval is the bootstrap band widened by the law's own back-test error."""
    import json

    from scaling import fit as fit_cli
    from scaling.analysis import synthetic

    study = synthetic.write_study(tmp_path, sizes=4, epochs=(1, 2, 4, 8), model_offset=0.02)
    assert fit_cli.main([str(study), "--json", "--law", "saturating", "--bootstrap", "30", "--predict", "30"]) == 0
    for g in json.loads(capsys.readouterr().out)["groups"].values():
        loss = g["prediction"]["loss"]
        (lo, hi), (blo, bhi) = loss["ci95"], loss["ci95_bootstrap"]
        assert lo <= blo <= loss["value"] <= bhi <= hi
        assert hi / lo > bhi / blo  # strictly wider: the back-test error is not zero
