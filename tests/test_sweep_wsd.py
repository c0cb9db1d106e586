"""WSD studies in the sweep: stems and branches planned and priced, a higher budget
extending a stem, and SIGKILL inside a stem and inside a branch on real CIFAR-10."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling.schedules import cooldown_start
from scaling.sweep import branches, calibrate, costmodel, ledger, planner, state, study
from scaling.sweep.study import StudyConfig
from test_sweep_planner import LADDER, calibration
from test_sweep_resume import starts, trainer_pids

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_priors(monkeypatch):
    monkeypatch.setenv("SCALING_SWEEP_PRIORS", "off")


def _ctx(epochs=(1, 2, 4, 8, 16), strategy="fixed", schedule="wsd", future=None, ladder=LADDER[:1], **kw):
    cfg = StudyConfig(families=["cnn"], ladders={"cnn": list(ladder)}, epochs=list(epochs), lr_strategy=strategy,
                      schedule=schedule, fill_replicates=False, **kw).validate()
    cm = costmodel.CostModel(calibration(), cfg.batch_size)
    return planner.Context(cfg, {"cnn": list(ladder)}, {"cnn": 0.05}, cm.trial_hours, cm.train_flops,
                           future or (lambda i: None), steps=cm.steps, warmup_steps={"cnn": 18},
                           cells_to_trials=branches.family_trials if schedule != "cosine" else None), cm


def test_plan_is_one_stem_chain_and_a_branch_per_budget():
    ctx, cm = _ctx()
    p = planner.plan(ctx, 5.0, 0.0, [])
    stems = [t for t in p.trials if t.kind == "stem"]
    branches = [t for t in p.trials if t.kind == "branch"]
    assert [t.epochs for t in branches] == [1, 2, 4, 8, 16] and all(t.role == "main" for t in branches)
    by_id = {t.id: t for t in p.trials}
    # The stem is one chain from step 0, each segment ending where a budget's cooldown starts.
    assert stems[0].start_step == 0 and stems[0].init_from is None
    for a, b in zip(stems, stems[1:]):
        assert b.init_from == a.id and b.start_step == a.end_step
    for t in branches:
        total = cm.steps(t.epochs)
        assert t.end_step == total and t.start_step == cooldown_start(total, 0.2, 18) == by_id[t.init_from].end_step
        assert t.start_step == total - round(0.2 * total)
    assert stems[-1].end_step == branches[-1].start_step  # the stem stops at the longest budget's cooldown
    # Priced by what each trains: the stem once, each branch its cooldown only.
    seconds = lambda t: cm.parts(t.model, t.epochs, **t.work())["train"]  # noqa: E731
    step = calibration()["models"]["cnn-xs"]["step_seconds"]
    assert sum(seconds(t) for t in p.trials) == pytest.approx(step * (stems[-1].end_step + sum(
        t.end_step - t.start_step for t in branches)))
    cosine, _ = _ctx(schedule="cosine")
    pc = planner.plan(cosine, 5.0, 0.0, [])
    assert len(pc.trials) == 5
    wsd_train = sum(seconds(t) for t in p.trials)
    cos_train = sum(cm.parts(t.model, t.epochs)["train"] for t in pc.trials)
    assert wsd_train / cos_train == pytest.approx((0.8 * 16 + 0.2 * 31) / 31, rel=0.01)  # 19 of 31 epochs


def test_tuned_wsd_plan_is_an_lr_grid_over_stems():
    ctx, _ = _ctx(strategy="tune", ladder=LADDER[:3], epochs=(1, 2, 4))
    p = planner.plan(ctx, 50.0, 0.0, [])
    tune = [t for t in p.trials if t.role == "tune"]
    assert {t.lr_rule["lr"] for t in tune} == {0.05, 0.025} and all(t.model == "cnn-xs" for t in tune)
    assert {t.epochs for t in tune} == {1, 2, 4}  # the tuning model branches at every planned budget
    others = [t for t in p.trials if t.model != "cnn-xs"]
    assert others and all(t.lr_rule["kind"] == "best_of" for t in others)
    for model in {t.model for t in others}:  # one lr per stem: the best at the model's largest budget
        mine = [t for t in others if t.model == model]
        top = max(t.epochs for t in mine if t.kind == "branch")
        assert {tuple(t.lr_rule["deps"]) for t in mine} == {tuple(
            t.id for t in tune if t.kind == "branch" and t.epochs == top)}


def test_higher_budget_appends_to_the_stem_without_retraining():
    small_ctx, cm = _ctx()
    budget = 1.02 * planner.plan(small_ctx, 100.0, 0.0, []).predicted_total  # the whole ladder fits ...
    cut = planner.plan(small_ctx, 0.55 * budget, 0.0, [])  # ... but not at half that
    done = {t.id for t in cut.trials}
    top = max(t.epochs for t in cut.trials if t.kind == "branch")
    assert top < 16
    big_ctx, _ = _ctx(future=lambda i: 0.0 if i in done else None)  # what ran is finished
    more = planner.plan(big_ctx, budget + sum(t.predicted_hours for t in cut.trials), sum(
        t.predicted_hours for t in cut.trials), [])
    old = {t.id: t for t in cut.trials}
    assert set(old) < {t.id for t in more.trials}
    for t in more.trials:
        if t.id in old:  # unchanged, and costs nothing more
            assert t.to_json() | {"predicted_hours": 0} == old[t.id].to_json() | {"predicted_hours": 0}
            assert t.predicted_hours == 0
    new = [t for t in more.trials if t.id not in old]
    new_stems = [t for t in new if t.kind == "stem"]
    assert new_stems[0].init_from == max((t for t in cut.trials if t.kind == "stem"), key=lambda t: t.end_step).id
    assert min(t.start_step for t in new_stems) > 0  # nothing trained again from step 0
    assert max(t.epochs for t in new if t.kind == "branch") == 16


@pytest.mark.parametrize("fields, message", [
    ({"schedule": "cosine-ish"}, "unknown schedule 'cosine-ish'"),
    ({"schedule": "wsd", "cooldown_fraction": 0.0}, "cooldown-fraction must be a number in (0, 1]"),
    ({"schedule": "wsd", "cooldown_fraction": 1.2}, "cooldown-fraction must be a number in (0, 1]"),
    ({"schedule": "wsd", "cooldown_shape": "cosine"}, "cooldown-shape must be 1-sqrt or linear"),
    ({"train_overrides": {"init_from": "/x"}}, "may not set init_from"),
])
def test_bad_wsd_study_config_is_one_line_exit_2(tmp_path, fields, message):
    path = tmp_path / "bad.py"
    path.write_text(f"def get_config(arg=None):\n    return dict(families=['cnn'], **{fields!r})\n")
    r = subprocess.run([sys.executable, "-m", "scaling.sweep", "--config", str(path), "--workdir",
                        str(tmp_path / "w"), "--budget", "0.1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "w").exists()


# ---- end to end: a tiny WSD study on real CIFAR-10, killed inside a stem and inside a branch

CONFIG = """
def get_config(arg=None):
    return dict(name="wsd_resume_test", families=["cnn"], ladders={"cnn": ["cnn-xs"]}, epochs=[0.05, 0.1],
                batch_size=64, lr_strategy="fixed", fill_replicates=False, schedule="wsd", data_source=%(data)r,
                train_overrides={"log_every": 1, "checkpoint_every": 5})
