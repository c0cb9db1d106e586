"""``python -m scaling.fit``: JSON contract, exclusions, plots, and one-line user errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaling.analysis import synthetic
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

    from scaling.analysis import plots, records, study as study_mod

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


# ---- bad inputs: one line, exit 2, nothing written (issue 20) ----------------------------

GOOD_ROWS = "compute,loss,params\n1,3,10\n2,2.5,20\n4,2.2,40\n8,2,80\n"


def _bad_inputs(root: Path) -> dict[str, Path]:
    """Files a careless user might point the fit at: each a different kind of wrong."""
    files = {
        "good": GOOD_ROWS,
        "nan_compute": "compute,loss\n1,3\nnan,2.5\n4,2\n",
        "negative_compute": "compute,loss\n1,3\n-2,2.5\n4,2\n",
        "zero_compute": "compute,loss\n1,3\n0,2.5\n4,2\n",
        "empty_compute": "compute,loss\n1,3\n,2.5\n4,2\n",
        "nan_loss": "compute,loss\n1,3\n2,NaN\n4,2\n",
        "inf_loss": "compute,loss\n1,3\n2,inf\n4,2\n",
        "negative_loss": "compute,loss\n1,3\n2,-2.5\n4,2\n",
        "zero_loss": "compute,loss\n1,3\n2,0\n4,2\n",
        "empty_loss": "compute,loss\n1,3\n2,\n4,2\n",
        "text_loss": "compute,loss\n1,3\n2,two\n4,2\n",
        "text_compute": "compute,loss\n1,3\n2h,2.5\n4,2\n",
        "text_params": "compute,loss,params\n1,3,10\n2,2.5,1M\n4,2,40\n",
        "negative_params": "compute,loss,params\n1,3,10\n2,2.5,-20\n4,2,40\n",
        "extra_field": "compute,loss\n1,3\n2,2.5,7\n4,2\n",
        "empty_file": "",
        "header_only": "compute,loss\n",
        "no_loss": "compute,acc\n1,0.5\n2,0.6\n4,0.7\n",
        "two_rows": "compute,loss\n1,3\n2,2.5\n",
        "nul_byte": "compute,loss\n1,3\n2,2\x005\n4,2\n",
    }
    paths = {}
    for name, text in files.items():
        paths[name] = root / f"{name}.csv"
        paths[name].write_text(text)
    paths["binary_csv"] = root / "binary.csv"
    paths["binary_csv"].write_bytes(bytes(range(128, 256)) * 4)
    for name, payload in (("binary_json", bytes(range(128, 256)) * 4), ("list_json", b"[1, 2]"), ("broken_json", b"{")):
        (root / name).mkdir()
        (root / name / "result.json").write_bytes(payload)
        paths[name] = root / name
    (root / "empty_dir").mkdir()
    paths["empty_dir"] = root / "empty_dir"
    paths["a_file"] = root / "a_file"
    paths["a_file"].write_text("not a directory\n")
    return paths


# (arguments with {placeholders} for the files above, a word the message must contain)
BAD_CASES = [
    ("{good} --predict 0", "--predict 0"),
    ("{good} --predict -1", "--predict -1"),
    ("{good} --predict nan", "--predict nan"),
    ("{good} --predict inf", "--predict inf"),
    ("{good} --predict=-inf", "finite positive"),
    ("{good} --predict abc", "invalid float value"),
    ("{good} --out {a_file}", "is not a directory"),
    ("{good} --out {a_file}/sub", "is not a directory"),
    ("{good} --json --out {a_file}", "is not a directory"),
    ("{binary_csv}", "not a UTF-8 text CSV"),
    ("{binary_json}", "binary_json/result.json is not a readable JSON record"),
    ("{list_json}", "is not a readable JSON record"),
    ("{broken_json}", "is not a readable JSON record"),
    ("{empty_dir}", "no result.json below"),
    ("{nan_compute}", "nan_compute.csv line 3: compute"),
    ("{negative_compute}", "negative_compute.csv line 3: compute"),
    ("{zero_compute}", "zero_compute.csv line 3: compute"),
    ("{empty_compute}", "empty_compute.csv line 3: compute is missing"),
    ("{nan_loss}", "nan_loss.csv line 3: loss"),
    ("{inf_loss}", "inf_loss.csv line 3: loss"),
    ("{negative_loss}", "negative_loss.csv line 3: loss"),
    ("{zero_loss}", "zero_loss.csv line 3: loss"),
    ("{empty_loss}", "empty_loss.csv line 3: loss is missing"),
    ("{text_loss}", "text_loss.csv line 3: column 'loss' holds 'two'"),
    ("{text_compute}", "text_compute.csv line 3: column 'compute' holds '2h'"),
    ("{text_params}", "text_params.csv line 3: column 'params' holds '1M'"),
    ("{negative_params}", "negative_params.csv line 3: params"),
    ("{extra_field}", "extra_field.csv line 3: 3 fields, the header has 2"),
    ("{nul_byte}", "nul_byte.csv line"),
    ("{empty_file}", "no 'loss' column"),
    ("{header_only}", "0 usable run(s)"),
    ("{no_loss}", "no 'loss' column"),
    ("{two_rows}", "at least 3"),
    ("{good} {nan_loss}", "nan_loss.csv line 3"),
    ("{good} --x train_flops", "no numeric column 'train_flops'"),
    ("{good} --group-by arch", "no column 'arch'"),
    ("{good} --law cubic", "unknown law 'cubic'"),
    ("{good} --law parametric", "needs 'params' and 'examples'"),
    ("{good} --format jpg", "unknown plot format 'jpg'"),
    ("{good} --format ,", "unknown plot format"),
    ("{good} --bootstrap -1", "--bootstrap must be >= 0"),
    ("{good} --bootstrap many", "invalid int value"),
    ("{good} --seed x", "invalid int value"),
    ("{good} --no-such-flag", "unrecognized arguments"),
    ("{root}/nope.csv", "no such file or directory"),
    ("", "the following arguments are required"),
]


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("argline, word", BAD_CASES, ids=[c[0] or "no-arguments" for c in BAD_CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, argline, word, capsys):
    paths = {k: str(v) for k, v in _bad_inputs(tmp_path).items()}
    argv = argline.format(root=tmp_path, **paths).split()
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "plots")]  # must not be created either
    before = _snapshot(tmp_path)
    assert fit_cli.main([*argv, "--bootstrap", "0"] if "--bootstrap" not in argv else argv) == 2
    err = capsys.readouterr().err
    assert word in err and len(err.strip().splitlines()) <= 2 and "Traceback" not in err, err
    assert err.startswith("error: ")
    assert _snapshot(tmp_path) == before, "a refused command wrote something"


def test_enough_bad_inputs_are_tried():
    assert len(BAD_CASES) >= 40


@pytest.mark.parametrize("argline, word", [c for c in BAD_CASES if c[0] in (
    "{good} --predict 0", "{binary_csv}", "{binary_json}", "{text_loss}", "{good} --out {a_file}", "{good} --predict abc",
)])
def test_bad_input_through_a_real_process(tmp_path, argline, word):
    paths = {k: str(v) for k, v in _bad_inputs(tmp_path).items()}
    before = _snapshot(tmp_path)
    argv = argline.format(root=tmp_path, **paths).split()
    r = run_cli(*argv, *([] if "--out" in argv else ["--out", tmp_path / "plots"]))
    assert r.returncode == 2 and word in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert r.stdout == "" and _snapshot(tmp_path) == before


def test_unreadable_record_beside_good_ones_is_excluded_and_named(study, tmp_path, capsys):
    import shutil

    tree = tmp_path / "study"
    shutil.copytree(study, tree)
    (tree / "junk").mkdir()
    (tree / "junk" / "result.json").write_bytes(bytes(range(128, 256)))
    assert fit_cli.main([str(tree), "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "1 unreadable result.json" in out and f"unreadable record (excluded): {tree / 'junk' / 'result.json'}" in out


def test_wsd_branches_are_their_own_cells_and_marked_in_the_plot(tmp_path):
    """Records of WSD cooldown branches (``stem.step``, ``config.schedule = wsd``) read like any
    run, are never averaged with cosine runs of the same model and budget, and the
    loss-vs-compute plot marks them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scaling.analysis import plots, records, study as study_mod

    root = synthetic.write_study(tmp_path / "study", seed=0)
    paths = sorted(Path(root).rglob("result.json"))
    for p in paths:
        rec = json.loads(p.read_text())
        rec["config"] = {**(rec.get("config") or {}), "schedule": "cosine"}
        p.write_text(json.dumps(rec))
    twins = []
    base = len(records.best_per_cell(records.select_x(records.load([root]), "train_flops")[0]).columns["loss"])
    done = [p for p in paths if json.loads(p.read_text()).get("status", "done") == "done"]
    for i, p in enumerate(done[: len(done) // 3]):  # a WSD twin of a third of the finished runs, 1% worse
        rec = json.loads(p.read_text())
        rec.update(val_loss=rec["val_loss"] * 1.01, stem={"step": 10 + i, "run": "stem", "root": "stem"})
        rec["config"]["schedule"] = "wsd"
        twin = p.parent.parent / (p.parent.name + "-wsd") / "result.json"
        twin.parent.mkdir()
        twin.write_text(json.dumps(rec))
        twins.append(twin)
    table, x = records.select_x(records.load([root]), "train_flops")
    assert np.sum(table.columns["branch_step"] > 0) == len(twins)
    cells = records.best_per_cell(table)
    twin_cells = {(r["model"], r["epochs"]) for r in (json.loads(t.read_text()) for t in twins)}  # lr trials: best
    assert len(cells.columns["loss"]) == base + len(twin_cells)  # no branch averaged with its cosine twin
    _, results = study_mod.analyse(cells, n_boot=0)
    fig, ax = plt.subplots()
    plots.loss_vs_compute(results, x, ax=ax)
    marked = [c for c in ax.collections if "WSD branches" in str(c.get_label())]
    assert marked and sum(len(c.get_offsets()) for c in marked) == len(twin_cells)  # one marker per branch cell
    plt.close(fig)


REFERENCE = ROOT / "experiments" / "cifar10_reference" / "results"


def test_emit_config_writes_a_runnable_config_of_the_predicted_optimum(tmp_path, capsys):
    """``--predict B --emit-config PATH`` on the committed reference study: a TrainConfig the
    trainer resolves (the nearest trained model, epochs*, the tuner's lr at the nearest
    budget), with the prediction and its honesty (not identified here, and why) beside it."""
    from scaling.config import TrainConfig, resolve

    out = tmp_path / "optimal.json"
    assert fit_cli.main([str(REFERENCE), "--law", "power", "--predict", "0.2", "--family", "nfnet",
                         "--emit-config", str(out)]) == 0
    text = capsys.readouterr().out
    emitted = json.loads(out.read_text())
    pred = emitted["_prediction"]
    cfg = resolve(TrainConfig.from_json(emitted))
    assert cfg.model.startswith("nfnet-") and cfg.epochs == pytest.approx(pred["epochs"]["value"], rel=1e-2)
    assert cfg.steps is None and cfg.init_from is None
    runs = [json.loads(p.read_text()) for p in REFERENCE.rglob("result.json")]
    trained = {r["model"] for r in runs if r.get("family") == "nfnet"}
    assert cfg.model in trained and any(r["model"] == cfg.model and r["config"]["lr"] == cfg.lr for r in runs)
    assert pred["identified"] is False and any("outside the trained sizes" in n for n in pred["notes"])
    assert "NOT IDENTIFIED" in text and f"--config {out}" in text


@pytest.mark.parametrize("argline,word", [
    ("--emit-config {out}", "needs --predict"),
    ("--predict 0.2 --emit-config {out}", "name one with --family"),
    ("--predict 0.2 --family resnet --emit-config {out}", "no family 'resnet'"),
    ("--predict 0.2 --family nfnet --emit-config {dir}", "is a directory"),
])
def test_emit_config_bad_input_is_one_line_exit_2(tmp_path, argline, word):
    out = tmp_path / "x.json"
    r = run_cli(REFERENCE, "--law", "power", *argline.format(out=out, dir=tmp_path).split())
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and word in r.stderr, r.stderr
    assert not out.exists()
