"""The ``slurm`` executor (scaling.sweep.executors.SlurmExecutor) through submitit's local
executor: real submitit jobs running the real trainer on real CIFAR-10 (``cnn-xs``).

- a trial whose trainer is SIGKILLed (``scaling.faults``) is submitted again and
  resumes from its checkpoint, ending with the numbers of a run never killed;
- a preempted trial (submitit's preemption signal) checkpoints, is requeued by
  submitit and finishes from that checkpoint;
- without submitit: one line, exit status 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli

pytest.importorskip("submitit")

from scaling.sweep import executors  # noqa: E402

STEPS = 30


def _args(wd: Path, data: str, steps: int = STEPS, batch: int = 64) -> list[str]:
    return ["--model", "cnn-xs", "--data", data, "--steps", str(steps), "--batch-size", str(batch),
            "--checkpoint-every", "5", "--log-every", "5", "--workdir", str(wd), "--quiet"]


def _cmd(wd: Path, data: str, **kw) -> list[str]:
    return [sys.executable, "-m", "scaling.train", *_args(wd, data, **kw)]


def _result(wd: Path) -> dict:
    return json.loads((wd / "result.json").read_text())


def _checkpoints(wd: Path) -> list[int]:
    d = wd / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _task_pid(controller: int) -> int:
    """The job's task: the process submitit's local controller started (its child)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == controller:
            return int(stat.parent.name)
    raise AssertionError(f"no task under submitit controller {controller}")


def _wait(ex, timeout: float = 600) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = ex.poll()
        if done:
            return done
        time.sleep(0.5)
    raise AssertionError("the submitit job did not finish in time")


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the job runs `python -m scaling.train` from here
    monkeypatch.setenv("PYTHONPATH", str(REPO))


@pytest.mark.slow
def test_a_killed_trial_is_requeued_and_resumes_from_its_checkpoint(tmp_path, cifar10_path, monkeypatch):
    ref = tmp_path / "reference"
    r = run_cli("scaling.train", *_args(ref, cifar10_path))
    assert r.returncode == 0, r.stderr

    ex = executors.make("slurm", "cpu", folder=tmp_path / "submitit", cluster="local", max_jobs=1, requeues=1)
    assert ex.name == "slurm" and ex.cluster == "local"
    wd, log = tmp_path / "run", tmp_path / "train.log"
    # The first job's trainer is SIGKILLed after step 12 (checkpoint 10 is on disk);
    # the environment is the job's, so the requeued job runs without the fault.
    monkeypatch.setenv("SCALING_FAULT", "step-12")
    h = ex.launch("t0", _cmd(wd, cifar10_path), log, None)
    first_job = h.obj.job_id
    monkeypatch.delenv("SCALING_FAULT")
    while h.obj.done() is False:
        time.sleep(0.5)
    assert h.obj.result() == -9 and _checkpoints(wd)[-1] == 10 and not (wd / "result.json").exists()
    [(done, rc)] = _wait(ex)
    assert done is h and rc == 0 and h.requeued == 1 and h.obj.job_id != first_job
    assert "requeued (1 of 1)" in log.read_text()
    res, want = _result(wd), _result(ref)
    assert res["status"] == "done" and res["steps"] == STEPS
    assert abs(res["val_loss"] - want["val_loss"]) < 1e-6 and res["val_accuracy"] == want["val_accuracy"]
    acct = json.loads((wd / "accounting.json").read_text())
    assert len(acct["segments"]) >= 2  # the killed job's time is charged too