"""
STEM1, BRANCH1, STEM2, BRANCH2 = ("cnn-xs-stem-e0.05-lrbase-s0", "cnn-xs-e0.05-wsd-lrbase-s0",
                                  "cnn-xs-stem-e0.1-lrbase-s0", "cnn-xs-e0.1-wsd-lrbase-s0")
# 45,000 training images, batch 64: 36 and 71 steps, cooling down from 29 and 57.
SPANS = {STEM1: (0, 29), BRANCH1: (29, 36), STEM2: (29, 57), BRANCH2: (57, 71)}


def _study(tmp_path: Path, data: str) -> tuple[Path, Path]:
    cfg_path = tmp_path / "wsd_study.py"
    cfg_path.write_text(CONFIG % {"data": data})
    cfg = study.load(str(cfg_path)).validate()
    work = tmp_path / "study"
    state.claim_workdir(work, cfg.identity(), cfg.to_json())
    state.write_json(work / "calibration.json", {
        "key": calibrate.key(cfg),
        "data": {"train_size": 45000, "val_size": 5000, "test_size": 10000, "num_classes": 10, "image_size": 32,
                 "device_count": 1, "device_kind": "cpu", "platform": "cpu",
                 "startup_seconds": 3.0, "setup_seconds": 2.0},
        "models": {"cnn-xs": {"compile_seconds": 3.0, "step_seconds": 0.05, "eval_seconds_per_example": 4e-4,
                              "flops_per_example": 1.7e7, "params": 20000}},
        "stopped": {}, "runs": [],
    })
    return cfg_path, work


def _logged_steps(work: Path, tid: str) -> list[int]:
    path = state.Paths(work).run_dir(tid) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(ln)["step"] for ln in path.read_text().splitlines() if ln.strip() and "train_loss" in ln]


def _kill_inside(cmd: list[str], work: Path, tid: str) -> float:
    """Run the sweep until trial ``tid`` has trained two steps of its own, then SIGKILL the sweep."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = SPANS[tid][0]
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        if any(s >= start + 2 for s in _logged_steps(work, tid)):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(100):  # its trainer dies with it
        if not trainer_pids(work):
            break
        time.sleep(0.1)
    assert not trainer_pids(work)
    assert not (state.Paths(work).run_dir(tid) / "result.json").exists(), "killed too late"
    return time.monotonic() - t0


