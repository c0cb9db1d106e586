"""A run survives what happens to it: a damaged newest checkpoint, a crash, a
SIGKILL during the final evaluation or while ``result.json`` is written; and a
diverged run says how far it got. Real CIFAR-10, the small ``cnn-xs``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli

STEPS = 40


def _args(wd: Path, data: str, *extra: str) -> list[str]:
    return ["--model", "cnn-xs", "--data", data, "--steps", str(STEPS), "--batch-size", "64",
            "--checkpoint-every", "5", "--log-every", "5", "--workdir", str(wd), "--quiet", *extra]


def _result(wd: Path) -> dict:
    return json.loads((wd / "result.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cifar10_path) -> dict:
    wd = tmp_path_factory.mktemp("ref") / "run"
    r = run_cli("scaling.train", *_args(wd, cifar10_path))
    assert r.returncode == 0, r.stderr
    return _result(wd)


def _same_numbers(result: dict, ref: dict) -> None:
    assert result["status"] == "done" and result["steps"] == ref["steps"]
    assert abs(result["val_loss"] - ref["val_loss"]) < 1e-6
    assert result["val_accuracy"] == ref["val_accuracy"] and result["test_accuracy"] == ref["test_accuracy"]


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path, cifar10_path, reference):
    wd = tmp_path / "run"
    killed = run_cli("scaling.train", *_args(wd, cifar10_path), env={"SCALING_FAULT": "step-36"})
    assert killed.returncode == -9 and not (wd / "result.json").exists()
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == [30, 35]
    for f in (wd / "checkpoints" / "35").rglob("*"):
        if f.is_file() and f.stat().st_size > 1:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    resumed = run_cli("scaling.train", *_args(wd, cifar10_path))
    assert resumed.returncode == 0, resumed.stderr
    warnings = [ln for ln in resumed.stderr.splitlines() if "checkpoint 35 does not restore" in ln]
    assert len(warnings) == 1, resumed.stderr
    assert (wd / "checkpoints-corrupt" / "35").is_dir()  # set aside, not deleted
    _same_numbers(_result(wd), reference)


def test_a_crashed_run_is_retried_by_the_same_command_and_charged_once(tmp_path, cifar10_path, reference):
    wd = tmp_path / "run"
    crashed = run_cli("scaling.train", *_args(wd, cifar10_path), env={"SCALING_FAULT": "step-12:raise"})
    assert crashed.returncode == 1 and "InjectedFault" in crashed.stderr
    failed = _result(wd)
    assert failed["status"] == "failed" and "injected fault at step-12" in failed["error"]
    charged = json.loads((wd / "accounting.json").read_text())
    assert len(charged["segments"]) == 1 and charged["accelerator_hours"] > 0  # the failed attempt's time

    retried = run_cli("scaling.train", *_args(wd, cifar10_path))
    assert retried.returncode == 0, retried.stderr
    result = _result(wd)
    _same_numbers(result, reference)
    assert result["segments"] == 2  # the failed attempt and the retry, each once
    assert result["accelerator_hours"] > charged["accelerator_hours"]
    assert json.loads((wd / "attempts" / "failed-1.json").read_text())["status"] == "failed"
    again = run_cli("scaling.train", *_args(wd, cifar10_path), "--json")  # finished: not retried again
    assert again.returncode == 0 and json.loads(again.stdout)["segments"] == 2


@pytest.mark.parametrize("fault", ["final-eval", pytest.param("write:result.json", marks=pytest.mark.slow)])
def test_sigkill_at_the_end_resumes_to_the_same_result(tmp_path, cifar10_path, reference, fault):
    wd = tmp_path / "run"
    killed = run_cli("scaling.train", *_args(wd, cifar10_path), env={"SCALING_FAULT": fault})
    assert killed.returncode == -9 and not (wd / "result.json").exists()
    resumed = run_cli("scaling.train", *_args(wd, cifar10_path))
    assert resumed.returncode == 0, resumed.stderr
    result = _result(wd)
    _same_numbers(result, reference)
    assert result["segments"] == 2


def test_a_diverged_run_records_the_steps_it_trained(tmp_path, cifar10_path):
    wd = tmp_path / "run"
    r = run_cli("scaling.train", "--model", "cnn-xs", "--data", cifar10_path, "--steps", "60", "--batch-size", "64",
                "--lr", "1e8", "--warmup-fraction", "0", "--log-every", "1", "--workdir", str(wd), "--quiet")
    assert r.returncode == 0, r.stderr
    result = _result(wd)
    assert result["status"] == "diverged" and result["planned_steps"] == 60
    lines = [json.loads(ln) for ln in (wd / "metrics.jsonl").read_text().splitlines()]
    first_bad = min(ln["step"] for ln in lines if "train_loss" in ln and not ln["train_loss"] < float("inf"))
    assert result["steps"] == first_bad - 1 < 60
    assert result["examples_seen"] == result["steps"] * 64


def test_checkpoints_hold_the_loader_state_and_the_older_layout_still_restores(tmp_path):
    """A checkpoint is the train state plus the batch source's JSON state; one written
    by an older version (a single ``default`` item, no data state) restores as before."""
    import jax.numpy as jnp
    import numpy as np
    import orbax.checkpoint as ocp

    from scaling.checkpoint import Checkpointer

    state = {"step": jnp.int32(3), "w": jnp.arange(4, dtype=jnp.float32)}
    ck = Checkpointer(tmp_path / "new")
    ck.save(3, state, {"pipeline": "stream", "step": 3, "seed": 1})
    step, restored, data = ck.restore_latest(state)
    ck.close()
    assert step == 3 and data == {"pipeline": "stream", "step": 3, "seed": 1}
    np.testing.assert_array_equal(restored["w"], state["w"])

    old = ocp.CheckpointManager(tmp_path / "old", options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False))
    old.save(5, args=ocp.args.StandardSave(state))
    old.wait_until_finished()
    old.close()
    ck = Checkpointer(tmp_path / "old")
    step, restored, data = ck.restore_latest(state)
    assert step == 5 and data is None and not (tmp_path / "old-corrupt").exists()
    np.testing.assert_array_equal(restored["w"], state["w"])
    ck.save(6, state, {"step": 6})  # and the run goes on in the new layout
    assert ck.restore_latest(state)[2] == {"step": 6}
    ck.close()
