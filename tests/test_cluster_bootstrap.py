"""The bootstrap unit: models when noise is shared within a model, runs when it is not.

Design (deterministic: data seeds 1000..1099, bootstrap seeds 0..99): the toolkit's
generator (scaling.analysis.synthetic.draw_cells, NFNet-like law, 6 sizes x 7 epoch
budgets, 1% independent noise per run) with and without a 2% log-normal offset
shared by all runs of a model; 100 replications, 100 resamples each, the unit
chosen by scaling.analysis.lawfit.resampling_unit as ``python -m scaling.fit``
does by default. Coverage of a nominal 95% interval must lie in [0.90, 0.99]:
for a true coverage of 0.95 the binomial standard error at 100 replications is
0.022, and the seeds are fixed, so a host can change the count only where an
interval ends within rounding of the truth.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from scaling import fit as fit_cli
from scaling.analysis import bootstrap, synthetic
from scaling.analysis.lawfit import fit_law, resampling_unit

FAM = synthetic.FAMILIES["nfnet"]
TRUE = {"a": FAM["beta"] / (FAM["alpha"] + FAM["beta"]), "alpha": FAM["alpha"], "beta": FAM["beta"]}
REPS, N_BOOT = 100, 100


def _coverage(model_offset: float, unit: str, reps: int = REPS) -> tuple[dict[str, float], int]:
    """Coverage per parameter, and in how many replications models were resampled."""
    hits, by_model = dict.fromkeys(TRUE, 0), 0
    for r in range(reps):
        cols = synthetic.draw_cells(FAM, np.random.default_rng(1000 + r), noise=0.01, model_offset=model_offset)
        clusters = resampling_unit(cols, cols["model"])[0] if unit == "auto" else None
        by_model += clusters is not None
        lf = fit_law("parametric", cols, frontier=False, n_boot=N_BOOT, seed=r, clusters=clusters)
        bp = lf.boot_params()
        draws = {"a": bp["beta"] / (bp["alpha"] + bp["beta"]), "alpha": bp["alpha"], "beta": bp["beta"]}
        for k, v in draws.items():
            lo, hi = bootstrap.percentile_ci(v)
            hits[k] += lo <= TRUE[k] <= hi
    return {k: h / reps for k, h in hits.items()}, by_model


def test_cluster_counts_resample_whole_models():
    clusters = np.array(["m0"] * 3 + ["m1"] * 2 + ["m2"] * 4)
    counts = bootstrap.cluster_counts(clusters, 500, seed=0)
    for c in np.unique(clusters):
        block = counts[:, clusters == c]
        assert np.all(block == block[:, :1])  # every run of a model is drawn as often as its model
    per_model = counts[:, [0, 3, 5]]
    assert np.allclose(per_model.sum(1), 3)  # K - 1 = 2 draws of weight 3/2: the data's total weight
    assert 0.35 < np.mean(per_model == 0) < 0.55  # a model is left out with probability (2/3)^2 = 0.44


def test_offset_test_separates_shared_from_independent_noise():
    """Raw noise (no law absorbs between-model degrees of freedom): 200 seeded draws of 8 models x 6 runs."""
    clusters = np.repeat(np.arange(8), 6)
    false_alarms = detected = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        indep = rng.normal(0, 0.01, 48)
        shared = indep + rng.normal(0, 0.02, 8)[clusters]
        false_alarms += bootstrap.model_offset_test(indep, clusters, absorbed=0)[1] < 0.05
        detected += bootstrap.model_offset_test(shared, clusters, absorbed=0)[1] < 0.05
    assert 0.02 <= false_alarms / 200 <= 0.09  # a 5% test (binomial sd 0.015)
    assert detected / 200 >= 0.95


@pytest.mark.parametrize("model_offset", [0.02, pytest.param(0.0, marks=pytest.mark.slow)])
def test_parametric_coverage_with_and_without_a_model_shared_offset(model_offset):
    cov, by_model = _coverage(model_offset, "auto")
    print(f"offset {model_offset}: coverage of nominal 95% intervals {cov}; models resampled in {by_model}/{REPS}")
    assert all(0.90 <= c <= 0.99 for c in cov.values()), cov
    if model_offset:
        assert by_model >= 90  # the shared offset is detected
    else:
        assert by_model <= 20  # and not imagined (nominally 5% of replications)


@pytest.mark.slow
def test_the_bootstrap_over_runs_under_covers_a_model_shared_offset():
    """Why runs are not always the unit: resampling runs treats the shared offset as independent noise."""
    cov, _ = _coverage(0.02, "runs", reps=50)
    print("offset 0.02: coverage, bootstrap over runs:", cov)
    assert cov["alpha"] < 0.85, cov


def test_fit_reports_the_bootstrap_unit(tmp_path, capsys):
    study = synthetic.write_study(tmp_path, sizes=4, epochs=(1, 2, 4, 8), model_offset=0.02)
    assert fit_cli.main([str(study), "--json", "--bootstrap", "20"]) == 0
    g = json.loads(capsys.readouterr().out)["groups"]["vit"]
    # the offset is detected, but 4 models are too few to resample: runs, with a warning
    assert g["bootstrap_resamples"].startswith("runs, although residuals cluster by model")
    assert any("4 models are too few to resample" in w for w in g["warnings"])
    assert fit_cli.main([str(study), "--json", "--bootstrap", "20", "--resample", "models"]) == 0
    g = json.loads(capsys.readouterr().out)["groups"]["vit"]
    assert g["bootstrap_resamples"] == "models (4 clusters, by 'model')"
    assert any("resamples 4 models" in w for w in g["warnings"])  # forced: rough intervals
    assert fit_cli.main([str(study), "--json", "--bootstrap", "20", "--resample", "runs"]) == 0
    g = json.loads(capsys.readouterr().out)["groups"]["vit"]
    assert g["bootstrap_resamples"] == "runs"
    assert not any("resamples" in w for w in g["warnings"])
    assert fit_cli.main([str(study), "--resample", "seeds"]) == 2
    err = capsys.readouterr().err
    assert "unknown --resample 'seeds'" in err and len(err.strip().splitlines()) == 1


def test_family_comparison_tests_shared_loss_exponents():
    """The nested F test beside the compute multiplier: it rejects different slopes and accepts equal ones."""
    from scaling.analysis import compare
    from scaling.analysis.lawfit import fit_law as _fit
    from scaling.analysis.study import GroupResult

    def group(name, slope, seed):
        rng = np.random.default_rng(seed)
        c = np.logspace(0, 3, 12)
        cols = {"compute": c, "loss": 3.0 * c**slope * np.exp(rng.normal(0, 0.005, 12))}
        return GroupResult(name, cols, {}, frontier_law=_fit("power", cols, frontier=True))

    diff = compare.shared_exponent_test(group("a", -0.10, 0), group("b", -0.20, 1))
    same = compare.shared_exponent_test(group("a", -0.10, 2), group("b", -0.10, 3))
    assert diff["p_value"] < 1e-6 and not diff["same_exponent"]
    assert diff["slopes"][0] == pytest.approx(-0.10, abs=0.01) and diff["slopes"][1] == pytest.approx(-0.20, abs=0.01)
    assert same["same_exponent"] and same["dof"] == [1, 20]
