"""Loading run records: status filtering, counting, LR selection, CSV aliases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scaling.analysis import records, synthetic
from scaling.errors import UserError


def test_study_tree_is_walked_and_bad_runs_counted(tmp_path):
    synthetic.write_study(tmp_path / "deep" / "er", sizes=2, epochs=(1, 2))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "result.json").write_text("{not json")
    t = records.load([tmp_path])
    # 2 families x 2 sizes x 2 epochs x 2 LRs done; per family one diverged, one failed
    assert len(t) == 16
    assert t.excluded == {"status diverged": 2, "status failed": 2, "unreadable result.json": 1}
    t, x = records.select_x(t, None)
    assert x == "accelerator_hours"
    np.testing.assert_array_equal(t.columns["compute"], t.columns["accelerator_hours"])
    np.testing.assert_array_equal(t.columns["examples"], t.columns["examples_seen"])
    best = records.best_per_cell(t)
    assert len(best) == 8 and best.lr_duplicates == 8
    assert set(best.columns["lr"]) == {1e-3}  # the detuned LR (worse loss) is never kept
    for fam, model, ep in zip(best.columns["family"], best.columns["model"], best.columns["epochs"]):
        same = (t.columns["model"] == model) & (t.columns["epochs"] == ep) & (t.columns["family"] == fam)
        assert best.columns["loss"][(best.columns["model"] == model) & (best.columns["epochs"] == ep)][0] == t.columns["loss"][same].min()


def test_csv_aliases_and_missing_x(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("compute,loss,params,tokens,status\n1,3,10,100,done\n2,2.5,10,200,\n4,,10,400,diverged\n")
    t = records.load([p])
    assert len(t) == 2 and t.excluded == {"status diverged": 1}  # a failed row says so in 'status'
    assert t.columns["examples"].tolist() == [100.0, 200.0]
    assert t.columns["source"].tolist() == [f"{p} line 2", f"{p} line 3"]
    bad = tmp_path / "bad.csv"
    bad.write_text("compute,loss\n1,3\n4,0\n")  # a zero loss in a done row is an error, not a silent drop
    with pytest.raises(UserError, match="bad.csv line 3: loss is '0'"):
        records.load([bad])
    with pytest.raises(UserError, match="no numeric column 'train_flops'"):
        records.select_x(t, "train_flops")


def test_result_json_fields_are_kept_for_any_x(tmp_path):
    synthetic.write_study(tmp_path, sizes=2, epochs=(1,))
    t, x = records.select_x(records.load([tmp_path]), "train_flops")
    rec = json.loads(next(tmp_path.rglob("m0-e1-lr0/result.json")).read_text())
    assert rec["train_flops"] in t.columns["compute"]