def test_sigkill_inside_a_stem_and_inside_a_branch_then_resume(tmp_path, cifar10_path):
    cfg_path, work = _study(tmp_path, cifar10_path)
    cmd = [sys.executable, "-m", "scaling.sweep", "--config", str(cfg_path), "--workdir", str(work), "--budget", "1"]
    paths = state.Paths(work)
    walls = [_kill_inside(cmd, work, STEM2)]
    assert starts(work, STEM1) == starts(work, BRANCH1) == 1
    first = {t: (paths.run_dir(t) / "result.json").read_bytes() for t in (STEM1, BRANCH1)}
    walls.append(_kill_inside(cmd, work, BRANCH2))
    t0 = time.monotonic()
    r = subprocess.run(cmd + ["--json"], cwd=REPO, capture_output=True, text=True, timeout=400)
    walls.append(time.monotonic() - t0)
    assert r.returncode == 0, r.stderr
    snap = ledger.snapshot(paths)
    assert sorted(snap.trials) == sorted(SPANS)  # the same set of records as an uninterrupted study
    for tid, (start, end) in SPANS.items():
        rec = snap.trials[tid]
        assert rec.status == ("stem" if "stem" in tid else "done"), (tid, rec.status)
        # Nothing lost, nothing trained twice: each step of its span logged once (a resume rewinds).
        assert _logged_steps(work, tid) == list(range(start + 1, end + 1)), tid
        assert rec.result["steps"] == end and rec.result["stem"]["step"] == start if start else True
        assert rec.trainer_hours == pytest.approx(rec.result["study_accelerator_hours"])
    assert starts(work, STEM1) == starts(work, BRANCH1) == 1  # finished before the kills: never started again
    assert starts(work, STEM2) == starts(work, BRANCH2) == 2
    for tid, blob in first.items():
        assert (paths.run_dir(tid) / "result.json").read_bytes() == blob
    b2 = snap.trials[BRANCH2].result
    assert b2["stem"]["run"] == str(paths.run_dir(STEM2)) and b2["stem"]["root"] == str(paths.run_dir(STEM1))
    # Charged once: the branch's record includes its stem (the standalone figure), the spend does not.
    chain = [snap.trials[t].result["study_accelerator_hours"] for t in (STEM1, STEM2, BRANCH2)]
    assert b2["accelerator_hours"] == pytest.approx(sum(chain))
    assert snap.trial_hours == pytest.approx(sum(rec.trainer_hours + rec.overhead_hours for rec in snap.trials.values()))
    # What the study trained (each stem once) is less than the standalone figures (each stem in every
    # branch that continues it); process overheads belong to neither, so they are left out here.
    assert sum(rec.trainer_hours for rec in snap.trials.values()) < sum(
        rec.result["accelerator_hours"] for rec in snap.trials.values())
    # Every second once: the spend is the wall-clock of the three sweeps, give or take the
    # start-up estimate of each killed trainer process (a finished process's overhead, which
    # includes its exit; a killed one has none), and far from a stem counted twice (~20 s).
    assert 0.8 * sum(walls) <= snap.total * 3600 <= sum(walls) + 1.0 + 2 * 4.0
    summary = json.loads(r.stdout)
    assert summary["complete"] is True and summary["spent"] == pytest.approx(snap.total, abs=1e-5)
    # Once more: nothing left to do, nothing started, nothing charged.
    counts = {t: starts(work, t) for t in SPANS}
    r2 = subprocess.run(cmd + ["--json"], cwd=REPO, capture_output=True, text=True, timeout=200)
    assert r2.returncode == 0, r2.stderr
    assert {t: starts(work, t) for t in SPANS} == counts
    assert json.loads(r2.stdout)["trial_hours"] == pytest.approx(snap.trial_hours)


