"""Runs to cells (scaling.analysis.cells): every design column keys a cell, seeds average, lr trials keep the best."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scaling.analysis import records, synthetic
from scaling import fit as fit_cli


def _cells(tmp_path, text: str):
    p = tmp_path / "runs.csv"
    p.write_text(text)
    table, _ = records.select_x(records.load([p]), None)
    return records.best_per_cell(table)


def test_runs_sharing_params_and_epochs_but_not_data_are_distinct_cells(tmp_path):
    """Issue 22: with epochs and no model column these were dropped as 'lr trials'."""
    t = _cells(tmp_path, (
        "compute,loss,params,epochs,examples\n"
        "1e12,2.0,1e6,1,45000\n"
        "2e12,1.9,1e6,1,90000\n"  # same params and epochs, twice the data set
        "4e12,1.8,1e6,1,180000\n"
    ))
    assert len(t) == 3 and t.lr_duplicates == 0
    assert sorted(t.columns["loss"]) == [1.8, 1.9, 2.0]


def test_unique_examples_distinguish_cells(tmp_path):
    t = _cells(tmp_path, (
        "compute,loss,params,examples,unique_examples,lr\n"
        "1e12,2.0,1e6,90000,90000,0.1\n"
        "1e12,2.1,1e6,90000,45000,0.1\n"  # the same examples seen, repeated data: another cell
        "1e12,2.3,1e6,90000,45000,0.2\n"  # its lr sibling, worse
    ))
    assert len(t) == 2 and t.lr_duplicates == 1
    assert sorted(t.columns["loss"]) == [2.0, 2.1]


def test_true_lr_siblings_still_collapse_to_the_best(tmp_path):
    t = _cells(tmp_path, (
        "compute,loss,params,epochs,examples,lr\n"
        "1e12,2.0,1e6,1,45000,0.1\n"
        "1.1e12,1.7,1e6,1,45000,0.2\n"
        "0.9e12,2.4,1e6,1,45000,0.4\n"
    ))
    assert len(t) == 1 and t.lr_duplicates == 2
    assert t.columns["loss"][0] == 1.7 and t.columns["lr"][0] == 0.2
    assert t.columns["n_seeds"][0] == 1 and np.isnan(t.columns["loss_log_var"][0])


def test_two_seeds_of_one_cell_become_one_point_with_a_variance(tmp_path):
    """Issue 30: seeds were collapsed by keeping the lowest loss."""
    t = _cells(tmp_path, (
        "compute,loss,params,epochs,lr,seed\n"
        "1e12,2.0,1e6,1,0.1,0\n"
        "1.2e12,2.2,1e6,1,0.1,1\n"
        "1e12,1.9,1e6,1,0.2,0\n"  # the other lr: mean of log loss exp(mean(log [1.9, 2.0])) is lower
        "1e12,2.0,1e6,1,0.2,1\n"
    ))
    assert len(t) == 1 and t.lr_duplicates == 2 and t.replicates == 1
    assert t.columns["lr"][0] == 0.2
    assert t.columns["loss"][0] == pytest.approx(np.sqrt(1.9 * 2.0))  # not the minimum 1.9
    assert t.columns["n_seeds"][0] == 2
    assert t.columns["loss_log_var"][0] == pytest.approx(np.var(np.log([1.9, 2.0]), ddof=1))
    # the lr whose seed average is best wins, even where one of its seeds is not the lowest run
    t2 = _cells(tmp_path, (
        "compute,loss,params,lr,seed\n"
        "1,1.80,1e6,0.1,0\n"
        "1,2.60,1e6,0.1,1\n"
        "1,1.95,1e6,0.2,0\n"
        "1,2.00,1e6,0.2,1\n"
    ))
    assert t2.columns["lr"][0] == 0.2 and t2.columns["loss"][0] == pytest.approx(np.sqrt(1.95 * 2.0))


def test_seeds_without_an_lr_column_average_and_unlabelled_rows_are_lr_trials(tmp_path):
    seeds = _cells(tmp_path, "compute,loss,params,seed\n1,2.0,1e6,0\n1,2.2,1e6,1\n")
    assert len(seeds) == 1 and seeds.replicates == 1 and seeds.lr_duplicates == 0
    assert seeds.columns["loss"][0] == pytest.approx(np.sqrt(2.0 * 2.2))
    trials = _cells(tmp_path, "compute,loss,params\n1,2.0,1e6\n1,2.2,1e6\n")
    assert len(trials) == 1 and trials.lr_duplicates == 1 and trials.columns["loss"][0] == 2.0


def test_study_records_with_two_seeds_are_averaged_and_reported(tmp_path, capsys):
    synthetic.write_study(tmp_path, sizes=3, epochs=(1, 2, 4))
    for path in list(tmp_path.rglob("m0-e1-lr0/result.json")):  # a second seed of one cell
        rec = json.loads(path.read_text())
        rec["seed"], rec["val_loss"] = 1, rec["val_loss"] * 1.02
        seed_dir = path.parent.parent / "m0-e1-lr0-s1"
        seed_dir.mkdir()
        (seed_dir / "result.json").write_text(json.dumps(rec))
    assert fit_cli.main([str(tmp_path), "--json", "--bootstrap", "0"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["seeds_averaged"]["cells_with_replicates"] == 2  # one per family
    assert doc["seeds_averaged"]["median_log_loss_std"] == pytest.approx(np.log(1.02) / np.sqrt(2), rel=1e-6)
    assert all(g["n_points"] == 9 for g in doc["groups"].values())
    assert doc["lr_trials_dropped"] == 18  # 9 cells x 2 families, the detuned lr of each