def test_a_preempted_trial_checkpoints_is_requeued_by_submitit_and_finishes(tmp_path, cifar10_path):
    ex = executors.make("slurm", "cpu", folder=tmp_path / "submitit", cluster="local", max_jobs=1)
    wd, log = tmp_path / "run", tmp_path / "train.log"
    steps = 300  # long enough (tens of seconds) to be preempted mid-run
    h = ex.launch("t0", _cmd(wd, cifar10_path, steps=steps, batch=32), log, None)
    deadline = time.monotonic() + 600
    while not _checkpoints(wd) and time.monotonic() < deadline:
        time.sleep(0.05)
    # SLURM preempts a job by signalling its processes (submitit asks for USR2); here the
    # job's task is signalled the same way (submitit's LocalJob._interrupt signals only its
    # local controller, which does not pass USR2 on).
    os.kill(_task_pid(int(h.obj.job_id)), signal.SIGUSR2)
    job_log = Path(h.obj.paths.stdout)  # submitit's own log of the job
    while "Requeued" not in (job_log.read_text() if job_log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.1)
    at_requeue = _checkpoints(wd)
    assert at_requeue and 0 < at_requeue[-1] < steps, job_log.read_text()
    [(done, rc)] = _wait(ex)
    assert rc == 0 and h.requeued == 0  # requeued by submitit itself, not resubmitted
    res = _result(wd)
    assert res["status"] == "done" and res["steps"] == steps
    lines = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    logged = [x["step"] for x in lines if "train_loss" in x]
    assert logged == sorted(set(logged))  # resumed: no step logged twice, none lost
    assert logged[-1] == steps and len(json.loads((wd / "accounting.json").read_text())["segments"]) >= 2


def test_without_submitit_a_one_line_error_and_exit_2(tmp_path):
    code = ("import sys; sys.modules['submitit'] = None\n"
            "from scaling.platform.entrypoint import entrypoint\n"
            "from scaling.sweep import executors\n"
            "main = entrypoint(lambda argv: executors.make('slurm', 'cpu', folder=sys.argv[1]))\n"
            "sys.exit(main([]))\n")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["error: --executor slurm needs submitit: pip install 'vision-scaling[slurm]'"]


def test_resources_follow_the_trial_mesh():
    r = executors.Resources.for_devices(16, gpus_per_node=8, cpus_per_task=32)
    assert (r.nodes, r.gpus_per_node, r.cpus_per_task) == (2, 8, 32)
    assert executors.Resources.for_devices(4, gpus_per_node=8).gpus_per_node == 4
    assert executors.Resources.for_devices(4, gpus_per_node=0).nodes == 1


@pytest.mark.slow
def test_a_sweep_runs_its_trials_as_submitit_jobs(tmp_path, monkeypatch):
    """The sweep with ``executor="slurm"`` (submitit's local cluster, one job at a time) on
    test_sweep_resume's three-trial study: every trial runs as its own job and finishes,
    and the same call again starts nothing."""
    from test_sweep_resume import make_study

    from scaling.sweep import ledger, runner, state, study

    monkeypatch.setenv("SCALING_SWEEP_PRIORS", "off")
    cfg_path, work = make_study(tmp_path)
    cfg = study.load(str(cfg_path)).validate()
    opts = runner.Options(budget=0.5, workdir=work, executor="slurm", json=True, quiet=True,
                          slurm={"cluster": "local", "max_jobs": 1, "time_min": 30})
    out = runner.Sweep(cfg, opts).run()
    snap = ledger.snapshot(state.Paths(work))
    assert out["complete"] is True and len(snap.trials) == 3 and all(r.finished for r in snap.trials.values())
    jobs = lambda: [p for p in (work / "submitit").iterdir() if p.name.isdigit()]  # noqa: E731
    assert len(jobs()) == 3  # one job per trial
    again = runner.Sweep(cfg, opts).run()
    assert again["complete"] is True and len(jobs()) == 3


@pytest.mark.parametrize("flag", ["--slurm-max-jobs", "--slurm-time-min"])
def test_slurm_limits_must_be_positive(tmp_path, flag):
    r = run_cli("scaling.sweep", "--config", "cifar10_cnn:tiny", "--data", "synthetic", "--budget", "0.03",
                "--workdir", str(tmp_path / "w"), "--executor", "slurm", flag, "0")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "must be positive" in r.stderr
    assert not (tmp_path / "w").exists()
