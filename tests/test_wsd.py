"""WSD stems and cooldown branches in the trainer: a branch from a stem's checkpoint
is the straight WSD run of its budget; its record; bad input is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli

ENV = {"SCALING_RESTART_AFTER_COMPILE": "off"}
WARMUP = "4"


def _train(workdir: Path, steps: int, schedule: str, *extra: str) -> dict:
    r = run_cli("scaling.train", "--model", "cnn-xs", "--data", "synthetic", "--batch-size", "64",
                "--steps", str(steps), "--schedule", schedule, "--warmup-steps", WARMUP, "--log-every", "1",
                "--checkpoint-every", "8", "--workdir", str(workdir), "--quiet", *extra, env=ENV)
    assert r.returncode == 0, r.stderr
    return json.loads((workdir / "result.json").read_text())


def _losses(workdir: Path) -> dict[int, float]:
    lines = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return {ln["step"]: ln["train_loss"] for ln in lines if "train_loss" in ln}


def test_branches_from_a_segmented_stem_equal_straight_wsd_runs(tmp_path):
    """Stem 0 -> 16 -> 32 steps at constant lr; branches of 20 and 40 steps cool down from
    16 and 32 (20% of each). Each equals a WSD run of its length trained from scratch."""
    seg1 = _train(tmp_path / "stem16", 16, "constant")
    seg2 = _train(tmp_path / "stem32", 32, "constant", "--init-from", str(tmp_path / "stem16"))
    b20 = _train(tmp_path / "b20", 20, "wsd", "--init-from", str(tmp_path / "stem16"))
    b40 = _train(tmp_path / "b40", 40, "wsd", "--init-from", str(tmp_path / "stem32"))
    for branch, steps, start in ((b20, 20, 16), (b40, 40, 32)):
        straight = _train(tmp_path / f"straight{steps}", steps, "wsd")
        got, want = _losses(tmp_path / f"b{steps}"), _losses(tmp_path / f"straight{steps}")
        assert sorted(got) == list(range(start + 1, steps + 1))  # the branch trained its cooldown only
        for s in got:
            assert got[s] == pytest.approx(want[s], rel=1e-5, abs=1e-6), s
        assert branch["val_loss"] == pytest.approx(straight["val_loss"], rel=1e-5)
        assert branch["val_accuracy"] == straight["val_accuracy"]
        # The record reads as the standalone run (stem included) and says what the branch spent.
        assert branch["status"] == "done" and branch["steps"] == steps and branch["examples_seen"] == steps * 64
        assert branch["train_flops"] == straight["train_flops"] == branch["standalone_train_flops"]
        assert branch["study_train_flops"] == branch["flops_per_example"] * (steps - start) * 64
        assert branch["stem"]["step"] == start and branch["stem"]["root"] == str(tmp_path / "stem16")
        assert 0 < branch["study_accelerator_hours"] < branch["accelerator_hours"]
        assert branch["accelerator_hours"] == pytest.approx(branch["study_accelerator_hours"]
                                                            + branch["stem"]["accelerator_hours"])
    # The stem is charged once: each segment's own spend plus the branches' add up to the study's.
    assert seg1["status"] == seg2["status"] == "stem"
    assert seg2["stem"]["accelerator_hours"] == pytest.approx(seg1["accelerator_hours"])
    assert b40["stem"]["accelerator_hours"] == pytest.approx(seg1["study_accelerator_hours"]
                                                             + seg2["study_accelerator_hours"])
    # Re-running a finished branch trains nothing and returns the same record.
    again = run_cli("scaling.train", "--model", "cnn-xs", "--data", "synthetic", "--batch-size", "64", "--steps", "40",
                    "--schedule", "wsd", "--warmup-steps", WARMUP, "--log-every", "1", "--checkpoint-every", "8",
                    "--init-from", str(tmp_path / "stem32"), "--workdir", str(tmp_path / "b40"), "--json", env=ENV)
    assert again.returncode == 0 and json.loads(again.stdout) == b40


def _refused(tmp_path: Path, *args: str) -> str:
    work = tmp_path / "refused"
    r = run_cli("scaling.train", "--model", "cnn-xs", "--data", "synthetic", "--batch-size", "64", "--workdir",
                str(work), "--quiet", *args, env=ENV)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not work.exists()  # nothing written
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--schedule", "step"], "invalid choice: 'step'"),
    (["--schedule", "wsd", "--cooldown-fraction", "0"], "--cooldown-fraction must be a number in (0, 1]"),
    (["--schedule", "wsd", "--cooldown-fraction", "1.5"], "--cooldown-fraction must be a number in (0, 1]"),
    (["--schedule", "wsd", "--cooldown-fraction", "-0.2"], "--cooldown-fraction must be a number in (0, 1]"),
    (["--schedule", "wsd", "--cooldown-fraction", "nan"], "--cooldown-fraction must be a number in (0, 1]"),
    (["--cooldown-shape", "cubic"], "invalid choice: 'cubic'"),
    (["--warmup-steps", "-1"], "--warmup-steps must be a non-negative integer"),
])
def test_bad_schedule_input_is_one_line_exit_2(tmp_path, args, message):
    assert message in _refused(tmp_path, "--steps", "10", *args)


def test_config_file_with_unknown_schedule_is_refused(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"schedule": "wsd-ish", "steps": 10}))
    assert "--schedule must be cosine, wsd or constant, got 'wsd-ish'" in _refused(tmp_path, "--config", str(cfg))


def test_branch_that_does_not_fit_its_stem_is_refused(tmp_path):
    """A branch budget longer (or shorter) than the stem, another lr, or no stem: one line, nothing written."""
    _train(tmp_path / "stem", 16, "constant")
    stem = str(tmp_path / "stem")
    common = ("--schedule", "wsd", "--warmup-steps", WARMUP, "--init-from", stem)
    assert "branch budget is longer than the stem" in _refused(tmp_path, "--steps", "40", *common)
    assert "ran past this branch's cooldown start" in _refused(tmp_path, "--steps", "10", *common)
    assert "different run (differs in lr)" in _refused(tmp_path, "--steps", "20", "--lr", "0.5", *common)
    assert "warmup of 1 steps differs from the stem's (4)" in _refused(
        tmp_path, "--steps", "20", "--schedule", "wsd", "--warmup-steps", "1", "--init-from", stem)
    assert "no finished run there" in _refused(tmp_path, "--steps", "20", *common[:-1], str(tmp_path / "nothing"))
    assert "--schedule wsd (a cooldown branch) or constant" in _refused(
        tmp_path, "--steps", "20", "--warmup-steps", WARMUP, "--init-from", stem)
