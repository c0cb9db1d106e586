"""The trainer end to end: run records, compute accounting, resume after SIGKILL,
multi-device equivalence and user errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli
from scaling.models import registry
from scaling.platform.xla_cpu import compiler_options

# Every field design.md requires of result.json.
REQUIRED = """model family params dataset image_size epochs steps batch_size lr seed status val_loss
val_accuracy train_loss flops_per_example train_flops accelerator_hours compile_seconds wall_seconds
device_kind device_count mfu version schema""".split()


def _train_args(workdir, data, steps=40, extra=(), model="cnn-xs"):
    return ["--model", model, "--data", data, "--steps", str(steps), "--batch-size", "64",
            "--workdir", str(workdir), "--quiet", *extra]


def test_result_record_and_flops(tmp_path):
    # the default model, cnn-s (its elementwise work is small next to its convs)
    r = run_cli("scaling.train", *_train_args(tmp_path / "run", "synthetic", steps=60, model="cnn-s"))
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    missing = [k for k in REQUIRED if k not in result]
    assert not missing, missing
    assert result["status"] == "done" and result["steps"] == 60 and result["examples_seen"] == 60 * 64
    assert result["val_accuracy"] > 0.3  # chance is 0.1: the model learned
    # XLA's count of the whole train step agrees with the analytic count
    ratio = result["flops_per_example_xla"] / result["flops_per_example"]
    assert 0.95 < ratio < 1.05, ratio
    assert result["train_flops"] == result["flops_per_example"] * 60 * 64
    parts = result["accelerator_hours_breakdown"]
    assert abs(sum(parts.values()) - result["accelerator_hours"]) < 1e-9
    assert parts["compile"] > 0 and parts["train"] > 0 and parts["eval"] > 0
    assert result["mfu"] is None and result["device_kind"] == "cpu"  # CPU peak is unknown
    lines = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 60 and all("train_loss" in ln or "val_loss" in ln for ln in lines)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"] == "cnn-s" and config["lr"] == result["lr"]
    # Same command again: nothing re-trained, same result.
    again = run_cli("scaling.train", *_train_args(tmp_path / "run", "synthetic", steps=60, model="cnn-s"), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["wall_seconds"] == result["wall_seconds"]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, cifar10_path):
    """Kill a real CIFAR-10 run mid-way; the resumed run ends with the same val loss."""
    steps = 120
    args = lambda wd: _train_args(wd, cifar10_path, steps=steps, extra=("--checkpoint-every", "25", "--log-every", "5"))  # noqa: E731
    ref = run_cli("scaling.train", *args(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    ref_result = json.loads((tmp_path / "ref" / "result.json").read_text())

    wd = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "scaling.train", *args(wd)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until a checkpoint exists and training went past it
        metrics = wd / "metrics.jsonl"
        if metrics.exists() and (wd / "checkpoints").exists():
            done = [json.loads(ln)["step"] for ln in metrics.read_text().splitlines() if ln.strip()]
            if done and done[-1] >= 60:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (wd / "result.json").exists(), "the run finished before it could be killed"
    resumed = run_cli("scaling.train", *args(wd))
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((wd / "result.json").read_text())
    assert result["segments"] == 2
    assert abs(result["val_loss"] - ref_result["val_loss"]) < 1e-6
    assert result["val_accuracy"] == ref_result["val_accuracy"]
    steps_logged = [json.loads(ln)["step"] for ln in (wd / "metrics.jsonl").read_text().splitlines()]
    assert steps_logged == sorted(steps_logged)  # no duplicated or rewound log lines
    # both segments are charged: more time than one segment, each part counted once
    assert result["accelerator_hours"] > 0 and result["wall_seconds"] >= result["compile_seconds"]


@pytest.mark.slow
def test_four_simulated_devices_match_one(tmp_path):
    """Data parallelism over 4 CPU devices reproduces the single-device loss curve."""
    curves = {}
    for n in (1, 4):
        env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "SCALING_JAX_CACHE": "off"}
        r = run_cli("scaling.train", *_train_args(tmp_path / f"d{n}", "synthetic", steps=20, extra=("--log-every", "1")), env=env)
        assert r.returncode == 0, r.stderr
        result = json.loads((tmp_path / f"d{n}" / "result.json").read_text())
        assert result["device_count"] == n
        lines = [json.loads(ln) for ln in (tmp_path / f"d{n}" / "metrics.jsonl").read_text().splitlines()]
        curves[n] = [ln["train_loss"] for ln in lines if "train_loss" in ln]
        curves[f"val{n}"] = result["val_loss"]
    assert len(curves[1]) == 20
    for a, b in zip(curves[1], curves[4]):
        assert abs(a - b) < 1e-3 * max(1.0, abs(a)), (a, b)
    assert abs(curves["val1"] - curves["val4"]) < 1e-3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "resnet-9000"], "unknown model"),
        (["--dataset", "no_such_dataset"], "no_such_dataset"),
        (["--data", "/nonexistent/cifar.zip"], "not found"),
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "-1"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--workdir", "/proc/forbidden/run"], "not writable"),
        (["--model-kwargs", '{"widht": 2}'], "do not fit cnn-xs"),
        (["--model-kwargs", "[1]"], "JSON object"),
        (["--model", "nfnet-f0-w0.125", "--model-kwargs", '{"stem_widths": [8, 8]}'], "stem_widths needs 3"),
    ],
)
def test_user_errors_are_one_line_exit_2(tmp_path, args, message):
    base = {"--model": "cnn-xs", "--data": "synthetic", "--epochs": "1", "--workdir": str(tmp_path / "w")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    if "--dataset" in args:
        base.pop("--data")
    r = run_cli("scaling.train", *[x for kv in base.items() for x in kv], "--quiet")
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_different_run_in_same_workdir_is_refused(tmp_path):
    first = run_cli("scaling.train", *_train_args(tmp_path / "w", "synthetic", steps=2))
    assert first.returncode == 0, first.stderr
    other = run_cli("scaling.train", *_train_args(tmp_path / "w", "synthetic", steps=3))
    assert other.returncode == 2 and "different run" in other.stderr


def test_crash_is_recorded_as_failed(tmp_path):
    """A crash that is not a user mistake leaves a ``failed`` record a sweep can read."""
    r = run_cli("scaling.train", *_train_args(tmp_path / "w", "synthetic", steps=2),
                env={"SCALING_FAULT": "step-1:raise"})
    assert r.returncode == 1
    result = json.loads((tmp_path / "w" / "result.json").read_text())
    assert result["status"] == "failed" and "error" in result


def test_checkpoint_interval_dividing_the_run(tmp_path):
    """The last periodic checkpoint and the final one fall on the same step."""
    r = run_cli("scaling.train", *_train_args(tmp_path / "w", "synthetic", steps=20, extra=("--checkpoint-every", "10")))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "w" / "result.json").read_text())["status"] == "done"


def test_no_restart_when_the_cache_cannot_store_the_train_step(tmp_path):
    """The ViT's CPU step (oneDNN GEMMs on x86-64) cannot be serialised: the
    CLI does not restart into a second compile, and JAX's cache-write warning
    is not shown; the run is otherwise accounted as usual."""
    env = {"SCALING_JAX_CACHE": str(tmp_path / "cache"), "SCALING_RESTART_AFTER_COMPILE": "0"}
    r = run_cli("scaling.train", *_train_args(tmp_path / "v", "synthetic", steps=3, model="vit-c0/4"), env=env)
    assert r.returncode == 0, r.stderr
    assert "Error writing persistent compilation cache" not in r.stderr
    (segment,) = json.loads((tmp_path / "v" / "accounting.json").read_text())["segments"]
    assert segment["compile"] > 0 and segment["train"] > 0 and segment["late_compiles"] == 0
    if compiler_options(registry.get("vit-c0/4")):  # where the ViT's CPU options apply
        assert "restarting" not in r.stderr


@pytest.mark.slow
def test_cli_restarts_once_after_compiling_and_accounts_for_both_processes(tmp_path):
    """A cache miss makes the CLI restart once (same PID) and train in the new
    process; the restart's time is charged; with the programs cached, no restart."""
    env = {"SCALING_JAX_CACHE": str(tmp_path / "cache"), "SCALING_RESTART_AFTER_COMPILE": "0"}
    first = run_cli("scaling.train", *_train_args(tmp_path / "a", "synthetic", steps=5), env=env)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("restarting once") == 1
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["status"] == "done" and result["steps"] == 5 and result["segments"] == 2
    compiled, trained = json.loads((tmp_path / "a" / "accounting.json").read_text())["segments"]
    assert compiled["compile"] > 0 and compiled["train"] == 0 and trained["train"] > 0
    assert result["wall_seconds"] == pytest.approx(compiled["wall"] + trained["wall"])
    # The second process loads the programs from the cache, and no process
    # compiles anything once its steps are loaded (that slows XLA:CPU's step).
    assert trained["compile"] < compiled["compile"]
    assert compiled["late_compiles"] == 0 and trained["late_compiles"] == 0
    again = run_cli("scaling.train", *_train_args(tmp_path / "b", "synthetic", steps=5), env=env)
    assert again.returncode == 0 and "restarting" not in again.stderr
    assert json.loads((tmp_path / "b" / "result.json").read_text())["segments"] == 1
    (segment,) = json.loads((tmp_path / "b" / "accounting.json").read_text())["segments"]
    assert segment["late_compiles"] == 0
    off = run_cli("scaling.train", *_train_args(tmp_path / "c", "synthetic", steps=5),
                  env={**env, "SCALING_JAX_CACHE": str(tmp_path / "cache2"), "SCALING_RESTART_AFTER_COMPILE": "off"})
    assert off.returncode == 0 and "restarting" not in off.stderr
    bad = run_cli("scaling.train", *_train_args(tmp_path / "d", "synthetic", steps=5),
                  env={**env, "SCALING_RESTART_AFTER_COMPILE": "soon"})
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
