"""``python -m scaling.fit``: JSON contract, exclusions, plots, and one-line user errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis import synthetic
from scaling import fit as fit_cli

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "scaling.fit", *map(str, args)],
        capture_output=True, text=True, cwd=cwd or ROOT, timeout=120,
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return synthetic.write_study(tmp_path_factory.mktemp("study"), seed=0)


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_json_document_follows_the_contract(study, capsys):
    assert fit_cli.main([str(study), "--json", "--bootstrap", "50"]) == 0
    doc = json.loads(capsys.readouterr().out)  # exactly one JSON document on stdout
    assert set(doc["groups"]) == {"nfnet", "vit"}
    names = {"power": {"a", "b"}, "saturating": {"E", "A", "alpha"}}
    for g in doc["groups"].values():
        assert g["n_points"] == 42  # 6 sizes x 7 epoch budgets, best LR kept
        law = g["law"]
        assert set(law["params"]) == names[law["form"]] == set(law["ci95"])
        assert isinstance(law["extrapolation_error"], float)
        for lo_hi in law["ci95"].values():
            assert lo_hi[0] <= lo_hi[1]
        assert set(g["optimal_params"]) >= {"exponent", "ci95"}
        assert set(g["optimal_epochs"]) >= {"exponent", "ci95"}
        assert law["bootstrap"]["resamples"] == 50
    # diverged/failed runs and the detuned LR trials are excluded and counted
    assert doc["excluded"] == {"status diverged": 2, "status failed": 2}
    assert doc["lr_trials_dropped"] == 84
    assert "nfnet_vs_vit" in doc["comparison"]


def test_parametric_law_recovers_the_generating_exponents(study, capsys):
    assert fit_cli.main([str(study), "--json", "--law", "parametric", "--bootstrap", "100", "--x", "train_flops"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for fam, g in doc["groups"].items():
        truth = synthetic.FAMILIES[fam]
        assert g["law"]["form"] == "parametric"
        assert set(g["law"]["params"]) == {"E", "A", "B", "alpha", "beta"}
        a = truth["beta"] / (truth["alpha"] + truth["beta"])
        lo, hi = g["optimal_params"]["ci95"]
        assert lo <= a <= hi, (fam, a, lo, hi)
        # with x = train_flops, k in C = k N D is the records' FLOPs per parameter per example
        assert g["optimal_params"]["k"] == pytest.approx(truth["k"], rel=1e-6)


def test_summary_prediction_warning_and_plots(study, tmp_path):
    out = tmp_path / "plots"
    r = run_cli(study, "--predict", "100", "--out", out, "--format", "png,svg", "--bootstrap", "50")
    assert r.returncode == 0, r.stderr
    assert "excluded runs: 2 status diverged, 2 status failed" in r.stdout
    assert "WARNING: target budget 100" in r.stdout  # > 10x the largest observed compute
    assert "bootstrap: 50 resamples" in r.stdout
    for name in ("loss_vs_compute", "optimal_params", "optimal_epochs", "residuals"):
        for fmt in ("png", "svg"):
            assert (out / f"{name}.{fmt}").stat().st_size > 1000
    assert json.loads((out / "fit.json").read_text())["groups"]


def test_csv_input_with_tokens_alias_and_isoflop(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = []
    for c in np.logspace(15, 19, 5):
        for f in np.logspace(-1, 1, 7):
            n = 0.3 * (c / 6) ** 0.5 * f
            d = c / (6 * n)
            loss = (0.5 + 400 / n**0.34 + 400 / d**0.34) * np.exp(rng.normal(0, 0.002))
            rows.append({"compute": c, "loss": loss, "params": n, "tokens": d})
    path = write_csv(tmp_path / "runs.csv", rows)
    assert fit_cli.main([str(path), "--json", "--law", "isoflop", "--bootstrap", "50"]) == 0
    doc = json.loads(capsys.readouterr().out)
    g = doc["groups"]["all"]
    assert g["law"]["form"] == "isoflop" and g["law"]["levels"] == 5
    assert g["optimal_params"]["exponent"] == pytest.approx(0.5, abs=0.02)  # alpha = beta
    lo, hi = g["optimal_params"]["ci95"]
    assert lo <= 0.5 <= hi


@pytest.mark.parametrize(
    "case, expect",
    [
        ("too_few", "at least 3"),
        ("no_loss_column", "no 'loss' column"),
        ("unknown_law", "unknown law 'cubic'"),
        ("missing_path", "no such file or directory"),
        ("parametric_without_params", "needs 'params' and 'examples'"),
    ],
)
def test_user_errors_are_one_line_exit_2(tmp_path, case, expect):
    good = write_csv(tmp_path / "good.csv", [{"compute": 10.0**i, "loss": 3.0 / (i + 1)} for i in range(6)])
    args = {
        "too_few": [write_csv(tmp_path / "two.csv", [{"compute": 1, "loss": 2}, {"compute": 2, "loss": 1}])],
        "no_loss_column": [write_csv(tmp_path / "bad.csv", [{"compute": 1, "acc": 0.5}])],
        "unknown_law": [good, "--law", "cubic"],
        "missing_path": [tmp_path / "nope"],
        "parametric_without_params": [good, "--law", "parametric"],
    }[case]
    r = run_cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and expect in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_failed_runs_only_is_a_user_error(tmp_path):
    synthetic._write(tmp_path / "a", "vit", "vit-s0", 1e5, 1, 45000, 1e-3, float("nan"), 1e12, 1e-4, "diverged")
    r = run_cli(tmp_path)
    assert r.returncode == 2 and "0 usable run(s)" in r.stderr


def test_plot_axes_state_units_and_flop_convention(study):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis import plots, records, study as study_mod

    table, x = records.select_x(records.load([study]), "train_flops")
    _, results = study_mod.analyse(records.best_per_cell(table), n_boot=20)
    fig, ax = plt.subplots()
    plots.loss_vs_compute(results, x, ax=ax)
    assert ax.get_xlabel() == "training FLOPs (2×MAC, fwd+bwd)"
    assert "loss" in ax.get_ylabel()
    assert ax.get_xscale() == ax.get_yscale() == "log"
    # one fitted-law line per family, each with its 95% band
    labels = [line.get_label() for line in ax.get_lines()]
    assert sum(lbl.startswith(("nfnet: L =", "vit: L =")) for lbl in labels) == 2
    assert len(ax.collections) >= 2 + 2  # 2 scatter clouds + 2 bands
    plt.close(fig)
