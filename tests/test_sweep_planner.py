"""Planner, cost model and lr rule of the budgeted sweep (pure Python, no training)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from scaling.sweep import costmodel, planner, state
from scaling.sweep import lr as lrrule
from scaling.errors import UserError
from scaling.sweep.study import StudyConfig

LADDER = ["cnn-xs", "cnn-s", "cnn-m", "cnn-l"]


def calibration(step=0.01, compile_s=2.0, startup=3.0, setup=1.0):
    """A fake calibration: each ladder step doubles step time and FLOPs."""
    return {
        "data": {"train_size": 45000, "val_size": 5000, "test_size": 10000, "device_count": 1,
                 "setup_seconds": setup, "startup_seconds": startup},
        "models": {m: {"compile_seconds": compile_s * (1 + i), "step_seconds": step * 2**i,
                       "eval_seconds_per_example": 2e-5 * 2**i, "flops_per_example": 1e7 * 2**i}
                   for i, m in enumerate(LADDER)},
    }


def context(cfg=None, calib=None, future=None):
    cfg = (cfg or StudyConfig(families=["cnn"])).validate()
    cm = costmodel.CostModel(calib or calibration(), cfg.batch_size)
    return planner.Context(cfg, {"cnn": LADDER}, {"cnn": 0.05}, cm.trial_hours, cm.train_flops,
                           future or (lambda i: None)), cm


def test_band_is_diagonal_and_covers_every_row_and_column():
    cells = planner.band_cells(4, 6, 1.0)
    assert {i for i, _ in cells} == set(range(4))
    assert {j for _, j in cells} == set(range(6))
    assert (0, 0) in cells and (3, 5) in cells  # smallest and largest corner: the widest range
    assert (0, 5) not in cells and (3, 0) not in cells  # off-diagonal corners are left out
    assert all(planner.diagonal_distance(i, j, 4, 6) <= 1.0 for i, j in cells)
    # A narrow band still gets every size and every epoch budget.
    thin = planner.band_cells(2, 6, 0.1)
    assert {j for _, j in thin} == set(range(6)) and {i for i, _ in thin} == {0, 1}


def test_cost_model_counts_steps_evals_compile_and_startup():
    calib = calibration()
    cm = costmodel.CostModel(calib, 128)
    steps = math.ceil(0.25 * 45000 / 128)
    # 0.25 epoch < 1 epoch: the trainer only evaluates at the end (val + test).
    evals = 5000 + 10000
    want = 1.0 + 2.0 + steps * 0.01 + evals * 2e-5 + 3.0
    assert cm.trial_hours("cnn-xs", 0.25) == pytest.approx(want / 3600)
    # Longer runs evaluate during training too (at most 4 times, at most once per epoch).
    assert costmodel.intermediate_evals(352 * 8, 352) == 4
    assert costmodel.intermediate_evals(100, 352) == 0


def test_corrections_use_measured_parts():
    cm = costmodel.CostModel(calibration(), 128)
    pred = cm.parts("cnn-s", 1.0)
    finished = [dict(model="cnn-s", epochs=1.0, overhead_seconds=7.0,
                     breakdown_seconds={"compile": pred["compile"], "train": 2 * pred["train"],
                                        "eval": pred["eval"], "other": pred["other"]})]
    fitted = costmodel.fit_corrections(cm, finished)
    assert fitted.ratio("cnn-s", "train") == pytest.approx(2.0)
    assert fitted.ratio("cnn-m", "train") == pytest.approx(2.0)  # pooled for unmeasured models
    assert fitted.startup() == 7.0
    assert fitted.trial_hours("cnn-s", 1.0) > cm.trial_hours("cnn-s", 1.0)


def test_plan_fits_budget_and_grows_with_it():
    ctx, _ = context()
    plans = {b: planner.plan(ctx, b, 0.001, []) for b in (0.05, 0.1, 0.5, 5.0)}
    last_range, last_n = 0.0, 0
    for b, p in plans.items():
        assert p.feasible
        assert p.predicted_total <= 1.0 * b + 1e-12  # fill_fraction (default 1.0)
        flops = [t.train_flops for t in p.trials]
        rng = math.log(max(flops) / min(flops))
        assert rng >= last_range and len(p.trials) >= last_n
        last_range, last_n = rng, len(p.trials)
    big = plans[5.0]
    assert big.extents["cnn"] == [4, 6]
    # Slack is spent: the fill adds cells next to the band while they fit, here the
    # whole grid (24 cells + 1 extra lr trial per epoch budget) or 80% of the target.
    assert big.predicted_total > 0.9 * 1.0 * 5.0


def test_three_sizes_and_three_epochs_when_affordable():
    ctx, _ = context()
    p = planner.plan(ctx, 0.05, 0.0, [])
    sizes = {t.model for t in p.trials}
    epochs = {t.epochs for t in p.trials}
    assert len(sizes) >= 3 and len(epochs) >= 3, p.notes


def test_min_sizes_asks_for_more_sizes_over_more_epochs():
    """A study may demand 4 sizes; the default (3) lets the planner trade sizes for epoch range."""
    default, _ = context()
    four, _ = context(StudyConfig(families=["cnn"], min_sizes=4))
    assert planner.plan(default, 0.09, 0.0, []).extents == {"cnn": [3, 5]}  # the wider compute range
    assert planner.plan(four, 0.09, 0.0, []).extents == {"cnn": [4, 3]}
    with pytest.raises(UserError, match="min_sizes"):
        StudyConfig(families=["cnn"], min_sizes=0).validate()


def test_trial_ids_are_plain_directory_names():
    """ViT names contain "/" (vit-c0/4): a trial id must still be one directory, not two."""
    tid = planner.trial_id("vit-c0/4", 0.125, "lr4x", 0)
    assert tid == "vit-c0_4-e0.125-lr4x-s0"
    paths = state.Paths(Path("/study"))
    assert paths.trial_dir(tid).parent == Path("/study/trials")
    with pytest.raises(ValueError):
        paths.trial_dir("vit-c0/4-e0.125-lr4x-s0")


def test_too_small_budget_reports_minimum():
    ctx, _ = context()
    p = planner.plan(ctx, 0.001, 0.0, [])
    assert not p.feasible
    assert p.minimum_budget > 0.001
    again = planner.plan(ctx, p.minimum_budget * 1.001, 0.0, [])
    assert again.feasible


def test_lr_tuning_is_two_trials_per_epoch_budget_on_the_smallest_model():
    ctx, _ = context()
    p = planner.plan(ctx, 5.0, 0.0, [])
    tune = [t for t in p.trials if t.role == "tune"]
    by_epoch: dict[float, list] = {}
    for t in tune:
        by_epoch.setdefault(t.epochs, []).append(t)
    assert set(by_epoch) == set(ctx.cfg.epochs)
    for e, ts in by_epoch.items():
        assert len(ts) == 2 and {t.model for t in ts} == {"cnn-xs"}
    first = sorted(by_epoch)[0]
    assert sorted(t.lr_rule["lr"] for t in by_epoch[first]) == [0.025, 0.05]  # base and base/2
    second = by_epoch[sorted(by_epoch)[1]]
    assert sorted(t.lr_rule["mult"] for t in second) == [0.5, 1.0]
    assert all(set(t.lr_rule["deps"]) == {x.id for x in by_epoch[first]} for t in second)
    # Main cells reuse their epoch budget's tuned lr.
    for t in p.trials:
        if t.role == "main":
            assert set(t.lr_rule["deps"]) == {x.id for x in by_epoch[t.epochs]}


def test_lr_rule_follows_the_paper():
    results = {"a": {"lr": 0.4, "val_loss": 1.2}, "b": {"lr": 0.2, "val_loss": 1.0}}
    assert lrrule.resolve(lrrule.best_of(["a", "b"], 0.5), results) == pytest.approx(0.1)
    assert lrrule.resolve(lrrule.best_of(["a", "c"], 1.0), results) is None  # waits for c
    diverged = {"a": {"lr": 0.4, "val_loss": None}, "b": {"lr": 0.2, "val_loss": float("nan")}}
    assert lrrule.resolve(lrrule.best_of(["a", "b"], 1.0), diverged) == pytest.approx(0.1)


def test_replan_keeps_finished_trials_free_and_extends_with_budget():
    ctx0, _ = context()
    p1 = planner.plan(ctx0, 0.1, 0.0, [])
    done = {t.id for t in p1.trials[:4]}
    spent = sum(t.predicted_hours for t in p1.trials[:4])
    ctx, _ = context(future=lambda i: 0.0 if i in done else None)
    p2 = planner.plan(ctx, 0.5, spent, [])
    ids2 = {t.id for t in p2.trials}
    assert done <= ids2  # the bigger study contains what was already run
    assert len(ids2) > len(p1.trials)
    assert all(t.predicted_hours == 0.0 for t in p2.trials if t.id in done)
    assert p2.predicted_total <= 1.0 * 0.5 + 1e-12


def test_fixed_lr_strategy_and_seeds():
    cfg = StudyConfig(families=["cnn"], lr_strategy="fixed", seeds=[0, 1])
    ctx, _ = context(cfg)
    p = planner.plan(ctx, 1.0, 0.0, [])
    assert all(t.lr_rule == {"kind": "fixed", "lr": 0.05} for t in p.trials)
    main = [t for t in p.trials if t.role == "main"]
    cells = {(t.model, t.epochs) for t in main}
    assert len(main) == 2 * len(cells)
    assert p.predicted_total > 0.9 * 0.98  # the fill works without lr tuning too
    assert all(t.role != "tune" for t in p.trials)


def test_small_grid_fills_slack_with_replicate_seeds():
    cfg = StudyConfig(families=["cnn"], epochs=[0.25, 0.5], ladders={"cnn": LADDER[:2]})
    ctx, cm = context(cfg)
    ctx.ladders = {"cnn": LADDER[:2]}
    p = planner.plan(ctx, 0.05, 0.0, [])
    reps = [t for t in p.trials if t.role == "replicate"]
    assert reps and {t.seed for t in reps} >= {1}
    cheapest = min(cm.trial_hours(m, e) for m in LADDER[:2] for e in (0.25, 0.5))
    assert 0.05 - cheapest * (1 + planner.FILL_MARGIN) < p.predicted_total <= 0.05
    off = StudyConfig(families=["cnn"], epochs=[0.25, 0.5], ladders={"cnn": LADDER[:2]}, fill_replicates=False)
    ctx2, _ = context(off)
    ctx2.ladders = {"cnn": LADDER[:2]}
    assert not [t for t in planner.plan(ctx2, 0.05, 0.0, []).trials if t.role == "replicate"]


def test_lr_tuning_falls_back_to_base_lr_only_when_unaffordable():
    ctx, cm = context()
    one = cm.trial_hours("cnn-xs", 0.25)
    two_cells_untuned = one + cm.trial_hours("cnn-xs", 0.5)
    p = planner.plan(ctx, (two_cells_untuned + 0.2 * one) / 0.95, 0.0, [])
    assert p.feasible and any("base lr" in n for n in p.notes)
    assert all(t.lr_rule == {"kind": "fixed", "lr": 0.05} for t in p.trials)
    assert len({(t.model, t.epochs) for t in p.trials}) >= 2
    rich = planner.plan(ctx, 0.05, 0.0, [])
    assert any(t.role == "tune" for t in rich.trials) and not any("base lr" in n for n in rich.notes)


def test_fill_extends_the_epoch_range_before_replicating():
    cfg = StudyConfig(families=["cnn"], ladders={"cnn": LADDER[:1]})
    ctx, cm = context(cfg)
    ctx.ladders = {"cnn": LADDER[:1]}
    p = planner.plan(ctx, 0.05, 0.0, [])
    epochs = sorted({t.epochs for t in p.trials})
    # every epoch budget that fits is tuned on the (only) model before any extra seed is added
    nxt = cfg.epochs[len(epochs)] if len(epochs) < len(cfg.epochs) else None
    if nxt is not None:
        room = 1.0 * 0.05 - sum(t.predicted_hours for t in p.trials if t.role != "replicate")
        assert 2 * cm.trial_hours("cnn-xs", nxt) > room
    assert p.predicted_total <= 1.0 * 0.05


def test_fixed_costs_are_learned_and_priors_stand_in_until_then(tmp_path, monkeypatch):
    from scaling.sweep import priors

    monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path))
    cm = costmodel.CostModel(calibration(), 128)
    pred = cm.parts("cnn-xs", 0.5)
    finished = [dict(model="cnn-xs", epochs=0.5, overhead_seconds=2.0,
                     breakdown_seconds={**pred, "other": 9.0, "train": 1.5 * pred["train"]})]
    fitted = costmodel.fit_corrections(cm, finished)
    assert fitted.other_seconds == 9.0 and fitted.parts("cnn-l", 4)["other"] == 9.0  # a fixed cost, not a ratio
    assert fitted.ratio("cnn-l", "train") == pytest.approx(1.5)
    priors.store("cpu", fitted.pooled, fitted.other_seconds, fitted.startup_seconds)
    fresh = costmodel.fit_corrections(cm, [], priors.load("cpu"))
    assert fresh.trial_hours("cnn-m", 2) == pytest.approx(fitted.trial_hours("cnn-m", 2))
    monkeypatch.setenv("SCALING_SWEEP_PRIORS", "off")
    assert priors.load("cpu") is None


def test_started_study_that_no_longer_fits_fills_what_it_can():
    cfg = StudyConfig(families=["cnn"], ladders={"cnn": LADDER[:1]}, epochs=[0.25, 4.0])
    ctx0, cm = context(cfg)
    ctx0.ladders = {"cnn": LADDER[:1]}
    one = cm.trial_hours("cnn-xs", 0.25)
    first = planner.plan(ctx0, (one + cm.trial_hours("cnn-xs", 4.0)) / 0.95 * 1.01, 0.0, [])
    assert first.feasible
    done_id = next(t.id for t in first.trials if t.epochs == 0.25)
    ctx, _ = context(cfg, future=lambda i: 0.0 if i == done_id else None)
    ctx.ladders = {"cnn": LADDER[:1]}
    budget = 3.5 * one  # the 4-epoch cell no longer fits, another seed of the cheap one does
    refused = planner.plan(ctx, budget, one, [], started=False)
    assert not refused.feasible
    p = planner.plan(ctx, budget, one, [], started=True)
    assert p.feasible and [t.role for t in p.trials if t.predicted_hours > 0] == ["replicate"] * 2
    assert p.predicted_total <= budget