EXTEND = """
def get_config(arg=None):
    return dict(name="wsd_extend_test", families=["cnn"], ladders={"cnn": ["cnn-xs"]}, epochs=[1, 2, 4800],
                batch_size=64, lr_strategy="fixed", fill_replicates=False, schedule="wsd", data_source="synthetic",
                min_epoch_budgets=1, train_overrides={"log_every": 5})
"""


@pytest.mark.slow
def test_higher_budget_adds_a_longer_branch_on_the_same_stem(tmp_path):
    """Synthetic data (1,844 images: 28.8 steps per epoch at batch 64). A budget (150 s) fits the
    1- and 2-epoch branches; the 4,800-epoch one (138,300 steps) fits no CPU's 150 s, however fast.
    A larger budget then adds it on a new stem segment that starts where the stem stopped (step
    46, the 2-epoch cooldown start), from the stem's checkpoint; nothing that ran starts again.
    The sweep is killed once that segment has trained its own steps (it would run for hours)."""
    cfg_path = tmp_path / "extend.py"
    cfg_path.write_text(EXTEND)
    cfg = study.load(str(cfg_path)).validate()
    work = tmp_path / "study"
    state.claim_workdir(work, cfg.identity(), cfg.to_json())
    state.write_json(work / "calibration.json", {
        "key": calibrate.key(cfg),
        "data": {"train_size": 1844, "val_size": 204, "test_size": 512, "num_classes": 10, "image_size": 32,
                 "device_count": 1, "device_kind": "cpu", "platform": "cpu", "startup_seconds": 5.0,
                 "setup_seconds": 3.0},
        "models": {"cnn-xs": {"compile_seconds": 5.0, "step_seconds": 0.4, "eval_seconds_per_example": 1e-4,
                              "flops_per_example": 1.7e7, "params": 20000}},
        "stopped": {}, "runs": [],
    })
    cmd = lambda budget: [sys.executable, "-m", "scaling.sweep", "--config", str(cfg_path), "--workdir",  # noqa: E731
                          str(work), "--budget", budget, "--json"]
    small = subprocess.run(cmd(f"{150 / 3600:.5f}"), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert small.returncode == 0, small.stderr
    paths = state.Paths(work)
    first = {"cnn-xs-stem-e1-lrbase-s0", "cnn-xs-e1-wsd-lrbase-s0", "cnn-xs-stem-e2-lrbase-s0",
             "cnn-xs-e2-wsd-lrbase-s0"}
    assert set(paths.trial_ids()) == first
    blobs = {t: (paths.run_dir(t) / "result.json").read_bytes() for t in first}
    segment = "cnn-xs-stem-e4800-lrbase-s0"
    proc = subprocess.Popen(cmd("1000"), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None and not _logged_steps(work, segment):
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before the long segment trained"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged = _logged_steps(work, segment)
    assert logged and logged[0] == 50  # its first logged step (log_every 5) after step 46: it did not start at 0
    spec = json.loads(paths.trial_json(segment).read_text())
    assert spec["config"]["init_from"] == str(paths.run_dir("cnn-xs-stem-e2-lrbase-s0"))
    tc = spec["config"]
    assert tc["steps"] == cooldown_start(round(4800 * 1844 / 64), 0.2, tc["warmup_steps"]) and tc["schedule"] == "constant"
    for t in first:  # not trained again, records untouched
        assert starts(work, t) == 1 and (paths.run_dir(t) / "result.json").read_bytes() == blobs[t]
