"""The design tool (scaling.sweep.design) and adaptive placement (scaling.sweep.placement) on a synthetic law.

Pure Python, no training: a fake calibration prices an 8-size x 7-epoch-budget grid, and
``design.simulate`` runs the planner's trials on the toolkit's synthetic NFNet law with 1% seed
noise. Everything is seeded; the fits are the toolkit's own (scaling.analysis).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from scaling.sweep import costmodel, design, placement, planner
from scaling.sweep.study import StudyConfig

SIZES = [f"m{i}" for i in range(8)]  # 1e5 .. 1.28e7 parameters, factor 2
EPOCHS = [0.5, 1, 2, 4, 8, 16, 32]
TRAIN = 45_000.0


def calibration() -> dict:
    return {"data": {"train_size": 45000, "val_size": 5000, "test_size": 10000, "device_count": 1,
                     "setup_seconds": 1.0, "startup_seconds": 2.0},
            "models": {m: {"compile_seconds": 2.0, "step_seconds": 0.005 * 2**i, "eval_seconds_per_example": 1e-6 * 2**i,
                           "flops_per_example": 1e8 * 2**i, "params": 1e5 * 2**i} for i, m in enumerate(SIZES)}}


def context(placement_: str = "band") -> planner.Context:
    cfg = StudyConfig(families=["nfnet"], ladders={"nfnet": SIZES}, epochs=EPOCHS, lr_first_multipliers=[1.0, 0.5],
                      placement=placement_, fill_replicates=False).validate()
    cal = calibration()
    cm = costmodel.CostModel(cal, cfg.batch_size)
    return planner.Context(cfg, {"nfnet": SIZES}, {"nfnet": 0.1}, cm.trial_hours, cm.train_flops, lambda i: None,
                           params={m: v["params"] for m, v in cal["models"].items()})


def setting(lr_opt: float = 0.1) -> design.Setting:
    return design.Setting({"nfnet": design.prior_law("nfnet")}, {"nfnet": "prior"}, 0.01, "default", {"nfnet": lr_opt})


def realized_width(results: dict, tmp_path, tag: str) -> float:
    """The width ``python -m scaling.fit DIR --law parametric`` reports for simulated records written as a study."""
    from scaling.analysis import records, study

    for tid, r in results.items():
        d = tmp_path / tag / tid
        d.mkdir(parents=True)
        rec = {k: v for k, v in r.items() if k != "trial"}
        rec.update(dataset="synthetic-from-known-law", batch_size=128, image_size=32, train_size=TRAIN)
        (d / "result.json").write_text(json.dumps(rec))
    table, _ = records.select_x(records.load([tmp_path / tag]), None)
    doc, _ = study.analyse(records.best_per_cell(table), law="parametric", n_boot=100)
    lo, hi = doc["groups"]["nfnet"]["optimal_params"]["by_method"]["parametric"]["ci95"]
    return hi - lo


def test_predicted_widths_shrink_with_budget_and_match_realized_studies(tmp_path):
    ctx, st = context(), setting()
    small = design.predict(ctx, 0.5, 0.0, st, replicates=4, n_boot=100, seed=1)["families"]["nfnet"]
    large = design.predict(ctx, 2.0, 0.0, st, replicates=4, n_boot=100, seed=1)["families"]["nfnet"]
    print(f"predicted width at 0.5 h {small['n_star_width']:.3f} +- {small['mc_error']:.3f}; "
          f"at 2 h {large['n_star_width']:.3f} +- {large['mc_error']:.3f}")
    assert large["n_star_width"] < small["n_star_width"]
    assert large["epochs_star_width"] == large["n_star_width"]  # parametric: epochs* exponent is 1 - a
    # Realized: independent simulated studies (other seeds), written as records and fitted as a user would.
    for budget, pred in ((0.5, small), (2.0, large)):
        widths = [realized_width(design.simulate(ctx, budget, 0.0, st, np.random.default_rng([99, r]), TRAIN),
                                 tmp_path, f"b{budget}-r{r}") for r in range(3)]
        real = float(np.median(widths))
        print(f"budget {budget}: predicted {pred['n_star_width']:.3f}, realized {widths} (median {real:.3f})")
        assert 1 / 1.5 <= pred["n_star_width"] / real <= 1.5


def test_target_width_is_monotone_and_consistent():
    ctx, st = context(), setting()
    seen: dict = {}

    def evaluate(b: float) -> dict:
        if b not in seen:
            seen[b] = design.predict(ctx, b, 0.0, st, replicates=2, n_boot=60, seed=3)
        return seen[b]

    loose = design.budget_for_width(0.3, evaluate, 0.25)
    tight = design.budget_for_width(0.15, evaluate, 0.25)
    print("evaluated (budget, width):", tight["evaluated"])
    assert loose["reachable"] and tight["reachable"]
    assert tight["budget"] >= loose["budget"]
    for r in (loose, tight):  # the reported budget gives the width; half of it does not
        assert evaluate(r["budget"])["worst_width"] <= r["target"]
        if r["budget"] > 0.25:
            assert evaluate(r["budget"] / 2)["worst_width"] > r["target"]


def test_adaptive_gives_narrower_allocation_intervals_than_band_at_the_same_budget():
    st = setting()
    out = {}
    for pl in ("band", "adaptive"):
        ctx = context(pl)
        p = design.predict(ctx, 0.5, 0.0, st, replicates=4, n_boot=100, seed=5)
        out[pl] = p["families"]["nfnet"]
        for r in range(2):  # budget-adherent: the simulated spend never passes the budget
            res = design.simulate(ctx, 0.5, 0.0, st, np.random.default_rng([5, r]), TRAIN)
            assert sum(v["accelerator_hours"] for v in res.values()) <= 0.5 + 1e-12
    print({k: (round(v["n_star_width"], 3), round(v["mc_error"], 3), v["cells"]) for k, v in out.items()})
    assert out["adaptive"]["n_star_width"] < out["band"]["n_star_width"]


def test_adaptive_plan_is_a_pure_function_of_the_records_and_extends_the_lr_grid():
    ctx = context("adaptive")
    st = setting(lr_opt=0.8)  # the optimum lies above every lr of the first wave's grid
    res = design.simulate(ctx, 0.5, 0.0, st, np.random.default_rng(0), TRAIN)
    ups = {i: r for i, r in res.items() if "-lrup" in i}
    assert ups, "no lr trial above the grid's top edge"
    for i, r in ups.items():  # each one doubles the best lr tried before at its epoch budget
        same = [v["lr"] for k, v in res.items() if v["epochs"] == r["epochs"] and v["role"] in ("tune", "adapt-tune")
                and k != i and v["model"] == r["model"]]
        assert r["lr"] == pytest.approx(2 * max(x for x in same if x < r["lr"]))
    # Resuming: the plan from the same records is the same plan, and the spend stays within the budget.
    spent = sum(r["accelerator_hours"] for r in res.values())
    adapt = sum(r["accelerator_hours"] for r in res.values() if r["role"] in ("adapt", "adapt-tune"))
    c = planner.Context(**{**ctx.__dict__, "future_of": lambda i: 0.0 if i in res else None, "results": res,
                           "adapt_hours": adapt})
    a = placement.plan_study(c, 0.5, spent, [], started=True)
    b = placement.plan_study(c, 0.5, spent, [], started=True)
    assert [t.id for t in a.trials] == [t.id for t in b.trials]
    assert a.predicted_total <= 0.5 + 1e-12
    assert a.fits["nfnet"]["width"] > 0 and "n_star_exponent" in a.fits["nfnet"]


def test_design_lines_say_what_to_do():
    ctx, st = context(), setting()
    pred = design.predict(ctx, 0.25, 0.0, st, replicates=2, n_boot=40)
    first, second = design.lines(pred, st, {"target": 0.2, "reachable": True, "budget": 4.0, "width": 0.19},
                                 {"name": "h100", "peak": 9.9e14, "mfu": 0.01, "hours": 0.1}, "cpu")
    assert "95% intervals" in first and "nfnet" in first and "seed noise 0.01" in first
    assert "about 4 h on this cpu" in second and "h100" in second
    assert "\n" not in first + second
