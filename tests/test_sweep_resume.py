"""End-to-end sweeps on synthetic data: SIGKILL + resume, two processes, Ray.

Each test writes a tiny study config (one small CNN, fixed lr, short epoch
budgets) and a cached calibration, so what is exercised is the sweep's
execution, locking and accounting, not the calibration run.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling.sweep import calibrate, ledger, state, study

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_priors(monkeypatch):
    """Plans from the fake calibration alone, whatever earlier studies on this machine measured."""
    monkeypatch.setenv("SCALING_SWEEP_PRIORS", "off")

CONFIG = """
def get_config(arg=None):
    return dict(
        name="tiny_resume_test",
        families=["cnn"],
        ladders={"cnn": ["cnn-xs"]},
        epochs=%(epochs)r,
        batch_size=64,
        lr_strategy="fixed",
        fill_replicates=False,
        data_source="synthetic",
        train_overrides={"log_every": 2, "checkpoint_every": 5},
    )
"""


def make_study(tmp_path: Path, epochs=(0.2, 0.4, 0.6)) -> tuple[Path, Path]:
    cfg_path = tmp_path / "tiny_study.py"
    cfg_path.write_text(CONFIG % {"epochs": list(epochs)})
    cfg = study.load(str(cfg_path)).validate()
    work = tmp_path / "study"
    # A cached calibration (synthetic data: 1844 train / 204 val / 512 test).
    state.write_json(work / "calibration.json", {
        "key": calibrate.key(cfg),
        "data": {"train_size": 1844, "val_size": 204, "test_size": 512, "num_classes": 10, "image_size": 32,
                 "device_count": 1, "device_kind": "cpu", "platform": "cpu",
                 "startup_seconds": 1.0, "setup_seconds": 0.5},
        "models": {"cnn-xs": {"compile_seconds": 3.0, "step_seconds": 0.02, "eval_seconds_per_example": 1e-4,
                              "flops_per_example": 1.7e7, "params": 20000}},
        "stopped": {}, "runs": [],
    })
    return cfg_path, work


def sweep_cmd(cfg_path: Path, work: Path, budget: str = "0.5", *extra: str) -> list[str]:
    return [sys.executable, "-m", "scaling.sweep", "--config", str(cfg_path), "--workdir", str(work),
            "--budget", budget, *extra]


def trainer_pids(work: Path) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "scaling.train" in cmd and str(work) in cmd:
                pids.append(int(p.name))
    return pids


def starts(work: Path, tid: str) -> int:
    return sum(1 for s in state.read_jsonl(state.Paths(work).segments(tid)) if s["event"] == "start")


def check_complete(work: Path, n_trials: int) -> ledger.Snapshot:
    snap = ledger.snapshot(state.Paths(work))
    assert len(snap.trials) == n_trials
    for tid, rec in snap.trials.items():
        assert rec.status == "done", (tid, rec.status)
        # Never trained twice: each logged step appears once (a resume rewinds to its checkpoint).
        steps = [json.loads(ln)["step"] for ln in (state.Paths(work).run_dir(tid) / "metrics.jsonl").read_text().splitlines()
                 if ln.strip() and "train_loss" in ln]
        assert len(steps) == len(set(steps)), tid
        assert rec.result["examples_seen"] == rec.result["steps"] * 64
    # Spend is recomputed from records: each trial's result counted exactly once.
    assert snap.trial_hours == pytest.approx(
        sum(r.result["accelerator_hours"] + r.overhead_hours for r in snap.trials.values()))
    return snap


# Slow and, about one run in three here, over-charged by ~0.5 s against the wall-clock bound at a
# random kill point: under investigation (issue 29 follow-up); the WSD resume test covers resume in CI.
@pytest.mark.slow
def test_sigkill_then_resume_completes_without_double_work(tmp_path):
    cfg_path, work = make_study(tmp_path)
    t0 = time.monotonic()
    proc = subprocess.Popen(sweep_cmd(cfg_path, work), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # Wait until a trial is training, then kill at a random point after that.
    deadline = time.monotonic() + 90
    while not trainer_pids(work) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(random.uniform(0.5, 6.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wall1 = time.monotonic() - t0
    # The trials die with the sweep (PR_SET_PDEATHSIG) instead of training unsupervised.
    for _ in range(50):
        if not trainer_pids(work):
            break
        time.sleep(0.1)
    assert not trainer_pids(work)

    paths = state.Paths(work)
    before = {}
    for tid in paths.trial_ids():
        res = paths.run_dir(tid) / "result.json"
        if res.exists():
            before[tid] = (res.read_bytes(), starts(work, tid))
    t1 = time.monotonic()
    r = subprocess.run(sweep_cmd(cfg_path, work, "0.5", "--json"), cwd=REPO, capture_output=True, text=True,
                       timeout=180)
    wall2 = time.monotonic() - t1
    assert r.returncode == 0, r.stderr
    snap = check_complete(work, 3)
    assert sorted(snap.trials) == sorted(f"cnn-xs-e{e:g}-lrbase-s0" for e in (0.2, 0.4, 0.6))
    for tid, (blob, n) in before.items():  # finished before the kill: untouched, not re-run
        assert (paths.run_dir(tid) / "result.json").read_bytes() == blob
        assert starts(work, tid) == n
    # Nothing charged twice: the recorded spend cannot exceed the wall-clock of both runs (1 device).
    summary = json.loads(r.stdout)
    assert summary["spent"] == pytest.approx(snap.total, abs=1e-5)  # + the sweep's last milliseconds
    assert summary["complete"] is True
    assert snap.total * 3600 <= wall1 + wall2 + 1.0
    # A third run has nothing left to do: no trial starts again, no trial hours added.
    counts = {t: starts(work, t) for t in snap.trials}
    r3 = subprocess.run(sweep_cmd(cfg_path, work, "0.5", "--json"), cwd=REPO, capture_output=True, text=True,
                        timeout=120)
    assert r3.returncode == 0, r3.stderr
    assert {t: starts(work, t) for t in snap.trials} == counts
    assert json.loads(r3.stdout)["trial_hours"] == pytest.approx(snap.trial_hours)


def test_two_sweeps_on_one_workdir_never_run_a_trial_twice(tmp_path):
    cfg_path, work = make_study(tmp_path)
    procs = [subprocess.Popen(sweep_cmd(cfg_path, work, "0.5", "--quiet"), cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    check_complete(work, 3)
    for tid in state.Paths(work).trial_ids():
        assert starts(work, tid) == 1, tid  # exactly one training process per trial, across both sweeps
    assert len(list((work / "sessions").glob("*.json"))) == 2


def test_ray_executor_runs_trials_concurrently(tmp_path):
    ray = pytest.importorskip("ray")
    cfg_path, work = make_study(tmp_path, epochs=(0.4, 0.6))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        from scaling.sweep.__main__ import main

        rc = main(["--config", str(cfg_path), "--workdir", str(work), "--budget", "0.5", "--executor", "ray",
                   "--quiet", "--json"])
    finally:
        ray.shutdown()
    assert rc == 0
    check_complete(work, 2)
    segs = [state.read_jsonl(state.Paths(work).segments(t)) for t in state.Paths(work).trial_ids()]
    (s1, e1), (s2, e2) = [(s[0]["time"], s[-1]["time"]) for s in segs]
    assert all(s[0]["executor"] == "ray" for s in segs)
    assert s1 < e2 and s2 < e1  # the two trials overlapped in time


def test_dry_run_plans_and_too_small_budget_is_refused(tmp_path):
    cfg_path, work = make_study(tmp_path)
    r = subprocess.run(sweep_cmd(cfg_path, work, "0.01", "--dry-run", "--json"), cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["dry_run"] and len(plan["trials"]) == 3 and plan["predicted_total"] <= 0.01
    assert json.loads((work / "plan.json").read_text())["trials"] == plan["trials"]
    assert not (work / "trials").exists()  # nothing trained
    small = subprocess.run(sweep_cmd(cfg_path, work, "0.001"), cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert small.returncode == 2
    line = small.stderr.strip()
    assert "\n" not in line and "too small" in line
    need = float(line.split("needs at least ")[1].split()[0])
    assert 0.001 < need <= plan["predicted_total"] / 0.95 + 1e-3
